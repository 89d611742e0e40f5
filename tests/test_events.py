"""The event system on the in-memory provider: modes, routing, stop, demo."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Awaitable, Callable, Sequence

import pytest

from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.clock import VirtualClock
from mqcontract.config import MemoryConfig, MessagingConfig
from mqcontract.errors import ConnectionLost, OperationTimeout
from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.events.commands import Intake, ProcessFromMessageEvent, command_channel
from mqcontract.events.demo import run_demo
from mqcontract.events.stats import ConsumerStats
from mqcontract.messages import Available, Claim, ClaimRef, Message, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Queue
from mqcontract.subscription import QueueSubscription

FULL = Capabilities(push=PushKind.FULL)
SIGNAL_NEEDS_POLL = Capabilities(
    push=PushKind.SIGNAL, requires_fallback_polling=True, fallback_polling_interval=1.0
)
NO_PUSH = Capabilities(push=PushKind.NONE)


@pytest.mark.parametrize(
    ("requested", "caps", "effective"),
    [
        (DeploymentMode.EVENT_DRIVEN_ONLY, FULL, DeploymentMode.EVENT_DRIVEN_ONLY),
        (DeploymentMode.EVENT_DRIVEN_ONLY, SIGNAL_NEEDS_POLL, DeploymentMode.HYBRID),
        (DeploymentMode.EVENT_DRIVEN_ONLY, NO_PUSH, DeploymentMode.POLLING_ONLY),
        (DeploymentMode.HYBRID, FULL, DeploymentMode.HYBRID),
        (DeploymentMode.HYBRID, NO_PUSH, DeploymentMode.POLLING_ONLY),
        (DeploymentMode.POLLING_ONLY, FULL, DeploymentMode.POLLING_ONLY),
    ],
)
def test_effective_mode_follows_the_documented_table(
    requested: DeploymentMode, caps: Capabilities, effective: DeploymentMode
) -> None:
    assert requested.effective_for_provider(caps) is effective


async def _until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll a condition with a deadline (the stats have no event to wait on)."""
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_stop_waits_for_in_flight_handlers_and_loses_nothing() -> None:
    service = InMemoryMessagingService()
    await service.create_queue("jobs")
    await service.send_batch("jobs", [b"a", b"b", b"c", b"d"])
    gate = asyncio.Event()

    async def blocked(_: QueuedMessage) -> None:
        await gate.wait()

    settings = ConsumerSettings(mode=DeploymentMode.EVENT_DRIVEN_ONLY, workers=2, stop_grace=0.2)
    consumer = QueueConsumer(service, ["jobs"], blocked, settings)
    await consumer.start()
    await _until(lambda: sum(consumer.stats.invocations.values()) == 2)
    await consumer.stop()  # the two blocked handlers are cancelled after the grace period
    assert consumer.stats.processed == 0
    survivors = await service.receive_messages("jobs", 10, 5)
    # Unstarted work was released at once; cancelled work is still held by its claim.
    assert len(survivors) == 2
    assert service.stored_ids("jobs") == [1, 2, 3, 4]
    await service.close()


class _SlowAcks(InMemoryMessagingService):
    """Acks take a round trip (as RabbitMQ's confirmed acks do), and closing a
    subscription releases the claims pushed through it (as closing its channel does)."""

    async def _ack(self, queue: str, claim: Claim) -> None:
        await asyncio.sleep(0.05)  # the backend's round trip, not synchronization
        await super()._ack(queue, claim)

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        subscriber = self._subscribers[subscription]
        for name, msg_id in list(subscriber.in_flight):
            entry = self._queues[name].entries.get(msg_id)
            if entry is not None and entry.held and entry.holder is subscriber:
                entry.held = False  # the channel closed: the broker requeues it
                entry.visible_at = self.clock.now()
                self._detach(self._queues[name], entry)
                self._schedule(self._queues[name], entry)
        await super()._unsubscribe(subscription)


async def test_stop_keeps_the_subscription_until_every_ack_is_confirmed() -> None:
    service = _SlowAcks()
    await service.create_queue("jobs")
    handled = asyncio.Event()

    async def handler(_: QueuedMessage) -> None:
        handled.set()

    settings = ConsumerSettings(mode=DeploymentMode.EVENT_DRIVEN_ONLY, workers=1)
    consumer = QueueConsumer(service, ["jobs"], handler, settings)
    await consumer.start()
    await service.send_message("jobs", b"a")
    await asyncio.wait_for(handled.wait(), 5)
    await consumer.stop()  # the ack is still being confirmed when stop begins
    assert consumer.stats.processed == 1, consumer.stats.errors
    assert consumer.stats.unsettled_acks == 0
    assert service.stored_ids("jobs") == []  # done work is not requeued
    await service.close()


