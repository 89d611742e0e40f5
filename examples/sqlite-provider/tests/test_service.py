from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from mqcontract import QueuedMessage
from mqcontract.errors import MessageNotFound, ProviderClosed, QueueNotFound

from conftest import run, wait_for
from mq_sqlite import SqliteQueue

Opener = Callable[[], Awaitable[SqliteQueue]]


def test_send_receive_ack_nack(opener: Opener) -> None:
    async def scenario() -> None:
        async with await opener() as mq:
            await mq.create_queue("jobs")
            first = await mq.send_message("jobs", b"one")
            second = await mq.send_message("jobs", b"\x00two\xff")
            assert first < second

            got = await mq.receive_messages("jobs", 10, 30)
            assert [(m.msg_id, m.payload, m.receive_count) for m in got] == [
                (first, b"one", 1),
                (second, b"\x00two\xff", 1),
            ]
            assert await mq.receive_messages("jobs", 10, 30) == []

            await mq.ack_message("jobs", first)
            with pytest.raises(MessageNotFound):
                await mq.ack_message("jobs", first)

            await mq.nack_message("jobs", second)
            with pytest.raises(MessageNotFound):
                await mq.ack_message("jobs", second)  # released: nobody holds it
            again = await mq.receive_messages("jobs", 10, 30)
            assert [(m.msg_id, m.receive_count) for m in again] == [(second, 2)]

    run(scenario())


def test_an_expired_claim_cannot_be_acked_and_comes_back(opener: Opener) -> None:
    async def scenario() -> None:
        async with await opener() as mq:
            await mq.create_queue("jobs")
            msg_id = await mq.send_message("jobs", b"x")
            (held,) = await mq.receive_messages("jobs", 1, 0.05)

            async def redelivered() -> QueuedMessage | None:
                got = await mq.receive_messages("jobs", 1, 30)
                return got[0] if got else None

            back = await wait_for(redelivered)
            assert (back.msg_id, back.receive_count) == (msg_id, held.receive_count + 1)

    run(scenario())


def test_delayed_messages_are_not_held_and_fetch_claims_by_id(opener: Opener) -> None:
    async def scenario() -> None:
        async with await opener() as mq:
            await mq.create_queue("jobs")
            later = await mq.send_message_with_delay("jobs", b"later", 3600)
            now = await mq.send_message("jobs", b"now")
            with pytest.raises(MessageNotFound):
                await mq.ack_message("jobs", later)
            assert await mq.fetch_message("jobs", later, 30) is None

            fetched = await mq.fetch_message("jobs", now, 30)
            assert fetched is not None
            assert fetched.payload == b"now"
            assert await mq.fetch_message("jobs", now, 30) is None  # held now
            assert await mq.receive_messages("jobs", 10, 30) == []
            await mq.ack_message("jobs", now)

    run(scenario())


def test_missing_queue_and_closed_service(opener: Opener) -> None:
    async def scenario() -> None:
        mq = await opener()
        with pytest.raises(QueueNotFound):
            await mq.send_message("ghost", b"x")
        assert not await mq.queue_exists("ghost")
        await mq.close()
        await mq.close()
        with pytest.raises(ProviderClosed):
            await mq.list_queues()

    run(scenario())


def test_two_services_on_one_file_never_hold_the_same_message(opener: Opener) -> None:
    async def scenario() -> None:
        async with await opener() as a, await opener() as b:
            await a.create_queue("shared")
            sent = set(await a.send_batch("shared", [b"%d" % i for i in range(200)]))
            seen: list[int] = []
            while True:
                got_a = await a.receive_messages("shared", 7, 30)
                got_b = await b.receive_messages("shared", 5, 30)
                if not got_a and not got_b:
                    break
                seen += [m.msg_id for m in got_a + got_b]
            assert sorted(seen) == sorted(sent)
            assert len(seen) == len(set(seen))

    run(scenario())
