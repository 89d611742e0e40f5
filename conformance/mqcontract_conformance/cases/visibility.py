"""VT: visibility timeouts."""

from __future__ import annotations

import asyncio

from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule


def _count_ok(ctx: CaseContext, observed: int, expected: int) -> bool:
    return observed == expected if ctx.caps.exact_receive_count else observed >= min(expected, 2)


@rule(
    "VT-1",
    "A received message is invisible to every receiver until its visibility timeout passes.",
    why="The timeout is the claim; without it two workers run the same step.",
)
async def invisible_while_held(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    await ctx.receive_exactly(q, 1, vt=ctx.timing.unit * 4)

    async def leaked() -> list[int]:
        return [m.msg_id for m in await ctx.receive(q)]

    await ctx.never(leaked, ctx.timing.unit * 2, f"held message {sent} received again")


@rule(
    "VT-2",
    "After its visibility timeout a message not acked is received again, not earlier, with "
    "receive_count + 1 (exactly, or at least 2 where exact counts are not declared).",
    why="Expiry is how work held by a crashed consumer is recovered. The original RabbitMQ "
    "provider ignored the timeout entirely.",
)
async def redelivered_after_expiry(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    vt = ctx.timing.unit
    await ctx.receive_exactly(q, 1, vt=vt)
    start = ctx.now()
    (again,) = await ctx.receive_exactly(q, 1, within=vt + ctx.timing.slack)
    took = ctx.now() - start
    ctx.check(again.msg_id == sent, f"redelivered {again.msg_id}, expected {sent}")
    early = vt - ctx.caps.visibility_precision_seconds - 0.05
    ctx.check(took >= early, f"redelivered after {took:.3f} s, before the {vt:g} s timeout")
    ctx.check(_count_ok(ctx, again.receive_count, 2), f"receive_count {again.receive_count}")


@rule(
    "VT-3",
    "Concurrent receivers never hold the same message at the same time.",
    why="Competing consumers are the point of a work queue.",
)
async def concurrent_receivers_disjoint(ctx: CaseContext) -> None:
    q = await ctx.queue()
    ids = set(await ctx.service.send_batch(q, [body(i) for i in range(30)]))
    held: list[int] = []
    for _ in range(10):
        rounds = await asyncio.gather(*(ctx.receive(q, limit=7) for _ in range(5)))
        held.extend(m.msg_id for batch in rounds for m in batch)
        if len(held) >= len(ids):
            break
    dupes = sorted({i for i in held if held.count(i) > 1})
    ctx.check(not dupes, f"messages held twice at once: {dupes}")
    ctx.check(set(held) == ids, f"missing {sorted(ids - set(held))}")


@rule(
    "VT-4",
    "Each receive's timeout is independent: a short timeout expires while a long one holds.",
    why="Consumers pick timeouts per message type.",
)
async def timeouts_independent(ctx: CaseContext) -> None:
    q = await ctx.queue()
    short_id, long_id = await ctx.service.send_batch(q, [body(1), body(2)])
    (a,) = await ctx.service.receive_messages(q, 1, ctx.timing.unit)
    (b,) = await ctx.service.receive_messages(q, 1, ctx.timing.long)
    ctx.check(
        (a.msg_id, b.msg_id) == (short_id, long_id) or ctx.caps.fifo is False,
        f"unexpected order {a.msg_id}, {b.msg_id}",
    )
    (again,) = await ctx.receive_exactly(q, 1, within=ctx.timing.unit + ctx.timing.slack)
    ctx.check(again.msg_id == a.msg_id, f"{again.msg_id} came back instead of {a.msg_id}")


@rule(
    "VT-5",
    "receive_count grows by one on every redelivery (nack or expiry).",
    why="Poison-message handling counts deliveries.",
    applies_when=Applies.flag("exact_receive_count"),
)
async def receive_count_grows(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    counts = []
    for _ in range(3):
        (m,) = await ctx.receive_exactly(q, 1)
        counts.append(m.receive_count)
        await ctx.service.nack_message(q, sent)
    (m,) = await ctx.receive_exactly(q, 1, vt=ctx.timing.unit)
    counts.append(m.receive_count)
    (m,) = await ctx.receive_exactly(q, 1, within=ctx.timing.unit + ctx.timing.slack)
    counts.append(m.receive_count)
    ctx.check(counts == [1, 2, 3, 4, 5], f"receive counts {counts}, expected [1, 2, 3, 4, 5]")
