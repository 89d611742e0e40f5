"""One stress run: producers and event-system consumers, faults, then the account.

``run_stress`` provisions the provider through its conformance harness (PGMQ: a database
of its own; RabbitMQ: a virtual host of its own), starts ``producers`` tasks sending
``messages`` keyed payloads in batches and ``consumers`` :class:`QueueConsumer` instances
(Hybrid mode, each on its own provider connection) whose handler fails at random, now and
then runs past its visibility timeout, and otherwise succeeds. It injects the chosen fault
every few seconds, waits (bounded) until every confirmed message is acked, stops, drains
what is left, and returns the :class:`~mqcontract_conformance.stress.account.Account`.

The ``restart`` fault never touches a shared server: the run asks the harness for its
private server (``Harness.private_backend``, the one the DUR rules crash), runs the whole
load on it, and each fault SIGKILLs that server and starts it again on the same storage
and port. The account's ``backend`` then describes that server; the harness's teardown
removes it.

With ``cluster`` (3 or more) the provider runs on a private cluster the run starts
(:mod:`.clusters`), and the cluster faults (``leader-kill``, ``partition``) are
available; the account then states, before the load, what the provider promises under
that fault (:mod:`._promises`), and afterwards the fault timeline and whether the promise
held. ``clients`` says whether the providers connect to node 0 only (never faulted) or
are given every node (and fail over when the leader on theirs is faulted).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import math
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from mqcontract.config import MessagingConfig, load_config
from mqcontract.errors import (
    BackendUnavailable,
    ConfigurationError,
    MessagingError,
    OperationTimeout,
    ProviderClosed,
    QueueError,
)
from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.messages import QueuedMessage
from mqcontract.service import MessagingService
from mqcontract_conformance.stress._cluster_faults import CLUSTER_FAULTS, ClusterFaultInjector
from mqcontract_conformance.stress._faults import FAULTS, FaultInjector, Injector
from mqcontract_conformance.stress._promises import promise_for
from mqcontract_conformance.stress._recording import RecordingService
from mqcontract_conformance.stress.account import Account, Ledger
from mqcontract_conformance.stress.clusters import (
    CLIENTS,
    CLUSTER_PROVIDERS,
    ClusterBackend,
    cluster_environment,
    load_cluster_opener,
)

if TYPE_CHECKING:
    from mqcontract.testing import Harness, PrivateBackend

__all__ = ["StressSettings", "run_stress"]


#: How long the drain retries a receive that lost its connection.
DRAIN_RECOVERY_SECONDS = 30.0


class InjectedFailure(Exception):
    """The handler failed on purpose."""


class ClaimOverran(Exception):
    """The handler finished after its visibility timeout: its work does not count."""


#: Settings that are numbers of seconds or shares: each must be finite (``inf`` seconds
#: would never end a run; ``nan`` compares false with every bound).
_SECONDS_AND_SHARES = (
    "fail_rate",
    "slow_rate",
    "vt",
    "fault_interval",
    "max_seconds",
    "fault_duration",
    "poll_interval",
)


@dataclass(frozen=True, kw_only=True)
class StressSettings:
    """What a run does; the defaults are the issue's 4 x 4 over 10,000 messages."""

    provider: str
    messages: int = 10_000
    producers: int = 4
    consumers: int = 4
    #: Handler workers per consumer.
    workers: int = 4
    fail_rate: float = 0.05
    #: Share of handlers that sleep past the visibility timeout.
    slow_rate: float = 0.005
    #: Visibility timeout of every claim (pushed claims included), seconds.
    vt: float = 2.0
    #: Upper bound of the simulated work per message, seconds.
    work_seconds: float = 0.002
    batch: int = 10
    fault: str = "none"
    fault_interval: float = 3.0
    max_seconds: float = 600.0
    poll_interval: float | None = None
    #: The consumers' deployment mode (a ``DeploymentMode`` value). Hybrid claims with
    #: push and with the fallback poller's receives; EventDrivenOnly with push alone.
    mode: str = DeploymentMode.HYBRID.value
    seed: int | None = None
    #: Nack after a handler failure (the event system's default) instead of leaving the
    #: message to its visibility timeout. Ack and nack name a message, not a claim: a
    #: handler that overran its claim and then nacks releases the claim of the consumer
    #: that holds the message now, which can then be processed twice.
    nack_on_failure: bool = False
    #: Nodes of a private cluster to run on (0: the configured backend).
    cluster: int = 0
    #: How long a cluster fault lasts (node down, or cut off), seconds.
    fault_duration: float = 5.0
    #: ``module:attribute`` of the cluster opener (default: the ``mqcontract.clusters``
    #: entry point named like the provider).
    cluster_factory: str | None = None
    #: The cluster nodes the providers are given (:data:`~.clusters.CLIENTS`): ``node0``
    #: (never faulted) or ``all`` (every node, each of which may be faulted).
    clients: str = "node0"

    def validate(self) -> None:
        """Raise ``ConfigurationError`` for settings no run can honour."""
        checks = {
            "messages": self.messages >= 1,
            "producers": self.producers >= 1,
            "consumers": self.consumers >= 1,
            "workers": self.workers >= 1,
            "fail_rate": 0 <= self.fail_rate < 1,
            "slow_rate": 0 <= self.slow_rate < 1 and self.fail_rate + self.slow_rate < 1,
            "vt": self.vt > 0,
            "batch": self.batch >= 1,
            "fault": self.fault in FAULTS,
            "mode": self.mode in {m.value for m in DeploymentMode},
            "fault_interval": self.fault_interval > 0,
            "max_seconds": self.max_seconds > 0,
            "cluster": self.cluster == 0 or 3 <= self.cluster <= 7,
            "fault_duration": self.fault_duration > 0,
            "clients": self.clients in CLIENTS,
        }
        for key in _SECONDS_AND_SHARES:
            value = getattr(self, key)
            if value is not None and not math.isfinite(value):
                raise ConfigurationError(f"stress.{key}", value, "must be a finite number")
        if self.poll_interval is not None and not self.poll_interval > 0:
            raise ConfigurationError("stress.poll_interval", self.poll_interval, "out of range")
        for key, ok in checks.items():
            if not ok:
                raise ConfigurationError(f"stress.{key}", getattr(self, key), "out of range")
        if self.cluster and self.provider not in CLUSTER_PROVIDERS:
            raise ConfigurationError(
                "stress.cluster", self.provider, f"only for {', '.join(CLUSTER_PROVIDERS)}"
            )
        if self.fault in CLUSTER_FAULTS and not self.cluster:
            raise ConfigurationError("stress.fault", self.fault, "needs --cluster 3")
        if self.clients != "node0" and not self.cluster:
            raise ConfigurationError("stress.clients", self.clients, "needs --cluster 3")
        if self.cluster and self.fault in ("restart", "pool"):
            raise ConfigurationError("stress.fault", self.fault, "not available on a cluster")


