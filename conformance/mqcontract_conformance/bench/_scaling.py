"""``mqcontract bench scaling``: how cost grows with workers, processes, load and batch size.

For each provider, in one run and against the backend its harness provisions:

1. event-system throughput draining a backlog (``QueueConsumer`` in the provider's best
   deployment mode) with 1, 4, 16 workers in this process, then with 1, 2, 4 consumer
   processes (not applicable where queues live inside one process);
2. push capacity (senders flat out while the consumer handles), then send → handler
   latency at paced offered rates of 10 %, 50 % and 90 % of it;
3. client CPU and wall time per message of ``send_batch`` and receive + ack as the batch
   grows from 1 to 10 to 100.

Rounds interleave the settings of each measurement (1, 4, 16 workers, then again), so a
burst of load from elsewhere on a shared machine lands on every setting alike.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from mqcontract.config import load_config
from mqcontract.events import DeploymentMode
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings
from mqcontract_conformance.harnesses import load_harness

from ._machine import machine_facts
from ._progress import Progress
from ._scaling_settings import ScalingSettings, quick_settings
from ._scaling_steps import (
    Step,
    measure_batch_cost,
    measure_processes,
    measure_push,
    measure_workers,
)
from ._workloads import make_payload

__all__ = ["ScalingSettings", "best_mode", "quick_settings", "run_scaling", "scale_provider"]

#: Messages sent and received untimed before anything is measured.
WARMUP_MESSAGES = 100


def best_mode(service: MessagingService) -> str:
    """EventDrivenOnly where the provider needs no poller (push alone), else Hybrid."""
    mode = DeploymentMode.EVENT_DRIVEN_ONLY.effective_for_provider(service.capabilities)
    return mode.value if mode.listens else DeploymentMode.HYBRID.value


def _steps(settings: ScalingSettings) -> int:
    per_round = len(settings.batches) + len(settings.processes) + 1
    per_round += len(settings.workers) * len(settings.handler_ms)
    return len(settings.providers) * (per_round * settings.rounds + len(settings.loads))


async def _scale_service(
    name: str,
    harness: Harness,
    service: MessagingService,
    settings: ScalingSettings,
    progress: Progress,
) -> dict[str, Any]:
    payload = make_payload(settings.payload_bytes)
    step = Step(name, harness, service, settings, progress, best_mode(service), payload)

    async def warm(queue: str) -> int:
        await step.side.send_batch(queue, [payload] * WARMUP_MESSAGES, settings.consumer_batch)
        return await step.side.receive_ack(queue, WARMUP_MESSAGES, settings.consumer_batch)

    await step.queues.run(warm)
    # Batch cost first: it also takes every code path once before the consumers run.
    batch_cost = await measure_batch_cost(step)
    workers = await measure_workers(step)
    processes = await measure_processes(step)
    latency = await measure_push(step)
    return {
        "provider": name,
        "backend": harness.describe(),
        "mode": step.mode,
        "workers": workers,
        "processes": processes,
        "latency": latency,
        "batch_cost": batch_cost,
        "errors": step.errors,
    }


async def scale_provider(
    name: str, settings: ScalingSettings, progress: Progress
) -> dict[str, Any]:
    """Everything measured for one provider, on a backend of its own from its harness."""
    config = load_config(validate_backend=False)
    # Real time: a harness that would run its provider on a virtual clock must not.
    harness_settings = HarnessSettings(
        config=config, run_id=f"scale_{secrets.token_hex(3)}", extra={"real_time": "1"}
    )
    harness = load_harness(name, harness_settings)
    progress.message(f"== {name}: provisioning")
    await harness.setup()
    try:
        service = await harness.open()
        try:
            return await _scale_service(name, harness, service, settings, progress)
        finally:
            await service.close()
    finally:
        await harness.teardown()


async def run_scaling(settings: ScalingSettings, progress: Progress) -> dict[str, Any]:
    """Measure every provider in ``settings``; the JSON-ready result."""
    progress.total = max(_steps(settings), 1)
    started = machine_facts()
    began = time.time()
    providers = {}
    for name in settings.providers:
        providers[name] = await scale_provider(name, settings, progress)
    machine = machine_facts()
    machine["load_average_at_start"] = started["load_average_1_5_15"]
    return {
        "tool": "mqcontract bench scaling",
        "started_at": datetime.fromtimestamp(began, UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - began, 1),
        "settings": asdict(settings),
        "machine": machine,
        "providers": providers,
    }
