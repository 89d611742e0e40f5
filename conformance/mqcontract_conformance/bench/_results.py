"""Rows of the JSON result: throughput per workload and push latency per mode.

Ratios are provider / other side. Throughput ratios are taken per round (the sides of a
round ran interleaved, so they met the same load) and their median reported; latency
ratios compare percentiles of all samples.
"""

from __future__ import annotations

from typing import Any

from ._measure import Run, median, ratio, summarize_latencies

__all__ = ["latency_entry", "throughput_entry"]


def throughput_entry(
    key: str,
    title: str,
    mode: str | None,
    runs: dict[str, list[Run | None]],
    errors: dict[str, list[str]],
) -> dict[str, Any]:
    """One throughput row: per side medians and rounds; per other side, the ratios."""
    sides: dict[str, Any] = {}
    for label, rounds in runs.items():
        rates = [r.rate for r in rounds if r is not None]
        sides[label] = {
            "median_msg_s": median(rates),
            "median_cpu_us_per_msg": median(
                [r.cpu_us_per_message for r in rounds if r is not None]
            ),
            "rounds_msg_s": [None if r is None else r.rate for r in rounds],
            "rounds_seconds": [None if r is None else r.seconds for r in rounds],
            "rounds_cpu_seconds": [None if r is None else r.cpu_seconds for r in rounds],
        }
        if errors.get(label):
            sides[label]["errors"] = errors[label]
    ratios: dict[str, Any] = {}
    mine = runs.get("provider")
    if mine is not None:
        for label, rounds in runs.items():
            if label == "provider":
                continue
            per_round = [
                ratio(a.rate, b.rate)
                for a, b in zip(mine, rounds, strict=False)
                if a is not None and b is not None
            ]
            ratios[f"provider/{label}"] = {
                "median": median([r for r in per_round if r is not None]),
                "rounds": per_round,
            }
    return {
        "workload": key,
        "title": title,
        "mode": mode,
        "sides": sides,
        "ratios": ratios,
    }


def latency_entry(mode: str, by_side: dict[str, list[float]]) -> dict[str, Any]:
    """Percentiles per side (milliseconds) and provider / other ratios of each."""
    summary = {label: summarize_latencies(values) for label, values in by_side.items()}
    mine = summary.get("provider", {})
    ratios = {
        f"provider/{label}": {
            q: ratio(mine.get(q), other.get(q)) for q in ("p50_ms", "p95_ms", "p99_ms")
        }
        for label, other in summary.items()
        if label != "provider"
    }
    return {"mode": mode, "sides": summary, "ratios": ratios}