def _payload(key: str) -> bytes:
    return json.dumps({"k": key}).encode()


def _key(payload: bytes) -> str:
    try:
        value = json.loads(payload)
    except ValueError:
        return f"<not ours: {payload[:40]!r}>"
    key = value.get("k") if isinstance(value, dict) else None
    return key if isinstance(key, str) else f"<not ours: {payload[:40]!r}>"


class _Run:
    """The moving parts of one run."""

    def __init__(self, settings: StressSettings, out: IO[str] | None) -> None:
        self.s = settings
        self.out = out
        self.token = secrets.token_hex(3)
        self.queue = f"stress_{self.token}"
        self.ledger = Ledger()
        self.rng = random.Random(settings.seed)
        self.producers_done = asyncio.Event()
        self.started = time.monotonic()

    # -- producing ---------------------------------------------------------------------

    async def produce(self, service: MessagingService, number: int) -> None:
        s, ledger = self.s, self.ledger
        share = range(number, s.messages, s.producers)
        keys = [f"{self.token}-{number}-{i}" for i in share]
        for start in range(0, len(keys), s.batch):
            chunk = keys[start : start + s.batch]
            ledger.attempted.update(chunk)
            try:
                ids = await service.send_batch(self.queue, [_payload(k) for k in chunk])
            except (BackendUnavailable, OperationTimeout, QueueError) as exc:
                if isinstance(exc, QueueError) and type(exc) is not QueueError:
                    raise  # a certain failure (no queue, too large): nothing to account
                # The outcome is unknown: the connection dropped or the bound ran out, or
                # the broker refused the batch (a plain QueueError: a quorum queue refuses
                # publishes while it elects a leader), which may cover some messages only.
                ledger.indeterminate.update(chunk)
                ledger.send_errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)  # let the provider reconnect before the next batch
                continue
            ledger.sent.update(zip(chunk, ids, strict=True))

    # -- consuming ---------------------------------------------------------------------

    def handler(self, recorder: RecordingService, number: int) -> Callable[[QueuedMessage], Any]:
        s, ledger, rng = self.s, self.ledger, self.rng
        margin = min(0.25, s.vt * 0.1)

        async def handle(message: QueuedMessage) -> None:
            key = _key(message.payload)
            ledger.delivered(message.queue_name, message.msg_id, key, message.receive_count)
            now = time.monotonic()
            claimed = recorder.claim_start(message)
            if claimed is None:
                ledger.unknown_claims += 1
                claimed = now
            roll = rng.random()
            if roll < s.fail_rate:
                ledger.injected_failures += 1
                raise InjectedFailure(key)
            if roll < s.fail_rate + s.slow_rate:
                ledger.slow_handlers += 1
                await asyncio.sleep(s.vt * 1.5)
            else:
                await asyncio.sleep(rng.uniform(0, s.work_seconds))
            if time.monotonic() >= claimed + s.vt - margin:
                ledger.overran[key] += 1
                raise ClaimOverran(key)
            ledger.committed(key, number)

        return handle

    def consumer_settings(self) -> ConsumerSettings:
        s = self.s
        return ConsumerSettings(
            mode=DeploymentMode(s.mode),
            visibility_timeout=s.vt,
            batch_size=s.batch,
            workers=s.workers,
            poll_interval=s.poll_interval,
            stop_grace=s.vt * 2,
            nack_on_failure=s.nack_on_failure,
        )

    # -- waiting, progress, draining ---------------------------------------------------

    def done(self) -> bool:
        """Every confirmed message committed (its ack may have failed: see drain)."""
        return self.producers_done.is_set() and self.ledger.outstanding() == 0

    def progress_line(self, faults: Injector | None) -> str:
        ledger, s = self.ledger, self.s
        injected = (
            f" faults {faults.injected}" if faults is not None and faults.kind != "none" else ""
        )
        return (
            f"[stress {s.provider}] sent {len(ledger.sent)}/{s.messages} "
            f"processed {len(ledger.processed() & set(ledger.sent))} "
            f"deliveries {sum(ledger.deliveries.values())} "
            f"failed {ledger.injected_failures} overran {sum(ledger.overran.values())}"
            f"{injected} {time.monotonic() - self.started:.0f}s"
        )

    async def report_progress(self, faults: Injector | None) -> None:
        if self.out is None:
            return
        tty = self.out.isatty()
        every = 1.0 if tty else 5.0
        while True:
            await asyncio.sleep(every)
            line = self.progress_line(faults)
            self.out.write(f"\r{line}   " if tty else f"{line}\n")
            self.out.flush()

    async def wait_until_done(self, faults: Injector) -> bool:
        """Poll the ledger until every confirmed message is processed, within the bound.

        A faulted run also lasts until its first fault was attempted, and until a fault in
        progress has ended (its node back): a load faster than ``fault_interval`` would
        otherwise report a faulted account with no fault in it.
        """
        deadline = self.started + self.s.max_seconds
        while (
            not self.done()
            or not (faults.kind == "none" or faults.injected or faults.errors)
            or faults.active
        ):
            if time.monotonic() >= deadline:
                await self._let_fault_end(faults)
                return False
            await asyncio.sleep(0.1)
        return True

    @staticmethod
    async def _let_fault_end(faults: Injector) -> None:
        """At the bound, still let a fault in progress end (bounded): stopping a restart
        midway would leave the server down while the run drains and writes its account."""
        deadline = time.monotonic() + FAULT_END_SECONDS
        while faults.active:
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.1)

    async def drain(self, service: MessagingService, finished: bool) -> int:
        """Receive what is left (claims of stopped consumers expire first).

        After a clean run (everything committed, every ack accepted, every send confirmed)
        nothing can be left: one look suffices. Otherwise it waits out the visibility
        timeout, so messages whose acks failed come back and are counted.
        """
        ledger = self.ledger
        clean = finished and not ledger.indeterminate and not ledger.failed_acks
        quiet_for = 0.0 if clean else self.s.vt + 2.0
        last_seen = time.monotonic()
        drained = 0
        while True:
            batch = await self._receive_recovering(service)
            for message in batch:
                self.ledger.unfinished.add(_key(message.payload))
                with contextlib.suppress(BackendUnavailable):  # it is counted already
                    await service.ack_claim(self.queue, message)
            if batch:
                drained += len(batch)
                last_seen = time.monotonic()
            elif time.monotonic() - last_seen >= quiet_for:
                return drained
            else:
                await asyncio.sleep(0.2)

    async def _receive_recovering(self, service: MessagingService) -> list[QueuedMessage]:
        """One receive; a lost connection is retried for a while (a restarted server
        leaves the idle producer's connection dead, and providers reconnect on use)."""
        deadline = time.monotonic() + DRAIN_RECOVERY_SECONDS
        while True:
            try:
                return await service.receive_messages(self.queue, 100, max(30.0, self.s.vt * 10))
            except ProviderClosed:
                raise
            except BackendUnavailable:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.2)


