"""Hints folded before they reach the event system's workers.

A signal or an unclaimed pushed copy only tells a consumer that a queue has work. The
event system asks its subscription to fold a hint into the one of its queue still
waiting there (:meth:`QueueSubscription.coalesce_hints`), and the PGMQ listener does not
even read a NOTIFY whose hint would be folded: a burst of N sends then costs one
catch-up, not N parsed notifications. Nothing folded may be left behind, and nothing
else changes: claimed pushes, delayed notifications and subscriptions that did not ask
are delivered one by one as before.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable

import pytest

from mqcontract import subscription as subscription_module
from mqcontract.clock import VirtualClock
from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.messages import Available, Message, MessageNotification, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Queue
from mqcontract.providers.pgmq import open_pgmq
from mqcontract.providers.pgmq._listener import PgmqListener
from mqcontract.subscription import QueueSubscription
from tests.pgmq_support import config
from tests.test_events import _HangingReceive
from tests.test_pgmq_notify_untrusted import _listener, _subscribed


def _copy(queue: str, msg_id: int, *, claimed: bool = False) -> Message:
    return Message(QueuedMessage(msg_id, queue, b"x", 1, 1.0), claimed=claimed)


async def _until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# -- the subscription ------------------------------------------------------------------


async def test_hints_of_a_queue_fold_into_the_one_waiting_as_a_catch_up() -> None:
    sub = QueueSubscription(("a", "b"))
    sub.coalesce_hints()
    sub.put(_copy("a", 1))
    sub.put(Available("b", 7))
    sub.put(_copy("a", 2))
    sub.put(Available("a", 3))
    assert sub.folded == 2
    # Folded: the waiting hint no longer names one message (its claim by id would leave
    # the others), it says "catch up on the queue". The other queue's is untouched.
    assert await sub.__anext__() == Available("a", None)
    assert await sub.__anext__() == Available("b", 7)
    # Taken: the next hint of the queue waits on its own again.
    sub.put(_copy("a", 4))
    assert sub.hint_waiting("a")
    assert not sub.hint_waiting("b")
    assert sub.pending() == [_copy("a", 4)]
    assert not sub.hint_waiting("a")
    await sub.aclose()


async def test_claimed_pushes_and_subscriptions_that_did_not_ask_are_never_folded() -> None:
    folding = QueueSubscription(("a",))
    folding.coalesce_hints()
    plain = QueueSubscription(("a",))
    claimed: list[MessageNotification] = [_copy("a", i, claimed=True) for i in range(3)]
    hints: list[MessageNotification] = [_copy("a", 10), Available("a", 11)]
    for note in [*claimed, *hints]:
        folding.put(note)
        plain.put(note)
    assert folding.pending() == [*claimed, Available("a", None)]
    assert folding.folded == 1
    assert plain.pending() == [*claimed, *hints]
    assert plain.folded == 0


async def test_an_unread_subscription_folds_hints_past_its_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nobody reads it while a producer floods its queue: past the backlog, hints fold
    into a catch-up (memory stays bounded); claimed pushes still queue one by one."""
    monkeypatch.setattr(subscription_module, "HINT_BACKLOG", 3)
    sub = QueueSubscription(("a",))
    for msg_id in range(1, 8):
        sub.put(_copy("a", msg_id))
    claimed = _copy("a", 99, claimed=True)
    sub.put(claimed)
    assert sub.folded == 3
    assert sub.pending() == [
        *(_copy("a", i) for i in (1, 2, 3)),
        Available("a", None),
        claimed,
    ]
    sub.put(_copy("a", 8))  # read: below the backlog again, one by one
    assert sub.pending() == [_copy("a", 8)]


# -- the PGMQ listener -----------------------------------------------------------------


def _folding(listener: PgmqListener) -> QueueSubscription:
    sub = _subscribed(listener)
    sub.coalesce_hints()
    return sub


async def test_the_pgmq_listener_folds_without_reading_while_a_hint_waits() -> None:
    listener = _listener()
    sub = _folding(listener)
    listener._on_notify(None, 1, "mqcontract_q", '{"queue":"q","msg_id":1}')
    # Unread: not even counted as malformed (a waiting catch-up covers whatever it was).
    listener._on_notify(None, 1, "mqcontract_q", "not json")
    listener._on_notify(None, 1, "mqcontract_q", '{"queue":"q","msg_id":2}')
    assert (listener.malformed, sub.folded) == (0, 2)
    assert sub.pending() == [Available("q", None)]
    # Nothing waits now: the next is read (and a malformed one counted) as ever.
    listener._on_notify(None, 1, "mqcontract_q", "not json")
    assert listener.malformed == 1
    await listener.close()


