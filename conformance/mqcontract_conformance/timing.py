"""The one timing profile every waiting case takes its numbers from.

Two kinds of figure live here, and only one of them scales. The *durations under test*
(:attr:`TimingProfile.unit`, the visibility timeouts and delays a case hands the provider
and then waits out) are the same at every scale: a sub-second timeout stays sub-second,
so a provider that rounds it up to whole seconds fails on a slow machine too. Everything
a case waits *around* them (bounds, slack, margins, the whole case) is multiplied by the
scale (``--mq-timing-scale`` / ``MQCONTRACT_TIMING_SCALE``), so a slow shared CI machine
gets proportionally more room without editing any case and without hiding such bugs.
Waiting is always polling with early exit; nothing sleeps to synchronize.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

__all__ = ["SCALE_ENV", "TimingProfile", "checked_scale"]

#: Gives the scale when no option does.
SCALE_ENV = "MQCONTRACT_TIMING_SCALE"


def checked_scale(value: float | str) -> float:
    """``value`` as a timing scale; ``ValueError`` saying why unless it is a finite number
    greater than 0 (0 or less would leave no time to wait; ``inf`` would wait forever)."""
    try:
        scale = float(value)
    except ValueError:
        raise ValueError("not a number (it must be a finite number greater than 0)") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError("must be a finite number greater than 0")
    return scale


@dataclass(frozen=True, slots=True)
class TimingProfile:
    """Figures in seconds (virtual seconds when the provider has a virtual clock)."""

    scale: float = 1.0
    #: Under test, never scaled: the visibility timeout / delay a case waits out.
    unit: float = 0.6
    #: Bound: a visibility timeout that must not expire during a case.
    long: float = 60.0
    #: Bound: a push notification must arrive within this after the send returned.
    delivery: float = 3.0
    #: Bound: any single operation must complete within this.
    operation: float = 5.0
    #: Bound: how late after a deadline (expiry, delay) something may be before "late" fails.
    slack: float = 3.0
    #: Margin: how long a case keeps watching for what must not happen (past a deadline
    #: it waited out, or after a settlement that must change nothing).
    margin: float = 0.6
    #: Polling step (not scaled: it is the resolution of an observation, not a bound).
    step: float = 0.05
    #: Bound on a whole case; a case running longer fails instead of hanging.
    case: float = 120.0

    @classmethod
    def from_scale(cls, scale: float | None = None) -> TimingProfile:
        """The default profile, its bounds and margins scaled by ``scale`` (or
        ``MQCONTRACT_TIMING_SCALE``); the durations under test stay as they are.

        Raises ``ValueError`` naming the scale (or the variable) unless it is a finite
        number greater than 0."""
        if scale is None:
            text = os.environ.get(SCALE_ENV, "")
            try:
                scale = checked_scale(text) if text.strip() else 1.0
            except ValueError as exc:
                raise ValueError(f"{SCALE_ENV}={text}: {exc}") from None
        else:
            try:
                scale = checked_scale(scale)
            except ValueError as exc:
                raise ValueError(f"timing scale {scale}: {exc}") from None
        base = cls()
        return cls(
            scale=scale,
            unit=base.unit,
            long=base.long * max(scale, 1.0),
            delivery=base.delivery * scale,
            operation=base.operation * scale,
            slack=base.slack * scale,
            margin=base.margin * scale,
            step=base.step,
            case=base.case * scale,
        )
