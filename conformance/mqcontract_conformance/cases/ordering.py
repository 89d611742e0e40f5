"""ORD: FIFO, batch order, redelivery position, delays not blocking."""

from __future__ import annotations

from mqcontract.capabilities import RequeuePosition
from mqcontract.messages import QueuedMessage
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext, ContractViolation
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


async def _picks(ctx: CaseContext, q: str, count: int, what: str) -> list[QueuedMessage]:
    """``count`` messages from ``q``, one per receive (limit 1): the order the provider
    picks them in, which a batch it sorts before returning cannot hide. A receive that
    comes back empty is retried after a polling step, within the delivery bound."""
    got: list[QueuedMessage] = []

    async def more() -> bool:
        while len(got) < count:
            batch = await ctx.receive(q, limit=1)
            ctx.check(len(batch) <= 1, f"{what}: a receive of one from {q} returned {batch}")
            if not batch:
                return False
            got.extend(batch)
        return True

    try:
        await ctx.eventually(more, ctx.timing.delivery, what)
    except ContractViolation:
        ctx.fail(
            f"{what}: {count} messages expected on {q}, received one at a time only "
            f"{[m.msg_id for m in got]} within {ctx.timing.delivery:g} s"
        )
    return got


async def _later(ctx: CaseContext) -> None:
    """Let a polling step pass, so that what happens next (a nack) is later than the sends
    (on a virtual clock nothing else moves time): a provider that picks by when a message
    became visible, not by the position it declares, then shows it."""
    await ctx.pause(ctx.timing.step)


#: How often ORD-3 nacks one message (a provider may move it on a later nack only).
_NACKS = 4


@rule(
    "ORD-3",
    "A nacked message is redelivered at the declared requeue position (original: before "
    "later messages; back: after every visible message), on its first nack and on every "
    "later one, whether it was claimed by receive or (where supported) by fetch, and "
    "nacked some time after the messages around it were sent: observed one message per "
    "receive (limit 1), in the order the messages are picked, not only within a batch.",
    why="Classic queues and quorum queues differ; consumers must know which they get. A "
    "provider that moves a message to a retry tail from its second nack on, or requeues "
    "a fetched claim by another path, keeps the position where one nack was tried. One "
    "that picks by when a message became visible and then sorts the batch by id puts a "
    "nacked message last, hidden whenever a receive's limit covers every visible message.",
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
                f"after {n} nacks of {target} (requeue position original, each a polling "
                f"step after the sends), a receive of one got {head}; sent {ids}",
            )
            await _later(ctx)
            await svc.nack_message(q, target)
    else:
        (first,) = await ctx.receive(q, limit=1)
        await _later(ctx)
        await svc.nack_claim(q, first)
        order = [*ids[1:], target]
        for n in range(1, _NACKS):  # all claimed, then nacked in turn: the order stays
            got = await _picks(ctx, q, len(ids), f"after {n} nacks of {target} (back)")
            ctx.check_order(
                order, [m.msg_id for m in got], f"position after {n} nacks (back), one a receive"
            )
            await _later(ctx)
            for m in got:
                await svc.nack_claim(q, m)
    final = await _picks(ctx, q, len(ids), f"after {_NACKS} nacks of {target}")
    ctx.check_order(
        order,
        [m.msg_id for m in final],
        f"position after {_NACKS} nacks of {target} ({position}), one a receive",
    )
    if ctx.caps.fetch_by_id:
        await _fetched_nack_position(ctx)


async def _fetched_nack_position(ctx: CaseContext) -> None:
    """The second message of four, claimed by fetch and nacked a step later, again and
    again: after each nack all four are received one a receive (then nacked in the order
    received) to see it."""
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
        await _later(ctx)
        await svc.nack_claim(q, fetched)
        what = f"after {n} nacks of {target}, fetched by id ({ctx.caps.requeue_position})"
        got = await _picks(ctx, q, len(ids), what)
        ctx.check_order(order, [m.msg_id for m in got], f"position {what}, one a receive")
        for m in got:
            await svc.nack_claim(q, m)


@rule(
    "ORD-4",
    "A message whose visibility timeout expired is redelivered at the declared requeue "
    "position, fixed when its claim ended (original: its place in send order; back: "
    "behind every message visible then, ahead of what is sent or becomes visible "
    "later), even when it is first received only after a later message was sent and "
    "another claim ended after its own: observed one message per receive (limit 1), in "
    "the order the messages are picked.",
    why="Expiry is the crash-recovery path; it must order like nack. A provider that "
    "picks by when a message became visible and sorts each batch by id, or that puts an "
    "expired message at the tail when a receive first finds it lapsed, keeps the order "
    "where the receive's limit covers every visible message and nothing was sent since.",
    applies_when=Applies.flag("fifo"),
)
async def expiry_position(ctx: CaseContext) -> None:
    svc = ctx.service
    q = await ctx.queue()
    ids = await svc.send_batch(q, [body(i) for i in range(3)])
    short, longer = ctx.timing.unit, ctx.timing.unit * 1.5
    first = await svc.receive_messages(q, 1, short)
    second = await svc.receive_messages(q, 1, longer)  # its claim ends after the first's
    ended = ctx.now() + longer  # both claims have ended by then
    claimed = [m.msg_id for m in first + second]
    ctx.check(claimed == ids[:2], f"two receives of one from {q} got {claimed}; sent {ids}")
    # Receiving before the timeouts passed would claim the others, so wait for the clock,
    # and a little longer where a holder's timer puts a message back.
    settle = ctx.timing.step * 2 * ctx.timing.scale
    await ctx.wait_past(ended + ctx.caps.visibility_precision_seconds + settle)
    later = await svc.send_message(q, body(3))
    picked = await _picks(ctx, q, 4, "after two claims expired and a later send")
    if ctx.caps.requeue_position is RequeuePosition.ORIGINAL:
        expected = [*ids, later]
    else:  # back: in the order they became visible
        expected = [ids[2], ids[0], ids[1], later]
    ctx.check_order(
        expected,
        [m.msg_id for m in picked],
        f"position after expiry ({ctx.caps.requeue_position.value}; claims of {ids[0]} for "
        f"{short:g} s and {ids[1]} for {longer:g} s ended, then {later} was sent), one a "
        "receive",
    )


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
