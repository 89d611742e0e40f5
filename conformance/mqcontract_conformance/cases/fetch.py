"""FETCH: claiming one message by its id (``fetch_message``), or refusing to."""

from __future__ import annotations

from mqcontract.errors import UnsupportedOperation
from mqcontract.messages import QueuedMessage
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule


@rule(
    "FETCH-1",
    "fetch_message claims one specific visible message (invisible to receive afterwards), "
    "a message whose earlier claim expired included (with its receive_count grown); it "
    "returns None for a held, acked, delayed or unknown id.",
    why="Signal-only push names a message; the consumer must claim exactly that one, and "
    "a redelivery is announced like a first delivery.",
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
    await _fetch_after_expiry(ctx, q)
    if ctx.caps.delay:
        later = await ctx.service.send_message_with_delay(q, body(4), ctx.timing.long)
        early = await ctx.service.fetch_message(q, later, ctx.timing.long)
        ctx.check(early is None, f"message {later} fetched before its delay passed: {early!r}")


async def _fetch_after_expiry(ctx: CaseContext, q: str) -> None:
    """A message whose claim expired is visible again: fetch claims it, counted."""
    sent = await ctx.service.send_message(q, body(3))
    await ctx.receive_exactly(q, 1, vt=ctx.timing.unit)
    await ctx.wait_past(ctx.now() + ctx.timing.unit + ctx.caps.visibility_precision_seconds)

    async def fetched() -> QueuedMessage | None:
        return await ctx.service.fetch_message(q, sent, ctx.timing.long)

    again = await ctx.eventually(
        fetched, ctx.timing.slack, f"message {sent} fetchable after its claim expired"
    )
    counted = again.receive_count == 2 if ctx.caps.exact_receive_count else again.receive_count >= 2
    ctx.check(counted, f"fetch after expiry returned receive_count {again.receive_count}")


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