async def test_demo_counts_match_on_memory() -> None:
    counts = await run_demo(
        MessagingConfig(backend="memory"),
        namespaces=["payments", "inventory"],
        steps=5,
        mode=DeploymentMode.HYBRID,
        timeout=10,
    )
    assert counts == {
        "steps sent": 10,
        "steps processed": 10,
        "results processed": 10,
        "processed twice": 0,
        "tasks": 2,
    }


class _FirstAckCutOff(InMemoryMessagingService):
    """The first ack fails as if the connection dropped mid-frame (outcome unknown).

    With one unconfirmed ack at a time, the first confirmation is the first ack alone.
    """

    cut = False

    async def ack_claims(self, queue: str, claims: Sequence[ClaimRef]) -> list[bool]:
        if not self.cut:
            self.cut = True
            raise ConnectionLost("memory", "(in-process)", "ack cut off")
        return await super().ack_claims(queue, claims)


async def test_an_ack_with_an_unknown_outcome_is_not_a_success_and_the_batch_goes_on() -> None:
    service = _FirstAckCutOff()
    await service.create_queue("jobs")
    first, *rest = await service.send_batch("jobs", [b"a", b"b", b"c"])
    seen: list[int] = []

    async def handler(message: QueuedMessage) -> None:
        seen.append(message.msg_id)

    settings = ConsumerSettings(
        mode=DeploymentMode.POLLING_ONLY,
        workers=1,
        poll_interval=0.05,
        visibility_timeout=0.3,
        max_unconfirmed_acks=1,  # so the first ack is confirmed alone
    )
    consumer = QueueConsumer(service, ["jobs"], handler, settings)
    await consumer.start()
    try:
        # The rest of the batch ran although the first ack failed; the first message came
        # back after its timeout (its ack was not applied) and was then settled.
        await _until(lambda: consumer.stats.processed == 3)
    finally:
        await consumer.stop()
    assert seen == [first, *rest, first]
    assert consumer.stats.unsettled_acks == 1
    assert consumer.stats.succeeded[("jobs", first)] == 1
    assert any("ack cut off" in e for e in consumer.stats.errors)
    assert service.stored_ids("jobs") == []
    await service.close()


async def test_demand_counts_idle_receivers_minus_queued_commands() -> None:
    sender, receiver = command_channel(10)
    first, second = (asyncio.create_task(receiver.receive()) for _ in range(2))
    assert await asyncio.wait_for(sender.demand(5), 1.0) == 2  # two workers wait
    assert await asyncio.wait_for(sender.demand(1), 1.0) == 1  # capped by the limit
    await sender.send(ProcessFromMessageEvent("jobs", None))
    assert await asyncio.wait_for(sender.demand(5), 1.0) == 1  # one of them is served
    await asyncio.wait_for(first, 1.0)
    asked = asyncio.create_task(sender.demand(5))
    await sender.send(ProcessFromMessageEvent("jobs", None))
    await asyncio.wait_for(second, 1.0)
    assert not asked.done()  # nobody idle: an intake waits instead of claiming
    third = asyncio.create_task(receiver.receive())
    assert await asyncio.wait_for(asked, 1.0) == 1
    third.cancel()


async def test_polled_claims_that_aged_in_the_channel_are_released_not_started() -> None:
    clock = VirtualClock()
    service = InMemoryMessagingService(clock=clock)
    await service.create_queue("jobs")
    ids = await service.send_batch("jobs", [b"%d" % i for i in range(5)])
    gate = asyncio.Event()

    async def handler(message: QueuedMessage) -> None:
        if message.msg_id == ids[0]:
            await gate.wait()

    settings = ConsumerSettings(
        mode=DeploymentMode.POLLING_ONLY,
        workers=1,
        batch_size=5,
        visibility_timeout=10,
        poll_interval=1,
    )
    consumer = QueueConsumer(service, ["jobs"], handler, settings, clock=clock)
    await consumer.start()
    try:
        # The worker was free, so the poller claimed a batch; the worker is stuck on the
        # first message while the other four wait in the channel.
        await _until(lambda: consumer.stats.invocations[("jobs", ids[0])] == 1)
        await clock.advance(6)  # past half their timeout, still held
        gate.set()
        await _until(lambda: consumer.stats.processed == 5)
    finally:
        await consumer.stop()
    # The four were released unstarted (nacked, as their claims still held) and claimed
    # again when the worker was free: each ran once, on a young claim.
    assert consumer.stats.released_unstarted == 4
    assert [consumer.stats.invocations[("jobs", i)] for i in ids] == [1] * 5
    assert [max(consumer.stats.receive_counts[("jobs", i)]) for i in ids[1:]] == [2] * 4
    await service.close()


