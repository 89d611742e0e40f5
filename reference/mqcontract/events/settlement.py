"""Acks handed off by workers and confirmed together: a worker never waits for its ack.

A provider that confirms settlements (RabbitMQ reads every ack back so that an ack that
returned is never redelivered; PGMQ commits a DELETE) costs one round trip per ack. A
worker that waited for it would sit idle for that round trip after every message. Here a
worker hands its ack over and takes the next message; the settler settles whatever is
waiting with ``ack_claims`` (one round trip for all of them, where the provider can),
and only then is the work counted as done, or as not settled. At most ``bound`` acks are
unconfirmed at once: a worker handing over one more waits for a slot.

Up to ``depth`` batches are settled at once. With none in flight, whatever is waiting
goes at once (a lone ack pays one round trip, no more). With one in flight, acks handed
over meanwhile go in a batch of their own only once they are a fair share of the bound
(``bound / depth``); fewer wait for a batch to end. So a busy consumer keeps several
batches on their way (a broker that refills a consumer as acks arrive keeps it busy),
and a round trip always carries many acks: one ``ack_claims`` per few acks costs a
database provider a statement each (PGMQ drained a backlog at 26,000/s settling about 6
acks per statement, at 36,000/s with batches this full).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mqcontract.errors import MessagingError
from mqcontract.messages import QueuedMessage
from mqcontract.service import MessagingService

__all__ = ["AckOutcome", "Settler"]

#: Called once per handed-over ack: True settled, False stale claim, else the error
#: (outcome unknown: a connection error or a timeout).
AckOutcome = Callable[[QueuedMessage, "bool | MessagingError"], None]


class Settler:
    """Confirms handed-over acks in batches; see the module docstring."""

    def __init__(
        self,
        service: MessagingService,
        on_outcome: AckOutcome,
        *,
        bound: int,
        depth: int = 1,
    ) -> None:
        self._service = service
        self._on_outcome = on_outcome
        self._bound = max(1, bound)
        #: Free slots; a worker finding none waits for ``_freed`` (a plain counter: a
        #: semaphore's acquire cost a coroutine per ack).
        self._free = self._bound
        self._freed = asyncio.Event()
        self._depth = max(1, depth)
        #: Acks that go in a batch of their own while another is in flight.
        self._share = max(1, self._bound // self._depth)
        self._waiting: list[QueuedMessage] = []
        self._batches: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mq-settler")

    def cancelled(self) -> bool:
        """Whether the settling task ended or is being cancelled (a loop shutting down)."""
        task = self._task
        return task is not None and (task.done() or task.cancelling() > 0)

    async def ack(self, message: QueuedMessage) -> None:
        """Hand over an ack; returns once it is queued (waits only for a free slot)."""
        while self._free <= 0:
            self._freed.clear()
            await self._freed.wait()
        self._free -= 1
        self._waiting.append(message)
        self._idle.clear()
        self._wake.set()

    async def drain(self) -> None:
        """Wait until every handed-over ack has its outcome."""
        await self._idle.wait()

    async def close(self, bound: float | None = None) -> None:
        """Stop settling; acks still waiting are left to their visibility timeout, and
        each is reported with an unknown outcome (a ``MessagingError``), as is every ack
        of a batch cancelled in flight. Waits at most ``bound`` seconds for cancelled
        batches to end (a backend that stopped answering may take an operation timeout
        to give a cancelled call up).

        The settler is as new afterwards (every slot free, nothing waiting): a consumer
        started again after a stop gets its whole bound back, and ``drain`` returns.
        """
        if self._task is not None:
            self._task.cancel()
            tasks = [self._task, *self._batches]
            for task in self._batches:
                task.cancel()
            await asyncio.wait(tasks, timeout=bound)
            self._task = None
        unsent, self._waiting = self._waiting, []
        for message in unsent:
            self._on_outcome(message, MessagingError("ack not sent: the consumer stopped"))
        self._batches.clear()
        self._free = self._bound
        self._freed.set()
        self._wake.clear()
        self._idle.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._waiting:
                continue
            if len(self._batches) >= self._depth:
                continue  # a batch that ends wakes this loop again
            if self._batches and len(self._waiting) < self._share:
                continue  # too few to go beside one in flight: it ends, or more come
            batch, self._waiting = self._waiting, []
            task = asyncio.create_task(self._settle(batch))
            self._batches.add(task)
            task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        if self._waiting:
            self._wake.set()
        elif not self._batches:
            self._idle.set()

    async def _settle(self, batch: list[QueuedMessage]) -> None:
        try:
            by_queue: dict[str, list[QueuedMessage]] = {}
            for message in batch:
                by_queue.setdefault(message.queue_name, []).append(message)
            if len(by_queue) == 1:
                ((queue, messages),) = by_queue.items()
                await self._settle_queue(queue, messages)
            else:
                await asyncio.gather(*(self._settle_queue(q, m) for q, m in by_queue.items()))
        finally:
            self._free += len(batch)
            self._freed.set()

    async def _settle_queue(self, queue: str, messages: list[QueuedMessage]) -> None:
        try:
            settled = await self._service.ack_claims(queue, messages)
        except asyncio.CancelledError:
            unknown = MessagingError("ack cancelled in flight at stop: outcome unknown")
            for message in messages:
                self._on_outcome(message, unknown)
            raise
        except Exception as exc:  # a provider's bug must not stop every later ack
            failure = exc if isinstance(exc, MessagingError) else MessagingError(repr(exc))
            for message in messages:
                self._on_outcome(message, failure)
            return
        for message, ok in zip(messages, settled, strict=True):
            self._on_outcome(message, ok)
