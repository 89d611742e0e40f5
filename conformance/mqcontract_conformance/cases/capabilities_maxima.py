"""CAP: the declared maxima are kept, not only accepted.

HOST-4 checks that a delay or a visibility timeout at its declared maximum is accepted;
a provider that accepts seven days and keeps fifteen minutes (SQS's cap on delays, a
broker's consumer timeout on claims) passes it. Where the case's clock is virtual, time
is moved to one second before each maximum ends; on real time only the start of it can
be watched, for the margin.
"""

from __future__ import annotations

from mqcontract.capabilities import VisibilityEnforcer
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._kin import first_receive
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule

#: How long before a maximum ends the message must still be out of reach (virtual time).
_BEFORE_END = 1.0


async def _jump(ctx: CaseContext, seconds: float) -> None:
    """Move a virtual clock forward by ``seconds`` at once (the steps of ``wait_past``
    would take days for a maximum of days)."""
    assert ctx.clock is not None
    await ctx.clock.advance(seconds)


async def _nothing_receivable(ctx: CaseContext, q: str, what: str) -> None:
    async def seen() -> list[int]:
        return [m.msg_id for m in await ctx.receive(q)]

    if ctx.clock is None:
        await ctx.never(seen, ctx.timing.margin, what)
    else:
        got = await seen()
        ctx.check(not got, f"{what}: received {got}")


@rule(
    "CAP-3",
    "A message delayed by max_delay_seconds is not receivable until that delay has "
    "passed, and is receivable once it has: where the case's clock is virtual, checked "
    "one second before the end and just after it; on real time, for the margin.",
    why="A provider that accepts the declared maximum delay and keeps a shorter one (a "
    "15-minute cap) runs a week's back-off in minutes; accepting it (HOST-4) says nothing "
    "about keeping it.",
    applies_when=Applies.flag("delay"),
    provisional=True,
)
async def maximum_delay_kept(ctx: CaseContext) -> None:
    q = await ctx.queue()
    longest = ctx.caps.max_delay_seconds
    sent = await ctx.service.send_message_with_delay(q, body(1), longest)
    if ctx.clock is None:
        await _nothing_receivable(ctx, q, f"delayed by the maximum {longest:g} s")
        return
    await _jump(ctx, longest - _BEFORE_END)
    await _nothing_receivable(
        ctx, q, f"delayed by the maximum {longest:g} s, {_BEFORE_END:g} s before it ends"
    )
    await _jump(ctx, _BEFORE_END * 2)
    got = await first_receive(ctx, q, f"delayed by {longest:g} s, it never became receivable")
    ctx.check([m.msg_id for m in got] == [sent], f"received {got}, sent {sent}")


@rule(
    "CAP-4",
    "A claim made with max_visibility_timeout_seconds holds its message until that "
    "timeout has passed, and no longer: where the case's clock is virtual, checked one "
    "second before the end and just after it; on real time, for the margin.",
    why="A provider that accepts a twelve-hour claim and ends it after half an hour (a "
    "broker's consumer timeout) hands a long job's message to a second worker while the "
    "first still runs it.",
    provisional=True,
)
async def maximum_visibility_timeout_kept(ctx: CaseContext) -> None:
    q = await ctx.queue()
    longest = ctx.caps.max_visibility_timeout_seconds
    sent = await ctx.service.send_message(q, body(1))
    claimed = await ctx.receive_exactly(q, 1, vt=longest)
    ctx.check([m.msg_id for m in claimed] == [sent], f"received {claimed}, sent {sent}")
    if ctx.clock is None:
        await _nothing_receivable(ctx, q, f"claimed for the maximum {longest:g} s")
        await ctx.service.ack_claim(q, claimed[0])
        return
    await _jump(ctx, longest - _BEFORE_END)
    await _nothing_receivable(
        ctx, q, f"claimed for the maximum {longest:g} s, {_BEFORE_END:g} s before it ends"
    )
    if ctx.caps.visibility_enforced_by is not VisibilityEnforcer.SERVER:
        return  # a holder's own timer ends it: nothing more to see from outside
    await _jump(ctx, _BEFORE_END * 2)
    got = await first_receive(ctx, q, f"claimed for {longest:g} s, it never came back")
    ctx.check([m.msg_id for m in got] == [sent], f"received {got}, sent {sent}")
