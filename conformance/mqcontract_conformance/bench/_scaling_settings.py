"""What ``mqcontract bench scaling`` measures, and how much of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ScalingSettings", "quick_settings"]


@dataclass(frozen=True, kw_only=True)
class ScalingSettings:
    """The sizes of one run (the defaults take about 5 minutes for the four providers)."""

    providers: tuple[str, ...] = ("memory",)
    #: Messages per throughput run (drains, capacity runs).
    messages: int = 3000
    payload_bytes: int = 256
    rounds: int = 3
    workers: tuple[int, ...] = (1, 4, 16)
    #: Handlers of the worker series: 0 does nothing, else awaits that many milliseconds.
    handler_ms: tuple[float, ...] = (0.0, 1.0)
    processes: tuple[int, ...] = (1, 2, 4)
    #: Workers of each consumer process, and of the consumer under paced load.
    consumer_workers: int = 4
    #: Claim batch of every consumer, and the batch the backlog is sent in.
    consumer_batch: int = 100
    #: Offered load as fractions of the measured capacity.
    loads: tuple[float, ...] = (0.1, 0.5, 0.9)
    #: Seconds of paced sending per load level (bounded by the sample limits below).
    latency_seconds: float = 4.0
    latency_min_samples: int = 200
    latency_max_samples: int = 4000
    #: Concurrent senders of a push run.
    senders: int = 8
    batches: tuple[int, ...] = (1, 10, 100)
    #: Messages per batch-cost run.
    batch_messages: int = 1000


def quick_settings(providers: Sequence[str]) -> ScalingSettings:
    """Tiny sizes: every measurement runs, in seconds (for tests and a first look)."""
    return ScalingSettings(
        providers=tuple(providers),
        messages=60,
        rounds=1,
        latency_seconds=0.2,
        latency_min_samples=20,
        latency_max_samples=100,
        batch_messages=40,
        consumer_batch=10,
    )
