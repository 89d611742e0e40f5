"""The pure queue model: certain outside its tolerance band, permissive inside it."""

from __future__ import annotations

import pytest

from mqcontract.capabilities import Capabilities, PushKind, RequeuePosition
from mqcontract.messages import QueuedMessage
from mqcontract_conformance.cases._queue_model import ModelMismatch, Outcome, QueueModel

ORIGINAL = Capabilities(push=PushKind.FULL)
BACK = Capabilities(push=PushKind.FULL, requeue_position=RequeuePosition.BACK)
INEXACT = Capabilities(push=PushKind.FULL, exact_receive_count=False)


def _model(caps: Capabilities = ORIGINAL, tolerance: float = 0.1) -> QueueModel:
    return QueueModel("q", caps, tolerance)


def _msg(msg_id: int, count: int = 1, payload: bytes = b"p") -> QueuedMessage:
    return QueuedMessage(msg_id, "q", payload, count, 0.0)


def test_a_held_message_received_again_before_its_deadline_is_a_mismatch() -> None:
    m = _model()
    m.sent(0.0, 0.0, 1, b"p")
    m.received(1.0, 1.0, 1, 5.0, [_msg(1)])
    with pytest.raises(ModelMismatch, match="held by an earlier receive"):
        m.received(2.0, 2.0, 1, 5.0, [_msg(1, 2)])


def test_inside_the_tolerance_band_either_outcome_is_accepted() -> None:
    for got in ([], [_msg(1, 2)]):
        m = _model(tolerance=0.1)
        m.sent(0.0, 0.0, 1, b"p")
        m.received(1.0, 1.0, 1, 5.0, [_msg(1)])
        m.received(6.05, 6.05, 1, 5.0, got)  # the deadline was 6.0 +- 0.1


def test_after_the_band_a_visible_message_must_be_returned() -> None:
    m = _model(tolerance=0.1)
    m.sent(0.0, 0.0, 1, b"p")
    m.received(1.0, 1.0, 1, 5.0, [_msg(1)])
    with pytest.raises(ModelMismatch, match="left visible messages behind"):
        m.received(6.2, 6.2, 1, 5.0, [])


def test_ack_after_expiry_must_fail_and_ack_while_held_must_succeed() -> None:
    m = _model()
    m.sent(0.0, 0.0, 1, b"p")
    m.received(1.0, 1.0, 1, 5.0, [_msg(1)])
    with pytest.raises(ModelMismatch, match="raised MessageNotFound"):
        m.settled(2.0, 2.0, 1, Outcome.NOT_FOUND, ack=True)
    with pytest.raises(ModelMismatch, match="after its visibility timeout"):
        m.settled(7.0, 7.0, 1, Outcome.OK, ack=True)


def test_an_acked_message_that_comes_back_is_named() -> None:
    m = _model()
    m.sent(0.0, 0.0, 1, b"p")
    m.received(0.0, 0.0, 1, 5.0, [_msg(1)])
    m.settled(0.0, 0.0, 1, Outcome.OK, ack=True)
    with pytest.raises(ModelMismatch, match="acked message 1 was received again"):
        m.received(9.0, 9.0, 1, 5.0, [_msg(1, 2)])


def test_original_position_means_a_nacked_message_comes_first() -> None:
    m = _model()
    for i in (1, 2):
        m.sent(0.0, 0.0, i, b"p")
    m.received(1.0, 1.0, 1, 5.0, [_msg(1)])
    m.settled(1.0, 1.0, 1, Outcome.OK, ack=False)
    with pytest.raises(ModelMismatch, match="skipped older visible message 1"):
        m.received(2.0, 2.0, 1, 5.0, [_msg(2)])


def test_back_position_means_a_nacked_message_comes_last() -> None:
    m = _model(BACK)
    m.sent(0.0, 0.1, 1, b"p")
    m.sent(0.2, 0.3, 2, b"p")
    m.received(1.0, 1.1, 1, 5.0, [_msg(1)])
    m.settled(1.2, 1.3, 1, Outcome.OK, ack=False)
    m.received(2.0, 2.1, 2, 5.0, [_msg(2), _msg(1, 2)])
    m2 = _model(BACK)
    m2.sent(0.0, 0.1, 1, b"p")
    m2.sent(0.2, 0.3, 2, b"p")
    m2.received(1.0, 1.1, 1, 5.0, [_msg(1)])
    m2.settled(1.2, 1.3, 1, Outcome.OK, ack=False)
    with pytest.raises(ModelMismatch, match="out of order"):
        m2.received(2.0, 2.1, 2, 5.0, [_msg(1, 2), _msg(2)])