class _QueueSignals(InMemoryMessagingService):
    """Signal-only push naming just the queue (no fetch by id): consumers catch up."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, push=PushKind.SIGNAL, fetch_by_id=False)

    async def subscribe_many(self, queues: Sequence[str]) -> QueueSubscription:
        self._signals = QueueSubscription(tuple(queues))
        return self._signals

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        msg_id = super()._enqueue(queue, payload, delay)
        if hasattr(self, "_signals"):
            self._signals.put(Available(queue.name, None))
        return msg_id


async def test_a_batch_behind_a_slow_handler_is_released_not_run_on_expired_claims() -> None:
    service = _QueueSignals()
    await service.create_queue("jobs")
    gate = asyncio.Event()

    async def handler(message: QueuedMessage) -> None:
        if message.payload == b"slow":
            await gate.wait()

    settings = ConsumerSettings(
        mode=DeploymentMode.HYBRID,
        workers=4,
        batch_size=10,
        visibility_timeout=0.4,
        poll_interval=0.05,
    )
    consumer = QueueConsumer(service, ["jobs"], handler, settings)
    await consumer.start()
    try:
        ids = await service.send_batch("jobs", [b"slow", *(b"%d" % i for i in range(9))])
        # One worker claimed the whole batch and is stuck in the slow handler: the nine
        # fast messages expire and the poller hands them to the other workers.
        await _until(lambda: consumer.stats.processed == 9)
        gate.set()
        await _until(lambda: consumer.stats.processed == 10)
    finally:
        await consumer.stop()
    # Back from the slow handler, that worker released the rest of its old batch
    # instead of running it again on claims that had expired long ago.
    assert [consumer.stats.invocations[("jobs", i)] for i in ids[1:]] == [1] * 9
    assert consumer.stats.late_acks <= 1  # the slow handler's own expired claim
    await service.close()


class _HangingReceive(_QueueSignals):
    """Its first receive claims, then hangs past the whole timeout before it returns
    (a backend failing over), so the claims it returns have lapsed."""

    hung = False

    async def _receive(self, queue: str, limit: int, vt: float) -> list[QueuedMessage]:
        got = await super()._receive(queue, limit, vt)
        if got and not self.hung:
            self.hung = True
            assert isinstance(self.clock, VirtualClock)
            await self.clock.advance(vt + 1)
        return got


async def test_a_catch_up_that_returns_after_the_whole_timeout_starts_nothing() -> None:
    """Not even the batch's first message (which starts whatever the clock says as long
    as its claim can still hold): the message may have been claimed, run and acked by
    another consumer while the receive hung."""
    clock = VirtualClock()
    service = _HangingReceive(clock=clock)
    await service.create_queue("jobs")
    settings = ConsumerSettings(
        mode=DeploymentMode.EVENT_DRIVEN_ONLY, workers=1, batch_size=10, visibility_timeout=5
    )
    consumer = QueueConsumer(service, ["jobs"], lambda _: asyncio.sleep(0), settings, clock=clock)
    await consumer.start()
    try:
        ids = await service.send_batch("jobs", [b"%d" % i for i in range(3)])
        await _until(lambda: consumer.stats.processed == 3)
    finally:
        await consumer.stop()
    assert service.hung
    assert consumer.stats.released_unstarted == 3
    # Each ran once, on the claim after the lapsed one.
    assert [consumer.stats.invocations[("jobs", i)] for i in ids] == [1] * 3
    assert [min(consumer.stats.receive_counts[("jobs", i)]) for i in ids] == [2] * 3
    await service.close()


async def test_a_pushed_claim_that_waited_past_half_its_own_timeout_is_released() -> None:
    clock = VirtualClock()
    config = MemoryConfig(push_visibility_timeout_seconds=10, prefetch_count=2)
    service = InMemoryMessagingService(config, clock=clock)
    await service.create_queue("jobs")
    gate = asyncio.Event()
    ids = await service.send_batch("jobs", [b"0", b"1"])

    async def handler(message: QueuedMessage) -> None:
        if message.msg_id == ids[0]:
            await gate.wait()

    # The consumer's own timeout is long: the pushed claim's (10 s) is what counts.
    settings = ConsumerSettings(
        mode=DeploymentMode.EVENT_DRIVEN_ONLY, workers=1, visibility_timeout=600
    )
    consumer = QueueConsumer(service, ["jobs"], handler, settings, clock=clock)
    await consumer.start()
    try:
        await _until(lambda: consumer.stats.invocations[("jobs", ids[0])] == 1)
        await _until(lambda: consumer.stats.notifications == 2)  # the second one waits
        await clock.advance(6)  # past half of its 10 s, still held
        gate.set()
        await _until(lambda: consumer.stats.processed == 2)
    finally:
        await consumer.stop()
    assert consumer.stats.released_unstarted == 1
    assert consumer.stats.invocations[("jobs", ids[1])] == 1
    assert consumer.stats.receive_counts[("jobs", ids[1])] == [2]
    await service.close()


async def _blocked_consumer(
    clock: VirtualClock | None = None,
    service: InMemoryMessagingService | None = None,
    *,
    count: int = 5,
    visibility_timeout: float = 10,
    stop_grace: float = 0.1,
) -> tuple[InMemoryMessagingService, QueueConsumer, list[int]]:
    """A consumer whose one worker is stuck in its first message, ``count - 1`` more
    claimed (one batch), on ``service`` or a new in-memory one on ``clock``."""
    service = service or InMemoryMessagingService(clock=clock)
    await service.create_queue("jobs")
    ids = await service.send_batch("jobs", [b"%d" % i for i in range(count)])
    gate = asyncio.Event()

    async def blocked(_: QueuedMessage) -> None:
        await gate.wait()

    settings = ConsumerSettings(
        mode=DeploymentMode.POLLING_ONLY,
        workers=1,
        batch_size=count,
        visibility_timeout=visibility_timeout,
        poll_interval=1,
        stop_grace=stop_grace,
    )
    consumer = QueueConsumer(service, ["jobs"], blocked, settings)  # the provider's clock
    await consumer.start()
    await _until(lambda: consumer.stats.invocations[("jobs", ids[0])] == 1)
    return service, consumer, ids


async def test_stop_releases_unstarted_claims_at_once() -> None:
    clock = VirtualClock()
    service, consumer, ids = await _blocked_consumer(clock)
    await clock.advance(9)  # the four queued claims still hold
    await consumer.stop()
    assert consumer.stats.released_on_stop == 4
    back = await service.receive_messages("jobs", 10, 5)
    assert sorted(m.msg_id for m in back) == ids[1:]  # visible without waiting
    await service.close()


async def test_stop_never_releases_a_claim_someone_else_holds_now() -> None:
    clock = VirtualClock()
    service, consumer, ids = await _blocked_consumer(clock)
    await clock.advance(11)  # every claim of the consumer lapsed...
    taken = await service.receive_messages("jobs", 10, 60)  # ...and another consumer took them
    assert sorted(m.msg_id for m in taken) == ids
    await consumer.stop()
    assert consumer.stats.released_on_stop == 0  # the stale nacks changed nothing
    assert await service.receive_messages("jobs", 10, 5) == []
    assert await service.ack_claims("jobs", taken) == [True] * 5
    await service.close()


class _UnansweredNacks(InMemoryMessagingService):
    """Every ``nack_claim`` hangs, then times out: a backend that stopped answering (a
    table locked by ``VACUUM FULL``, a frozen broker) without closing the connection."""

    nacks_asked = 0
    bound = 30.0

    async def nack_claim(self, queue: str, claim: ClaimRef) -> None:
        self.nacks_asked += 1
        await asyncio.sleep(self.bound)
        raise OperationTimeout("nack_claim", self.bound)


@pytest.mark.parametrize("bound", [0.05, 30.0], ids=["timing-out", "hanging"])
async def test_stop_gives_up_releasing_when_the_backend_stops_answering(bound: float) -> None:
    """Stop released unstarted claims one nack at a time, each waiting its operation
    timeout: nine claims took 47 s with a 5 s timeout (close to an hour for a batch of
    100). The first that times out ends the release, and the whole release is bounded by
    ``stop_grace``; the rest come back after their visibility timeout (``left_on_stop``)."""
    unanswered = _UnansweredNacks()
    unanswered.bound = bound
    grace = 0.2
    service, consumer, _ = await _blocked_consumer(
        service=unanswered, count=10, visibility_timeout=30, stop_grace=grace
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(consumer.stop(), 5)
    assert loop.time() - started < 3 * grace + 1
    assert unanswered.nacks_asked == 1  # the first unanswered one ends the release
    assert consumer.stats.released_on_stop == 0
    assert consumer.stats.left_on_stop == 9
    await service.close()


class _GatedAcks(InMemoryMessagingService):
    """Each ``ack_claims`` waits for ``gate``: a confirmation that takes a round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.called = asyncio.Event()
        self.gate = asyncio.Event()

    async def ack_claims(self, queue: str, claims: Sequence[ClaimRef]) -> list[bool]:
        self.calls.append(len(claims))
        self.called.set()
        await self.gate.wait()
        return await super().ack_claims(queue, claims)


