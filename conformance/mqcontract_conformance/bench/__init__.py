"""``mqcontract bench``: what the abstraction costs, measured against the raw drivers.

For each provider it times the same workloads done three ways in one process and one
run: through the mqcontract provider (and its event system), with the raw driver
(asyncpg calling PGMQ's functions; aio-pika), and for PGMQ with the ``pgmq`` PyPI
client. Rounds interleave the sides and ratios are taken per round, so a noisy shared
machine skews all sides alike. Benchmarks print figures; nothing fails on a number.

``mqcontract bench scaling`` (``_scaling*``) measures how each provider's cost grows: event
system throughput by workers and processes, push latency at fractions of the measured
capacity, and cost per message by batch size, as tables and SVG plots.
"""

from __future__ import annotations

from ._runner import BenchSettings, run_bench
from .cli import register

__all__ = ["BenchSettings", "register", "run_bench"]
