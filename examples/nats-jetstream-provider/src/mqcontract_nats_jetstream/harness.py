"""The harness mqcontract's suite drives this provider through.

Each run (and xdist worker) gets its own prefix, ``<prefix>_<run id>``: its streams are
``<prefix>_<run id>-<queue>`` and its subjects start with ``<prefix>_<run id>.``, so
``list_queues`` in one run never sees the queues another run is creating on the same
server. ``setup`` checks JetStream answers (else ``BackendUnavailable``: a skip, or a
failure with ``--require-backends``); ``teardown`` deletes every stream on the run's
subjects. Hooks:

* ``sever_connection`` / ``kill_listener``: the kernel destroys the TCP connection of the
  provider's operations (and of its subscriptions), or of its subscriptions only, at both
  ends (``ss -K``, as root), as a network failure would; the hook returns once nats-py has
  seen it drop. nats-server 2.9 has no API to kick one client.
* ``stored_ids``: the stream's first and last sequence and its deleted ones
  (``STREAM.INFO`` with ``deleted_details``): no delivery, nothing changed.
* ``crash_holder`` / ``freeze_holder``: a separate process opens the provider on this
  run's streams, holds messages and is SIGKILLed / SIGSTOPped (``mqcontract_fixtures``).
* ``suppress_notifications`` is unavailable: push is a pull request the server answers
  from the stream; no notification can be lost apart from the message.
* ``publish_foreign`` is unavailable: ids are stream sequences, never a producer's.
* ``private_backend``: a nats-server of the run's own with JetStream on a file store
  (``mqcontract_fixtures.private.nats``), started on first use; the DUR rules SIGKILL it
  and start it on the same store. nats-server 2.9 has no per-message fsync setting: a
  crash of the process keeps what reached the OS. ``teardown`` removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import re
import shutil
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from mqcontract.clock import VirtualClock
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings, HookUnavailable, PrivateBackend
from mqcontract.testing.sides import Side
from mqcontract_fixtures.holders import Opener, crash_holder, freeze_holder
from mqcontract_fixtures.private._loop import LoopBoundServer, start_threaded
from mqcontract_fixtures.private._loop import Opener as BackendOpener
from mqcontract_fixtures.private._server import OwnedBackend, PrivateSlot

from mqcontract_nats_jetstream import __version__
from mqcontract_nats_jetstream._config import PROVIDER_NAME, NatsJetStreamConfig, load_settings
from mqcontract_nats_jetstream._errors import STREAM_NOT_FOUND, JsError
from mqcontract_nats_jetstream._link import Link
from mqcontract_nats_jetstream.service import NatsJetStreamMessagingService, connect_nats_jetstream

__all__ = ["NatsJetStreamHarness", "nats_jetstream_harness"]

#: Bound on the harness's own calls.
PROBE_TIMEOUT = 5.0
#: The push timeout of the suite's services (PUSH-7 and VT-8 wait one out).
PUSH_TIMEOUT_SECONDS = 10.0


#: The ack wait (``fetch_grace_seconds``) of queues on the harness's private server (see
#: ``NatsJetStreamHarness.known_broken``).
PRIVATE_ACK_WAIT = 60.0


class NatsJetStreamHarness(Harness):
    """A fresh provider (own connection) per case."""

    #: A nack is a plain ``-NAK``, whose redelivery nats-server never writes down; a claim's
    #: timeout is a ``-NAK`` with a delay, which it writes down as the delivery's time in
    #: the consumer's state, flushed asynchronously (at most every 100 ms) after the nak
    #: was acknowledged. Measured on private servers, 2.9.10 and 2.15.1 alike (consumer ack
    #: wait 20 s, SIGKILL, restart): a plain nak 0.5 s before the crash, back after the ack
    #: wait (19.4-19.7 s); a nak with a 3 s delay 0.5 s before it, back at 2.9 s (the state
    #: keeps whole seconds); either nak just before it, back after the ack wait. The rules
    #: crash the server as soon as the nack or the claim returned. The private server's
    #: queues use an ack wait of :data:`PRIVATE_ACK_WAIT`, past the rules' recovery bound at
    #: any timing scale up to 6: with the default 10 s, a nacked message delivered a little
    #: over 10 s before the bound ran out came back in time, and DUR-2 passed now and then.
    known_broken: dict[str, str] = {
        "DUR-2": "nats-server never writes down the redelivery a plain nak asks for: after "
        "a crash a message nacked before it waits for the consumer's ack wait instead",
        "DUR-3": "a claim's timeout is a nak with a delay, which nats-server writes down "
        "only up to 100 ms after acknowledging it: after a crash at once the claim lasts "
        "the consumer's ack wait, not its own timeout",
    }

    def __init__(self, name: str, settings: HarnessSettings) -> None:
        super().__init__(name, settings)
        base = load_settings(settings.config)
        run = re.sub(r"[^a-z0-9_]", "_", settings.run_id.lower())
        self.config: NatsJetStreamConfig = dataclasses.replace(
            base,
            prefix=f"{base.prefix}_{run}",
            # PUSH-7 waits a whole push timeout out: keep it short in the suite.
            push_visibility_timeout_seconds=min(
                base.push_visibility_timeout_seconds, PUSH_TIMEOUT_SECONDS
            ),
        )
        self._facts: dict[str, str] = {}
        self._private = PrivateSlot(name, self._start_private)

    async def _connect(self, operation_timeout: float) -> NatsJetStreamMessagingService:
        return await connect_nats_jetstream(self.config, operation_timeout=operation_timeout)

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        return await self._connect(self.settings.config.operation_timeout_seconds)

    async def setup(self) -> None:
        service = await self._connect(PROBE_TIMEOUT)
        try:
            self._facts = {
                "version": __version__,
                "server": f"nats-server {service.server_version}",
                "nats_py": importlib.metadata.version("nats-py"),
                "prefix": self.config.prefix,
                "replicas": str(self.config.replicas),
            }
        finally:
            await service.close()

    async def teardown(self) -> None:
        """Delete every stream on this run's subjects (queues and their ledgers)."""
        try:
            service = await self._connect(PROBE_TIMEOUT)
            try:
                async with asyncio.timeout(PROBE_TIMEOUT * 10):
                    for stream in await run_streams(service.link, self.config.prefix):
                        with contextlib.suppress(JsError):
                            await service.link.api(f"STREAM.DELETE.{stream}")
            finally:
                await service.close()
        finally:
            await self._private.close()

    async def private_backend(self) -> PrivateBackend:
        return await self._private.get()

    async def _start_private(self) -> OwnedBackend:
        from mqcontract_fixtures.private.nats import PrivateNatsServer, nats_available

        if not nats_available():
            raise HookUnavailable("no nats-server installed for a private server")
        timeout = self.settings.config.operation_timeout_seconds

        def opener(server: LoopBoundServer) -> BackendOpener:
            assert isinstance(server, PrivateNatsServer)
            # One server: its streams can have one replica, whatever the run's setting.
            config = dataclasses.replace(
                self.config, url=server.url, replicas=1, fetch_grace_seconds=PRIVATE_ACK_WAIT
            )

            async def open_on(clock: VirtualClock | None) -> MessagingService:
                return await connect_nats_jetstream(config, operation_timeout=timeout)

            return open_on

        facts = {"server": "private nats-server (JetStream, file store)"}
        return await start_threaded(f"{self.name}-private", PrivateNatsServer, opener, facts)

    def describe(self) -> dict[str, str]:
        return dict(self._facts)

    def raw_sides(self, workers: int) -> Sequence[Side]:
        """nats-py alone: publish with acks, pull and ack, a pull consumer loop."""
        from mqcontract_nats_jetstream.raw import NatsPySide

        return [NatsPySide(self.config)]

    # -- hooks -------------------------------------------------------------------------

    @staticmethod
    def _service(service: MessagingService) -> NatsJetStreamMessagingService:
        if not isinstance(service, NatsJetStreamMessagingService):
            raise HookUnavailable(f"not a nats-jetstream service: {type(service).__name__}")
        return service

    async def _kill(self, links: Sequence[Link]) -> None:
        """Destroy each link's TCP connection at both ends; return once each saw it drop."""
        if shutil.which("ss") is None:
            raise HookUnavailable(f"{self.name}: needs `ss -K` (iproute2) to kill a connection")
        before = [(link, link.drops) for link in links]
        for link in links:
            port, server_port = link.local_port(), link.server_port()
            if port is None or server_port is None:  # reconnecting: the connection is dead
                continue
            await kill_sockets(port, server_port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_TIMEOUT
        while any(link.drops == drops for link, drops in before):
            if loop.time() >= deadline:
                raise HookUnavailable(
                    f"{self.name}: `ss -K` killed nothing (needs root and a kernel with "
                    "CONFIG_INET_DIAG_DESTROY)"
                )
            await asyncio.sleep(0.01)

    async def sever_connection(self, service: MessagingService) -> None:
        js = self._service(service)
        await self._kill([js.link, *js.push_links])

    async def kill_listener(self, service: MessagingService) -> None:
        links = self._service(service).push_links
        if not links:
            raise HookUnavailable(f"{self.name}: kill_listener needs a subscription")
        await self._kill(links)

    async def suppress_notifications(
        self, service: MessagingService, queue: str
    ) -> Callable[[], Awaitable[None]]:
        raise HookUnavailable(
            f"{PROVIDER_NAME}: push is a pull request answered from the stream; no "
            "notification can be lost apart from the message"
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
        """How a holder process opens this provider on this run's streams."""
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
        raise HookUnavailable(f"{PROVIDER_NAME}: ids are stream sequences, never a producer's")

    async def stored_ids(self, service: MessagingService, queue: str) -> list[int]:
        return await self._service(service).stored_ids(queue)


async def kill_sockets(client_port: int, server_port: int) -> None:
    """``ss -K``: the kernel destroys the TCP sockets between ``client_port`` and the
    server port, both ends when the server is local (the peer then sees a reset)."""
    selector = (
        f"( sport = :{client_port} and dport = :{server_port} ) or "
        f"( sport = :{server_port} and dport = :{client_port} )"
    )
    process = await asyncio.create_subprocess_exec(
        "ss",
        "-K",
        "-t",
        selector,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(PROBE_TIMEOUT):
        await process.wait()


async def run_streams(link: Link, prefix: str) -> list[str]:
    """Every stream on ``<prefix>.>`` whose name is ``<prefix>-...``."""
    found: list[str] = []
    while True:
        try:
            reply = await link.api("STREAM.NAMES", {"subject": f"{prefix}.>", "offset": len(found)})
        except JsError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                break
            raise
        page = reply.get("streams") or []
        found.extend(page)
        if not page or len(found) >= int(reply.get("total", 0)):
            break
    return [name for name in found if name.startswith(f"{prefix}-")]


async def open_holder(
    settings: dict[str, Any], operation_timeout: float
) -> NatsJetStreamMessagingService:
    """Opens the provider in a holder process (``crash_holder``, ``freeze_holder``)."""
    return await connect_nats_jetstream(
        NatsJetStreamConfig(**settings), operation_timeout=operation_timeout
    )


def nats_jetstream_harness(settings: HarnessSettings) -> Harness:
    """Harness factory for the ``nats-jetstream`` entry point (``mqcontract.harnesses``)."""
    return NatsJetStreamHarness(PROVIDER_NAME, settings)