def _consumer_summary(consumers: list[QueueConsumer]) -> dict[str, Any]:
    by_path: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    errors: list[str] = []
    for c in consumers:
        st = c.stats
        by_path.update(st.by_path)
        totals.update(
            notifications=st.notifications,
            polls=st.polls,
            polled_messages=st.polled_messages,
            already_claimed=st.already_claimed,
            duplicate_claims=st.duplicate_claims,
            late_acks=st.late_acks,
            unsettled_acks=st.unsettled_acks,
            released_on_stop=st.released_on_stop,
            released_unstarted=st.released_unstarted,
            handler_failures=st.handler_failures,
        )
        errors.extend(st.errors[:3])
    return {"by_path": dict(by_path), **dict(totals), "errors": errors[:8]}


async def run_stress(
    settings: StressSettings,
    *,
    config: MessagingConfig | None = None,
    out: IO[str] | None = sys.stderr,
) -> Account:
    """Run the load (see the module docstring) and return its account."""
    settings.validate()
    config = config or load_config(validate_backend=False)
    if settings.cluster:
        return await _run_on_cluster(settings, config, out)
    return await _run(settings, config, out)


def _tuned(config: MessagingConfig, settings: StressSettings) -> MessagingConfig:
    """Pushed claims expire like polled ones: the same visibility timeout everywhere.

    Each consumer is pushed at most as many claimed messages as it has workers: a deeper
    prefetch queues claims behind busy workers, where they expire unprocessed (a run
    with 3 % of handlers overrunning their claim then spends its time redelivering).
    """
    vt, prefetch = settings.vt, settings.workers
    return dataclasses.replace(
        config,
        backend=settings.provider,
        memory=dataclasses.replace(
            config.memory, push_visibility_timeout_seconds=vt, prefetch_count=prefetch
        ),
        rabbitmq=dataclasses.replace(
            config.rabbitmq, push_visibility_timeout_seconds=vt, prefetch_count=prefetch
        ),
    )


