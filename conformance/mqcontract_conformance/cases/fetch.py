"""FETCH: claiming one message by its id (``fetch_message``), or refusing to."""

from __future__ import annotations

from mqcontract.errors import UnsupportedOperation
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule


@rule(
    "FETCH-1",
    "fetch_message claims one specific visible message (invisible to receive afterwards); "
    "it returns None for a held, acked or unknown id.",
    why="Signal-only push names a message; the consumer must claim exactly that one.",
    applies_when=Applies.flag("fetch_by_id"),
)
async def fetch_claims_specific(ctx: CaseContext) -> None:
    q = await ctx.queue()
    a, b = await ctx.service.send_batch(q, [body(1), body(2)])
    got = await ctx.service.fetch_message(q, b, ctx.timing.long)
    ctx.check(
        got is not None and got.msg_id == b and got.receive_count == 1,
        f"fetch {b} returned {got!r}",
    )
    ctx.check(
        await ctx.service.fetch_message(q, b, ctx.timing.long) is None,
        "a held message was fetched again",
    )
    rest = await ctx.receive(q)
    ctx.check([m.msg_id for m in rest] == [a], f"receive after fetch returned {rest}")
    await ctx.service.ack_message(q, b)
    ctx.check(await ctx.service.fetch_message(q, b, ctx.timing.long) is None, "fetched acked")
    ctx.check(
        await ctx.service.fetch_message(q, 10**15, ctx.timing.long) is None,
        "fetch of an unknown id returned a message",
    )


@rule(
    "FETCH-2",
    "A provider without fetch-by-id raises UnsupportedOperation from fetch_message.",
    why="Callers branch on supports_fetch_by_message_id; a silent None would lose work.",
    applies_when=~Applies.flag("fetch_by_id"),
)
async def fetch_unsupported(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    await ctx.raises(
        UnsupportedOperation, ctx.service.fetch_message(q, sent, ctx.timing.long), "fetch"
    )
