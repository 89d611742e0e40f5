"""A Hybrid consumer leaves a backlog to push when the provider's push delivers one.

With ``push_delivers_backlog`` declared, the fallback poller's first poll comes one
interval after start (push is draining the backlog; a poll at once would claim part of
it too, one receive at a time). Without it, or when push is dead, the poller still finds
the backlog within one interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import pytest

from mqcontract.capabilities import Capabilities
from mqcontract.clock import VirtualClock
from mqcontract.errors import BackendUnavailable
from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.events.commands import (
    Command,
    CommandSender,
    Intake,
    ProcessClaimed,
    command_channel,
)
from mqcontract.events.poller import FallbackPoller, drain_queue
from mqcontract.events.stats import ConsumerStats
from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService

BACKLOG, BATCH, INTERVAL = 25, 10, 5.0


class NoBacklogClaim(InMemoryMessagingService):
    """The memory provider, not declaring that its push delivers a backlog."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, push_delivers_backlog=False)


@pytest.fixture
async def clock() -> VirtualClock:
    return VirtualClock()


async def _with_backlog(service: InMemoryMessagingService) -> InMemoryMessagingService:
    await service.create_queue("jobs")
    await service.send_batch("jobs", [b"{}"] * BACKLOG)
    return service


@pytest.fixture
async def service(clock: VirtualClock) -> AsyncIterator[InMemoryMessagingService]:
    async with InMemoryMessagingService(clock=clock) as service:
        yield await _with_backlog(service)


async def _consume(
    service: InMemoryMessagingService, clock: VirtualClock, *, poll_done: bool = False
) -> ConsumerStats:
    """Run a Hybrid consumer over the backlog for half an interval; its stats.

    ``poll_done``: also wait (within that half interval) until a poll has finished: push
    may win the race for the whole backlog while the poll's claims are still on their way.
    """
    done = asyncio.Event()
    handled = 0

    async def handler(_: QueuedMessage) -> None:
        nonlocal handled
        handled += 1
        if handled == BACKLOG:
            done.set()

    settings = ConsumerSettings(
        mode=DeploymentMode.HYBRID,
        visibility_timeout=30,
        batch_size=BATCH,
        workers=2,
        poll_interval=INTERVAL,
    )
    consumer = QueueConsumer(service, ["jobs"], handler, settings, clock=clock)
    await consumer.start()
    try:
        await clock.advance(INTERVAL / 2)
        async with asyncio.timeout(10):
            await done.wait()
            while poll_done and consumer.stats.polls == 0:  # noqa: ASYNC110 (stats have no event)
                await asyncio.sleep(0)  # the virtual clock stands still: only the poll runs
    finally:
        await consumer.stop()
    return consumer.stats


async def test_push_alone_drains_a_backlog_it_delivers(
    service: InMemoryMessagingService, clock: VirtualClock
) -> None:
    stats = await _consume(service, clock)
    assert stats.polls == 0
    assert stats.by_path == {"push": BACKLOG}


async def test_without_the_declaration_the_poller_polls_at_once(clock: VirtualClock) -> None:
    async with NoBacklogClaim(clock=clock) as service:
        stats = await _consume(await _with_backlog(service), clock, poll_done=True)
    assert stats.polls >= 1


