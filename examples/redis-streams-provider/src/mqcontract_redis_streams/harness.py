"""The harness mqcontract's suite drives this provider through.

Each run (and xdist worker) gets its own key prefix, ``<key_prefix>_<run id>``, so its
queue registry is its own: ``list_queues`` in one run never sees the queues another run
is creating at the same time on the same server (as PGMQ's harness uses a database per
run and RabbitMQ's a vhost). ``setup`` checks the server answers (else
``BackendUnavailable``, which the suite turns into a skip, or a failure with
``--require-backends``); ``teardown`` deletes every key under the run's prefix. Hooks:

* ``sever_connection`` / ``kill_listener``: ``CLIENT KILL`` every connection whose name is
  the provider's (operations) or the provider's + ``-push`` (subscription readers), as a
  server restart or a proxy would.
* ``stored_ids``: ``XRANGE`` on the stream plus the delayed set — it reads without
  claiming, so it changes nothing it observes.
* ``crash_holder`` / ``freeze_holder``: a separate process opens the provider on this
  run's keys, holds messages and is SIGKILLed / SIGSTOPped (``mqcontract_fixtures``).
* ``suppress_notifications`` is unavailable: push reads the stream itself, so there is no
  separate notification that could be lost while the message is stored.
* ``publish_foreign`` is unavailable: ids come from the send script's counter, never from
  a producer (``producer_assigned_ids=False``), so no two messages can share one.
* ``private_backend``: a Redis server of the run's own (``mqcontract_fixtures.private``:
  AOF on, ``appendfsync always``), started on first use; the DUR rules crash it.
  ``teardown`` removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import redis
from mqcontract.clock import VirtualClock
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings, HookUnavailable, PrivateBackend
from mqcontract_fixtures.holders import Opener, crash_holder, freeze_holder
from mqcontract_fixtures.private._server import PrivateSlot, ServerBackend, require

from mqcontract_redis_streams import __version__
from mqcontract_redis_streams._config import PROVIDER_NAME, RedisStreamsConfig, load_settings
from mqcontract_redis_streams.service import (
    RedisStreamsMessagingService,
    connect_redis_streams,
    make_client,
)

__all__ = ["RedisStreamsHarness", "redis_streams_harness"]

#: Bound on the harness's own calls.
PROBE_TIMEOUT = 5.0
#: The push timeout of the suite's services (PUSH-7 waits one out).
PUSH_TIMEOUT_SECONDS = 10.0


class RedisStreamsHarness(Harness):
    """A fresh provider (own connection pool) per case."""

    def __init__(self, name: str, settings: HarnessSettings) -> None:
        super().__init__(name, settings)
        base = load_settings(settings.config)
        run = re.sub(r"[^a-z0-9_]", "_", settings.run_id.lower())
        self.config: RedisStreamsConfig = dataclasses.replace(
            base,
            key_prefix=f"{base.key_prefix}_{run}",
            # PUSH-7 waits a whole push timeout out: keep it short in the suite.
            push_visibility_timeout_seconds=min(
                base.push_visibility_timeout_seconds, PUSH_TIMEOUT_SECONDS
            ),
        )
        self._facts: dict[str, str] = {}
        self._private = PrivateSlot(name, self._start_private)

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        return await connect_redis_streams(
            self.config, operation_timeout=self.settings.config.operation_timeout_seconds
        )

    async def setup(self) -> None:
        service = await connect_redis_streams(self.config, operation_timeout=PROBE_TIMEOUT)
        try:
            self._facts = {
                "version": __version__,
                "server": f"Redis {service.server_version}",
                "redis_py": redis.__version__,
                "key_prefix": self.config.key_prefix,
            }
        finally:
            await service.close()

    async def teardown(self) -> None:
        """Delete every key under this run's prefix (registry, queues, id counters)."""
        try:
            service = await connect_redis_streams(self.config, operation_timeout=PROBE_TIMEOUT)
            try:
                async with asyncio.timeout(PROBE_TIMEOUT * 10):
                    pattern = f"{self.config.key_prefix}:*"
                    async for key in service.client.scan_iter(match=pattern, count=500):
                        await service.client.delete(key)
            finally:
                await service.close()
        finally:
            await self._private.close()

    def describe(self) -> dict[str, str]:
        return dict(self._facts)

    # -- hooks -------------------------------------------------------------------------

    @staticmethod
    def _service(service: MessagingService) -> RedisStreamsMessagingService:
        if not isinstance(service, RedisStreamsMessagingService):
            raise HookUnavailable(f"not a redis-streams service: {type(service).__name__}")
        return service

    async def _kill(self, name: str) -> int:
        """CLIENT KILL every connection named ``name``; how many there were."""
        admin = make_client(self.config, f"{name}-admin")
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                clients = await admin.client_list()
                ids = [str(c["id"]) for c in clients if c.get("name") == name]
                for client_id in ids:
                    with contextlib.suppress(redis.ResponseError):  # already gone
                        await admin.client_kill_filter(_id=client_id)
            return len(ids)
        finally:
            await admin.aclose()

    async def sever_connection(self, service: MessagingService) -> None:
        await self._kill(self._service(service).client_name)

    async def kill_listener(self, service: MessagingService) -> None:
        """Kill the subscription readers' connections (waiting for one to be open)."""
        rs = self._service(service)
        if not rs.subscription_count:
            raise HookUnavailable(f"{self.name}: kill_listener needs a subscription")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_TIMEOUT
        # A reader reconnects lazily, so right after a kill there may be nothing to kill.
        while True:
            if await self._kill(f"{rs.client_name}-push") or loop.time() >= deadline:
                return
            await asyncio.sleep(0.01)

    async def suppress_notifications(
        self, service: MessagingService, queue: str
    ) -> Callable[[], Awaitable[None]]:
        raise HookUnavailable(
            f"{PROVIDER_NAME}: push reads the stream itself; no notification can be lost apart "
            "from the message"
        )

    async def crash_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> list[int]:
        self._service(service)
        return await crash_holder(
            self._opener(), self.settings.config, queue, count, visibility_timeout
        )

    def freeze_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> AbstractAsyncContextManager[list[int]]:
        self._service(service)
        return freeze_holder(self._opener(), self.settings.config, queue, count, visibility_timeout)

    def _opener(self) -> Opener:
        """How a holder process opens this provider on this run's keys."""
        return Opener(
            f"{__name__}:open_holder",
            {
                "settings": dataclasses.asdict(self.config),
                "operation_timeout": self.settings.config.operation_timeout_seconds,
            },
        )

    async def publish_foreign(
        self, service: MessagingService, queue: str, msg_id: int, payload: bytes
    ) -> None:
        raise HookUnavailable(
            f"{PROVIDER_NAME}: ids come from the send script's counter, never from a producer"
        )

    async def stored_ids(self, service: MessagingService, queue: str) -> list[int]:
        return await self._service(service).stored_ids(queue)

    async def private_backend(self) -> PrivateBackend:
        return await self._private.get()

    async def _start_private(self) -> ServerBackend:
        from mqcontract_fixtures.private.redis import PrivateRedis

        require(PrivateRedis, "redis-server")
        server = PrivateRedis()
        await server.start()
        config = dataclasses.replace(self.config, url=server.url)
        timeout = self.settings.config.operation_timeout_seconds

        async def opener(clock: VirtualClock | None) -> MessagingService:
            return await connect_redis_streams(config, operation_timeout=timeout)

        facts = {"server": f"private Redis on port {server.port}", **server.settings()}
        return ServerBackend(server, opener, facts)


async def open_holder(
    settings: dict[str, Any], operation_timeout: float
) -> RedisStreamsMessagingService:
    """Opens the provider in a holder process (``crash_holder``, ``freeze_holder``)."""
    return await connect_redis_streams(
        RedisStreamsConfig(**settings), operation_timeout=operation_timeout
    )


def redis_streams_harness(settings: HarnessSettings) -> Harness:
    """Harness factory for the ``redis-streams`` entry point (``mqcontract.harnesses``)."""
    return RedisStreamsHarness(PROVIDER_NAME, settings)