async def test_acks_handed_over_during_a_confirmation_go_beside_it_once_a_fair_share() -> None:
    """Bound 10, depth 2: a lone ack goes at once; beside a batch in flight, acks go only
    as a batch of 5 (bound / depth) or more; with the depth reached, the rest gather."""
    from mqcontract.events.settlement import Settler

    service = _GatedAcks()
    await service.create_queue("jobs")
    await service.send_batch("jobs", [b"%d" % i for i in range(8)])
    held = await service.receive_messages("jobs", 8, 30)
    outcomes: dict[int, bool | object] = {}
    settler = Settler(service, lambda m, o: outcomes.__setitem__(m.msg_id, o), bound=10, depth=2)
    settler.start()
    await settler.ack(held[0])
    await asyncio.wait_for(service.called.wait(), 5)
    service.called.clear()
    for message in held[1:5]:
        await settler.ack(message)
    for _ in range(10):  # loop turns, not time: four are too few to go beside the first
        await asyncio.sleep(0)
    assert service.calls == [1]
    await settler.ack(held[5])
    await asyncio.wait_for(service.called.wait(), 5)  # five: they did not wait for it
    for message in held[6:]:
        await settler.ack(message)
    for _ in range(10):
        await asyncio.sleep(0)
    assert service.calls == [1, 5]  # the depth reached: the rest wait, gathered
    assert outcomes == {}  # nothing counts before its confirmation
    service.gate.set()
    await asyncio.wait_for(settler.drain(), 5)
    await settler.close()
    assert service.calls == [1, 5, 2]
    assert outcomes == {m.msg_id: True for m in held}