async def test_a_deferred_poller_still_drains_within_one_interval(
    service: InMemoryMessagingService, clock: VirtualClock
) -> None:
    """Push dead from the start (no listener): the backlog waits one interval, no more."""
    sender, receiver = command_channel(BACKLOG * 2)
    stats = ConsumerStats()
    poller = _poller(service, sender, stats, clock, INTERVAL, defer_first=True)
    taken = 0
    all_taken = asyncio.Event()

    async def worker() -> None:
        nonlocal taken
        while True:
            command = await receiver.receive()
            # A polled batch comes as one command per idle worker (here one, this).
            taken += len(command.messages) if isinstance(command, ProcessClaimed) else 1
            receiver.done()
            if taken == BACKLOG:
                all_taken.set()

    tasks = [asyncio.create_task(poller.run()), asyncio.create_task(worker())]
    try:
        await clock.advance(0)  # both tasks started: the poller sleeps from now
        await clock.advance(INTERVAL * 0.99)
        assert (stats.polls, taken) == (0, 0)
        await clock.advance(INTERVAL * 0.02)
        async with asyncio.timeout(10):
            await all_taken.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _first_poll(
    service: InMemoryMessagingService, clock: VirtualClock, workers: int
) -> list[ProcessClaimed]:
    """The commands ``workers`` idle receivers get from the poller's first poll."""
    sender, receiver = command_channel(BACKLOG * 2)
    idle = [asyncio.create_task(receiver.receive()) for _ in range(workers)]
    await asyncio.sleep(0)  # the receivers wait: the poller sees them idle
    stats = ConsumerStats()
    polling = asyncio.create_task(_poller(service, sender, stats, clock, INTERVAL).run())
    try:
        async with asyncio.timeout(10):
            # The poll is over, or every receiver has a command (the poll then waits
            # for one to be idle again); either way nothing is left in the channel.
            while not (stats.polls or all(t.done() for t in idle)) or receiver.waiting():  # noqa: ASYNC110
                await asyncio.sleep(0)
            await asyncio.sleep(0)  # the receivers that took a command run
        commands = [task.result() for task in idle if task.done()]
    finally:
        polling.cancel()
        for task in idle:
            task.cancel()
        await asyncio.gather(polling, *idle, return_exceptions=True)
    assert all(isinstance(c, ProcessClaimed) for c in commands)
    return [c for c in commands if isinstance(c, ProcessClaimed)]


class CountsReceives(InMemoryMessagingService):
    """The memory provider, noting the limit of every receive."""

    def __init__(self, *, clock: VirtualClock, max_receive_limit: int | None = None) -> None:
        super().__init__(clock=clock)
        self.limits: list[int] = []
        self._max_receive_limit = max_receive_limit

    @property
    def capabilities(self) -> Capabilities:
        declared = super().capabilities
        if self._max_receive_limit is None:
            return declared
        return dataclasses.replace(declared, max_receive_limit=self._max_receive_limit)

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        self.limits.append(limit)
        return await super().receive_messages(queue, limit, visibility_timeout)


async def test_idle_workers_share_one_receive_of_a_batch_each(clock: VirtualClock) -> None:
    """Four idle workers, batches of ten, 25 waiting: one receive claims for all four
    (not four receives contending for the same rows), and the 25 are shared out evenly,
    in claim order, one command per worker with the one claim time."""
    async with CountsReceives(clock=clock) as service:
        commands = await _first_poll(await _with_backlog(service), clock, workers=4)
    assert service.limits[0] == 4 * BATCH
    shares = [c.messages for c in commands]
    assert sorted(len(s) for s in shares) == [4, 7, 7, 7]
    ids = sorted(m.msg_id for share in shares for m in share)
    assert ids == list(range(1, BACKLOG + 1))
    assert all([m.msg_id for m in share] == sorted(m.msg_id for m in share) for share in shares)
    assert len({c.claimed_at for c in commands}) == 1


@pytest.mark.parametrize(
    ("max_receive_limit", "receives"),
    [(25, [20, 20]), (15, [10, 10, 10, 10]), (4, [4, 4, 4, 4])],
)
async def test_a_receive_limit_under_the_idle_workers_batches_splits_the_claim(
    clock: VirtualClock, max_receive_limit: int, receives: list[int]
) -> None:
    """Where the provider receives fewer at once than four idle workers' batches of ten,
    the claim is split into receives of whole batches (two per receive under 25; one
    under 15), or of what one receive may claim when a batch alone is over it, all at
    once: never over the limit, and never more shares than workers are idle (a share
    with no worker would wait in the channel, its claim ageing)."""
    async with CountsReceives(clock=clock, max_receive_limit=max_receive_limit) as service:
        commands = await _first_poll(await _with_backlog(service), clock, workers=4)
    assert sorted(service.limits[: len(receives)]) == receives
    assert len(commands) <= 4
    assert sum(len(c.messages) for c in commands) == min(BACKLOG, sum(receives))


def _poller(
    service: InMemoryMessagingService,
    sender: CommandSender,
    stats: ConsumerStats,
    clock: VirtualClock,
    interval: float,
    *,
    defer_first: bool = False,
) -> FallbackPoller:
    """The fallback poller over the backlog's queue, as the consumer builds it."""
    return FallbackPoller(
        service,
        ["jobs"],
        sender,
        stats,
        interval=interval,
        batch_size=BATCH,
        visibility_timeout=30,
        clock=clock,
        defer_first=defer_first,
    )


