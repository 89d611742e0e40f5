"""The four measurements of ``mqcontract bench scaling`` for one opened provider.

Each runs its settings round by round (every setting once per round, so drift on a
shared machine lands on all of them alike), on a fresh queue per timed run, and returns
its part of the JSON result. A run that fails is recorded and the others go on.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mqcontract.errors import MessagingError
from mqcontract.service import MessagingService
from mqcontract.testing import Harness

from ._measure import Run, median
from ._progress import Progress
from ._provider_side import VISIBILITY_TIMEOUT, ProviderSide
from ._scaling_drain import drain_run
from ._scaling_procs import NOT_SHARED, ChildSpec, cross_process_config, drain_with_processes
from ._scaling_push import PushRun, push_run
from ._scaling_settings import ScalingSettings
from ._workloads import BenchError, Workload, run_slice

__all__ = [
    "BATCH_OPERATIONS",
    "Step",
    "measure_batch_cost",
    "measure_processes",
    "measure_push",
    "measure_workers",
]

T = TypeVar("T")

#: The operations timed by batch size (keys of the JSON rows).
BATCH_OPERATIONS = ("send_batch", "receive_ack", "receive_ack_claims")
#: Batch in which backlogs are sent untimed.
BACKLOG_BATCH = 100
#: Bound on consumer processes draining, per message (and at least 60 s).
SECONDS_PER_MESSAGE = 0.05


class _Queues:
    """Fresh queues named ``scale_<run>_<n>``, made and deleted through the provider."""

    def __init__(self, service: MessagingService) -> None:
        self._service = service
        self._run = secrets.token_hex(3)
        self._n = 0

    async def run(self, work: Callable[[str], Awaitable[T]]) -> T:
        self._n += 1
        queue = f"scale_{self._run}_{self._n}"
        await self._service.create_queue(queue)
        try:
            return await work(queue)
        finally:
            await self._service.delete_queue(queue)


@dataclass
class Step:
    """One provider under measurement: what every measurement needs, and its failures."""

    name: str
    harness: Harness
    service: MessagingService
    settings: ScalingSettings
    progress: Progress
    mode: str
    payload: bytes

    def __post_init__(self) -> None:
        self.side = ProviderSide(self.service, poll_interval=None)
        self.queues = _Queues(self.service)
        self.payloads = [self.payload] * self.settings.messages
        self.errors: list[str] = []

    def where(self, r: int) -> str:
        return f"{self.name} · round {r + 1}/{self.settings.rounds}"

    async def timed(self, what: str, work: Awaitable[T], note: Callable[[T], str]) -> T | None:
        """Run one step with progress; a failure is recorded and None returned."""
        self.progress.step(what)
        try:
            result = await work
        except MessagingError as exc:
            self.errors.append(f"{what}: {exc}")
            self.progress.note(f"FAILED: {exc}")
            return None
        self.progress.note(note(result))
        return result


def runs_entry(runs: Sequence[Run | None]) -> dict[str, Any]:
    """Medians over the rounds that completed, and each round's rate."""
    done = [r for r in runs if r is not None]
    return {
        "median_msg_s": median([r.rate for r in done]),
        "median_cpu_us_per_msg": median([r.cpu_us_per_message for r in done]),
        "median_wall_us_per_msg": median([r.seconds / r.messages * 1e6 for r in done]),
        "rounds_msg_s": [None if r is None else r.rate for r in runs],
    }


def _rate_note(run: Run) -> str:
    return f"{run.rate:,.0f} msg/s"


# -- cost per message by batch size ----------------------------------------------------------


async def _receive_and_ack(
    service: MessagingService, queue: str, count: int, batch: int, *, together: bool
) -> Run:
    """Receive ``batch`` at a time; settle each message with ``ack_claim``, or each batch
    with one ``ack_claims`` (``together``)."""
    wall, cpu = time.perf_counter(), time.process_time()
    acked = 0
    while acked < count:
        claimed = await service.receive_messages(
            queue, min(batch, count - acked), VISIBILITY_TIMEOUT
        )
        if not claimed:
            break
        if together:
            settled = await service.ack_claims(queue, claimed)
            if not all(settled):
                raise BenchError(f"{queue}: ack_claims settled {sum(settled)} of {len(claimed)}")
        else:
            for message in claimed:
                await service.ack_claim(queue, message)
        acked += len(claimed)
    if acked != count:
        raise BenchError(f"{queue}: received {acked} of {count}")
    return Run(count, time.perf_counter() - wall, time.process_time() - cpu)


async def measure_batch_cost(step: Step) -> list[dict[str, Any]]:
    """send_batch, receive + ack each, receive + ack_claims, for every batch size."""
    settings = step.settings
    rounds = settings.rounds
    costs: dict[str, dict[int, list[Run | None]]] = {
        op: {b: [None] * rounds for b in settings.batches} for op in BATCH_OPERATIONS
    }
    payloads = [step.payload] * settings.batch_messages
    send = Workload("send_batch", "", "send_batch")
    count = len(payloads)

    async def three(queue: str, batch: int) -> tuple[Run, Run, Run]:
        side, service = step.side, step.service
        sent = await run_slice(send, side, queue, payloads, batch=batch, workers=1)
        each = await _receive_and_ack(service, queue, count, batch, together=False)
        await side.send_batch(queue, payloads, BACKLOG_BATCH)
        together = await _receive_and_ack(service, queue, count, batch, together=True)
        return sent, each, together

    for r in range(rounds):
        for b in settings.batches:

            async def work(queue: str, batch: int = b) -> tuple[Run, Run, Run]:
                return await three(queue, batch)

            got = await step.timed(
                f"{step.where(r)} · batch {b}: send_batch, receive+ack, receive+ack_claims",
                step.queues.run(work),
                lambda runs: (
                    " · ".join(f"{x.cpu_us_per_message:,.0f}" for x in runs) + " µs CPU/msg"
                ),
            )
            if got is not None:
                for op, run in zip(BATCH_OPERATIONS, got, strict=True):
                    costs[op][b][r] = run
    return [
        {"operation": op, "batch": b, **runs_entry(costs[op][b])}
        for op in BATCH_OPERATIONS
        for b in settings.batches
    ]


