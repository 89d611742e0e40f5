"""Deliberately broken providers: each breaks one promise that one rule must catch.

They are small subclasses of the in-memory provider, so everything but the one defect
stays correct and the rule that fails is the rule about that defect.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import weakref
from collections.abc import Sequence

from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.clock import VirtualClock
from mqcontract.config import MessagingConfig
from mqcontract.errors import MessageNotFound
from mqcontract.messages import Available, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract.service import MessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract.testing import Harness, HarnessSettings


class SignalMemory(InMemoryMessagingService):
    """A correct signal-only provider (Available + fetch by id), to exercise SIGNAL rules."""

    provider_name = "signal-memory"
    announce_offset = 0

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, push=PushKind.SIGNAL)

    async def subscribe_many(self, queues: Sequence[str]) -> QueueSubscription:
        for q in queues:
            self._queue(q)
        sub = QueueSubscription(tuple(queues), on_close=self._drop_signal_sub)
        self._signal_subs = [*getattr(self, "_signal_subs", []), sub]
        return sub

    async def _drop_signal_sub(self, sub: QueueSubscription) -> None:
        self._signal_subs.remove(sub)

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        msg_id = super()._enqueue(queue, payload, delay)
        for sub in getattr(self, "_signal_subs", []):
            if queue.name in sub.queues:
                sub.put(Available(queue.name, msg_id + self.announce_offset))
        return msg_id


class NoopAck(InMemoryMessagingService):
    async def ack_message(self, queue: str, msg_id: int) -> None:
        self._queue(queue)


class NackDeletes(InMemoryMessagingService):
    async def nack_message(self, queue: str, msg_id: int) -> None:
        await super().ack_message(queue, msg_id)


class VisibilityNeverExpires(InMemoryMessagingService):
    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        await super().receive_messages(queue, limit, visibility_timeout)  # validate only
        return []


class ReversedReceive(InMemoryMessagingService):
    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return list(reversed(await super().receive_messages(queue, limit, visibility_timeout)))


class LimitIgnored(InMemoryMessagingService):
    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return await super().receive_messages(queue, 1000, visibility_timeout)


class DelayIgnored(InMemoryMessagingService):
    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int:
        return await super().send_message(queue, payload)


class PushDropsEveryThird(InMemoryMessagingService):
    async def subscribe_many(self, queues: Sequence[str]) -> QueueSubscription:
        sub = await super().subscribe_many(queues)
        original = sub.put
        count = 0

        def lossy_put(note: object) -> bool:
            nonlocal count
            count += 1
            return True if count % 3 == 0 else original(note)  # type: ignore[arg-type]

        sub.put = lossy_put  # type: ignore[method-assign,assignment]
        return sub


class WrongAvailableId(SignalMemory):
    announce_offset = 1


class LyingFetchFlag(InMemoryMessagingService):
    @property
    def supports_fetch_by_message_id(self) -> bool:
        return False


class OversizeAccepted(InMemoryMessagingService):
    async def send_message(self, queue: str, payload: bytes) -> int:
        return self._enqueue(self._queue(queue), bytes(payload), 0.0)


class SilentAckOfUnknown(InMemoryMessagingService):
    async def ack_message(self, queue: str, msg_id: int) -> None:
        with contextlib.suppress(MessageNotFound):
            await super().ack_message(queue, msg_id)


class SilentDropOnMissingQueue(InMemoryMessagingService):
    async def send_message(self, queue: str, payload: bytes) -> int:
        if not await self.queue_exists(queue):
            return 0
        return await super().send_message(queue, payload)


class NoNameValidation(InMemoryMessagingService):
    async def create_queue(self, name: str) -> None:
        self._queues.setdefault(name, _Queue(name))


class StillWorksAfterClose(InMemoryMessagingService):
    async def close(self) -> None:
        """Forgets to close."""


class RawKeyError(InMemoryMessagingService):
    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        if queue not in self._queues:
            raise KeyError(queue)
        return await super().receive_messages(queue, limit, visibility_timeout)


class ReceiveCountStuck(InMemoryMessagingService):
    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        got = await super().receive_messages(queue, limit, visibility_timeout)
        return [dataclasses.replace(m, receive_count=1) for m in got]


class DeleteKeepsMessages(InMemoryMessagingService):
    async def delete_queue(self, name: str) -> None:
        queue = self._queues.get(name)
        await super().delete_queue(name)
        if queue is not None:
            self._stash = queue

    async def create_queue(self, name: str) -> None:
        stash = getattr(self, "_stash", None)
        if stash is not None and stash.name == name:
            self._queues[name] = stash
            return
        await super().create_queue(name)


class ConcurrentDoubleDelivery(InMemoryMessagingService):
    """Every other receive ignores claims, so two receivers can hold one message."""

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        got = await super().receive_messages(queue, limit, visibility_timeout)
        self._last = [*getattr(self, "_last", []), *got][-3:]
        return got + self._last[:1] if got else got


class PushedCopySettledByOldClaim(InMemoryMessagingService):
    """Ack and nack name a message: a pushed copy still waiting in a subscription counts
    as held, so the previous holder's ack settles it."""

    def _held_entry(self, queue: _Queue, msg_id: int) -> _Entry:
        entry = queue.entries.get(msg_id)
        if entry is not None:
            entry.waiting = None
        return super()._held_entry(queue, msg_id)


