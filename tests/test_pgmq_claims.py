"""Settling by claim on PGMQ, next to foreign PGMQ clients, against a real PostgreSQL.

A claim's token is the row's ``read_ct`` and ``enqueued_at``: a foreign ``pgmq.read``
supersedes our older claim, a foreign ``pgmq.set_vt(q, id, 0)`` makes it lapse, a claim
made before its queue was deleted settles nothing in the queue created again, and a stale
settlement leaves the row exactly as it was.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from mqcontract.errors import MessageNotFound, QueueNotFound, StaleClaim, StaleReason
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.pgmq import PgmqMessagingService, open_pgmq
from mqcontract.providers.pgmq._settle import claim_key, claim_token
from tests import pgmq_support
from tests.pgmq_support import config, sql

# The shared fixtures, under the names these tests ask for.
service = pgmq_support.service
queue = pgmq_support.queue


async def _enqueued_us(url: str, queue: str, msg_id: int) -> int:
    """The row's ``enqueued_at`` in microseconds since the epoch."""
    query = f"SELECT (extract(epoch FROM enqueued_at) * 1000000)::bigint FROM pgmq.q_{queue}"
    return int((await sql(url, query + " WHERE msg_id = $1", msg_id))[0][0])


def _read_ct(message: QueuedMessage) -> int:
    """The ``read_ct`` a message's claim carries."""
    assert message.claim is not None
    key = claim_key(message.claim)
    assert key is not None
    return key[1]


async def _row(url: str, queue: str, msg_id: int) -> tuple[int, Any] | None:
    """``(read_ct, vt)`` of the row, None when it is gone."""
    rows = await sql(url, f"SELECT read_ct, vt FROM pgmq.q_{queue} WHERE msg_id = $1", msg_id)
    return None if not rows else (rows[0][0], rows[0][1])


async def _lapse(url: str, queue: str, msg_id: int, within: float = 5.0) -> None:
    """Wait until the server's clock is past the row's ``vt``."""
    deadline = time.monotonic() + within
    query = f"SELECT vt <= clock_timestamp() FROM pgmq.q_{queue} WHERE msg_id = $1"
    while not (await sql(url, query, msg_id))[0][0]:
        assert time.monotonic() < deadline, "the claim did not lapse"
        await asyncio.sleep(0.02)


async def _stale(call: Awaitable[None]) -> StaleReason:
    with pytest.raises(StaleClaim) as caught:
        await call
    return caught.value.reason


async def _claim_one(service: PgmqMessagingService, queue: str, vt: float) -> QueuedMessage:
    (got,) = await service.receive_messages(queue, 1, vt)
    return got


# -- what a claim carries ------------------------------------------------------------------


