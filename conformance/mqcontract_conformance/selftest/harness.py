"""The harness every specimen runs under unless it brings its own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from mqcontract.clock import VirtualClock
from mqcontract.config import MessagingConfig
from mqcontract.providers.memory import InMemoryMessagingService, MemoryStore
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings
from mqcontract_conformance.selftest.references import ForeignIdsMemory

__all__ = ["FROZEN", "SpecimenHarness"]

#: Set (to True) on an instance the harness froze; timers a provider runs itself check it.
FROZEN = "frozen"


class SpecimenHarness(Harness):
    """Opens an instance of a given in-memory subclass on a virtual clock, and plays
    ``crash_holder`` in-process: a second instance on the same storage (another process
    on the same backend) takes the messages and is dropped without closing (killed)."""

    def __init__(self, cls: type[InMemoryMessagingService]) -> None:
        super().__init__(cls.__name__, HarnessSettings(config=MessagingConfig(), run_id="t"))
        self.cls = cls
        self._stores: dict[int, MemoryStore] = {}

    def new_clock(self) -> VirtualClock | None:
        return VirtualClock()

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        # Services of one case share a store, as processes share a broker.
        store = self._stores.setdefault(id(clock), MemoryStore())
        return self.cls(clock=clock, store=store)

    async def publish_foreign(
        self, service: MessagingService, queue: str, msg_id: int, payload: bytes
    ) -> None:
        if not isinstance(service, ForeignIdsMemory):
            await super().publish_foreign(service, queue, msg_id, payload)
            return
        service.publish_foreign(queue, msg_id, payload)

    async def sever_connection(self, service: MessagingService) -> None:
        # The service's connection to its store drops: what it held is released.
        assert isinstance(service, self.cls)
        service.sever()

    async def crash_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> list[int]:
        assert isinstance(service, self.cls)
        holder = self.cls(clock=service.clock, store=service.store)  # the same backend
        got = await holder.receive_messages(queue, count, visibility_timeout)
        # Killed: never closed.
        return [m.msg_id for m in got]

    @contextlib.asynccontextmanager
    async def freeze_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> AsyncIterator[list[int]]:
        """In-process SIGSTOP: a second instance on the same storage takes the messages and
        then runs nothing: it is never called again, and its own timers (if a provider
        keeps any) stop, which is what :data:`FROZEN` on the instance tells them."""
        assert isinstance(service, self.cls)
        holder = self.cls(clock=service.clock, store=service.store)
        got = await holder.receive_messages(queue, count, visibility_timeout)
        setattr(holder, FROZEN, True)
        yield [m.msg_id for m in got]
