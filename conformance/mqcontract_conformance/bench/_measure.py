"""Numbers: throughput of one timed run, medians over rounds, latency percentiles.

Everything here is pure arithmetic so the report and the tests can share it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Run", "median", "percentile", "ratio", "summarize_latencies"]


@dataclass(frozen=True, slots=True)
class Run:
    """One timed run of one workload by one side: wall time and this process's CPU time."""

    messages: int
    seconds: float
    cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else math.inf

    @property
    def cpu_us_per_message(self) -> float:
        """Client CPU (this process) per message, in microseconds."""
        return self.cpu_seconds / self.messages * 1e6 if self.messages else math.nan

    def __add__(self, other: Run) -> Run:
        return Run(
            self.messages + other.messages,
            self.seconds + other.seconds,
            self.cpu_seconds + other.cpu_seconds,
        )


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize_latencies(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (empty mapping for no samples)."""
    if not seconds:
        return {}
    return {
        "p50_ms": percentile(seconds, 50) * 1000,
        "p95_ms": percentile(seconds, 95) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds) * 1000,
        "samples": float(len(seconds)),
    }
