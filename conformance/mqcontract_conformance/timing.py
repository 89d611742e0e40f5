"""The one timing profile every waiting case takes its numbers from.

All figures scale together (``--mq-timing-scale`` / ``MQCONTRACT_TIMING_SCALE``), so a
slow shared CI machine gets proportionally longer bounds without editing any case.
Waiting is always polling with early exit; nothing sleeps to synchronize.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["TimingProfile"]


@dataclass(frozen=True, slots=True)
class TimingProfile:
    """Bounds and units in seconds (virtual seconds when the provider has a virtual clock)."""

    scale: float = 1.0
    #: Visibility timeout / delay used where a case waits for expiry.
    unit: float = 0.6
    #: A visibility timeout that must not expire during a case.
    long: float = 60.0
    #: Push: a notification must arrive within this after the send returned.
    delivery: float = 3.0
    #: Any single operation must complete within this.
    operation: float = 5.0
    #: Slack allowed after a deadline (expiry, delay) before "late" is a failure.
    slack: float = 3.0
    #: Polling step.
    step: float = 0.05
    #: Hard bound on a whole case; a case running longer fails instead of hanging.
    case: float = 120.0

    @classmethod
    def from_scale(cls, scale: float | None = None) -> TimingProfile:
        """The default profile scaled by ``scale`` or ``MQCONTRACT_TIMING_SCALE``."""
        if scale is None:
            scale = float(os.environ.get("MQCONTRACT_TIMING_SCALE", "1") or 1)
        if not scale > 0:
            raise ValueError(f"timing scale must be > 0, got {scale}")
        base = cls()
        return cls(
            scale=scale,
            unit=base.unit * scale,
            long=base.long * max(scale, 1.0),
            delivery=base.delivery * scale,
            operation=base.operation * scale,
            slack=base.slack * scale,
            step=base.step,
            case=base.case * scale,
        )