def test_per_message_records_are_bounded_and_totals_are_not() -> None:
    """A consumer runs for months: only the newest ``tracked`` messages keep records."""
    stats = ConsumerStats(tracked=3)
    for msg_id in range(10):
        key = ("jobs", msg_id)
        stats.started(key, "poll", 1)
        if msg_id % 2:
            stats.handler_failed(key)
        else:
            stats.ack_confirmed(key)
    stats.ack_confirmed(("jobs", 8))  # processed twice, still tracked
    assert (stats.handler_runs, stats.handler_failures, stats.processed) == (10, 5, 5)
    assert set(stats.invocations) == {("jobs", 7), ("jobs", 8), ("jobs", 9)}
    assert set(stats.receive_counts) == set(stats.invocations)
    assert set(stats.failed) == {("jobs", 7), ("jobs", 9)}
    assert stats.processed_twice() == [("jobs", 8)]
    assert stats.by_path == {"poll": 10}


class _UnclaimedCopies(InMemoryMessagingService):
    """Push of unclaimed full copies (as PGMQ's): each must be claimed by id first."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, pushed_messages_claimed=False)

    async def subscribe_many(self, queues: Sequence[str]) -> QueueSubscription:
        self._copies = QueueSubscription(tuple(queues))
        return self._copies

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        msg_id = super()._enqueue(queue, payload, delay)
        if hasattr(self, "_copies"):
            copy = QueuedMessage(msg_id, queue.name, payload, 1, 0.0)
            self._copies.put(Message(copy, claimed=False))
        return msg_id


async def _burst(service: InMemoryMessagingService, pushed: int = 201) -> QueueConsumer:
    """A consumer whose worker is busy while ``pushed`` of 201 pushes arrive, then freed."""
    await service.create_queue("jobs")
    gate = asyncio.Event()

    async def handler(message: QueuedMessage) -> None:
        if message.payload == b"first":
            await gate.wait()

    settings = ConsumerSettings(
        mode=DeploymentMode.EVENT_DRIVEN_ONLY,
        workers=1,
        batch_size=50,
        poll_interval=60,
        channel_capacity=1000,  # every copy fits: only folding keeps them from workers
    )
    consumer = QueueConsumer(service, ["jobs"], handler, settings)
    await consumer.start()
    try:
        await service.send_message("jobs", b"first")
        await _until(lambda: consumer.stats.handler_runs == 1)
        await service.send_batch("jobs", [b"%d" % i for i in range(200)])
        await _until(lambda: consumer.stats.notifications >= pushed)
        gate.set()
        await _until(lambda: consumer.stats.processed == 201)
    finally:
        await consumer.stop()
    return consumer


async def test_unclaimed_copies_in_a_burst_fold_into_one_catch_up() -> None:
    service = _UnclaimedCopies()
    consumer = await _burst(service)
    stats = consumer.stats
    assert stats.handler_runs == 201
    assert not stats.processed_twice()
    # The first copy of the burst became a catch-up; the rest were folded into it
    # instead of each reaching a worker only to be dropped as claimed already.
    assert stats.already_claimed < 20
    assert stats.coalesced >= 150
    await service.close()


async def test_claimed_pushes_are_never_folded() -> None:
    service = InMemoryMessagingService()  # pushes claimed messages, up to its prefetch
    consumer = await _burst(service, pushed=MemoryConfig().prefetch_count)
    assert consumer.stats.coalesced == 0
    assert consumer.stats.by_path["push"] == 201
    assert not consumer.stats.processed_twice()
    await service.close()


def test_the_ack_bound_holds_two_polled_batches_by_default() -> None:
    assert ConsumerSettings(batch_size=10).ack_bound == 64
    assert ConsumerSettings(batch_size=100).ack_bound == 200  # a batch settles whole
    assert ConsumerSettings(batch_size=100, max_unconfirmed_acks=8).ack_bound == 8


class _SlowNacks(InMemoryMessagingService):
    """Every nack takes 50 ms (a round trip); counts calls and successes per message."""

    def __init__(self) -> None:
        super().__init__()
        self.nack_calls: collections.Counter[int] = collections.Counter()
        self.nacked = 0

    async def nack_claim(self, queue: str, claim: ClaimRef) -> None:
        self.nack_calls[claim.msg_id] += 1
        await asyncio.sleep(0.05)  # the round trip being simulated, not a synchronization
        await super().nack_claim(queue, claim)
        self.nacked += 1


async def test_a_release_cut_short_at_stop_releases_each_message_once_and_counts_it() -> None:
    """Stop's grace ends while the worker is releasing the rest of its batch: what it
    released is not released again, and ``released_on_stop`` counts every release."""
    service = _SlowNacks()
    await service.create_queue("jobs")
    await service.send_batch("jobs", [b"a", b"b", b"c", b"d", b"e"])
    gate, started = asyncio.Event(), asyncio.Event()

    async def handler(_: QueuedMessage) -> None:
        started.set()
        await gate.wait()

    settings = ConsumerSettings(
        mode=DeploymentMode.POLLING_ONLY,
        workers=1,
        batch_size=5,
        poll_interval=1,
        stop_grace=0.12,  # ends while the worker nacks the second of four
    )
    consumer = QueueConsumer(service, ["jobs"], handler, settings)
    await consumer.start()
    async with asyncio.timeout(5):
        await started.wait()
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0)  # stop has begun: intake off, the batch's rest is to be released
    gate.set()
    await stopping
    assert max(service.nack_calls.values()) == 1, service.nack_calls
    assert consumer.stats.released_on_stop == service.nacked
    await service.close()


class _FirstClaimFails(_QueueSignals):
    """Its first receive (the catch-up a signal started) fails with the connection."""

    failed = False

    async def _receive(self, queue: str, limit: int, vt: float) -> list[QueuedMessage]:
        if not self.failed:
            self.failed = True
            raise ConnectionLost("memory", "(test)", "dropped")
        return await super()._receive(queue, limit, vt)


class _FirstFetchFails(_UnclaimedCopies):
    """Its first claim by id (for an unclaimed pushed copy) fails with the connection."""

    failed = False

    async def _fetch(self, queue: str, msg_id: int, vt: float) -> QueuedMessage | None:
        if not self.failed:
            self.failed = True
            raise ConnectionLost("memory", "(test)", "dropped")
        return await super()._fetch(queue, msg_id, vt)


@pytest.mark.parametrize("provider", [_FirstClaimFails, _FirstFetchFails])
async def test_a_hint_whose_claim_failed_is_caught_up_on_without_a_poller(
    provider: type[_FirstClaimFails] | type[_FirstFetchFails],
) -> None:
    """EventDrivenOnly on push that needs no poller: the one notification of a message
    is a hint whose claim fails. The consumer catches up on its queue an interval
    later; dropping the hint left the message in the queue until the next one."""
    clock = VirtualClock()
    service = provider(clock=clock)
    await service.create_queue("jobs")
    assert not service.capabilities.requires_fallback_polling
    settings = ConsumerSettings(mode=DeploymentMode.EVENT_DRIVEN_ONLY, poll_interval=3)
    consumer = QueueConsumer(service, ["jobs"], lambda _: asyncio.sleep(0), settings, clock=clock)
    await consumer.start()
    try:
        assert not consumer.mode.polls
        sent = await service.send_message("jobs", b"only")
        await _until(lambda: consumer.stats.hint_retries == 1)
        assert service.failed
        assert consumer.stats.processed == 0
        await clock.advance(2.9)
        assert consumer.stats.processed == 0  # not before the interval
        await clock.advance(0.2)
        await _until(lambda: consumer.stats.processed == 1)
    finally:
        await consumer.stop()
    assert consumer.stats.invocations[("jobs", sent)] == 1
    assert any("dropped" in error for error in consumer.stats.errors)
    await service.close()


async def test_a_hint_for_a_deleted_queue_is_not_retried() -> None:
    service = _FirstClaimFails()
    await service.create_queue("jobs")
    settings = ConsumerSettings(mode=DeploymentMode.EVENT_DRIVEN_ONLY, poll_interval=0.01)
    consumer = QueueConsumer(service, ["jobs"], lambda _: asyncio.sleep(0), settings)
    await consumer.start()
    try:
        service.failed = True  # claims work; the queue is gone by the time one is tried
        await consumer._sender.send(ProcessFromMessageEvent("gone", None))
        await _until(lambda: any("gone" in error for error in consumer.stats.errors))
    finally:
        await consumer.stop()
    assert consumer.stats.hint_retries == 0
    await service.close()


async def test_a_claim_waiting_behind_a_running_handler_of_its_id_is_released_at_stop() -> None:
    """The slow handler's claim lapses and a poll claims its message again: that claim
    waits behind the running handler (one consumer never runs two handlers for one id
    at once) without a worker, and is released, not left held, when the consumer stops."""
    service = InMemoryMessagingService()
    await service.create_queue("jobs")
    gate = asyncio.Event()

    async def handler(message: QueuedMessage) -> None:
        await gate.wait()

    settings = ConsumerSettings(
        mode=DeploymentMode.POLLING_ONLY,
        workers=2,
        visibility_timeout=1.0,
        poll_interval=0.05,
        stop_grace=0.1,
    )
    consumer = QueueConsumer(service, ["jobs"], handler, settings)
    await consumer.start()
    try:
        [msg_id] = await service.send_batch("jobs", [b"slow"])
        await _until(lambda: consumer.stats.duplicate_claims >= 1)
    finally:
        await consumer.stop()
    assert consumer.stats.released_on_stop >= 1
    assert consumer.stats.invocations[("jobs", msg_id)] == 1  # never two at once
    # Released: receivable now, not once the latest claim's second has passed.
    [again] = await service.receive_messages("jobs", 1, 30)
    assert again.msg_id == msg_id
    await service.close()


async def test_a_claim_waiting_behind_its_id_ages_from_when_it_was_claimed() -> None:
    """Two claims of one id in one batch (RabbitMQ producers choose ids): the second
    waits behind the first's handler, and is released rather than started once its
    claim, counted from the batch's receive, is past half its timeout."""
    clock = VirtualClock()
    service = InMemoryMessagingService(clock=clock)
    await service.create_queue("q")
    await service.send_batch("q", [b"a", b"b"])
    claimed_at = clock.now()
    first, second = await service.receive_messages("q", 2, 30.0)
    second = dataclasses.replace(second, msg_id=first.msg_id)  # the same id
    gate = asyncio.Event()
    started: list[bytes] = []

    async def handler(message: QueuedMessage) -> None:
        started.append(message.payload)
        if message.payload == b"a":
            await gate.wait()

    settings = ConsumerSettings(mode=DeploymentMode.POLLING_ONLY, visibility_timeout=30.0)
    consumer = QueueConsumer(service, ["q"], handler, settings, clock=clock)
    consumer._running = True  # driven by hand: no workers, no poller
    running = asyncio.create_task(consumer._process(first, Intake.POLL, claimed_at))
    await asyncio.sleep(0)
    await clock.advance(14.9)  # the batch's claim is not half through: it may start
    await consumer._process(second, Intake.POLL, claimed_at)  # waits behind
    await clock.advance(14.9)  # the first's handler ends at 29.8 s of 30
    gate.set()
    await running
    assert started == [b"a"]
    assert consumer.stats.released_unstarted == 1
    await service.close()


