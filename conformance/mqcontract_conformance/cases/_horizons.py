"""Long durations watched only on a virtual clock, where they cost nothing (DLY-1, VT-2).

Fractional, either side of a minute and of an hour: a provider that keeps long delays or
visibility timeouts in whole seconds (a coarser tier past a minute) shows it. Each is
looked at just before its end less the declared precision and just after it plus the
precision, :data:`BESIDE` further either way.
"""

from __future__ import annotations

__all__ = ["BESIDE", "HORIZONS"]

HORIZONS = (1.75, 61.5, 90.75, 3599.5)
#: How far past the declared precision a horizon is looked at, either side (virtual time).
BESIDE = 0.01
