"""Claims: a settle acts only for the claim it names, decided by the ledger's
compare-and-set, never by JetStream's own ack (which names the message only)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from mqcontract.errors import StaleClaim, StaleReason
from mqcontract.messages import Claim, QueuedMessage

from mqcontract_nats_jetstream import NatsJetStreamMessagingService
from support import ack_unheard, eventually, open_service, queue_name


def _claim(message: QueuedMessage) -> Claim:
    assert message.claim is not None, f"message {message.msg_id} carries no claim"
    return message.claim


async def _stale(call: Any, reason: StaleReason) -> None:
    with pytest.raises(StaleClaim) as raised:
        await call
    assert raised.value.reason is reason, raised.value


async def _back(service: NatsJetStreamMessagingService, queue: str, vt: float) -> QueuedMessage:
    """The next message, waiting (bounded) until one is visible."""
    async with asyncio.timeout(5):
        while True:
            got = await service.receive_messages(queue, 1, vt)
            if got:
                return got[0]
            await asyncio.sleep(0.02)


async def test_every_received_message_carries_its_claim(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    ids = await service.send_batch(queue, [b"a", b"b"])
    got = await service.receive_messages(queue, 2, 30)
    claims = [_claim(m) for m in got]
    assert [(c.queue_name, c.msg_id, c.visibility_timeout) for c in claims] == [
        (queue, i, 30.0) for i in ids
    ]
    # The delivery count, above it the message's timestamp (ns; enqueued_at is a float).
    for c, m in zip(claims, got, strict=True):
        assert isinstance(c.token, int)
        assert c.token & 0xFFFFFFFF == 1
        assert abs((c.token >> 32) - m.enqueued_at * 1e9) < 1_000
    assert ids == [1, 2]  # stream sequences


async def test_a_lapsed_claim_is_stale_and_changes_nothing(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"slow")
    (first,) = await service.receive_messages(queue, 1, 0.2)
    await asyncio.sleep(0.25)  # past the deadline the ledger holds (wall clock)
    await _stale(service.ack_message(queue, sent), StaleReason.LAPSED)
    await _stale(service.nack_claim(queue, first), StaleReason.LAPSED)
    assert await service.stored_ids(queue) == [sent]
    again = await _back(service, queue, 60)
    assert (again.msg_id, again.receive_count) == (sent, 2)
    await service.ack_claim(queue, again)
    assert await service.stored_ids(queue) == []


async def test_a_late_ack_never_deletes_the_message_another_consumer_holds(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    # JetStream alone would delete it: its ack names the stream sequence only.
    other = await open_service()
    try:
        sent = await service.send_message(queue, b"contended")
        (old,) = await service.receive_messages(queue, 1, 0.1)
        new = await _back(other, queue, 60)
        assert (new.msg_id, new.receive_count) == (sent, 2)
        await _stale(service.ack_claim(queue, old), StaleReason.SUPERSEDED)
        await _stale(service.nack_claim(queue, old), StaleReason.SUPERSEDED)
        assert await service.ack_claims(queue, [old]) == [False]
        assert await service.stored_ids(queue) == [sent]
        assert await service.receive_messages(queue, 1, 60) == []  # still held by other
        await other.ack_claim(queue, new)
        assert await service.stored_ids(queue) == []
    finally:
        await other.close()


async def test_settled_and_forged_claims_name_their_reason(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"x")
    (got,) = await service.receive_messages(queue, 1, 60)
    claim = _claim(got)
    assert isinstance(claim.token, int)
    for token in ("1", claim.token + 6, True):  # not a delivery this message had
        forged = dataclasses.replace(claim, token=token)
        await _stale(service.ack_claim(queue, forged), StaleReason.NOT_HELD)
    await _stale(
        service.ack_claim(queue, dataclasses.replace(claim, msg_id=2**64)), StaleReason.NOT_HELD
    )
    assert await service.stored_ids(queue) == [sent]  # the forgeries changed nothing
    await service.ack_claim(queue, claim)
    await _stale(service.ack_claim(queue, claim), StaleReason.SETTLED)
    await _stale(service.nack_claim(queue, claim), StaleReason.SETTLED)


async def test_a_nacked_claim_is_lapsed_and_the_message_back_at_once(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    await service.send_message(queue, b"x")
    (got,) = await service.receive_messages(queue, 1, 60)
    await service.nack_claim(queue, got)
    await _stale(service.ack_claim(queue, got), StaleReason.LAPSED)
    again = await _back(service, queue, 60)
    assert again.receive_count == 2


async def test_a_nacked_message_is_receivable_the_moment_the_nack_returns(
    service: NatsJetStreamMessagingService,
) -> None:
    """The server applies acks apart from the connection's reading: a nak that was only
    published and flushed was often not applied yet when the next pull came (about one
    receive in 15 came back empty with six clients busy). The nack waits for it."""
    others = [await open_service() for _ in range(5)]

    async def rounds(svc: NatsJetStreamMessagingService) -> list[int]:
        empty = []
        for i in range(40):
            q = queue_name("nack")
            await svc.create_queue(q)
            first, _ = await svc.send_batch(q, [b"a", b"b"])
            assert len(await svc.receive_messages(q, 2, 30)) == 2
            await svc.nack_message(q, first)
            if not await svc.receive_messages(q, 1, 30):
                empty.append(i)
            await svc.delete_queue(q)
        return empty

    try:
        empties = await asyncio.gather(*(rounds(s) for s in [service, *others]))
    finally:
        for other in others:
            await other.close()
    assert empties == [[]] * 6


async def test_a_claim_made_by_one_service_settles_through_another(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    other = await open_service()
    try:
        sent = await service.send_message(queue, b"shared")
        (got,) = await service.receive_messages(queue, 1, 60)
        await other.ack_claim(queue, _claim(got))  # the ledger is on the server
        await _stale(service.ack_message(queue, sent), StaleReason.SETTLED)
        assert await other.stored_ids(queue) == []
    finally:
        await other.close()


async def test_an_ack_confirmed_but_not_carried_out_is_finished_on_redelivery_not_run_again(
    service: NatsJetStreamMessagingService, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer leader cut off from its majority confirms an ack it cannot carry out,
    and the new leader delivers the message again. Here the confirmation is forged (the
    ack frame never reaches the server): the redelivery must be acked, not handed out."""
    sent = await service.send_message(queue, b"once")
    (first,) = await service.receive_messages(queue, 1, 0.3)
    await ack_unheard(service, queue, first, monkeypatch)
    handed_out: list[QueuedMessage] = []
    async with asyncio.timeout(10):
        while not handed_out and await service.stored_ids(queue) == [sent]:
            # Back after the claim's 0.3 s: finished by the provider, or handed out.
            handed_out += await service.receive_messages(queue, 1, 30)
            await asyncio.sleep(0.05)
    assert handed_out == []
    assert await service.stored_ids(queue) == []


