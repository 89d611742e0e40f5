"""Broken release at close: resources a closed service keeps (ERR-13).

Each keeps every promise about operations: after close they raise ProviderClosed, a
closed subscription ends, so ERR-3 passes them. What they forget is to give back what
they took: a worker thread a closed service leaves running, a file it leaves open, a
listener task a closed subscription leaves running while its service stays open. Each
leaks one per service (or subscription), and a long-running process that opens and
closes them runs out.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import weakref
from typing import IO, Any

from mqcontract.providers.memory import InMemoryMessagingService, _Queue
from mqcontract.subscription import QueueSubscription
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "CloseLeavesFlusherThread",
    "CloseLeavesJournalOpen",
    "SubscriptionLeavesKeepaliveTask",
]


def _flush_until(service: weakref.ref[InMemoryMessagingService], stop: threading.Event) -> None:
    """The flusher's loop: wakes now and then until told to stop (or, as a last resort,
    until its service was garbage collected)."""
    while not stop.wait(0.1):
        if service() is None:
            return


class CloseLeavesFlusherThread(InMemoryMessagingService):
    """close() does not stop the flusher thread its first send started: every closed
    service keeps a thread running (until the service happens to be collected)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flusher: threading.Thread | None = None
        self._stop_flusher = threading.Event()

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        if self._flusher is None:  # started lazily, by the first send
            self._flusher = threading.Thread(
                target=_flush_until,
                args=(weakref.ref(self), self._stop_flusher),
                name="memory-flusher",
                daemon=True,
            )
            self._flusher.start()
        return super()._enqueue(queue, payload, delay)

    async def close(self) -> None:
        await super().close()
        # The defect: self._stop_flusher.set() and a join of the thread are missing.


class CloseLeavesJournalOpen(InMemoryMessagingService):
    """close() does not close the journal file its first send opened: every closed
    service keeps a file descriptor open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._journal: IO[bytes] | None = None

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        if self._journal is None:  # opened lazily, by the first send
            self._journal = tempfile.TemporaryFile(prefix="mq-journal-")  # noqa: SIM115
        self._journal.write(len(payload).to_bytes(4, "big") + payload)
        return super()._enqueue(queue, payload, delay)

    async def close(self) -> None:
        await super().close()
        # The defect: self._journal.close() is missing.


class SubscriptionLeavesKeepaliveTask(InMemoryMessagingService):
    """A closed subscription's keepalive task keeps running while its service is open
    (it checks whether the service is closed, not the subscription): every subscription
    opened and closed leaves a task behind until close."""

    #: Seconds (of the service's clock) between two keepalives.
    KEEPALIVE = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keepalives: set[asyncio.Task[None]] = set()

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        subscription = await super()._subscribe(names)
        task = asyncio.create_task(self._keepalive(names), name=f"keepalive-{'+'.join(names)}")
        self._keepalives.add(task)
        task.add_done_callback(self._keepalives.discard)
        return subscription

    async def _keepalive(self, names: tuple[str, ...]) -> None:
        while not self._closed:  # the defect: the subscription's own end is not checked
            await self.clock.sleep(self.KEEPALIVE)
            for name in names:
                self._queues.get(name)  # the queue is still there: nothing to do

    async def close(self) -> None:
        await super().close()
        for task in list(self._keepalives):
            task.cancel()


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(CloseLeavesFlusherThread, "ERR-13"),
    Specimen(CloseLeavesJournalOpen, "ERR-13"),
    Specimen(SubscriptionLeavesKeepaliveTask, "ERR-13"),
)