async def test_receive_and_fetch_carry_the_read_count_and_enqueued_at_as_their_token(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    msg_id = await service.send_message(queue, b"[1]")
    enqueued = await _enqueued_us(pgmq_db_url, queue, msg_id)
    first = await _claim_one(service, queue, 0.2)
    assert first.claim == Claim(queue, msg_id, claim_token(1, enqueued), 0.2)
    assert claim_key(first.claim) == (msg_id, 1, enqueued)
    assert first.enqueued_at == enqueued / 1_000_000
    await _lapse(pgmq_db_url, queue, msg_id)
    fetched = await service.fetch_message(queue, msg_id, 30)
    assert fetched is not None
    assert fetched.claim == Claim(queue, msg_id, claim_token(2, enqueued), 30)
    assert fetched.receive_count == 2
    assert fetched.enqueued_at == first.enqueued_at
    assert await _stale(service.ack_claim(queue, first)) is StaleReason.SUPERSEDED
    await service.ack_claim(queue, fetched)
    assert await _row(pgmq_db_url, queue, msg_id) is None


# -- foreign PGMQ clients ------------------------------------------------------------------


async def test_a_foreign_read_supersedes_our_lapsed_claim_and_keeps_its_own(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    msg_id = await service.send_message(queue, b'{"job": 1}')
    ours = await _claim_one(service, queue, 0.2)
    await _lapse(pgmq_db_url, queue, msg_id)
    foreign = await sql(pgmq_db_url, "SELECT msg_id, read_ct FROM pgmq.read($1, 30, 1)", queue)
    assert [tuple(r) for r in foreign] == [(msg_id, 2)]
    before = await _row(pgmq_db_url, queue, msg_id)

    assert await _stale(service.ack_claim(queue, ours)) is StaleReason.SUPERSEDED
    assert await _stale(service.nack_claim(queue, ours)) is StaleReason.SUPERSEDED
    with pytest.raises(MessageNotFound):  # by id: our own claim is the stale one
        await service.ack_message(queue, msg_id)
    assert await service.ack_claims(queue, [ours]) == [False]
    assert await _row(pgmq_db_url, queue, msg_id) == before  # the foreign claim is intact

    deleted = await sql(pgmq_db_url, "SELECT pgmq.delete($1, $2::bigint)", queue, msg_id)
    assert deleted[0][0] is True
    assert await _stale(service.ack_claim(queue, ours)) is StaleReason.SETTLED


async def test_a_foreign_set_vt_zero_makes_our_claim_lapse_and_nothing_changes(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    msg_id = await service.send_message(queue, b"[2]")
    ours = await _claim_one(service, queue, 30)
    await sql(pgmq_db_url, "SELECT * FROM pgmq.set_vt($1, $2::bigint, 0)", queue, msg_id)
    before = await _row(pgmq_db_url, queue, msg_id)
    assert before is not None
    assert before[0] == 1

    assert await _stale(service.ack_claim(queue, ours)) is StaleReason.LAPSED
    assert await _stale(service.nack_claim(queue, ours)) is StaleReason.LAPSED
    assert await _row(pgmq_db_url, queue, msg_id) == before

    again = await _claim_one(service, queue, 30)
    assert _read_ct(again) == 2
    await service.ack_claim(queue, again)


# -- lapsed, released, settled, forged ------------------------------------------------------


async def test_a_lapsed_claim_settles_nothing_and_leaves_the_row_unchanged(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    msg_id = await service.send_message(queue, b"[3]")
    ours = await _claim_one(service, queue, 0.2)
    await _lapse(pgmq_db_url, queue, msg_id)
    before = await _row(pgmq_db_url, queue, msg_id)

    assert await _stale(service.ack_claim(queue, ours)) is StaleReason.LAPSED
    assert await _stale(service.nack_claim(queue, ours)) is StaleReason.LAPSED
    assert await _row(pgmq_db_url, queue, msg_id) == before


async def test_a_released_claim_is_lapsed_and_an_acked_one_settled(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    msg_id = await service.send_message(queue, b"[4]")
    ours = await _claim_one(service, queue, 30)
    await service.nack_claim(queue, ours)
    released = await _row(pgmq_db_url, queue, msg_id)
    assert await _stale(service.nack_claim(queue, ours)) is StaleReason.LAPSED
    assert await _stale(service.ack_claim(queue, ours)) is StaleReason.LAPSED
    assert await _row(pgmq_db_url, queue, msg_id) == released

    again = await _claim_one(service, queue, 30)
    await service.ack_claim(queue, again)
    assert await _stale(service.ack_claim(queue, again)) is StaleReason.SETTLED
    assert await _stale(service.nack_claim(queue, again)) is StaleReason.SETTLED


async def test_a_nack_of_a_stale_claim_does_not_move_the_live_claims_vt(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    msg_id = await service.send_message(queue, b"[5]")
    old = await _claim_one(service, queue, 0.2)
    await _lapse(pgmq_db_url, queue, msg_id)
    live = await _claim_one(service, queue, 30)
    before = await _row(pgmq_db_url, queue, msg_id)

    assert await _stale(service.nack_claim(queue, old)) is StaleReason.SUPERSEDED
    assert await _row(pgmq_db_url, queue, msg_id) == before
    assert await service.receive_messages(queue, 1, 30) == []  # still held by `live`
    await service.nack_claim(queue, live)
    assert await _claim_one(service, queue, 30) is not None


async def test_forged_tokens_hold_nothing(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    msg_id = await service.send_message(queue, b"[6]")
    ours = await _claim_one(service, queue, 30)
    assert ours.claim is not None
    real = ours.claim.token
    assert isinstance(real, int)
    before = await _row(pgmq_db_url, queue, msg_id)
    # A later read count or enqueued_at than the row's, or no read count, or not an int.
    tokens: list[int | str] = [real + 4, real + 2**31, real - 1, 0, 2**40, "1", True]
    for token in tokens:
        forged = dataclasses.replace(ours.claim, token=token)
        assert await _stale(service.ack_claim(queue, forged)) is StaleReason.NOT_HELD
        assert await _stale(service.nack_claim(queue, forged)) is StaleReason.NOT_HELD
    # An earlier enqueued_at than the row's: taken for a claim on a message gone since.
    for token in [5, -1, real - 2**31]:
        forged = dataclasses.replace(ours.claim, token=token)
        assert await _stale(service.ack_claim(queue, forged)) is StaleReason.SETTLED
        assert await _stale(service.nack_claim(queue, forged)) is StaleReason.SETTLED
    for missing in [10**9, 2**70]:
        gone = dataclasses.replace(ours.claim, msg_id=missing)
        assert await _stale(service.ack_claim(queue, gone)) is StaleReason.SETTLED
    assert await _row(pgmq_db_url, queue, msg_id) == before
    await service.ack_claim(queue, ours)


async def test_settling_on_a_dropped_queue_raises_queue_not_found(
    service: PgmqMessagingService, queue: str
) -> None:
    await service.send_message(queue, b"[7]")
    ours = await _claim_one(service, queue, 30)
    assert ours.claim is not None
    forged = dataclasses.replace(ours.claim, token="x")
    await service.delete_queue(queue)
    for call in [
        service.ack_claim(queue, ours),
        service.nack_claim(queue, ours),
        service.ack_claim(queue, forged),
        service.ack_claims(queue, [ours]),
        service.ack_claims(queue, [forged]),
    ]:
        with pytest.raises(QueueNotFound):
            await call
    await service.create_queue(queue)  # for the fixture's teardown


async def test_a_claim_from_before_the_queue_was_deleted_settles_nothing_in_the_new_one(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    # CLAIM-10: ids restart at 1 in the re-created table, and the new message 1, claimed
    # once, has read_ct 1 like the old claim's; read_ct alone let the old claim's ack
    # delete it while another consumer held it.
    other = await open_pgmq(config(pgmq_db_url))
    try:
        await service.send_message(queue, b'"old"')
        old = await _claim_one(service, queue, 30)
        assert old.claim is not None
        await service.delete_queue(queue)
        await service.create_queue(queue)
        msg_id = await service.send_message(queue, b'"new"')
        assert msg_id == old.msg_id
        new = await _claim_one(other, queue, 30)
        assert (new.msg_id, _read_ct(new), _read_ct(old)) == (msg_id, 1, 1)
        assert new.claim != old.claim
        before = await _row(pgmq_db_url, queue, msg_id)

        assert await _stale(service.ack_claim(queue, old)) is StaleReason.SETTLED
        assert await _stale(service.nack_claim(queue, old)) is StaleReason.SETTLED
        assert await service.ack_claims(queue, [old]) == [False]
        # In one batch with the live claim on the same id, only the live one settles.
        assert await _row(pgmq_db_url, queue, msg_id) == before
        assert await service.receive_messages(queue, 1, 30) == []  # still held by `other`
        assert await other.ack_claims(queue, [old, new, old]) == [False, True, False]
        assert await _row(pgmq_db_url, queue, msg_id) is None
    finally:
        await other.close()


# -- many at once ----------------------------------------------------------------------------


class _Counting:
    """A connection that counts the statements sent through it."""

    def __init__(self, conn: Any, log: list[str]) -> None:
        self._conn = conn
        self._log = log

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._conn, name)
        if name not in {"execute", "fetch", "fetchrow", "fetchval"}:
            return method

        def counted(query: str, *args: object) -> Any:
            self._log.append(query)
            return method(query, *args)

        return counted


def _count_statements(
    svc: PgmqMessagingService, log: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = svc._statements.run

    def counting(work: Callable[[Any], Awaitable[Any]], **options: Any) -> Awaitable[Any]:
        return run(lambda conn: work(_Counting(conn, log)), **options)

    monkeypatch.setattr(svc._statements, "run", counting)


@pytest.fixture(params=[False, True], ids=["delete", "archive"])
async def either(request: pytest.FixtureRequest, pgmq_db_url: str) -> AsyncIterator[Any]:
    """A service that deletes acked messages, then one that archives them; and a queue."""
    archive: bool = request.param
    svc = await open_pgmq(config(pgmq_db_url, archive_on_ack=archive))
    name = f"t_many_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await svc.create_queue(name)
    yield svc, name, archive
    await svc.delete_queue(name)
    await svc.close()


async def test_ack_claims_settles_exactly_the_live_claims_in_one_statement(
    either: tuple[PgmqMessagingService, str, bool],
    pgmq_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc, q, archive = either
    ids = await svc.send_batch(q, [b"[0]", b"[1]", b"[2]", b"[3]", b"[4]", b"[5]"])
    # ids[0]: our claim lapses, then a foreign reader claims it (and holds it).
    stolen = await _claim_one(svc, q, 0.2)
    await _lapse(pgmq_db_url, q, ids[0])
    await sql(pgmq_db_url, "SELECT * FROM pgmq.read($1, 30, 1)", q)
    live = await svc.receive_messages(q, 10, 30)
    assert [m.msg_id for m in live] == ids[1:]
    first, second, released, acked, foreign = live
    await svc.nack_claim(q, released)
    await svc.ack_claim(q, acked)
    await sql(pgmq_db_url, "SELECT * FROM pgmq.set_vt($1, $2::bigint, 0)", q, foreign.msg_id)
    before = {i: await _row(pgmq_db_url, q, i) for i in ids}

    log: list[str] = []
    _count_statements(svc, log, monkeypatch)
    batch = [first, stolen, second, released, acked, foreign, first, second]
    assert await svc.ack_claims(q, batch) == [True, False, True, False, False, False, False, False]
    assert len(log) == 1

    assert await _row(pgmq_db_url, q, first.msg_id) is None
    assert await _row(pgmq_db_url, q, second.msg_id) is None
    for msg_id in (stolen.msg_id, released.msg_id, foreign.msg_id):
        assert await _row(pgmq_db_url, q, msg_id) == before[msg_id]
    archived = await sql(pgmq_db_url, f"SELECT msg_id FROM pgmq.a_{q} ORDER BY msg_id")
    expected = [first.msg_id, second.msg_id, acked.msg_id] if archive else []
    assert [r[0] for r in archived] == expected


async def test_ack_claims_of_only_stale_or_forged_claims_settles_nothing(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    msg_id = await service.send_message(queue, b"[8]")
    ours = await _claim_one(service, queue, 30)
    assert ours.claim is not None
    forged = [dataclasses.replace(ours.claim, token=t) for t in ("a", 0, 7)]
    assert await service.ack_claims(queue, forged) == [False, False, False]
    assert await service.ack_claims(queue, []) == []
    assert (await _row(pgmq_db_url, queue, msg_id) or (0,))[0] == 1
    assert await service.ack_claims(queue, [ours, *forged]) == [True, False, False, False]


@pytest.mark.parametrize(
    "stamp",
    [
        "infinity",
        "-infinity",
        "294247-01-10 04:00:54.775808+00",  # the first microsecond no bigint holds
        "294276-12-31 23:59:59+00",  # the last day PostgreSQL takes
        "4713-11-24 00:00:00+00 BC",  # the first
    ],
)
async def test_a_foreign_row_stamped_past_a_bigint_stops_no_receive(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str, stamp: str
) -> None:
    """A foreign client may insert an ``enqueued_at`` whose microseconds since the epoch
    no ``bigint`` holds (``infinity``, or a finite time after 294247): such a row once
    made every receive of its queue fail. It is received and settled like any other."""
    await sql(
        pgmq_db_url,
        f"INSERT INTO pgmq.q_{queue} (vt, enqueued_at, message)"
        f" VALUES (clock_timestamp(), '{stamp}', '\"forever\"')",
    )
    normal = await service.send_message(queue, b'"normal"')
    got = await service.receive_messages(queue, 10, 30)
    assert len(got) == 2
    assert normal in {m.msg_id for m in got}
    assert await service.ack_claims(queue, got) == [True, True]