async def test_a_delivery_count_that_went_back_still_gets_the_message(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    """A consumer leader elected with an older replica of its state counts deliveries
    from an older number: a redelivery may carry a count no higher than the last claim's
    token. It must still get the (lapsed) message, with a token past that claim's, not
    be taken for a stale copy and left for the ack wait (10 s), again and again."""
    from mqcontract_nats_jetstream import _ledger
    from mqcontract_nats_jetstream._ledger import HELD, Record

    sent = await service.send_message(queue, b"counted")
    (first,) = await service.receive_messages(queue, 1, 0.2)
    names = service.names(queue)
    held = await _ledger.read(service.link, names, sent)
    assert held is not None
    assert held.token == _claim(first).token
    assert held.token & 0xFFFFFFFF == 1  # the delivery count, under the message's timestamp
    # The claims of deliveries 2..5 were made and lapsed under a leader since replaced.
    lapsed = Record(HELD, held.token + 4, time.time() - 1, held.delivery_seq)
    assert await _ledger.write(service.link, names, sent, lapsed, after=held)
    await _stale(service.ack_claim(queue, first), StaleReason.SUPERSEDED)
    again = await _back(service, queue, 60)  # delivery 2, within its 0.2 s + a little
    assert (again.msg_id, again.receive_count) == (sent, 2)
    assert _claim(again).token == held.token + 5
    await service.ack_claim(queue, again)
    assert await service.stored_ids(queue) == []


async def test_a_claim_settled_elsewhere_and_purged_is_still_settled_here(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    """The service that granted a claim keeps the record it wrote; once another service
    acked the claim and the records were purged, that record must not let a second ack
    through (a create on the emptied chain would succeed)."""
    other = await open_service()
    try:
        await service.send_message(queue, b"shared")
        (got,) = await service.receive_messages(queue, 1, 60)
        other.forgetting.delay = 0.0
        await other.ack_claim(queue, _claim(got))

        async def purged() -> bool:
            return other.forgetting.purged == 1

        await eventually(purged, 10, "the records purged")
        await _stale(service.ack_claim(queue, _claim(got)), StaleReason.SETTLED)
        await _stale(service.nack_claim(queue, _claim(got)), StaleReason.SETTLED)
    finally:
        await other.close()


async def test_a_long_chain_is_read_in_a_bounded_number_of_requests(
    service: NatsJetStreamMessagingService, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every nack adds two records to the message's chain; a look from the start jumps to
    the newest record after a few, instead of one request per record."""
    from mqcontract_nats_jetstream import _ledger

    sent = await service.send_message(queue, b"nacked")
    for _ in range(12):
        got = await _back(service, queue, 60)
        await service.nack_claim(queue, got)
    api = service.link.api
    asked: list[str] = []

    async def counted(what: str, body: dict[str, object] | None = None) -> Any:
        asked.append(what)
        return await api(what, body)

    monkeypatch.setattr(service.link, "api", counted)
    record = await _ledger.read(service.link, service.names(queue), sent)
    assert record is not None
    assert (record.state, record.token & 0xFFFFFFFF) == ("r", 12)
    assert len(asked) <= _ledger.HOPS_BEFORE_JUMP + 3, asked


async def test_a_claim_from_before_the_queue_was_made_again_settles_nothing(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    """A claim granted before its queue was deleted and created again holds nothing in
    the new queue, whose first message has the same id: settling the old claim must not
    ack the new message, nor leave a record that later says the new one is settled."""
    (old_id,) = await service.send_batch(queue, [b"old"])
    (old,) = await service.receive_messages(queue, 1, 60)
    await service.delete_queue(queue)
    await service.create_queue(queue)
    assert await service.ack_claims(queue, [_claim(old)]) == [False]
    await _stale(service.nack_claim(queue, _claim(old)), StaleReason.SETTLED)
    new_id = await service.send_message(queue, b"new")
    assert new_id == old_id
    other = await open_service()
    try:
        # CLAIM-10: the new message, on its first delivery, under another consumer's claim.
        (new,) = await other.receive_messages(queue, 1, 60)
        assert (new.payload, new.receive_count) == (b"new", 1)
        await _stale(service.ack_claim(queue, _claim(old)), StaleReason.SUPERSEDED)
        await _stale(service.nack_claim(queue, _claim(old)), StaleReason.SUPERSEDED)
        assert await service.ack_claims(queue, [_claim(old)]) == [False]
        assert await service.receive_messages(queue, 1, 60) == []  # still held by other
        await other.ack_claim(queue, new)
    finally:
        await other.close()
    assert await service.stored_ids(queue) == []


async def test_a_full_record_cache_forgets_lapsed_records_then_the_oldest_tenth(
    service: NatsJetStreamMessagingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the cap, one sweep makes room for many inserts: never a sweep per insert."""
    from mqcontract_nats_jetstream import service as module
    from mqcontract_nats_jetstream._ledger import HELD, Record

    monkeypatch.setattr(module, "_REMEMBERED", 10)
    monkeypatch.setattr(module, "_KEPT_AFTER_SWEEP", 5)
    now = time.time()
    claims = [Claim("q", seq, seq, 60) for seq in range(1, 12)]
    for seq, claim in enumerate(claims[:10], start=1):
        deadline = now - 1 if seq == 4 else now + 60  # claim 4 has lapsed
        service._keep_grant(claim, (Record(HELD, seq, deadline, seq), "k"))
    assert len(service._granted) == 10
    service._keep_grant(claims[10], (Record(HELD, 11, now + 60, 11), "k"))
    # Claim 4 lapsed; then the oldest live ones went, down to five; then the new one.
    assert [c.msg_id for c in service._granted] == [6, 7, 8, 9, 10, 11]


async def test_a_receive_cancelled_while_it_claims_gives_the_messages_back_at_once(
    service: NatsJetStreamMessagingService, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller is cancelled after the pull, while its claims are being written: they
    finish and are released, so the messages are back long before the fetch's ack wait
    (``fetch_grace_seconds``, 10 s), which was all that brought them back before."""
    sent = await service.send_batch(queue, [b"a", b"b"])
    claiming = asyncio.Event()
    grant = NatsJetStreamMessagingService._grant

    async def slow_grant(self: NatsJetStreamMessagingService, *args: Any) -> Any:
        claiming.set()
        await asyncio.sleep(0.05)  # a ledger round trip, long enough to be cancelled in
        return await grant(self, *args)

    monkeypatch.setattr(NatsJetStreamMessagingService, "_grant", slow_grant)
    receiving = asyncio.ensure_future(service.receive_messages(queue, 2, 60))
    await asyncio.wait_for(claiming.wait(), 5)
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
    monkeypatch.undo()
    assert service.settings.fetch_grace_seconds >= 10
    got: list[QueuedMessage] = []
    async with asyncio.timeout(3):  # well within the ack wait
        while len(got) < 2:
            got += await service.receive_messages(queue, 2, 60)
            await asyncio.sleep(0.02)
    assert sorted(m.msg_id for m in got) == sent


@pytest.mark.parametrize("err_code", [10071, 10164])
async def test_a_write_refused_for_its_expected_sequence_lost_the_race(err_code: int) -> None:
    """A clustered stream's leader refuses a create on a taken key with 10164 (no
    sequence named), not 10071: taken for an outage, an ack that overlapped another
    settlement of its claim raised QueueError on a 3-node cluster (CLAIM-9), where it
    must read on and find the claim settled."""
    from mqcontract_nats_jetstream import _ledger
    from mqcontract_nats_jetstream._errors import JsError
    from mqcontract_nats_jetstream._ledger import HELD, Record
    from mqcontract_nats_jetstream._names import QueueNames

    class Refusing:
        async def publish_js(self, *_: object) -> None:
            raise JsError(400, err_code, "wrong last sequence")

    names = QueueNames("mq", "jobs")
    record = Record(HELD, 1, time.time() + 30, 1)
    assert not await _ledger.write(Refusing(), names, 1, record, after=None)  # type: ignore[arg-type]
