"""The fault-injector fixtures, used as a provider author would (pytester, real servers)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mqcontract.testing import Harness

Provisioned = Callable[[str], Harness]

HEADER = """
import asyncio
import time

import asyncpg
import pytest

pytest_plugins = ["mqcontract_fixtures.pytest_fixtures"]


@pytest.fixture(scope="session")
def mq_provider_name():
    return "{provider}"


async def until(predicate, what, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, f"{{what}} within {{seconds}} s"
        await asyncio.sleep(0.02)
"""

PGMQ = """
from mqcontract.providers.pgmq._sql import TRIGGER_NAME


async def trigger_state(url, queue):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            "SELECT tgenabled::text FROM pg_trigger WHERE tgname = $1"
            " AND tgrelid = format('pgmq.q_%s', $2::text)::regclass",
            TRIGGER_NAME,
            queue,
        )
    finally:
        await conn.close()


async def backend_alive(url, pid):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 1
    finally:
        await conn.close()


def test_disable_notify_trigger_disables_and_restores(mq_harness, disable_notify_trigger):
    async def main():
        service = await mq_harness.open()
        try:
            await service.create_queue("faults_trigger")
            assert await trigger_state(mq_harness.url, "faults_trigger") == "O"
            async with disable_notify_trigger(service, "faults_trigger"):
                assert await trigger_state(mq_harness.url, "faults_trigger") == "D"
            assert await trigger_state(mq_harness.url, "faults_trigger") == "O"
        finally:
            await service.close()

    asyncio.run(main())


def test_terminate_listener_kills_the_listen_backend(mq_harness, terminate_listener):
    async def main():
        service = await mq_harness.open()
        try:
            await service.create_queue("faults_listen")
            async with await service.subscribe("faults_listen"):
                async def connected():
                    return service.listener_backend_pid is not None

                await until(connected, "the listener connects")
                pid = service.listener_backend_pid
                await terminate_listener(service)
                assert not await backend_alive(mq_harness.url, pid)
        finally:
            await service.close()

    asyncio.run(main())
"""

RABBITMQ = """
from mqcontract.providers.rabbitmq._management import ManagementClient


def test_sever_connection_closes_the_amqp_connections(mq_harness, sever_connection):
    management_url = mq_harness.config.rabbitmq.management_url
    if management_url is None:  # the observation needs it; severing itself does not
        pytest.skip(f"management API unavailable: {mq_harness.describe()['management']}")

    async def main():
        client = ManagementClient(management_url, provider="t")
        service = await mq_harness.open()
        names = set(service.connection_names)

        async def ids():
            return {
                c["name"]
                for c in await client.connections()
                if (c.get("client_properties") or {}).get("connection_name") in names
            }

        try:
            async def listed():
                return bool(await ids())

            await until(listed, "the management API lists the connection")
            before = await ids()
            await sever_connection(service)

            async def gone():
                return not (before & await ids())

            await until(gone, "the severed connections disappear")
        finally:
            await service.close()

    asyncio.run(main())
"""

MEMORY = """
def test_faults(mq_harness, terminate_listener, sever_connection, disable_notify_trigger):
    async def main():
        service = await mq_harness.open()
        await terminate_listener(service)

    asyncio.run(main())
"""


def run(
    pytester: pytest.Pytester, provisioned: Provisioned, provider: str, body: str, passed: int
) -> None:
    """Run ``body`` against ``provider``; a missing backend skips (or fails when required)."""
    provisioned(provider)  # the backend is there, or this test skips (fails) here
    pytester.makepyfile(HEADER.format(provider=provider) + body)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio", "-rs")
    output = result.stdout.str()
    if result.parseoutcomes().get("skipped") and "management API unavailable" in output:
        pytest.skip(f"{provider}: {output.splitlines()[-2]}")
    result.assert_outcomes(passed=passed)


#: The in-memory harness without its push-connection fault.
NO_KILL_LISTENER = """
from mqcontract.testing import HookUnavailable
from mqcontract_fixtures.memory import MemoryHarness


class NoKillListener(MemoryHarness):
    async def kill_listener(self, service):
        raise HookUnavailable("no-kill-listener: no kill_listener hook")


def make_harness(settings):
    return NoKillListener("no-kill-listener", settings)
"""


def test_faults_the_harness_cannot_inject_skip_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(no_kill_listener=NO_KILL_LISTENER)
    pytester.syspathinsert()
    pytester.makepyfile(HEADER.format(provider="no_kill_listener:make_harness") + MEMORY)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*fault not available: no-kill-listener: no kill_listener hook*"])


def test_pgmq_trigger_and_listener_faults(
    pytester: pytest.Pytester, provisioned: Provisioned
) -> None:
    run(pytester, provisioned, "pgmq", PGMQ, passed=2)


def test_rabbitmq_sever_connection_fault(
    pytester: pytest.Pytester, provisioned: Provisioned
) -> None:
    run(pytester, provisioned, "rabbitmq", RABBITMQ, passed=1)


def test_without_the_management_plugin_what_needs_it_skips_with_the_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, provisioned: Provisioned
) -> None:
    """RabbitMQ's default: nothing listens where the management URL is derived to."""
    import socket

    import mqcontract.config

    provisioned("rabbitmq")  # the broker is there, or this test skips (fails) here
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(mqcontract.config, "DEFAULT_MANAGEMENT_PORT", closed)
    monkeypatch.delenv("RABBITMQ_MANAGEMENT_URL", raising=False)
    pytester.makepyfile(HEADER.format(provider="rabbitmq") + RABBITMQ)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*management API unavailable: unavailable*"])
