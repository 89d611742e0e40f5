"""Claims: a settle acts only for the reservation it names, on the connection that made it."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from mqcontract.errors import QueueNotFound, StaleClaim, StaleReason
from mqcontract.messages import Claim, QueuedMessage

from mqcontract_beanstalkd import BeanstalkdMessagingService
from mqcontract_beanstalkd.harness import BeanstalkdHarness
from support import eventually, open_service


def _claim(message: QueuedMessage) -> Claim:
    assert message.claim is not None, f"message {message.msg_id} carries no claim"
    return message.claim


async def _stale(call: Any, reason: StaleReason) -> None:
    with pytest.raises(StaleClaim) as raised:
        await call
    assert raised.value.reason is reason, raised.value


async def _back(service: BeanstalkdMessagingService, queue: str) -> QueuedMessage:
    async def one() -> QueuedMessage | None:
        got = await service.receive_messages(queue, 1, 60)
        return got[0] if got else None

    return await eventually(one, 5, f"a message back on {queue}")


async def test_a_claim_names_its_connection_and_reserve_count(
    service: BeanstalkdMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"x")
    (got,) = await service.receive_messages(queue, 1, 30)
    assert service.link is not None
    assert _claim(got) == Claim(queue, sent, f"{service.link.serial}:1", 30.0)


async def test_a_lapsed_claim_is_stale_and_changes_nothing(
    service: BeanstalkdMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"slow")
    (first,) = await service.receive_messages(queue, 1, 0.1)
    again = await _back(service, queue)  # the server expired it (the lease: 1 s)
    assert (again.msg_id, again.receive_count) == (sent, 2)
    await _stale(service.ack_claim(queue, first), StaleReason.SUPERSEDED)
    await service.nack_claim(queue, again)
    await _stale(service.ack_claim(queue, again), StaleReason.LAPSED)  # nacked: ready
    assert await service.stored_ids(queue) == [sent]


async def test_settled_and_foreign_claims_name_their_reason(
    service: BeanstalkdMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"x")
    (got,) = await service.receive_messages(queue, 1, 60)
    claim = _claim(got)
    serial = claim.token.split(":")[0] if isinstance(claim.token, str) else ""
    for token in (1, "1", f"{serial}:7", f"{serial}:x", "other:1", True):
        forged = dataclasses.replace(claim, token=token)
        reason = StaleReason.NOT_HELD
        await _stale(service.ack_claim(queue, forged), reason)
    await _stale(service.ack_claim(queue, dataclasses.replace(claim, msg_id=2**64)), reason)
    assert await service.stored_ids(queue) == [sent]  # the forgeries changed nothing
    await service.ack_claim(queue, claim)
    await _stale(service.ack_claim(queue, claim), StaleReason.SETTLED)
    await _stale(service.nack_claim(queue, claim), StaleReason.SETTLED)


async def test_a_claim_cannot_be_settled_by_another_connection(
    service: BeanstalkdMessagingService, queue: str
) -> None:
    # A reservation belongs to the connection that made it: another service holds none.
    other = await open_service()
    try:
        sent = await service.send_message(queue, b"mine")
        (got,) = await service.receive_messages(queue, 1, 60)
        await _stale(other.ack_claim(queue, _claim(got)), StaleReason.NOT_HELD)
        assert await other.receive_messages(queue, 1, 60) == []  # still held here
        await service.ack_claim(queue, got)
        assert await other.stored_ids(queue) == []
        assert sent == got.msg_id
    finally:
        await other.close()


async def test_a_claim_dies_with_its_connection(
    service: BeanstalkdMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"held")
    (got,) = await service.receive_messages(queue, 1, 60)
    harness = BeanstalkdHarness.__new__(BeanstalkdHarness)
    harness.config = service.settings
    await harness.sever_connection(service)
    with pytest.raises(Exception):  # noqa: B017, PT011 - ConnectionLost, or a reconnect
        await service.ack_claim(queue, got)
    await _stale(service.ack_claim(queue, got), StaleReason.NOT_HELD)  # new connection
    again = await _back(service, queue)  # released at once by the server
    assert (again.msg_id, again.receive_count) == (sent, 2)


async def test_a_claim_on_a_missing_queue_is_queue_not_found(
    service: BeanstalkdMessagingService,
) -> None:
    with pytest.raises(QueueNotFound):
        await service.ack_claim("bs_never_made", Claim("bs_never_made", 1, "x:1", 1.0))


async def test_a_long_claim_is_renewed_and_then_expires_at_its_deadline(
    service: BeanstalkdMessagingService, queue: str
) -> None:
    other = await open_service()
    try:
        sent = await service.send_message(queue, b"long")
        loop = asyncio.get_running_loop()
        start = loop.time()
        await service.receive_messages(queue, 1, 2.5)  # > two leases: renewed by touch
        again = await _back(other, queue)
        took = loop.time() - start
        assert again.msg_id == sent
        assert 2.4 <= took <= 3.6, f"back after {took:.2f} s, timeout 2.5 s"
    finally:
        await other.close()
