"""The event system's settler: workers hand acks over, one ``ack_claims`` confirms many."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mqcontract.errors import ConnectionLost, MessagingError
from mqcontract.events.settlement import Settler
from mqcontract.messages import ClaimRef, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService


class _Gated(InMemoryMessagingService):
    """Counts ``ack_claims`` calls; each waits for ``gate`` (a slow confirmation)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.called = asyncio.Event()
        self.gate = asyncio.Event()
        self.fail_next = False

    async def ack_claims(self, queue: str, claims: Sequence[ClaimRef]) -> list[bool]:
        self.calls.append(len(claims))
        self.called.set()
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionLost("memory", "(in-process)", "cut off")
        return await super().ack_claims(queue, claims)


async def _held(service: InMemoryMessagingService, count: int) -> list[QueuedMessage]:
    await service.create_queue("jobs")
    await service.send_batch("jobs", [b"%d" % i for i in range(count)])
    return await service.receive_messages("jobs", count, 30)


async def test_acks_waiting_together_share_one_confirmation() -> None:
    service = _Gated()
    held = await _held(service, 9)
    outcomes: dict[int, bool | MessagingError] = {}
    settler = Settler(service, lambda m, o: outcomes.__setitem__(m.msg_id, o), bound=10)
    settler.start()
    await settler.ack(held[0])
    await asyncio.wait_for(service.called.wait(), 5)  # the first ack is being confirmed
    for message in held[1:]:
        await settler.ack(message)  # handed over without waiting for a round trip
    service.gate.set()
    await asyncio.wait_for(settler.drain(), 5)
    await settler.close()
    assert service.calls == [1, 8]
    assert outcomes == {m.msg_id: True for m in held}
    assert await service.receive_messages("jobs", 10, 30) == []


async def test_unconfirmed_acks_are_bounded() -> None:
    service = _Gated()
    held = await _held(service, 3)
    settler = Settler(service, lambda m, o: None, bound=2)
    settler.start()
    await settler.ack(held[0])
    await settler.ack(held[1])
    third = asyncio.ensure_future(settler.ack(held[2]))
    await asyncio.wait_for(service.called.wait(), 5)
    for _ in range(10):  # loop turns, not time: nothing can free a slot meanwhile
        await asyncio.sleep(0)
    assert not third.done()  # two unconfirmed: the third waits for a slot
    service.gate.set()
    await asyncio.wait_for(third, 5)
    await asyncio.wait_for(settler.drain(), 5)
    await settler.close()


async def test_stale_and_unknown_outcomes_are_reported_per_message() -> None:
    service = _Gated()
    held = await _held(service, 2)
    await service.nack_claim("jobs", held[0])  # its claim is stale from now on
    outcomes: dict[int, bool | MessagingError] = {}
    settler = Settler(service, lambda m, o: outcomes.__setitem__(m.msg_id, o), bound=4)
    settler.start()
    service.gate.set()
    await settler.ack(held[0])
    await settler.ack(held[1])
    await asyncio.wait_for(settler.drain(), 5)
    assert outcomes == {held[0].msg_id: False, held[1].msg_id: True}
    service.fail_next = True
    (again,) = await service.receive_messages("jobs", 1, 30)
    await settler.ack(again)
    await asyncio.wait_for(settler.drain(), 5)
    assert isinstance(outcomes[again.msg_id], ConnectionLost)
    await settler.close()


class _Broken(InMemoryMessagingService):
    async def ack_claims(self, queue: str, claims: Sequence[ClaimRef]) -> list[bool]:
        raise KeyError("a provider bug")


async def test_a_provider_bug_is_an_unknown_outcome_and_later_acks_still_settle() -> None:
    service = _Broken()
    held = await _held(service, 2)
    outcomes: dict[int, bool | MessagingError] = {}
    settler = Settler(service, lambda m, o: outcomes.__setitem__(m.msg_id, o), bound=4)
    settler.start()
    await settler.ack(held[0])
    await asyncio.wait_for(settler.drain(), 5)
    await settler.ack(held[1])
    await asyncio.wait_for(settler.drain(), 5)
    await settler.close()
    assert all(isinstance(o, MessagingError) for o in outcomes.values())
    assert "a provider bug" in str(outcomes[held[1].msg_id])


async def test_a_closed_settler_starts_again_with_its_whole_bound() -> None:
    service = _Gated()
    held = await _held(service, 4)
    settler = Settler(service, lambda m, o: None, bound=2)
    settler.start()
    await settler.ack(held[0])
    await settler.ack(held[1])  # both slots taken
    await asyncio.sleep(0)  # one loop turn: the batch task is made, and has not run yet
    await settler.close()  # cancelled before its first step, its slots are not freed
    await asyncio.wait_for(settler.drain(), 5)  # nothing is left waiting
    service.gate.set()
    settler.start()
    await asyncio.wait_for(settler.ack(held[2]), 5)  # slots given back at close
    await asyncio.wait_for(settler.ack(held[3]), 5)
    await asyncio.wait_for(settler.drain(), 5)
    await settler.close()
