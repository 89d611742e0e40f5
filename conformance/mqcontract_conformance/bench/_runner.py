"""One benchmark run: provision through the harness, interleave sides, collect results.

For each provider the harness provisions the backend (PGMQ: a database of its own;
RabbitMQ: a virtual host of its own) and opens the provider; the raw sides connect to
the same place. Every round runs every workload for every side back to back, the side
order rotating from round to round, so drift on a shared machine hits all sides alike;
ratios are taken per round and their median reported.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from mqcontract.config import load_config
from mqcontract.errors import MessagingError
from mqcontract.events import DeploymentMode
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings
from mqcontract.testing.sides import Side
from mqcontract_conformance.harnesses import load_harness

from ._machine import machine_facts
from ._measure import Run
from ._progress import Progress
from ._provider_side import ProviderSide
from ._recovery import FAULTS, measure_recovery
from ._results import latency_entry, throughput_entry
from ._workloads import (
    Workload,
    make_payload,
    measure_latency,
    plan_workloads,
    prepare,
    run_slice,
)

__all__ = ["BenchSettings", "bench_provider", "run_bench"]

#: Messages each side sends and receives untimed before the first round.
WARMUP_MESSAGES = 100


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    """What to measure and how much (``mqcontract bench`` options)."""

    providers: tuple[str, ...] = ("memory",)
    messages: int = 2000
    payload_bytes: int = 256
    batch: int = 100
    rounds: int = 3
    #: Send/receive workloads alternate sides every ``messages / slices`` messages.
    slices: int = 10
    workers: int = 4
    latency_samples: int = 200
    recovery_samples: int = 3
    recovery_poll_interval: float = 1.0
    #: Workload keys to run (prefix match); empty: all.
    only: tuple[str, ...] = ()
    #: Skip the fallback recovery measurement.
    skip_recovery: bool = False


def _modes(service: MessagingService) -> list[str]:
    """The distinct effective deployment modes that listen, for this provider."""
    caps = service.capabilities
    modes: list[str] = []
    for requested in (DeploymentMode.EVENT_DRIVEN_ONLY, DeploymentMode.HYBRID):
        mode = requested.effective_for_provider(caps)
        if mode.listens and mode.value not in modes:
            modes.append(mode.value)
    return modes


class _Queues:
    """Fresh queues named ``bench_<run>_<n>``, made and deleted through the provider."""

    def __init__(self, service: MessagingService) -> None:
        self._service = service
        self._run = secrets.token_hex(3)
        self._n = 0

    def name(self) -> str:
        self._n += 1
        return f"bench_{self._run}_{self._n}"

    async def make(self) -> str:
        queue = self.name()
        await self._service.create_queue(queue)
        return queue

    async def drop(self, queue: str) -> None:
        await self._service.delete_queue(queue)


async def _make(workload: Workload, side: Side, queues: _Queues) -> str:
    if workload.kind == "send_plain":
        queue = queues.name()
        await side.create_plain_queue(queue)  # type: ignore[attr-defined]
        return queue
    return await queues.make()


async def _drop(workload: Workload, side: Side, queues: _Queues, queue: str) -> None:
    if workload.kind == "send_plain":
        await side.drop_plain_queue(queue)  # type: ignore[attr-defined]
    else:
        await queues.drop(queue)


def _rotate(sides: Sequence[Side], by: int) -> list[Side]:
    k = by % len(sides) if sides else 0
    return [*sides[k:], *sides[:k]]


async def _sliced_round(
    workload: Workload,
    sides: Sequence[Side],
    queues: _Queues,
    payloads: Sequence[bytes],
    settings: BenchSettings,
) -> tuple[dict[str, Run], dict[str, str]]:
    """One round of a sliced workload: each side on its own fresh queue, slices alternating."""
    made: dict[str, str] = {}
    totals: dict[str, Run] = {}
    failed: dict[str, str] = {}
    size = -(-len(payloads) // max(settings.slices, 1))
    chunks = [payloads[i : i + size] for i in range(0, len(payloads), size)]
    try:
        for side in sides:
            made[side.label] = await _make(workload, side, queues)
            await prepare(workload, side, made[side.label], payloads, batch=settings.batch)
            totals[side.label] = Run(0, 0.0, 0.0)
        for i, chunk in enumerate(chunks):
            for side in _rotate(sides, i):
                if side.label in failed:
                    continue
                try:
                    run = await run_slice(
                        workload,
                        side,
                        made[side.label],
                        chunk,
                        batch=settings.batch,
                        workers=settings.workers,
                    )
                except MessagingError as exc:
                    failed[side.label] = str(exc)
                    continue
                totals[side.label] = totals[side.label] + run
    finally:
        for side in sides:
            if side.label in made:
                await _drop(workload, side, queues, made[side.label])
    return {k: v for k, v in totals.items() if k not in failed}, failed


def _applies(workload: Workload, side: Side, settings: BenchSettings) -> bool:
    if settings.only and not any(workload.key.startswith(k) for k in settings.only):
        return False
    return workload.kind != "send_plain" or hasattr(side, "create_plain_queue")


async def bench_provider(name: str, settings: BenchSettings, progress: Progress) -> dict[str, Any]:
    """Everything measured for one provider (see the module docstring)."""
    config = load_config(validate_backend=False)
    # Real time: a harness that would run its provider on a virtual clock must not.
    settings_for_harness = HarnessSettings(
        config=config, run_id=f"bench_{secrets.token_hex(3)}", extra={"real_time": "1"}
    )
    harness = load_harness(name, settings_for_harness)
    progress.message(f"== {name}: provisioning")
    await harness.setup()
    try:
        service = await harness.open()
        try:
            return await _bench_service(name, harness, service, settings, progress)
        finally:
            await service.close()
    finally:
        await harness.teardown()


async def _bench_service(
    name: str,
    harness: Harness,
    service: MessagingService,
    settings: BenchSettings,
    progress: Progress,
) -> dict[str, Any]:
    payload = make_payload(settings.payload_bytes)
    payloads = [payload] * settings.messages
    queues = _Queues(service)
    sides: list[Side] = [
        ProviderSide(service, poll_interval=None),
        *harness.raw_sides(settings.workers),
    ]
    modes = _modes(service)
    unconfirmed = any(hasattr(side, "receive_ack_confirmed") for side in sides)
    workloads = plan_workloads(modes, batch=settings.batch, unconfirmed_raw_acks=unconfirmed)
    per_round = sum(any(_applies(w, s, settings) for s in sides) for w in workloads)
    latency_per_round = -(-settings.latency_samples // max(settings.rounds, 1))
    run_latency = settings.latency_samples > 0 and not settings.only
    progress.total += 1 + settings.rounds * (
        per_round + (len(modes) * len(sides) if run_latency else 0)
    )
    if not settings.skip_recovery:
        progress.total += len(FAULTS) * settings.recovery_samples

    opened: list[Side] = []
    try:
        for side in sides:
            await side.open()
            opened.append(side)
        backend = harness.describe()
        for side in sides:
            facts = getattr(side, "facts", None)
            if facts is not None:
                backend.update(await facts())
        progress.step(f"{name} · warm-up")  # connections, prepared statements, channels
        warm = Workload("warmup", "", "receive_ack_batch")
        await _sliced_round(warm, sides, queues, [payload] * WARMUP_MESSAGES, settings)
        progress.note("done")
        runs: dict[str, dict[str, list[Run | None]]] = {w.key: {} for w in workloads}
        errors: dict[str, dict[str, list[str]]] = {w.key: {} for w in workloads}
        latencies: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
        for r in range(settings.rounds):
            order = sides[r % len(sides) :] + sides[: r % len(sides)]
            for workload in workloads:
                active = [side for side in order if _applies(workload, side, settings)]
                if not active:
                    continue
                where = f"{name} · round {r + 1}/{settings.rounds} · {workload.key}"
                progress.step(f"{where} · {', '.join(side.label for side in active)}")
                done, failed = await _sliced_round(workload, active, queues, payloads, settings)
                for label, run in done.items():
                    runs[workload.key].setdefault(label, [None] * settings.rounds)[r] = run
                for label, text in failed.items():
                    runs[workload.key].setdefault(label, [None] * settings.rounds)
                    errors[workload.key].setdefault(label, []).append(text)
                progress.note(
                    " · ".join(f"{k} {v.rate:,.0f}/s" for k, v in done.items())
                    + "".join(f" · {k} FAILED: {v}" for k, v in failed.items())
                )
            if not run_latency:
                continue
            for mode in modes:
                for side in order:
                    progress.step(
                        f"{name} · round {r + 1}/{settings.rounds} · latency {mode} · {side.label}"
                    )
                    queue = await queues.make()
                    try:
                        got = await measure_latency(
                            side,
                            queue,
                            payload,
                            latency_per_round,
                            mode=mode,
                            workers=settings.workers,
                            batch=settings.batch,
                        )
                    except MessagingError as exc:
                        progress.note(f"FAILED: {exc}")
                        continue
                    finally:
                        await queues.drop(queue)
                    latencies[mode].setdefault(side.label, []).extend(got)
                    p50 = sorted(got)[len(got) // 2] * 1000 if got else float("nan")
                    progress.note(f"p50 {p50:.2f} ms")

        recovery: list[dict[str, Any]] = []
        if not settings.skip_recovery:
            recovery = await measure_recovery(
                harness,
                service,
                queues.make,
                queues.drop,
                payload,
                samples=settings.recovery_samples,
                poll_interval=settings.recovery_poll_interval,
                progress=progress,
            )
    finally:
        for side in opened:
            await side.close()

    throughput = [
        throughput_entry(w.key, w.title, w.mode, runs[w.key], errors[w.key])
        for w in workloads
        if runs[w.key]
    ]
    latency = [latency_entry(mode, by_side) for mode, by_side in latencies.items() if by_side]
    return {
        "provider": name,
        "backend": backend,
        "capabilities": service.capabilities.to_dict(),
        "sides": {side.label: side.description for side in sides},
        "modes": modes,
        "throughput": throughput,
        "latency": latency,
        "recovery": recovery,
    }


async def run_bench(settings: BenchSettings, progress: Progress) -> dict[str, Any]:
    """Benchmark every provider in ``settings``; the JSON-ready result."""
    started = machine_facts()
    began = time.time()
    providers = {}
    for name in settings.providers:
        providers[name] = await bench_provider(name, settings, progress)
    machine = machine_facts()
    machine["load_average_at_start"] = started["load_average_1_5_15"]
    return {
        "tool": "mqcontract bench",
        "started_at": datetime.fromtimestamp(began, UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - began, 1),
        "settings": asdict(settings),
        "machine": machine,
        "providers": providers,
    }
