"""ORD: FIFO, batch order, redelivery position, delays not blocking."""

from __future__ import annotations

from mqcontract.capabilities import RequeuePosition
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule


@rule(
    "ORD-1",
    "Messages from a single producer are received in send order.",
    why="Step ordering within a namespace depends on it.",
    applies_when=Applies.flag("fifo"),
)
async def single_producer_fifo(ctx: CaseContext) -> None:
    q = await ctx.queue()
    ids = [await ctx.service.send_message(q, body(i)) for i in range(20)]
    got: list[int] = []
    while len(got) < len(ids):
        batch = await ctx.receive(q, limit=3)
        if not batch:
            break
        got.extend(m.msg_id for m in batch)
    ctx.check_order(ids, got, "single-producer order")


@rule(
    "ORD-2",
    "One receive returns its messages oldest first.",
    why="Batch consumers process the list in order.",
    applies_when=Applies.flag("fifo"),
)
async def batch_oldest_first(ctx: CaseContext) -> None:
    q = await ctx.queue()
    ids = await ctx.service.send_batch(q, [body(i) for i in range(10)])
    got = [m.msg_id for m in await ctx.receive(q, limit=10)]
    ctx.check_order(ids, got, "order within one receive")


def _requeued_order(ctx: CaseContext, ids: list[int]) -> list[int]:
    if ctx.caps.requeue_position is RequeuePosition.ORIGINAL:
        return ids
    return [*ids[1:], ids[0]]


#: How often ORD-3 nacks one message (a provider may move it on a later nack only).
_NACKS = 4


@rule(
    "ORD-3",
    "A nacked message is redelivered at the declared requeue position (original: before "
    "later messages; back: after every visible message), on its first nack and on every "
    "later one, whether it was claimed by receive or (where supported) by fetch.",
    why="Classic queues and quorum queues differ; consumers must know which they get. A "
    "provider that moves a message to a retry tail from its second nack on, or requeues "
    "a fetched claim by another path, keeps the position where one nack was tried.",
    applies_when=Applies.flag("fifo"),
)
async def nack_position(ctx: CaseContext) -> None:
    svc = ctx.service
    position = ctx.caps.requeue_position
    q = await ctx.queue()
    ids = await svc.send_batch(q, [body(i) for i in range(4)])
    target = ids[0]
    if position is RequeuePosition.ORIGINAL:
        order = ids  # the head, nacked, is the head again: every time
        for n in range(_NACKS):
            head = [m.msg_id for m in await ctx.receive(q, limit=1)]
            ctx.check(
                head == [target],
                f"after {n} nacks of {target} (requeue position original), a receive of "
                f"one got {head}; sent {ids}",
            )
            await svc.nack_message(q, target)
    else:
        (first,) = await ctx.receive(q, limit=1)
        await svc.nack_claim(q, first)
        order = [*ids[1:], target]
        for n in range(1, _NACKS):  # all claimed, then nacked in turn: the order stays
            got = await ctx.receive(q, limit=len(ids))
            ctx.check_order(order, [m.msg_id for m in got], f"position after {n} nacks (back)")
            for m in got:
                await svc.nack_claim(q, m)
    final = [m.msg_id for m in await ctx.receive(q, limit=len(ids))]
    ctx.check_order(order, final, f"position after {_NACKS} nacks of {target} ({position})")
    if ctx.caps.fetch_by_id:
        await _fetched_nack_position(ctx)


async def _fetched_nack_position(ctx: CaseContext) -> None:
    """The second message of four, claimed by fetch and nacked, again and again: after
    each nack all four are received (then nacked in the order received) to see it."""
    svc = ctx.service
    q = await ctx.queue()
    ids = await svc.send_batch(q, [body(i) for i in range(4)])
    target = ids[1]
    order = (
        ids
        if ctx.caps.requeue_position is RequeuePosition.ORIGINAL
        else [
            *(i for i in ids if i != target),
            target,
        ]
    )
    for n in range(1, _NACKS):
        fetched = await svc.fetch_message(q, target, ctx.timing.long)
        ctx.check(
            fetched is not None and fetched.msg_id == target,
            f"fetch of {target}, visible after {n - 1} nacks, returned {fetched}",
        )
        assert fetched is not None
        await svc.nack_claim(q, fetched)
        got = await ctx.receive(q, limit=len(ids))
        ctx.check_order(
            order,
            [m.msg_id for m in got],
            f"position after {n} nacks of {target}, fetched by id ({ctx.caps.requeue_position})",
        )
        for m in got:
            await svc.nack_claim(q, m)


@rule(
    "ORD-4",
    "A message whose visibility timeout expired is redelivered at the declared requeue position.",
    why="Expiry is the crash-recovery path; it must order like nack.",
    applies_when=Applies.flag("fifo"),
)
async def expiry_position(ctx: CaseContext) -> None:
    q = await ctx.queue()
    ids = await ctx.service.send_batch(q, [body(i) for i in range(3)])
    (first,) = await ctx.service.receive_messages(q, 1, ctx.timing.unit)
    # Receiving before the timeout passed would claim the others, so wait for the clock.
    await ctx.wait_past(ctx.now() + ctx.timing.unit + ctx.caps.visibility_precision_seconds)
    got: list[int] = []

    async def all_three() -> bool:
        got.extend(m.msg_id for m in await ctx.receive(q, limit=3))
        return len(got) >= 3

    await ctx.eventually(all_three, ctx.timing.slack, "all three messages visible")
    expected = _requeued_order(ctx, ids)
    ctx.check(first.msg_id == ids[0], f"first receive got {first.msg_id}, not {ids[0]}")
    ctx.check_order(expected, got, f"position after expiry ({ctx.caps.requeue_position.value})")


@rule(
    "ORD-5",
    "A delayed message does not block messages sent after it.",
    why="A retry with back-off must not stall the queue behind it.",
    applies_when=Applies.flag("delay"),
)
async def delay_does_not_block(ctx: CaseContext) -> None:
    q = await ctx.queue()
    delayed = await ctx.service.send_message_with_delay(q, body(1), ctx.timing.long)
    later = await ctx.service.send_message(q, body(2))
    got = await ctx.receive_exactly(q, 1)
    ctx.check(got[0].msg_id == later, f"got {got[0].msg_id}; delayed was {delayed}")