async def test_a_handlers_own_cancelled_error_is_a_failure_not_the_end_of_its_worker() -> None:
    service = InMemoryMessagingService()
    await service.create_queue("jobs")
    handled: list[bytes] = []
    failed_once = False

    async def handler(message: QueuedMessage) -> None:
        nonlocal failed_once
        if message.payload == b"a" and not failed_once:
            failed_once = True
            cancelled = asyncio.get_running_loop().create_future()
            cancelled.cancel()
            await cancelled  # something it awaited was cancelled elsewhere
        handled.append(message.payload)

    settings = ConsumerSettings(mode=DeploymentMode.POLLING_ONLY, workers=1, poll_interval=0.05)
    async with QueueConsumer(service, ["jobs"], handler, settings) as consumer:
        await service.send_batch("jobs", [b"a", b"b"])
        await _until(lambda: sorted(handled) == [b"a", b"b"])  # the one worker lives on
    assert consumer.stats.handler_failures == 1
    await service.close()


# -- handlers that misbehave, and the consumer's own lifecycle --------------------------


class _HandlerQuit(BaseException):
    """Not an Exception: what a handler's library may raise to unwind."""


def _once(error: Callable[[], BaseException] | None) -> Callable[[QueuedMessage], Awaitable[None]]:
    """A handler whose first run raises ``error()`` (None: cancels its own task, then
    awaits); every later run succeeds."""
    raised: list[int] = []

    async def handler(message: QueuedMessage) -> None:
        if not raised:
            raised.append(message.msg_id)
            if error is None:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
                await asyncio.sleep(1)  # raises the CancelledError asked for
            else:
                raise error()

    return handler


