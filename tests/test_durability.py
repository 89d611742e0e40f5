"""DUR on real servers: private servers keep what they confirmed across a SIGKILL, the
harness hook is started once and removed by teardown, and the rules fail a server run
without the durability settings (the in-process specimens are in test_broken_providers)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from mqcontract.clock import VirtualClock
from mqcontract.config import MessagingConfig
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings, PrivateBackend
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.leftovers import at_teardown, clean_up
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.provisioning import Provisioner, Readiness, backends_required
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.runner import CaseOutcome, run_case
from mqcontract_conformance.selftest.broken_durability import InProcessServer, RestartHarness
from mqcontract_conformance.selftest.references import RestartableMemory
from mqcontract_conformance.timing import TimingProfile
from mqcontract_fixtures.memory import MemoryHarness
from mqcontract_fixtures.private._child import wait_for
from mqcontract_fixtures.private._probe import ask
from mqcontract_fixtures.private._reaper import descendants, group_alive, running
from mqcontract_fixtures.private._server import PrivateSlot, ServerBackend, ServerProcess
from mqcontract_fixtures.private.beanstalkd import PrivateBeanstalkd
from mqcontract_fixtures.private.mariadb import PrivateMariaDb
from mqcontract_fixtures.private.postgres import PrivatePostgres
from mqcontract_fixtures.private.redis import PrivateRedis


def _needs(server: type[ServerProcess]) -> None:
    if server.binary() is None:
        pytest.skip(f"{server.name} is not installed")


def _run(harness: Harness, rule_id: str) -> CaseOutcome:
    return asyncio.run(run_case(harness, get_rule(rule_id), TimingProfile(), "dur"))


async def _write_postgres(server: PrivatePostgres) -> None:
    conn = await server.connect()
    try:
        await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
    finally:
        await conn.close()


async def _read_postgres(server: PrivatePostgres) -> bool:
    conn = await server.connect()
    try:
        return bool(await conn.fetchval("SELECT x = 7 FROM kept"))
    finally:
        await conn.close()


async def _write_redis(server: PrivateRedis) -> None:
    assert await ask(server.port, b"SET kept 7\r\n") == b"+OK\r\n"


async def _read_redis(server: PrivateRedis) -> bool:
    return await ask(server.port, b"GET kept\r\n") == b"$1\r\n"


async def _write_beanstalkd(server: PrivateBeanstalkd) -> None:
    assert await ask(server.port, b"put 0 0 60 1\r\nx\r\n") == b"INSERTED 1\r\n"


async def _read_beanstalkd(server: PrivateBeanstalkd) -> bool:
    return (await ask(server.port, b"peek 1\r\n")).startswith(b"FOUND 1")


Probe = Callable[[Any], Coroutine[Any, Any, Any]]


async def _mariadb(server: PrivateMariaDb, *statements: str) -> list[Any]:
    import aiomysql

    conn = await aiomysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
    try:
        async with conn.cursor() as cur:
            for statement in statements:
                await cur.execute(statement)
            return list(await cur.fetchall())
    finally:
        conn.close()


async def _write_mariadb(server: PrivateMariaDb) -> None:
    await _mariadb(
        server, "CREATE DATABASE d", "CREATE TABLE d.kept (x int)", "INSERT INTO d.kept VALUES (7)"
    )


async def _read_mariadb(server: PrivateMariaDb) -> bool:
    return await _mariadb(server, "SELECT x FROM d.kept") == [(7,)]


SERVERS: list[tuple[type[ServerProcess], Probe, Probe]] = [
    (PrivatePostgres, _write_postgres, _read_postgres),
    (PrivateRedis, _write_redis, _read_redis),
    (PrivateBeanstalkd, _write_beanstalkd, _read_beanstalkd),
    (PrivateMariaDb, _write_mariadb, _read_mariadb),
]


@pytest.mark.parametrize(("cls", "write", "read"), SERVERS, ids=lambda v: getattr(v, "name", ""))
def test_a_private_server_keeps_a_confirmed_write_across_a_sigkill(
    cls: type[ServerProcess], write: Probe, read: Probe
) -> None:
    _needs(cls)
    server = cls()
    # A shared server's file in the system's temp dir, named as MariaDB names its on-disk
    # temporary tables: a private server's start or restart must leave it alone.
    shared = Path(tempfile.gettempdir()) / f"#sql-temptable-mqcontract-{uuid.uuid4().hex}.MAI"
    shared.write_bytes(b"in use")
    try:
        asyncio.run(server.start())
        asyncio.run(write(server))
        # Another event loop, as the next case has: nothing of the server belongs to one.
        asyncio.run(server.restart(crash=True))
        assert asyncio.run(read(server))
        assert server.timings["restart"][0] > 0
        assert shared.exists(), f"the private {cls.name} server deleted {shared}"
    finally:
        try:
            asyncio.run(server.close())
        finally:
            shared.unlink(missing_ok=True)
    assert not server.root.exists()


def test_a_crash_leaves_no_process_of_the_server_behind() -> None:
    _needs(PrivatePostgres)
    server = PrivatePostgres()
    try:
        asyncio.run(server.start())
        assert server.proc is not None
        group = server.proc.pid
        assert group_alive(group)

        async def crash_while_busy() -> set[int]:
            # A backend computing (not waiting) notices the postmaster's death only when
            # its query ends: only a SIGKILL of its own stops it at once.
            conn, watcher = await server.connect(), await server.connect()
            try:
                backend = await conn.fetchval("SELECT pg_backend_pid()")
                busy = asyncio.create_task(
                    conn.fetchval("SELECT count(*) FROM generate_series(1, 10000000000)")
                )
                active = "SELECT state = 'active' FROM pg_stat_activity WHERE pid = $1"

                async def computing() -> bool:
                    return bool(await watcher.fetchval(active, backend))

                await wait_for("the query to start", computing, 10, step=0.01)
                tree = descendants(group)
                assert backend in tree  # in a session of its own (setsid), not our group
                await server.kill()
            finally:
                busy.cancel()
                conn.terminate()
                watcher.terminate()
            return tree

        forked = asyncio.run(crash_while_busy())
        assert not group_alive(group)
        assert not [pid for pid in forked if running(pid)]  # every process it forked
        assert not server.running
    finally:
        asyncio.run(server.close())


def test_a_server_that_cannot_start_says_why() -> None:
    _needs(PrivateRedis)

    class Misconfigured(PrivateRedis):
        def settings(self) -> dict[str, str]:
            return {**super().settings(), "appendfsync": "sometimes"}

    server = Misconfigured()
    try:
        with pytest.raises(Exception, match="exited"):
            asyncio.run(server.start(timeout=10))
    finally:
        asyncio.run(server.close())


def test_a_store_inside_the_process_claims_no_durability() -> None:
    harness = MemoryHarness("memory", HarnessSettings(config=MessagingConfig(), run_id="dur"))
    assert _run(harness, "DUR-1").outcome is Outcome.NOT_CLAIMED


def test_a_durable_provider_without_a_private_backend_needs_the_hook() -> None:
    async def durable_memory(config: MessagingConfig) -> MessagingService:
        service = InMemoryMessagingService(config.memory)
        service._capabilities = dataclasses.replace(service.capabilities, survives_restart=True)
        return service

    harness = Harness(
        "durable-memory", HarnessSettings(config=MessagingConfig(), run_id="dur"), durable_memory
    )
    outcome = _run(harness, "DUR-1")
    assert outcome.outcome is Outcome.NEEDS_HOOK
    assert "private_backend" in outcome.reason


def _redis_harness(server_cls: type[PrivateRedis]) -> Harness:
    """The redis-streams example's harness, its private backend a ``server_cls``.

    The example is an out-of-tree package (installed in CI's example gates), so it is
    imported at run time and typed loosely here.
    """
    harnesses: Any = pytest.importorskip("mqcontract_redis_streams.harness")
    services: Any = pytest.importorskip("mqcontract_redis_streams.service")
    settings = HarnessSettings(config=MessagingConfig(), run_id=f"dur{os.getpid()}")
    harness: Any = harnesses.RedisStreamsHarness("redis-streams", settings)

    async def start() -> ServerBackend:
        server = server_cls()
        await server.start()
        config = dataclasses.replace(harness.config, url=server.url)

        async def opener(clock: VirtualClock | None) -> MessagingService:
            service: MessagingService = await services.connect_redis_streams(
                config, operation_timeout=5.0
            )
            return service

        return ServerBackend(server, opener, {})

    harness._private = PrivateSlot("redis-streams", start)
    assert isinstance(harness, Harness)
    return harness


def test_the_private_backend_is_started_once_and_removed_at_teardown() -> None:
    _needs(PrivateRedis)
    harness = _redis_harness(PrivateRedis)
    first = asyncio.run(harness.private_backend())
    again = asyncio.run(harness.private_backend())  # another loop, the same server
    assert first is again
    assert isinstance(first, ServerBackend)
    root: Path = first.server.root
    assert first.server.running
    try:
        assert _run(harness, "DUR-1").outcome is Outcome.PASSED
    finally:
        asyncio.run(harness._private.close())  # type: ignore[attr-defined]
    assert not root.exists()


class _ForgetfulRedis(PrivateRedis):
    """Redis with snapshots only (no append-only file): a clean stop writes everything
    down, a crash loses every write since the last snapshot."""

    def settings(self) -> dict[str, str]:
        return {"appendonly": "no", "save": "3600 1"}


def test_dur_1_fails_a_redis_that_writes_only_snapshots() -> None:
    _needs(PrivateRedis)
    harness = _redis_harness(_ForgetfulRedis)
    try:
        with pytest.raises(ContractViolation, match=r"\[DUR-1\].*not received"):
            _run(harness, "DUR-1")
    finally:
        asyncio.run(harness._private.close())  # type: ignore[attr-defined]


def test_a_private_mosquitto_starts_and_restarts_on_its_own_port() -> None:
    from mqcontract_fixtures.private.mosquitto import PrivateMosquitto

    _needs(PrivateMosquitto)
    server = PrivateMosquitto()
    try:
        asyncio.run(server.start())
        asyncio.run(server.restart(crash=True))
        assert server.running
        assert "persistence true" in server.config_file.read_text()
    finally:
        asyncio.run(server.close())
    assert not server.root.exists()


def _slow_restart(cls: type[InMemoryMessagingService]) -> Harness:
    """The in-process server, down for longer than DUR-3's claim and its slack."""
    timing = TimingProfile()
    # Back, it replays its log for a while first (receives find nothing), as a server
    # recovering from a crash may: a rule that allowed no time after it is back fails here.
    return RestartHarness(
        cls, restart_seconds=3 * (2 * timing.slack + timing.slack), replay_seconds=timing.slack
    )


def test_dur_3_waits_for_a_server_that_is_back_after_the_claim_ended() -> None:
    """A slow start on a busy machine is not a lost claim: the message is due within
    the recovery bound of the server being back (CI once failed RabbitMQ here)."""
    outcome = _run(_slow_restart(RestartableMemory), "DUR-3")
    assert outcome.outcome is Outcome.PASSED, outcome.reason
    assert outcome.metrics["server_back_after_claim_seconds"] > 9


def test_dur_3_still_fails_a_claim_that_never_comes_back_after_a_slow_restart() -> None:
    from mqcontract_conformance.selftest.broken_durability import ClaimsHeldForGood

    with pytest.raises(ContractViolation, match="nor within"):
        _run(_slow_restart(ClaimsHeldForGood), "DUR-3")


class _ForgetsYoungQueues(InProcessServer):
    """An in-process server that writes a created queue down only when it stops cleanly
    (with ``ever``, never): a crash loses every queue created since its last restart,
    as RabbitMQ 3.10.8 killed a moment after a durable declare-ok sometimes does."""

    def __init__(self, *, ever: bool = False) -> None:
        super().__init__(RestartableMemory)
        self.ever = ever
        #: Each store's queues written down (one store per clock).
        self.written: dict[int, set[str]] = {}
        #: Each restart's ``crash``, in order.
        self.restarts: list[bool] = []

    async def restart(self, *, crash: bool = True) -> None:
        self.restarts.append(crash)
        for key, (store, _) in self._stores.items():
            written = self.written.get(key, set())
            if crash or self.ever:
                for name in set(store.queues) - written:
                    del store.queues[name]
            self.written[key] = set() if self.ever else set(store.queues)
        await super().restart(crash=crash)

    def harness(self, *, real_time: bool = False) -> Harness:
        cls = _RealTimeRestartHarness if real_time else RestartHarness
        harness = cls(RestartableMemory)
        harness._server = self
        return harness

    def queues(self) -> set[str]:
        """Every queue on the server, in any store."""
        return {name for store, _ in self._stores.values() for name in store.queues}


class _RealTimeRestartHarness(RestartHarness):
    """Cases in real time: the in-process server is one store for all of them, as a
    real server is (on a virtual clock each case has a store of its own)."""

    def new_clock(self) -> VirtualClock | None:
        return None


@pytest.mark.parametrize("rule_id", ["DUR-1", "DUR-2", "DUR-3", "DUR-4"])
def test_dur_rules_judge_what_they_are_about_not_a_queue_created_a_moment_before(
    rule_id: str,
) -> None:
    """A queue lost because it was created just before the crash is not a lost send,
    ack, claim or subscription: each rule's queue is older than a clean restart (CI once
    failed RabbitMQ's DUR-1 on a durable queue declared milliseconds before SIGKILL)."""
    outcome = _run(_ForgetsYoungQueues().harness(), rule_id)
    assert outcome.outcome is Outcome.PASSED, outcome.reason


@pytest.mark.parametrize("rule_id", ["DUR-2", "DUR-3"])
def test_what_a_rule_waits_for_before_the_crash_may_take_a_replay_after_the_setup_restart(
    rule_id: str,
) -> None:
    """A server that answers nothing for a while after starting (replaying its log) is
    correct: after the setup restart too, what comes before the crash gets the recovery
    bound, not the delivery bound."""
    timing = TimingProfile()
    harness = RestartHarness(RestartableMemory, replay_seconds=timing.delivery + 0.5)
    outcome = _run(harness, rule_id)
    assert outcome.outcome is Outcome.PASSED, outcome.reason


def _run_in_one_loop(
    harness: Harness, *rule_ids: str, timing: TimingProfile | None = None
) -> list[CaseOutcome | ContractViolation]:
    """Run rules one after another in real time and in one event loop (a failure is its
    violation), then remove the kit's leftovers, as the provisioner's teardown does
    (tests/test_contract.py runs each case in a loop of its own on real servers)."""

    async def run_all() -> list[CaseOutcome | ContractViolation]:
        results: list[CaseOutcome | ContractViolation] = []
        try:
            for rule_id in rule_ids:
                try:
                    results.append(
                        await run_case(harness, get_rule(rule_id), timing or TimingProfile(), "dur")
                    )
                except ContractViolation as exc:
                    results.append(exc)
            return results
        finally:
            await clean_up(harness)

    return asyncio.run(run_all())


def test_in_real_time_one_clean_restart_ages_the_queues_of_every_dur_rule() -> None:
    """A clean restart per case made CI's RabbitMQ DUR cases twice as long (a node takes
    15 s to stop cleanly and start): one ages the queues of every DUR rule, the cases
    then crash the server once each, and the queues no case took are dropped at
    teardown."""
    server = _ForgetsYoungQueues()
    results = _run_in_one_loop(server.harness(real_time=True), "DUR-1", "DUR-2", "DUR-4")
    outcomes = [r for r in results if isinstance(r, CaseOutcome)]
    assert [o.outcome for o in outcomes] == [Outcome.PASSED] * 3, results
    assert server.restarts == [False, True, True, True]
    assert ["setup_restart_seconds" in o.metrics for o in outcomes] == [True, False, False]
    assert not {name for name in server.queues() if "_dur_" in name}, server.queues()


class _CrashLosesQueues(_ForgetsYoungQueues):
    """Writes its queues down at a clean stop, and loses all of them in a crash."""

    async def restart(self, *, crash: bool = True) -> None:
        if crash:
            self.written.clear()
        await super().restart(crash=crash)


def test_a_queue_lost_in_an_earlier_rules_crash_fails_the_rule_that_takes_it() -> None:
    """An aged queue is checked when its case takes it: one that the crash of an earlier
    case lost fails the rule of the case taking it, saying how many crashes it has been
    through."""
    server = _CrashLosesQueues()
    quick = TimingProfile.from_scale(0.2)  # each rule fails after its recovery bound
    results = _run_in_one_loop(server.harness(real_time=True), "DUR-2", "DUR-1", timing=quick)
    assert all(isinstance(r, ContractViolation) for r in results), results
    failure = str(results[1])
    assert failure.startswith("[DUR-1]"), failure
    assert "the crashes of the cases of DUR-2 since (run DUR-1 alone" in failure, failure


class _Unhashable(_RealTimeRestartHarness):
    """Compares by name, so it cannot be hashed: the kit keeps its state per harness
    by identity."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Harness) and other.name == self.name


def test_aged_queues_belong_to_the_private_backend_they_were_made_on() -> None:
    """A harness whose ``private_backend`` is another server for the next case (a fresh
    world, where the first pool's queues never existed) gets a pool made there; and a
    harness that cannot be hashed is no obstacle."""
    first, second = _ForgetsYoungQueues(), _ForgetsYoungQueues()
    harness = _Unhashable(RestartableMemory)
    servers = iter([first, second])

    async def next_server() -> PrivateBackend:
        return next(servers)

    harness.private_backend = next_server  # type: ignore[method-assign]
    results = _run_in_one_loop(harness, "DUR-1", "DUR-2")
    assert all(isinstance(r, CaseOutcome) for r in results), results
    assert first.restarts == [False, True]
    assert second.restarts == [False, True]


def test_dur_1_fails_a_server_that_never_writes_its_queues_down() -> None:
    with pytest.raises(ContractViolation, match="created before a clean restart"):
        _run(_ForgetsYoungQueues(ever=True).harness(), "DUR-1")


def test_a_clean_stop_of_postgres_does_not_wait_for_its_clients() -> None:
    """A clean restart is what each DUR rule's setup asks for: a stop that waits for a
    client to leave ends as a SIGKILL after 30 s, a crash where a clean stop was due."""
    _needs(PrivatePostgres)
    server = PrivatePostgres()

    async def stop_with_a_client_connected() -> None:
        conn = await server.connect()
        try:
            await server.stop()
        finally:
            conn.terminate()

    try:
        asyncio.run(server.start())
        asyncio.run(stop_with_a_client_connected())
        assert "kill" not in server.timings, server.timings
        assert server.timings["stop"][0] < 10, server.timings
    finally:
        asyncio.run(server.close())


def test_the_kits_leftovers_go_before_the_harness_is_torn_down() -> None:
    """What the kit left on a harness's servers for later cases (the untaken aged
    queues) is removed while the server is still there: before the harness's teardown,
    which may stop it; a cleanup that fails does not keep the teardown from running."""
    events: list[str] = []

    class Recording(MemoryHarness):
        async def teardown(self) -> None:
            events.append("harness teardown")
            await super().teardown()

    harness = Recording("memory", HarnessSettings(config=MessagingConfig(), run_id="t"))
    provisioner = Provisioner(harness, required=False)
    assert provisioner.provision().readiness is Readiness.READY

    async def first() -> None:
        events.append("first left")

    async def failing() -> None:
        events.append("failing left")
        raise RuntimeError("the server went away")

    at_teardown(harness, first)
    at_teardown(harness, failing)
    provisioner.teardown()
    assert events == ["failing left", "first left", "harness teardown"]
    events.clear()
    provisioner.provision()
    provisioner.teardown()
    assert events == ["harness teardown"]  # each cleanup runs once


def test_untaken_aged_queues_are_dropped_while_the_private_server_is_up() -> None:
    """On a real private server, each case in an event loop of its own as in a run:
    DUR-1 alone takes one of the queues aged for PGMQ's four DUR rules, and the
    provisioner's teardown drops the other three before it stops the server."""
    _needs(PrivatePostgres)
    provisioner = Provisioner.for_provider("pgmq", required=backends_required())
    harness = provisioner.ready()

    async def aged_on_the_server() -> set[str]:
        backend = await harness.private_backend()
        service = await backend.open()
        try:
            return {name for name in await service.list_queues() if "_dur_" in name}
        finally:
            await service.close()

    try:
        assert _run(harness, "DUR-1").outcome is Outcome.PASSED
        assert len(asyncio.run(aged_on_the_server())) == 3
        asyncio.run(clean_up(harness))  # what the provisioner's teardown does first
        assert asyncio.run(aged_on_the_server()) == set()
    finally:
        provisioner.teardown()