#: Who made each claim (see DeadHoldersKeepClaims).
_CLAIMED_BY: weakref.WeakKeyDictionary[_Entry, InMemoryMessagingService] = (
    weakref.WeakKeyDictionary()
)


class DeadHoldersKeepClaims(InMemoryMessagingService):
    """A claim stays with the instance that made it: after its timeout only that holder
    receives the message again, so what a killed process held never comes back."""

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        _CLAIMED_BY[entry] = self
        return super()._claim(queue, entry, visibility_timeout)

    def _pop_visible(self, queue: _Queue) -> _Entry | None:
        others: list[_Entry] = []
        try:
            while (entry := super()._pop_visible(queue)) is not None:
                if _CLAIMED_BY.get(entry, self) is self:
                    return entry
                others.append(entry)
            return None
        finally:
            for entry in others:
                heapq.heappush(queue.ready, entry.msg_id)


class CrashingClassHarness(Harness):
    """Opens an instance of a given in-memory subclass on a virtual clock, and plays
    ``crash_holder`` in-process: a second instance on the same storage (another process
    on the same backend) takes the messages and is dropped without closing (killed)."""

    def __init__(self, cls: type[InMemoryMessagingService]) -> None:
        super().__init__(cls.__name__, HarnessSettings(config=MessagingConfig(), run_id="t"))
        self.cls = cls

    def new_clock(self) -> VirtualClock | None:
        return VirtualClock()

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        return self.cls(clock=clock)

    async def crash_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> list[int]:
        assert isinstance(service, self.cls)
        holder = self.cls(clock=service.clock)
        holder._queues = service._queues  # the same backend
        got = await holder.receive_messages(queue, count, visibility_timeout)
        # Killed: never closed (closing an instance clears the storage it shares).
        return [m.msg_id for m in got]


#: broken provider -> the rule that must catch it
CAUGHT_BY: dict[type[InMemoryMessagingService], str] = {
    NoopAck: "ACK-1",
    NackDeletes: "ACK-2",
    VisibilityNeverExpires: "VT-2",
    ReversedReceive: "ORD-2",
    LimitIgnored: "RECV-1",
    DelayIgnored: "DLY-1",
    PushDropsEveryThird: "PUSH-1",
    WrongAvailableId: "PUSH-3",
    LyingFetchFlag: "PUSH-11",
    OversizeAccepted: "SEND-7",
    SilentAckOfUnknown: "ACK-4",
    SilentDropOnMissingQueue: "LIFE-6",
    NoNameValidation: "LIFE-7",
    StillWorksAfterClose: "ERR-3",
    RawKeyError: "ERR-1",
    ReceiveCountStuck: "VT-5",
    DeleteKeepsMessages: "LIFE-2",
    ConcurrentDoubleDelivery: "VT-3",
    PushedCopySettledByOldClaim: "PUSH-12",
    DeadHoldersKeepClaims: "ERR-8",
}