@pytest.mark.parametrize(
    "error",
    [
        _HandlerQuit,
        GeneratorExit,
        lambda: BaseExceptionGroup("both", [_HandlerQuit(), ValueError()]),
        None,
    ],
    ids=["base-exception", "generator-exit", "base-exception-group", "own-cancel"],
)
async def test_whatever_a_handler_raises_is_its_failure_and_the_worker_lives_on(
    error: Callable[[], BaseException] | None,
) -> None:
    """A BaseException that is not an Exception ended the worker silently: its batch was
    neither run nor released, nothing else was consumed, and stop() re-raised it and left
    the settler running. A handler cancelling its own task did the same; that request
    now ends its worker (it cannot be told from a loop shutting down), whose batch is
    released and whose place a new worker takes: the work goes on all the same."""
    service = InMemoryMessagingService()
    await service.create_queue("jobs")
    await service.send_batch("jobs", [b"%d" % i for i in range(6)])
    settings = ConsumerSettings(
        mode=DeploymentMode.POLLING_ONLY, workers=1, batch_size=3, poll_interval=0.05
    )
    consumer = QueueConsumer(service, ["jobs"], _once(error), settings)
    await consumer.start()
    await _until(lambda: consumer.stats.processed == 6)
    await asyncio.wait_for(consumer.stop(), 5)
    assert consumer.stats.handler_failures == 1
    assert consumer.stats.handler_runs == 7  # the failed one ran again
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("mq-")] == []
    await service.close()


