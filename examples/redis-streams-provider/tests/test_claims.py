"""Claims: a settle acts only for the claim it names, checked in the script that acts.

The token is the pending entry's delivery count; these tests drive the cases the PEL
tells apart (lapsed, superseded, settled, not held) and check that a stale settle leaves
the message, its count and the other holder's claim exactly as they were.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from mqcontract.errors import StaleClaim, StaleReason
from mqcontract.messages import Claim, Message, QueuedMessage

from mqcontract_redis_streams import RedisStreamsMessagingService
from support import claims_visible, eventually, open_service, queue_name


def _claim(message: QueuedMessage) -> Claim:
    assert message.claim is not None, f"message {message.msg_id} carries no claim"
    return message.claim


async def _stale(call: Any, reason: StaleReason) -> None:
    with pytest.raises(StaleClaim) as raised:
        await call
    assert raised.value.reason is reason, raised.value


async def test_every_received_message_carries_its_claim(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    ids = await service.send_batch(queue, [b"a", b"b"])
    got = await service.receive_messages(queue, 2, 30)
    assert [_claim(m) for m in got] == [Claim(queue, i, 1, 30.0) for i in ids]
    assert service.capabilities.producer_assigned_ids is False


async def test_a_lapsed_claim_is_stale_and_changes_nothing(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"slow")
    (first,) = await service.receive_messages(queue, 1, 0.1)
    await claims_visible(service, queue, 1)

    await _stale(service.ack_message(queue, sent), StaleReason.LAPSED)  # by id: its claim
    await _stale(service.ack_claim(queue, first), StaleReason.LAPSED)
    await _stale(service.nack_claim(queue, first), StaleReason.LAPSED)
    assert await service.stored_ids(queue) == [sent]
    (again,) = await service.receive_messages(queue, 1, 60)
    assert (again.msg_id, again.receive_count) == (sent, 2)  # no delivery was lost or added
    await service.ack_claim(queue, again)
    assert await service.stored_ids(queue) == []


async def test_a_nacked_claim_is_lapsed(service: RedisStreamsMessagingService, queue: str) -> None:
    await service.send_message(queue, b"x")
    (got,) = await service.receive_messages(queue, 1, 60)
    await service.nack_claim(queue, got)
    await _stale(service.ack_claim(queue, got), StaleReason.LAPSED)
    (again,) = await service.receive_messages(queue, 1, 60)
    assert again.receive_count == 2


async def test_a_superseded_claim_cannot_settle_the_new_holders_message(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    other = await open_service()
    try:
        sent = await service.send_message(queue, b"contended")
        (old,) = await service.receive_messages(queue, 1, 0.1)
        await claims_visible(service, queue, 1)
        (new,) = await other.receive_messages(queue, 1, 60)  # a second consumer has it now
        assert (new.msg_id, new.receive_count) == (sent, 2)

        await _stale(service.nack_message(queue, sent), StaleReason.SUPERSEDED)  # by id
        await _stale(service.ack_claim(queue, old), StaleReason.SUPERSEDED)
        await _stale(service.nack_claim(queue, old), StaleReason.SUPERSEDED)
        assert await service.ack_claims(queue, [old]) == [False]

        assert await service.stored_ids(queue) == [sent]
        assert await service.receive_messages(queue, 1, 60) == []  # still held by other
        await other.ack_claim(queue, new)
        assert await service.stored_ids(queue) == []
    finally:
        await other.close()


async def test_settled_and_foreign_claims_name_their_reason(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"x")
    (got,) = await service.receive_messages(queue, 1, 60)
    claim = _claim(got)
    for token in ("1", 7, 0, True, 2**60):  # not this message's delivery count
        forged = dataclasses.replace(claim, token=token)
        await _stale(service.ack_claim(queue, forged), StaleReason.NOT_HELD)
    await _stale(
        service.ack_claim(queue, dataclasses.replace(claim, msg_id=2**64)), StaleReason.NOT_HELD
    )
    assert await service.stored_ids(queue) == [sent]  # the forgeries changed nothing
    await service.ack_claim(queue, claim)
    await _stale(service.ack_claim(queue, claim), StaleReason.SETTLED)
    await _stale(service.nack_claim(queue, claim), StaleReason.SETTLED)


async def test_ack_claims_settles_live_claims_and_reports_stale_ones_in_one_call(
    service: RedisStreamsMessagingService, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = await open_service()
    try:
        ids = await service.send_batch(queue, [b"live", b"lapsed", b"superseded", b"acked"])
        live, lapsed, superseded, acked = await service.receive_messages(queue, 4, 60)
        await service.nack_claim(queue, lapsed)
        await service.nack_claim(queue, superseded)
        (taken, retaken) = await other.receive_messages(queue, 2, 60)  # re-claims both
        assert [taken.msg_id, retaken.msg_id] == ids[1:3]
        await other.nack_claim(queue, taken)  # lapsed by nack; retaken stays held by other
        await service.ack_claim(queue, acked)

        calls: list[str] = []
        script = service._script

        async def counted(name: str, queue: str, *args: Any) -> Any:
            calls.append(name)
            return await script(name, queue, *args)

        monkeypatch.setattr(service, "_script", counted)
        outcome = await service.ack_claims(queue, [live, lapsed, superseded, acked, live])
        assert outcome == [True, False, False, False, False]
        assert calls == ["settle"]  # one script call for the whole batch

        assert await service.stored_ids(queue) == ids[1:3]
        (back,) = await service.receive_messages(queue, 5, 60)  # only the nacked one
        assert (back.msg_id, back.receive_count) == (ids[1], 3)
        await other.ack_claim(queue, retaken)  # the stale batch entry left it alone
    finally:
        await other.close()


async def test_a_handed_back_push_claim_never_releases_a_later_holder() -> None:
    # The subscription's claim lapses while nobody takes it; another consumer claims the
    # message; closing the subscription then hands back a stale claim, which must not make
    # the other consumer's message visible.
    svc = await open_service(push_visibility_timeout_seconds=0.1, push_poll_interval_seconds=30)
    other = await open_service()
    q = queue_name()
    try:
        await svc.create_queue(q)
        sent = await svc.send_message(q, b"pushed")
        sub = await svc.subscribe(q)

        async def pushed() -> bool:  # asked without claiming: pending in the group
            summary = await svc.client.xpending(svc.stream_key(q), "mqcontract")
            return bool(summary["pending"] == 1)

        await eventually(pushed, 5, "the subscription claimed the message")
        await claims_visible(other, q, 1)
        (held,) = await other.receive_messages(q, 1, 60)
        assert (held.msg_id, held.receive_count) == (sent, 2)
        await sub.aclose()
        assert await other.receive_messages(q, 1, 60) == []  # still held by other
        await other.ack_claim(q, held)
    finally:
        await svc.delete_queue(q)
        await svc.close()
        await other.close()


async def test_an_old_pushed_claim_cannot_settle_the_copy_pushed_again(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"retry me")
    async with await service.subscribe(queue) as sub:
        async with asyncio.timeout(5):
            first = await anext(sub)
        assert isinstance(first, Message)
        await service.nack_claim(queue, first.message)
        async with asyncio.timeout(5):
            again = await anext(sub)
        assert isinstance(again, Message)
        assert again.message.receive_count == 2
        await _stale(service.ack_claim(queue, first.message), StaleReason.SUPERSEDED)
        await service.ack_message(queue, sent)  # by id: the copy this service holds now
        assert await service.stored_ids(queue) == []