def _drain(
    service: InMemoryMessagingService,
    sender: CommandSender,
    clock: VirtualClock,
    *,
    sent: Callable[[int], None] = lambda count: None,
    stranded: Callable[[Sequence[QueuedMessage]], None] = lambda messages: None,
) -> Coroutine[Any, Any, int]:
    """``drain_queue`` over the backlog, as the poller runs it."""
    return drain_queue(
        service,
        "jobs",
        sender,
        batch_size=BATCH,
        visibility_timeout=30,
        path=Intake.POLL,
        clock=clock,
        sent=sent,
        stranded=stranded,
    )


class SecondReceiveFails(CountsReceives):
    """The memory provider whose second receive fails (a backend error mid-drain); it
    receives one batch at a time, so a poll for several idle workers makes several."""

    def __init__(self, *, clock: VirtualClock) -> None:
        super().__init__(clock=clock, max_receive_limit=BATCH)
        self.receives = 0

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        self.receives += 1
        if self.receives == 2:
            await self.second_receive(queue)
        return await super().receive_messages(queue, limit, visibility_timeout)

    async def second_receive(self, queue: str) -> None:
        raise BackendUnavailable("memory", queue, "injected")


async def test_a_failed_claim_beside_others_still_sends_what_they_claimed(
    clock: VirtualClock,
) -> None:
    """Claimed messages never go missing: the batches claimed beside a failed receive
    reach the workers, then the failure is raised (the poller counts it)."""
    async with SecondReceiveFails(clock=clock) as service:
        await _with_backlog(service)
        sender, receiver = command_channel(BACKLOG * 2)
        idle = [asyncio.create_task(receiver.receive()) for _ in range(3)]
        await asyncio.sleep(0)
        try:
            with pytest.raises(BackendUnavailable, match="injected"):
                await _drain(service, sender, clock)
            await asyncio.sleep(0)
            commands = [task.result() for task in idle if task.done()]
        finally:
            for task in idle:
                task.cancel()
            await asyncio.gather(*idle, return_exceptions=True)
    sizes = sorted(len(c.messages) for c in commands if isinstance(c, ProcessClaimed))
    assert sizes == [BATCH, BATCH]  # two receives of three claimed; both batches sent


async def test_a_failed_poll_counts_the_messages_it_sent_on(clock: VirtualClock) -> None:
    """The poller's count of polled messages includes the batches a poll sent on before
    one of its receives failed (they reach the workers and are run)."""
    async with SecondReceiveFails(clock=clock) as service:
        await _with_backlog(service)
        sender, receiver = command_channel(BACKLOG * 2)
        idle = [asyncio.create_task(receiver.receive()) for _ in range(3)]
        stats = ConsumerStats()
        polling = asyncio.create_task(_poller(service, sender, stats, clock, 60).run())
        try:
            async with asyncio.timeout(5):
                while not stats.errors:  # noqa: ASYNC110 (no event to wait on)
                    await asyncio.sleep(0)
        finally:
            for task in (polling, *idle):
                task.cancel()
            await asyncio.gather(polling, *idle, return_exceptions=True)
    assert stats.errors[0].startswith("poller: ")
    assert "injected" in stats.errors[0]
    assert stats.polls == 0  # the poll did not complete
    assert stats.polled_messages == 2 * BATCH  # but two batches were sent on


class SecondReceiveHangs(SecondReceiveFails):
    """The memory provider whose second receive never answers (a stalled backend)."""

    async def second_receive(self, queue: str) -> None:
        await asyncio.Event().wait()


async def test_a_batch_is_sent_as_soon_as_claimed_not_after_a_hanging_receive(
    clock: VirtualClock,
) -> None:
    """A stop while one receive hangs cancels the drain: the batches claimed beside it
    reached the workers already (so a stop releases what they did not start), instead of
    being stranded until their visibility timeout."""
    async with SecondReceiveHangs(clock=clock) as service:
        await _with_backlog(service)
        sender, receiver = command_channel(BACKLOG * 2)
        idle = [asyncio.create_task(receiver.receive()) for _ in range(4)]
        await asyncio.sleep(0)
        draining = asyncio.create_task(_drain(service, sender, clock))
        try:
            async with asyncio.timeout(10):
                while sum(task.done() for task in idle) < 3:  # noqa: ASYNC110 (no event)
                    await asyncio.sleep(0)
            draining.cancel()  # the consumer stops with the second receive still hanging
            with pytest.raises(asyncio.CancelledError):
                await draining
            commands = [task.result() for task in idle if task.done()]
        finally:
            draining.cancel()
            for task in idle:
                task.cancel()
            await asyncio.gather(draining, *idle, return_exceptions=True)
    sizes = sorted(len(c.messages) for c in commands if isinstance(c, ProcessClaimed))
    assert sizes == [5, BATCH, BATCH]  # all but the hanging receive's: 10, 10, the last 5