async def test_a_delayed_notification_is_held_not_folded() -> None:
    """Folded into the waiting hint, its catch-up would run before the message is
    visible and nothing would announce it again (only a poller would find it)."""
    listener = _listener()
    sub = _folding(listener)
    listener._on_notify(None, 1, "mqcontract_q", '{"queue":"q","msg_id":1}')
    listener._on_notify(None, 1, "mqcontract_q", '{"queue":"q","msg_id":2,"delay":0.01}')
    assert listener.held == 1
    assert await sub.__anext__() == Available("q", 1)
    assert await asyncio.wait_for(sub.__anext__(), 5.0) == Available("q", 2)
    await listener.close()


async def test_a_subscriber_that_does_not_fold_gets_every_notification() -> None:
    listener = _listener()
    folding = _folding(listener)
    plain = _subscribed(listener)
    for msg_id in (1, 2, 3):
        listener._on_notify(None, 1, "mqcontract_q", f'{{"queue":"q","msg_id":{msg_id}}}')
    assert plain.pending() == [Available("q", i) for i in (1, 2, 3)]
    assert folding.pending() == [Available("q", None)]
    await listener.close()


# -- the event system ------------------------------------------------------------------


class _OneSignalPerBatch(_HangingReceive):
    """Signals a batch once, as a subscription that folded the batch's hints does."""

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        if getattr(self, "_signalled", False):
            return InMemoryMessagingService._enqueue(self, queue, payload, delay)
        self._signalled = True
        return super()._enqueue(queue, payload, delay)


async def test_a_catch_up_claims_again_what_it_released_unstarted() -> None:
    """Its one hint went into the catch-up: a catch-up that released its batch (the
    receive hung past the timeout) and stopped there left the batch for ever where no
    poller runs."""
    clock = VirtualClock()
    service = _OneSignalPerBatch(clock=clock)
    await service.create_queue("jobs")
    settings = ConsumerSettings(
        mode=DeploymentMode.EVENT_DRIVEN_ONLY, workers=1, batch_size=10, visibility_timeout=5
    )
    consumer = QueueConsumer(service, ["jobs"], lambda _: asyncio.sleep(0), settings, clock=clock)
    await consumer.start()
    try:
        ids = await service.send_batch("jobs", [b"%d" % i for i in range(3)])
        await _until(lambda: consumer.stats.processed == 3, 5.0)
    finally:
        await consumer.stop()
    assert service.hung
    assert consumer.stats.notifications == 1
    assert consumer.stats.released_unstarted == 3
    assert [consumer.stats.invocations[("jobs", i)] for i in ids] == [1] * 3
    await service.close()


async def test_a_pgmq_burst_is_handled_once_each_with_hints_folded(pgmq_db_url: str) -> None:
    """Sends in bursts under a Hybrid consumer whose poller never runs in time: every
    message is handled exactly once, found through the folded hints alone."""
    service = await open_pgmq(config(pgmq_db_url))
    queue = f"t_fold_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await service.create_queue(queue)
    settings = ConsumerSettings(
        mode=DeploymentMode.HYBRID, workers=4, batch_size=50, poll_interval=3600
    )
    consumer = QueueConsumer(service, [queue], lambda _: asyncio.sleep(0), settings)
    await consumer.start()
    try:
        # The poll a consumer makes as it starts would race the first burst.
        await _until(lambda: consumer.stats.polls >= 1 or not consumer.polls_at_start, 10.0)
        for burst in range(10):
            await service.send_batch(queue, [b"%d" % (burst * 100 + i) for i in range(100)])
        await _until(lambda: consumer.stats.processed == 1000, 60.0)
    finally:
        await consumer.stop()
        await service.delete_queue(queue)
        await service.close()
    stats = consumer.stats
    assert not stats.processed_twice()
    assert stats.polled_messages == 0
    assert stats.notifications == 1000  # every NOTIFY heard, folded or not
