"""Long durations watched only on a virtual clock, where they cost nothing (DLY-1, VT-2).

Fractional, either side of a minute and of an hour: a provider that keeps long delays or
visibility timeouts in whole seconds (a coarser tier past a minute) shows it. Each is
looked at just before its end less the declared precision and just after it plus the
precision, :data:`BESIDE` further either way.
"""

from __future__ import annotations

from mqcontract.clock import VirtualClock
from mqcontract_conformance.context import CaseContext

__all__ = ["BESIDE", "HORIZONS", "advance_to", "received_early"]

HORIZONS = (1.75, 61.5, 90.75, 3599.5)
#: How far past the declared precision a horizon is looked at, either side (virtual time).
BESIDE = 0.01


async def advance_to(ctx: CaseContext, clock: VirtualClock, at: float) -> None:
    """Jump the case's virtual clock to ``at`` (no further back than now)."""
    if at > ctx.now():
        await clock.advance(at - ctx.now())


async def received_early(
    ctx: CaseContext, clock: VirtualClock, queue: str, at: float
) -> list[int] | None:
    """The ids a receive gets at ``at`` (None: ``at`` has passed, nothing looked at)."""
    if at <= ctx.now():
        return None
    await advance_to(ctx, clock, at)
    return [m.msg_id for m in await ctx.receive(queue)]