async def _run_on_cluster(
    settings: StressSettings, config: MessagingConfig, out: IO[str] | None
) -> Account:
    """Start the private cluster, run on it, state the promise and check it."""
    run = _Run(settings, out)
    opener = load_cluster_opener(settings.provider, settings.cluster_factory)
    # The harness gives the run this virtual host (mqcontract_fixtures.rabbitmq.run_vhost).
    vhost = f"mqcontract_stress{run.token}"
    backend = await opener(
        settings.provider,
        settings.cluster,
        netns=settings.fault == "partition",
        vhost=vhost,
        clients=settings.clients,
    )
    try:
        promise = promise_for(settings.provider, settings.fault, settings.clients)
        if out is not None:
            out.write(f"[stress {settings.provider}] cluster of {settings.cluster} up; ")
            out.write(f"promise under {settings.fault}: {promise.text}\n")
        with cluster_environment(backend.environment()):
            account = await _run(settings, backend.configure(config), out, backend, run)
    finally:
        await backend.close()
    account.extra["cluster"] = backend.describe()
    account.extra["promise"] = promise.check(account.to_dict())
    return account


#: The harness hook each service fault needs (checked before anything is started).
_HOOKS = {
    "listener": "kill_listener",
    "pool": "sever_connection",
    "connection": "sever_connection",
    "restart": "private_backend",
}


