"""Claims: a settle acts only for the claim it names (token: the delivery count).

Each case checks the reason a stale claim gives and that it changed nothing: the row is
still stored, its delivery count is what it was, and another holder keeps its claim.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from mqcontract import QueuedMessage
from mqcontract.errors import StaleClaim, StaleReason
from mqcontract.messages import Claim

from conftest import run
from mq_sqlite import SqliteQueue

Opener = Callable[[], Awaitable[SqliteQueue]]


async def _stale(call: Awaitable[Any], reason: StaleReason) -> None:
    with pytest.raises(StaleClaim) as raised:
        await call
    assert raised.value.reason is reason, raised.value


async def _stored(mq: SqliteQueue, queue: str) -> list[tuple[int, int, int]]:
    """(id, deliveries, held) of every row, read without claiming."""
    return await mq._do(
        "stored",
        queue,
        lambda c: [
            (int(r[0]), int(r[1]), int(r[2]))
            for r in c.execute("SELECT id, deliveries, held FROM mq_messages ORDER BY id")
        ],
    )


def test_received_and_fetched_messages_carry_their_claims(opener: Opener) -> None:
    async def scenario() -> None:
        async with await opener() as mq:
            await mq.create_queue("jobs")
            first, second = await mq.send_batch("jobs", [b"a", b"b"])
            (got,) = await mq.receive_messages("jobs", 1, 30)
            fetched = await mq.fetch_message("jobs", second, 5)
            assert fetched is not None
            assert [got.claim, fetched.claim] == [
                Claim("jobs", first, 1, 30.0),
                Claim("jobs", second, 1, 5.0),
            ]
            assert mq.capabilities.producer_assigned_ids is False

    run(scenario())


def test_a_lapsed_claim_is_stale_and_changes_nothing(opener: Opener) -> None:
    async def scenario() -> None:
        async with await opener() as mq:
            await mq.create_queue("jobs")
            sent = await mq.send_message("jobs", b"slow")
            (old,) = await mq.receive_messages("jobs", 1, 0.05)
            await asyncio.sleep(0.1)  # the deadline passed; nobody touched the row
            before = await _stored(mq, "jobs")
            assert before == [(sent, 1, 1)]

            await _stale(mq.ack_message("jobs", sent), StaleReason.LAPSED)
            await _stale(mq.ack_claim("jobs", old), StaleReason.LAPSED)
            await _stale(mq.nack_claim("jobs", old), StaleReason.LAPSED)
            assert await _stored(mq, "jobs") == before

            (again,) = await mq.receive_messages("jobs", 1, 30)
            assert (again.msg_id, again.receive_count) == (sent, 2)
            await mq.nack_claim("jobs", again)
            await _stale(mq.ack_claim("jobs", again), StaleReason.LAPSED)  # released

    run(scenario())


def test_a_superseded_claim_cannot_settle_the_new_holders_message(opener: Opener) -> None:
    async def scenario() -> None:
        async with await opener() as a, await opener() as b:
            await a.create_queue("jobs")
            sent = await a.send_message("jobs", b"contended")
            (old,) = await a.receive_messages("jobs", 1, 0.05)
            await asyncio.sleep(0.1)
            (new,) = await b.receive_messages("jobs", 1, 30)  # the second consumer has it
            assert (new.msg_id, new.receive_count) == (sent, 2)

            await _stale(a.nack_message("jobs", sent), StaleReason.SUPERSEDED)  # by id
            await _stale(a.ack_claim("jobs", old), StaleReason.SUPERSEDED)
            await _stale(a.nack_claim("jobs", old), StaleReason.SUPERSEDED)
            assert await a.ack_claims("jobs", [old]) == [False]

            assert await _stored(a, "jobs") == [(sent, 2, 1)]
            assert await a.receive_messages("jobs", 1, 30) == []  # still held by b
            await b.ack_claim("jobs", new)
            assert await _stored(a, "jobs") == []

    run(scenario())


def test_settled_and_foreign_claims_name_their_reason(opener: Opener) -> None:
    async def scenario() -> None:
        async with await opener() as mq:
            await mq.create_queue("jobs")
            sent = await mq.send_message("jobs", b"x")
            (got,) = await mq.receive_messages("jobs", 1, 30)
            assert got.claim is not None
            claim = got.claim
            for token in ("1", 7, 0, True, 2**64):  # not this claim's delivery count
                forged = dataclasses.replace(claim, token=token)
                await _stale(mq.ack_claim("jobs", forged), StaleReason.NOT_HELD)
            unstorable = dataclasses.replace(claim, msg_id=2**64)
            await _stale(mq.ack_claim("jobs", unstorable), StaleReason.NOT_HELD)
            assert await _stored(mq, "jobs") == [(sent, 1, 1)]

            await mq.ack_claim("jobs", claim)
            await _stale(mq.ack_claim("jobs", claim), StaleReason.SETTLED)
            await _stale(mq.nack_claim("jobs", claim), StaleReason.SETTLED)

    run(scenario())


def test_ack_claims_settles_live_claims_and_reports_stale_ones_in_one_call(
    opener: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with await opener() as a, await opener() as b:
            await a.create_queue("jobs")
            ids = await a.send_batch("jobs", [b"live", b"lapsed", b"superseded", b"acked"])
            live, lapsed, superseded, acked = await a.receive_messages("jobs", 4, 30)
            await a.nack_claim("jobs", lapsed)
            await a.nack_claim("jobs", superseded)
            taken, retaken = await b.receive_messages("jobs", 2, 30)
            assert [taken.msg_id, retaken.msg_id] == ids[1:3]
            await b.nack_claim("jobs", taken)  # released again; retaken stays with b
            await a.ack_claim("jobs", acked)

            calls: list[str] = []
            do = a._do

            async def counted(operation: str, queue: str, fn: Any) -> Any:
                calls.append(operation)
                return await do(operation, queue, fn)

            monkeypatch.setattr(a, "_do", counted)
            claims: list[QueuedMessage] = [live, lapsed, superseded, acked, live]
            assert await a.ack_claims("jobs", claims) == [True, False, False, False, False]
            assert calls == ["ack_claims"]  # one transaction for the whole batch
            monkeypatch.undo()

            assert await _stored(a, "jobs") == [(ids[1], 2, 0), (ids[2], 2, 1)]
            await b.ack_claim("jobs", retaken)  # the stale batch entry left it alone

    run(scenario())
