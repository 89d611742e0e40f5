"""The fallback poller: finds what push missed (or does all the work in PollingOnly)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from mqcontract.clock import Clock
from mqcontract.errors import MessagingError
from mqcontract.events.commands import CommandSender, Intake, ProcessClaimed
from mqcontract.events.stats import ConsumerStats
from mqcontract.messages import QueuedMessage
from mqcontract.service import MessagingService

__all__ = ["FallbackPoller", "drain_queue"]

log = logging.getLogger(__name__)


async def drain_queue(
    service: MessagingService,
    queue: str,
    sender: CommandSender,
    *,
    batch_size: int,
    visibility_timeout: float,
    path: Intake,
    clock: Clock,
    released: Callable[[], int] = lambda: 0,
    sent: Callable[[int], None] = lambda count: None,
    stranded: Callable[[Sequence[QueuedMessage]], None] = lambda messages: None,
) -> int:
    """Claim everything visible on ``queue`` and send it on; returns the count.

    ``sent`` is told each share's size as soon as the share is sent on, so what a drain
    that fails (or is cancelled) later sent is counted too. ``stranded`` is given the
    claimed messages a drain could not send on because it was cancelled (or failed) while
    waiting on a full channel: nobody else knows of them, and the caller releases them
    (a consumer at stop), instead of their waiting out the visibility timeout.

    A batch is claimed only for a worker free to start on it (claims made while every
    worker is busy would age in the channel): with k workers idle, k batches are claimed
    with one receive (several at once only where the provider's ``max_receive_limit`` is
    lower) and shared among them, each share sent as one command with the claim time, so
    each starts at once and its worker releases what aged past the usable part of its
    claim (handing its next messages to workers that become idle meanwhile). Claimed one
    batch at a time, a backlog waited for every round trip in turn (PGMQ drained one at
    0.78x of four raw read loops); claimed as k receives at once, they contended for the
    same rows (PGMQ: k ``SKIP LOCKED`` scans over each other's locks, k commits) and a
    short backlog went to fewer workers than were idle (0.80x against 1.11x for one
    receive, 200-message backlogs, same run). After workers released claims
    (``released`` grew: handlers are slow), one batch of only as many messages as workers
    are idle is claimed and shared among them, so the same messages are not claimed and
    released over and over.
    """

    async def claim_and_send(workers: int) -> int:
        """Claim ``workers`` idle workers' batches (one receive) and send them on at once,
        a share per worker, with their claim time.

        Sent as soon as it is back, not once every receive of the round is: a slow
        receive beside it would age it, and a stop while that receive hangs would strand
        it (never sent, never released: back only after its visibility timeout).
        """
        claimed_at = clock.now()
        batch = await service.receive_messages(queue, workers * per_worker, visibility_timeout)
        return await _send_shares(sender, batch, workers, path, claimed_at, sent, stranded)

    total = 0
    seen = released()
    # A receive serves whole workers, never more than the provider takes at once: as many
    # as fit, each one batch (one worker per receive where a batch alone is over it, each
    # then getting what one receive may claim), so no share waits for a worker.
    per_worker = min(batch_size, service.capabilities.max_receive_limit)
    per_receive = max(1, service.capabilities.max_receive_limit // per_worker)
    while True:
        idle = await sender.demand(batch_size)
        narrow = released() != seen
        seen = released()
        if narrow:
            claimed_at = clock.now()
            batch = await service.receive_messages(queue, idle, visibility_timeout)
            total += await _send_shares(sender, batch, idle, path, claimed_at, sent, stranded)
            if len(batch) < idle:
                return total
            continue
        groups = [min(per_receive, idle - start) for start in range(0, idle, per_receive)]
        rounds = await asyncio.gather(
            *(claim_and_send(workers) for workers in groups), return_exceptions=True
        )
        failure: BaseException | None = None
        exhausted = False
        for workers, got in zip(groups, rounds, strict=True):
            if isinstance(got, BaseException):
                failure = failure or got
                continue
            total += got
            exhausted = exhausted or got < workers * per_worker
        if failure is not None:
            raise failure  # what the others claimed went to the workers already
        if exhausted:
            return total


async def _send_shares(
    sender: CommandSender,
    batch: list[QueuedMessage],
    workers: int,
    path: Intake,
    at: float,
    sent: Callable[[int], None],
    stranded: Callable[[Sequence[QueuedMessage]], None],
) -> int:
    """Send ``batch`` as one command per worker (at most ``workers``), in order; each
    share counted in ``sent`` once sent, and the shares not sent when this is cancelled
    (or fails) while the channel is full given to ``stranded``.

    A send cancelled while it waits has put nothing in the channel (``asyncio.Queue.put``
    puts only once there is room, with no wait after), so the share it carried is among
    those stranded, and no share is both sent and stranded.
    """
    share = max(1, -(-len(batch) // max(1, min(workers, len(batch)))))
    start = 0
    try:
        while start < len(batch):
            command = ProcessClaimed(tuple(batch[start : start + share]), path, at)
            await sender.send(command)
            start += len(command.messages)
            sent(len(command.messages))
    except BaseException:
        if start < len(batch):
            stranded(batch[start:])
        raise
    return len(batch)


class FallbackPoller:
    """Every ``interval`` seconds, drains each queue; stopped by cancelling :meth:`run`.

    ``stranded``: see :func:`drain_queue` (what a cancelled poll claimed and could not
    send on goes there, for its owner to release).
    """

    def __init__(
        self,
        service: MessagingService,
        queues: Sequence[str],
        sender: CommandSender,
        stats: ConsumerStats,
        *,
        interval: float,
        batch_size: int,
        visibility_timeout: float,
        clock: Clock,
        defer_first: bool = False,
        stranded: Callable[[Sequence[QueuedMessage]], None] = lambda messages: None,
    ) -> None:
        self._service = service
        self._queues = list(queues)
        self._sender = sender
        self._stats = stats
        self._interval = interval
        self._batch_size = batch_size
        self._visibility_timeout = visibility_timeout
        self._clock = clock
        self._defer_first = defer_first
        self._stranded = stranded

    async def run(self) -> None:
        """Poll until cancelled; errors are counted and the next tick tries again.

        ``defer_first``: the first poll comes one interval after start, for a listener
        whose subscription delivers the backlog (``push_delivers_backlog``): push is
        draining it already, and a poll at once would claim part of it too (RabbitMQ:
        one ``basic.get`` round trip per message; Hybrid drained a backlog at 0.7x of
        EventDrivenOnly). A backlog push does not deliver (the listener died) still
        waits at most one interval, as a send just after a poll does.
        """
        if self._defer_first:
            await self._clock.sleep(self._interval)
        while True:
            for queue in self._queues:
                try:
                    await drain_queue(
                        self._service,
                        queue,
                        self._sender,
                        batch_size=self._batch_size,
                        visibility_timeout=self._visibility_timeout,
                        path=Intake.POLL,
                        clock=self._clock,
                        released=lambda: self._stats.released_unstarted,
                        sent=self._count_polled,
                        stranded=self._stranded,
                    )
                except MessagingError as exc:
                    self._stats.record_error(f"poller: {exc}")
                    log.warning("fallback poll of %s failed: %s", queue, exc)
                    continue
                self._stats.polls += 1
            await self._clock.sleep(self._interval)

    def _count_polled(self, count: int) -> None:
        self._stats.polled_messages += count
