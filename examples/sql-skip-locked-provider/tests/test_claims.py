"""Claims: a read counter as token, settled by one conditional statement, on both dialects."""

from __future__ import annotations

import dataclasses

import pytest
from mqcontract.errors import MessageNotFound, QueueNotFound, StaleClaim, StaleReason
from mqcontract.messages import Claim

from mqcontract_sql_skip_locked import SqlQueueService
from mqcontract_sql_skip_locked.harness import SqlHarness
from support import eventually, queue_name


async def _stale(service: SqlQueueService, queue: str, claim: Claim) -> StaleReason:
    with pytest.raises(StaleClaim) as info:
        await service.ack_claim(queue, claim)
    return info.value.reason


async def test_the_token_is_the_read_count_and_each_claim_is_new(
    service: SqlQueueService, queue: str
) -> None:
    sent = await service.send_message(queue, b"x")
    (first,) = await service.receive_messages(queue, 1, 0.05)
    assert first.claim == Claim(queue, sent, 1, 0.05)

    async def again() -> list[int]:
        return [m.receive_count for m in await service.receive_messages(queue, 1, 60)]

    assert await eventually(again, 5, "claim lapsed") == [2]


async def test_an_expired_claim_taken_over_is_superseded_and_changes_nothing(
    service: SqlQueueService, queue: str
) -> None:
    sent = await service.send_message(queue, b"x")
    (got,) = await service.receive_messages(queue, 1, 0.05)
    assert got.claim is not None

    async def visible() -> bool:
        return await service.fetch_message(queue, sent, 60) is not None

    await eventually(visible, 5, "claim lapsed")  # the fetch made claim 2
    assert await _stale(service, queue, got.claim) is StaleReason.SUPERSEDED
    assert await service.stored_ids(queue) == [sent]
    assert await service.receive_messages(queue, 1, 60) == []  # claim 2 still holds it


async def test_a_nacked_claim_is_lapsed_and_a_later_one_supersedes_it(
    service: SqlQueueService, queue: str
) -> None:
    sent = await service.send_message(queue, b"x")
    (got,) = await service.receive_messages(queue, 1, 60)
    assert got.claim is not None
    await service.nack_claim(queue, got.claim)
    assert await _stale(service, queue, got.claim) is StaleReason.LAPSED
    (again,) = await service.receive_messages(queue, 1, 60)
    assert (again.msg_id, again.receive_count) == (sent, 2)
    assert await _stale(service, queue, got.claim) is StaleReason.SUPERSEDED
    await service.ack_claim(queue, again)
    assert await _stale(service, queue, again.claim or got.claim) is StaleReason.SETTLED
    assert await service.stored_ids(queue) == []


async def test_tokens_no_row_ever_had_are_not_held_and_never_reach_sql(
    service: SqlQueueService, queue: str
) -> None:
    sent = await service.send_message(queue, b"x")
    (got,) = await service.receive_messages(queue, 1, 60)
    assert got.claim is not None
    for token in (5, 0, -1, 2**31, 2**63, True, "1", 1.0):
        fake = dataclasses.replace(got.claim, token=token)  # type: ignore[arg-type]
        assert await _stale(service, queue, fake) is StaleReason.NOT_HELD
    await service.ack_claim(queue, got.claim)  # still held: nothing above released it
    assert await service.stored_ids(queue) == []
    assert sent == got.msg_id


async def test_a_delayed_message_is_held_by_no_claim(service: SqlQueueService, queue: str) -> None:
    delayed = await service.send_message_with_delay(queue, b"later", 60)
    claim = Claim(queue, delayed, 1, 60)
    assert await _stale(service, queue, claim) is StaleReason.NOT_HELD  # read count 0
    assert await service.receive_messages(queue, 10, 60) == []
    assert await service.stored_ids(queue) == [delayed]


async def test_ack_claims_settles_a_mixed_batch_once_each(
    service: SqlQueueService, queue: str
) -> None:
    ids = await service.send_batch(queue, [b"a", b"b", b"c"])
    got = await service.receive_messages(queue, 3, 60)
    claims = [m.claim for m in got]
    assert None not in claims
    a, b, c = (claim for claim in claims if claim is not None)
    await service.nack_claim(queue, b)  # b: lapsed
    stray = dataclasses.replace(a, token=9)
    assert await service.ack_claims(queue, [a, a, b, stray, c]) == [True, False, False, False, True]
    assert await service.stored_ids(queue) == [ids[1]]


async def test_a_claim_made_by_one_service_settles_through_another(
    harness: SqlHarness, service: SqlQueueService, queue: str
) -> None:
    other = await harness.open()
    try:
        sent = await service.send_message(queue, b"shared")
        (got,) = await service.receive_messages(queue, 1, 60)
        assert got.claim is not None
        with pytest.raises(MessageNotFound):
            await other.ack_message(queue, sent)  # by id: only a claim *other* made
        await other.ack_claim(queue, got.claim)
        assert await other.receive_messages(queue, 1, 60) == []
    finally:
        await other.close()


async def test_a_missing_queue_wins_over_a_claim_that_cannot_be_ours(
    service: SqlQueueService,
) -> None:
    missing = queue_name("gone")
    for claim in (Claim(missing, 1, 1, 60), Claim(missing, 2**64, 1, 60)):
        with pytest.raises(QueueNotFound):
            await service.ack_claim(missing, claim)
        with pytest.raises(QueueNotFound):
            await service.ack_claims(missing, [claim])


async def test_ids_are_never_reused_after_a_queue_is_re_created(
    service: SqlQueueService,
) -> None:
    q = queue_name()
    await service.create_queue(q)
    first = await service.send_batch(q, [b"a", b"b"])
    (got, _) = await service.receive_messages(q, 2, 60)
    await service.delete_queue(q)
    await service.create_queue(q)
    (again,) = await service.send_batch(q, [b"c"])
    assert again > max(first)
    assert got.claim is not None
    with pytest.raises(StaleClaim) as info:  # the old claim names nothing now
        await service.ack_claim(q, got.claim)
    assert info.value.reason is StaleReason.SETTLED
    await service.delete_queue(q)