# -- event-system throughput ------------------------------------------------------------------


def _handler(ms: float) -> str:
    return f"handler awaits {ms:g} ms" if ms > 0 else "handler does nothing"


async def measure_workers(step: Step) -> list[dict[str, Any]]:
    """Drain a backlog with 1, 4, 16 workers in this process, for each handler."""
    settings = step.settings
    by: dict[tuple[float, int], list[Run | None]] = {
        (h, w): [None] * settings.rounds for h in settings.handler_ms for w in settings.workers
    }
    for r in range(settings.rounds):
        for h, w in by:

            async def drained(queue: str, workers: int = w, handler_ms: float = h) -> Run:
                return await drain_run(
                    step.service,
                    queue,
                    step.payloads,
                    mode=step.mode,
                    workers=workers,
                    batch=settings.consumer_batch,
                    handler_seconds=handler_ms / 1000,
                )

            by[(h, w)][r] = await step.timed(
                f"{step.where(r)} · {step.mode}, {w} workers, {_handler(h)}, "
                f"drain {len(step.payloads)}",
                step.queues.run(drained),
                _rate_note,
            )
    return [
        {
            "handler_ms": h,
            "points": [{"workers": w, **runs_entry(by[(h, w)])} for w in settings.workers],
        }
        for h in settings.handler_ms
    ]


async def measure_processes(step: Step) -> dict[str, Any]:
    """Drain a backlog with 1, 2, 4 consumer processes (where the backend is shared)."""
    settings = step.settings
    config = cross_process_config(step.harness)
    if config is None:
        step.progress.total -= settings.rounds * len(settings.processes)
        step.progress.message(f"{step.name} · consumer processes: {NOT_SHARED}")
        return {"applicable": False, "reason": NOT_SHARED}
    count = len(step.payloads)
    by: dict[int, list[Run | None]] = {p: [None] * settings.rounds for p in settings.processes}
    for r in range(settings.rounds):
        for p in settings.processes:

            async def drained(queue: str, processes: int = p) -> Run:
                await step.side.send_batch(queue, step.payloads, BACKLOG_BATCH)
                spec = ChildSpec(
                    provider=step.name,
                    config=config,
                    queue=queue,
                    mode=step.mode,
                    workers=settings.consumer_workers,
                    batch=settings.consumer_batch,
                )
                bound = max(60.0, count * SECONDS_PER_MESSAGE)
                return await drain_with_processes(spec, processes, count, bound=bound)

            by[p][r] = await step.timed(
                f"{step.where(r)} · {step.mode}, {p} consumer processes, drain {count}",
                step.queues.run(drained),
                _rate_note,
            )
    return {
        "applicable": True,
        "workers_per_process": settings.consumer_workers,
        "points": [{"processes": p, **runs_entry(runs)} for p, runs in by.items()],
    }


# -- push capacity and latency ---------------------------------------------------------------


async def measure_push(step: Step) -> dict[str, Any]:
    """Capacity flat out (median of the rounds), then latency at paced shares of it."""
    settings = step.settings

    async def push(queue: str, count: int, rate: float | None) -> PushRun:
        return await push_run(
            step.service,
            queue,
            step.payload,
            count,
            rate,
            mode=step.mode,
            workers=settings.consumer_workers,
            batch=settings.consumer_batch,
            senders=settings.senders,
        )

    capacities: list[float] = []
    for r in range(settings.rounds):

        async def flat_out(queue: str) -> float:
            run = await push(queue, settings.messages, None)
            return run.rate

        got = await step.timed(
            f"{step.where(r)} · push capacity, {settings.senders} senders",
            step.queues.run(flat_out),
            lambda rate: f"{rate:,.0f} msg/s",
        )
        if got is not None:
            capacities.append(got)
    capacity = median(capacities)
    result: dict[str, Any] = {
        "capacity_msg_s": capacity,
        "capacity_rounds_msg_s": capacities,
        "workers": settings.consumer_workers,
        "senders": settings.senders,
        "points": [],
    }
    if capacity is None:
        step.progress.total -= len(settings.loads)
        return result
    for load in settings.loads:
        offered = capacity * load
        count = round(offered * settings.latency_seconds)
        count = min(max(count, settings.latency_min_samples), settings.latency_max_samples)

        async def paced(queue: str, rate: float = offered, n: int = count) -> dict[str, Any]:
            run = await push(queue, n, rate)
            summary: dict[str, Any] = run.summary(rate)
            return summary

        point = await step.timed(
            f"{step.name} · latency at {load:.0%} of capacity ({offered:,.0f} msg/s, "
            f"{count} messages)",
            step.queues.run(paced),
            lambda row: f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms",
        )
        if point is not None:
            result["points"].append({"load": load, **point})
    return result