async def test_stop_awaited_from_a_handler_is_refused_and_nothing_is_left_half_stopped() -> None:
    """stop() waits for the handlers, so a handler awaiting it was cancelled halfway and
    left the settler and the subscription open, its batch unreleased and uncounted."""
    service = InMemoryMessagingService()
    await service.create_queue("jobs")
    await service.send_message("jobs", b"stop please")
    refused: list[BaseException] = []

    async def handler(_: QueuedMessage) -> None:
        try:
            await consumer.stop()
        except RuntimeError as exc:
            refused.append(exc)
            raise

    settings = ConsumerSettings(mode=DeploymentMode.POLLING_ONLY, workers=1, poll_interval=0.05)
    consumer = QueueConsumer(service, ["jobs"], handler, settings)
    await consumer.start()
    await _until(lambda: consumer.stats.handler_failures >= 1)
    assert "asyncio.create_task(consumer.stop())" in str(refused[0])
    await asyncio.wait_for(consumer.stop(), 5)
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("mq-")] == []
    await service.close()


async def test_concurrent_starts_start_one_consumer() -> None:
    """Two start() calls at once made two listeners, two pollers and twice the workers,
    and stop() stopped only the second set."""
    service = InMemoryMessagingService()
    await service.create_queue("jobs")

    async def handler(_: QueuedMessage) -> None:
        pass

    settings = ConsumerSettings(mode=DeploymentMode.HYBRID, workers=2, poll_interval=0.05)
    consumer = QueueConsumer(service, ["jobs"], handler, settings)
    await asyncio.gather(consumer.start(), consumer.start())
    workers = [t for t in asyncio.all_tasks() if t.get_name().startswith("mq-worker")]
    assert len(workers) == 2
    await consumer.stop()
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("mq-")] == []
    await service.close()


async def test_a_handler_that_swallows_stops_cancellation_does_not_hold_stop() -> None:
    """The worker went back for more work after its handler swallowed the cancellation,
    and stop() never returned (the caller's own timeout was passed into the worker)."""
    service = InMemoryMessagingService()
    await service.create_queue("jobs")
    await service.send_batch("jobs", [b"1", b"2"])
    started = asyncio.Event()

    async def stubborn(_: QueuedMessage) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleans up, and returns as if nothing happened

    settings = ConsumerSettings(
        mode=DeploymentMode.POLLING_ONLY, workers=1, poll_interval=0.05, stop_grace=0.2
    )
    consumer = QueueConsumer(service, ["jobs"], stubborn, settings)
    await consumer.start()
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(consumer.stop(), 5)
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("mq-")] == []
    await service.close()