def test_a_claim_lapsing_during_a_receive_may_come_after_younger_messages() -> None:
    """Message 1's claim lapses (6.0 +- 0.1) while a receive that began at 5.5 runs: a
    provider claiming one message after another may have passed its place by then. A
    receive that began after the band must put it first (original requeue position)."""
    for start, accepted in ((5.5, True), (6.2, False)):
        m = _model(tolerance=0.1)
        m.sent(0.0, 0.0, 1, b"p")
        m.sent(0.0, 0.0, 2, b"p")
        m.received(1.0, 1.0, 1, 5.0, [_msg(1)])
        got = [_msg(2), _msg(1, 2)]
        if accepted:
            m.received(start, 6.3, 2, 5.0, got)
        else:
            with pytest.raises(ModelMismatch, match="out of order"):
                m.received(start, 6.3, 2, 5.0, got)


def test_receive_counts_are_exact_or_a_declared_lower_bound() -> None:
    m = _model()
    m.sent(0.0, 0.0, 1, b"p")
    with pytest.raises(ModelMismatch, match="receive_count 2, expected 1"):
        m.received(0.0, 0.0, 1, 5.0, [_msg(1, 2)])
    lower = _model(INEXACT)
    lower.sent(0.0, 0.0, 1, b"p")
    lower.received(0.0, 0.0, 1, 1.0, [_msg(1, 1)])
    lower.settled(0.5, 0.5, 1, Outcome.OK, ack=False)
    lower.received(0.6, 0.6, 1, 1.0, [_msg(1, 7)])  # at least 2 on a redelivery
    lower.settled(0.7, 0.7, 1, Outcome.OK, ack=False)
    with pytest.raises(ModelMismatch, match="receive_count 1"):
        lower.received(0.8, 0.8, 1, 1.0, [_msg(1, 1)])


def test_a_delayed_message_is_not_ordered_but_must_not_come_early() -> None:
    m = _model()
    m.sent(0.0, 0.0, 1, b"p", delay=2.0)
    m.sent(0.0, 0.0, 2, b"p")
    with pytest.raises(ModelMismatch, match="delayed"):
        m.received(1.0, 1.0, 2, 5.0, [_msg(1), _msg(2)])


def test_after_a_fault_unknown_outcomes_widen_the_model() -> None:
    m = _model()
    m.sent(0.0, 0.0, 1, b"p")
    m.received(0.0, 0.0, 1, 30.0, [_msg(1)])
    m.severed(1.0)
    m.settled(1.1, 1.1, 1, Outcome.NOT_FOUND, ack=True)  # the claim died with the connection
    m.received(1.2, 1.2, 1, 30.0, [_msg(1, 2)])  # released early: allowed after a fault
    m.send_unknown(b"maybe")
    m.received(1.3, 1.3, 5, 30.0, [_msg(99, 1, b"maybe")])  # adopted by payload
    m.settled(1.4, 1.4, 99, Outcome.UNKNOWN, ack=True)
    m.stored([1])  # the unknown ack did happen: 99 is gone, and that is fine
    with pytest.raises(ModelMismatch, match="never sent"):
        m.received(1.5, 1.5, 5, 30.0, [_msg(1234)])


def test_the_backdoor_finds_lost_and_resurrected_messages() -> None:
    m = _model()
    m.sent(0.0, 0.0, 1, b"p")
    m.sent(0.0, 0.0, 2, b"p")
    with pytest.raises(ModelMismatch, match="lost"):
        m.stored([2])
    m.received(0.0, 0.0, 1, 5.0, [_msg(1)])
    m.settled(0.0, 0.0, 1, Outcome.OK, ack=True)
    with pytest.raises(ModelMismatch, match=r"acked: \[1\]"):
        m.stored([1, 2])


def test_ids_must_be_new_and_increasing() -> None:
    m = _model()
    m.sent(0.0, 0.0, 5, b"p")
    with pytest.raises(ModelMismatch, match="not increasing"):
        m.sent(0.0, 0.0, 3, b"p")
    with pytest.raises(ModelMismatch, match="already used"):
        m.sent(0.0, 0.0, 5, b"p")


def test_a_message_released_by_a_fault_has_no_declared_position() -> None:
    m = _model(BACK)
    m.sent(0.0, 0.1, 1, b"p")
    m.received(0.2, 0.3, 1, 5.0, [_msg(1)])
    m.sent(0.4, 0.5, 2, b"p")
    m.severed(1.0)  # quorum queues return such a message to the front
    m.received(1.2, 1.3, 2, 30.0, [_msg(1, 2), _msg(2)])