async def _run(
    settings: StressSettings,
    config: MessagingConfig,
    out: IO[str] | None,
    backend: ClusterBackend | None = None,
    run: _Run | None = None,
) -> Account:
    from mqcontract.testing import Harness, HarnessSettings
    from mqcontract_conformance.harnesses import load_harness

    run = run or _Run(settings, out)
    harness = load_harness(
        settings.provider,
        HarnessSettings(
            config=_tuned(config, settings),
            run_id=f"stress{run.token}",
            require_backend=True,
            extra={"real_time": "1"},
        ),
    )
    hook = _HOOKS.get(settings.fault)
    if hook is not None and getattr(type(harness), hook) is getattr(Harness, hook):
        raise ConfigurationError(
            "stress.fault", settings.fault, f"{settings.provider} has no {hook} hook"
        )
    await (harness.setup() if backend is None else backend.set_up(harness))
    services: list[MessagingService] = []
    try:
        private = await _private_backend(harness) if settings.fault == "restart" else None
        opener = harness if private is None else private
        describe = harness.describe() if private is None else private.describe()
        producer = await opener.open(None)
        services.append(producer)
        from mqcontract.providers.memory import InMemoryMessagingService

        shared = isinstance(producer, InMemoryMessagingService)  # its queues live in it
        consumer_services = []
        for _ in range(settings.consumers):
            svc = producer if shared else await opener.open(None)
            if svc is not producer:
                services.append(svc)
            consumer_services.append(svc)
        if backend is not None:
            await backend.before_create(run.queue)
        await producer.create_queue(run.queue)
        if backend is not None:
            await backend.prepare(producer, run.queue)
        recorders = [
            RecordingService(svc, on_ack=functools.partial(run.ledger.ack_outcome, number))
            for number, svc in enumerate(consumer_services)
        ]
        consumers = [
            QueueConsumer(rec, [run.queue], run.handler(rec, number), run.consumer_settings())
            for number, rec in enumerate(recorders)
        ]
        faults: Injector
        if settings.fault in CLUSTER_FAULTS and backend is not None:
            faults = ClusterFaultInjector(
                settings.fault,
                cluster=backend,
                queue=run.queue,
                interval=settings.fault_interval,
                duration=settings.fault_duration,
                epoch=lambda: run.started,
            )
        else:
            attempts: list[str] = []
            faults = FaultInjector(
                settings.fault,
                interval=settings.fault_interval,
                targets=consumer_services,
                kill_listener=harness.kill_listener,
                sever_connection=harness.sever_connection,
                restart=_crash(private, attempts.append) if private is not None else None,
            )
            faults.errors = attempts  # failed attempts of restarts that then happened too
        return await _drive(run, describe, producer, consumers, faults)
    finally:
        for svc in services:
            with contextlib.suppress(MessagingError):
                await svc.close()
        await harness.teardown()


async def _private_backend(harness: Harness) -> PrivateBackend:
    """The harness's private server, which the restart fault may crash (started now)."""
    from mqcontract.testing import HookUnavailable

    try:
        return await harness.private_backend()
    except HookUnavailable as exc:  # offered, but not here (say, no server binary)
        raise ConfigurationError("stress.fault", "restart", f"no private_backend: {exc}") from exc


#: Starts a restart fault may try before the server counts as down for good.
RESTART_ATTEMPTS = 3


#: Bound on a fault in progress ending once the load's own bound has passed.
FAULT_END_SECONDS = 120.0


def _crash(private: PrivateBackend, failed: Callable[[str], None]) -> Callable[[], Awaitable[None]]:
    """The restart fault: SIGKILL the private server, start it on the same storage.

    A start that failed (say, a server refusing while something of the killed one still
    holds its files) is tried again at once, so the run does not go on, or end, on a
    server that is down. Failed attempts are reported to ``failed``; the fault raises
    only if every attempt failed (a restart that happened is counted as injected).
    """

    async def restart() -> None:
        for attempt in range(1, RESTART_ATTEMPTS + 1):
            try:
                await private.restart(crash=True)  # after a failed start: nothing to kill
            except Exception as exc:
                if attempt == RESTART_ATTEMPTS:
                    raise  # the injector counts it as a failed fault
                failed(f"restart attempt {attempt} failed: {type(exc).__name__}: {exc}")
            else:
                return

    return restart


async def _drive(
    run: _Run,
    describe: dict[str, str],
    producer: MessagingService,
    consumers: list[QueueConsumer],
    faults: Injector,
) -> Account:
    s = run.s
    run.started = time.monotonic()  # the load starts now: setup is not part of it
    for consumer in consumers:
        await consumer.start()
    background = [
        asyncio.create_task(faults.run(), name="stress-faults"),
        asyncio.create_task(run.report_progress(faults), name="stress-progress"),
    ]
    producers = [asyncio.create_task(run.produce(producer, i)) for i in range(s.producers)]
    try:
        await asyncio.gather(*producers)
        run.producers_done.set()
        finished = await run.wait_until_done(faults)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for consumer in consumers:
            await consumer.stop()
    load_seconds = time.monotonic() - run.started
    drained = await run.drain(producer, finished)
    if run.out is not None:
        run.out.write(f"\r{run.progress_line(faults)}\n")
    acked = len(set(run.ledger.acks) & set(run.ledger.sent))
    return run.ledger.account(
        faulted=s.fault != "none",
        provider=s.provider,
        backend=describe,
        settings=dataclasses.asdict(s),
        finished_within_bound=finished,
        load_seconds=round(load_seconds, 2),
        acked_per_second=round(acked / load_seconds, 1) if load_seconds > 0 else 0.0,
        drained_after_stop=drained,
        faults=faults.summary(),
        consumers=_consumer_summary(consumers),
    )
