"""The harness mqcontract's suite drives this provider through.

Each run (and xdist worker) gets its own tube prefix, ``<tube_prefix>_<run id>``, so its
queues are its own: ``list_queues`` in one run never sees the queues another run is
creating on the same server. ``setup`` checks the server answers (else
``BackendUnavailable``, which the suite turns into a skip, or a failure with
``--require-backends``); ``teardown`` empties every tube under the run's prefix. Hooks:

* ``sever_connection``: shuts the provider's socket down both ways, as a network failure
  would, and returns once the server has dropped the connection (the connection's own
  tube, which only it watches, is gone). beanstalkd has no command to kill another
  client's connection.
* ``stored_ids``: ``stats-job`` over the ids since the queue's marker; it claims nothing.
* ``crash_holder`` / ``freeze_holder``: a separate process opens the provider on this
  run's tubes, holds messages and is SIGKILLed / SIGSTOPped (``mqcontract_fixtures``).
* ``kill_listener`` and ``suppress_notifications`` are unavailable: there is no push.
* ``publish_foreign`` is unavailable: ids are job ids the server assigns.
* ``private_backend``: a beanstalkd of the run's own with a binlog fsynced on every write
  (``mqcontract_fixtures.private``), started on first use; the DUR rules crash it.
  ``teardown`` removes it.

``raw_sides`` gives ``mqcontract bench`` the bare protocol client (:mod:`._raw`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from mqcontract.clock import VirtualClock
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings, HookUnavailable, PrivateBackend
from mqcontract.testing.sides import Side
from mqcontract_fixtures.holders import Opener, crash_holder, freeze_holder
from mqcontract_fixtures.private._server import PrivateSlot, ServerBackend, require

from mqcontract_beanstalkd import __version__
from mqcontract_beanstalkd._config import (
    PROVIDER_NAME,
    BeanstalkdConfig,
    load_settings,
    parse_address,
)
from mqcontract_beanstalkd._protocol import Link, parse_list
from mqcontract_beanstalkd._raw import RawSide
from mqcontract_beanstalkd.service import BeanstalkdMessagingService, connect_beanstalkd

__all__ = ["BeanstalkdHarness", "beanstalkd_harness", "open_holder"]

#: Bound on the harness's own calls.
PROBE_TIMEOUT = 5.0


class BeanstalkdHarness(Harness):
    """A fresh provider (own connection) per case."""

    known_broken: dict[str, str] = {
        "HOLD-1": (
            "beanstalkd 1.12 does not reliably expire the reservations of a connection that "
            "sends nothing (time-left goes negative, the jobs stay reserved until it speaks "
            "again; beanstalkd issues #262, #380): a live holder pokes its connection once a "
            "claim is due, but a frozen one cannot, and no heartbeat bounds it (declared: "
            "enforced by the holder, no frozen-holder bound)"
        ),
        "DUR-3": (
            "beanstalkd 1.12 writes a job to its binlog when it is put, released, buried or "
            "deleted, never when it is reserved: after a crash a job's reserve count (the "
            "receive_count) is the one of its last logged change, so a message received "
            "once before the crash comes back with receive_count 1, not 2"
        ),
    }

    def __init__(self, name: str, settings: HarnessSettings) -> None:
        super().__init__(name, settings)
        base = load_settings(settings.config)
        run = re.sub(r"[^A-Za-z0-9_]", "_", settings.run_id)
        self.config: BeanstalkdConfig = dataclasses.replace(
            base, tube_prefix=f"{base.tube_prefix}_{run}"
        )
        self._facts: dict[str, str] = {}
        self._private = PrivateSlot(name, self._start_private)

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        return await connect_beanstalkd(
            self.config, operation_timeout=self.settings.config.operation_timeout_seconds
        )

    async def setup(self) -> None:
        service = await connect_beanstalkd(self.config, operation_timeout=PROBE_TIMEOUT)
        try:
            self._facts = {
                "version": __version__,
                "server": f"beanstalkd {service.server_version}",
                "max_job_size": str(service.max_job_size),
                "tube_prefix": self.config.tube_prefix,
            }
        finally:
            await service.close()

    async def teardown(self) -> None:
        """Empty every tube under this run's prefix (markers, messages)."""
        try:
            await drop_prefix(self.config)
        finally:
            await self._private.close()

    def describe(self) -> dict[str, str]:
        return dict(self._facts)

    def raw_sides(self, workers: int) -> Sequence[Side]:
        host, port = parse_address(self.config.url)
        return [RawSide(host, port, self.config.tube_prefix)]

    # -- hooks -------------------------------------------------------------------------

    @staticmethod
    def _service(service: MessagingService) -> BeanstalkdMessagingService:
        if not isinstance(service, BeanstalkdMessagingService):
            raise HookUnavailable(f"not a beanstalkd service: {type(service).__name__}")
        return service

    async def sever_connection(self, service: MessagingService) -> None:
        bs = self._service(service)
        link = bs.link
        if link is None or link.broken:
            return
        link.sever()
        own = bs.link_tube(link.serial).encode()
        host, port = parse_address(self.config.url)
        probe = await Link.connect(host, port, secrets.token_hex(8))
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + PROBE_TIMEOUT
            while (await probe.one(b"stats-tube " + own, "OK", "NOT_FOUND")).status == "OK":
                if loop.time() >= deadline:
                    raise HookUnavailable("the server still shows the severed connection")
                await asyncio.sleep(0.01)
        finally:
            await probe.close()

    async def kill_listener(self, service: MessagingService) -> None:
        raise HookUnavailable(f"{PROVIDER_NAME}: no push, so no listener")

    async def suppress_notifications(
        self, service: MessagingService, queue: str
    ) -> Callable[[], Awaitable[None]]:
        raise HookUnavailable(f"{PROVIDER_NAME}: no push, so no notification")

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
        """How a holder process opens this provider on this run's tubes."""
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
        raise HookUnavailable(f"{PROVIDER_NAME}: ids are job ids the server assigns")

    async def stored_ids(self, service: MessagingService, queue: str) -> list[int]:
        return await self._service(service).stored_ids(queue)

    async def private_backend(self) -> PrivateBackend:
        return await self._private.get()

    async def _start_private(self) -> ServerBackend:
        from mqcontract_fixtures.private.beanstalkd import PrivateBeanstalkd

        require(PrivateBeanstalkd, "beanstalkd")
        server = PrivateBeanstalkd()
        await server.start()
        config = dataclasses.replace(self.config, url=server.url)
        timeout = self.settings.config.operation_timeout_seconds

        async def opener(clock: VirtualClock | None) -> MessagingService:
            return await connect_beanstalkd(config, operation_timeout=timeout)

        facts = {"server": f"private beanstalkd on port {server.port}", **server.settings()}
        return ServerBackend(server, opener, facts)


async def drop_prefix(config: BeanstalkdConfig) -> None:
    """Delete every job in every tube under ``config.tube_prefix`` (a run's namespace)."""
    service = await connect_beanstalkd(config, operation_timeout=PROBE_TIMEOUT * 6)
    try:
        start = f"{config.tube_prefix}."
        link = service.link
        assert link is not None
        (tubes,) = await link.pipeline([b"list-tubes"])
        for tube in parse_list(tubes.body):
            if tube.startswith(start) and tube.removeprefix(start)[:2] in ("q.", "m."):
                await service.purge_tube(tube)
    finally:
        await service.close()


async def open_holder(
    settings: dict[str, Any], operation_timeout: float
) -> BeanstalkdMessagingService:
    """Opens the provider in a holder process (``crash_holder``, ``freeze_holder``)."""
    return await connect_beanstalkd(
        BeanstalkdConfig(**settings), operation_timeout=operation_timeout
    )


def beanstalkd_harness(settings: HarnessSettings) -> Harness:
    """Harness factory for the ``beanstalkd`` entry point (``mqcontract.harnesses``)."""
    return BeanstalkdHarness(PROVIDER_NAME, settings)