class TakesOneCommand(CommandSender):
    """A channel with ``idle`` workers waiting that takes one command, then stays full
    (every worker got busy meanwhile: a listener's commands filled it)."""

    def __init__(self, idle: int) -> None:  # a stub: no asyncio.Queue behind it
        self.commands: list[ProcessClaimed] = []
        self.blocked = asyncio.Event()
        self._idle = idle

    async def demand(self, limit: int) -> int:
        return min(self._idle, limit)

    async def send(self, command: Command) -> None:
        if self.commands:
            self.blocked.set()
            await asyncio.Event().wait()
        assert isinstance(command, ProcessClaimed)
        self.commands.append(command)


@pytest.mark.parametrize("limit", [None, BATCH], ids=["one-receive", "a-receive-per-worker"])
async def test_a_drain_cancelled_on_a_full_channel_hands_over_what_it_did_not_send(
    clock: VirtualClock, limit: int | None
) -> None:
    """A stop while a share waits for room in the channel: the shares not sent are given
    to ``stranded`` (its consumer releases them) instead of waiting out their visibility
    timeout with nobody knowing of them; each claimed message is sent or stranded, never
    both, and what was sent is counted."""
    async with CountsReceives(clock=clock, max_receive_limit=limit) as service:
        await service.create_queue("jobs")
        ids = set(await service.send_batch("jobs", [b"{}"] * BACKLOG))
        sender = TakesOneCommand(idle=3)
        stranded: list[QueuedMessage] = []
        counted: list[int] = []
        draining = asyncio.create_task(
            _drain(service, sender, clock, sent=counted.append, stranded=stranded.extend)
        )
        async with asyncio.timeout(5):
            await sender.blocked.wait()
            await asyncio.sleep(0)  # every receive of the poll is back and sending
        draining.cancel()
        with pytest.raises(asyncio.CancelledError):
            await draining
    assert service.limits == ([3 * BATCH] if limit is None else [BATCH] * 3)
    sent = [m.msg_id for c in sender.commands for m in c.messages]
    assert stranded, "the poll claimed more than the one share the channel took"
    assert counted == [len(sent)]
    assert not set(sent) & {m.msg_id for m in stranded}
    assert sorted(sent + [m.msg_id for m in stranded]) == sorted(ids)


async def test_a_consumer_releases_at_stop_what_its_poll_stranded(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a stopped poll could not send on is released when the consumer stops: visible
    again at once, not after its visibility timeout (the virtual clock does not move)."""
    polled = asyncio.Event()

    class StrandingPoller(FallbackPoller):
        """Claims three messages, strands them (its channel full), then waits."""

        async def run(self) -> None:
            claimed = await self._service.receive_messages("jobs", 3, 30)
            self._stranded(claimed)
            polled.set()
            await asyncio.Event().wait()

    monkeypatch.setattr("mqcontract.events.consumer.FallbackPoller", StrandingPoller)
    async with InMemoryMessagingService(clock=clock) as service:
        await _with_backlog(service)

        async def handler(_: QueuedMessage) -> None:
            raise AssertionError("nothing was sent to the workers")

        settings = ConsumerSettings(mode=DeploymentMode.POLLING_ONLY, visibility_timeout=30)
        consumer = QueueConsumer(service, ["jobs"], handler, settings, clock=clock)
        await consumer.start()
        async with asyncio.timeout(5):
            await polled.wait()
        await consumer.stop()
        assert consumer.stats.released_on_stop == 3
        back = await service.receive_messages("jobs", BACKLOG, 30)
    assert len(back) == BACKLOG
    assert sorted(m.receive_count for m in back)[-3:] == [2, 2, 2]
