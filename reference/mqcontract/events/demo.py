"""``mqcontract demo``: one worker and one orchestration loop, on any backend.

The same handler code runs whatever ``TASKER_MESSAGING_BACKEND`` names: orchestration
sends step messages to namespace queues, a worker consumes them and sends results back to
the orchestration results queue, and orchestration consumes those. The counts it prints
are the same on every backend; only configuration changes.

It installs nothing: like ``open_provider()`` it refuses a database without PGMQ (run
``mqcontract pgmq install --dsn …`` first) and only creates, then deletes, its own queues.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import time
from collections import Counter

from mqcontract._arguments import positive_int, positive_number
from mqcontract.config import MessagingConfig, QueueNamingConfig, load_config
from mqcontract.events.consumer import ConsumerSettings, QueueConsumer
from mqcontract.events.modes import DeploymentMode
from mqcontract.messages import QueuedMessage
from mqcontract.provider import open_provider
from mqcontract.tasker import (
    MessageClient,
    QueueClassifier,
    SimpleStepMessage,
    StepExecutionResult,
    decode_model,
)

__all__ = ["register", "run_demo"]


def _naming(run: str) -> QueueNamingConfig:
    """Queue names private to this run, so concurrent demos never share queues."""
    return QueueNamingConfig(
        namespace_suffix=f"_q{run}",
        orchestration_prefix=f"demo{run}_orch",
        step_results=f"demo{run}_orch_results",
        task_requests=f"demo{run}_orch_requests",
        task_finalizations=f"demo{run}_orch_finalizations",
    )


async def run_demo(
    config: MessagingConfig,
    *,
    namespaces: list[str],
    steps: int,
    mode: DeploymentMode,
    timeout: float,
) -> dict[str, int]:
    """Run the demo; returns the counts it prints."""
    run = secrets.token_hex(3)
    config = dataclasses.replace(config, queues=_naming(run))
    provider = await open_provider(config)
    classifier = QueueClassifier(config.queues)
    client = MessageClient(provider, classifier)
    step_queues = [classifier.step_queue_for_namespace(ns) for ns in namespaces]
    results: Counter[str] = Counter()
    done = asyncio.Event()
    total = steps * len(namespaces)

    async def worker(message: QueuedMessage) -> None:
        step = decode_model(message.queue_name, message.payload, SimpleStepMessage)
        outcome = {"step": step.step_name, "namespace": step.namespace}
        await client.send_step_result(
            StepExecutionResult(
                task_uuid=step.task_uuid, step_uuid=step.step_uuid, success=True, result=outcome
            )
        )

    async def orchestration(message: QueuedMessage) -> None:
        result = decode_model(message.queue_name, message.payload, StepExecutionResult)
        results[result.task_uuid] += 1
        if sum(results.values()) >= total:
            done.set()

    settings = ConsumerSettings(mode=mode, poll_interval=1.0)
    try:
        queues = await client.ensure_queues(namespaces)
        async with (
            QueueConsumer(provider.service, step_queues, worker, settings) as workers,
            QueueConsumer(
                provider.service,
                [classifier.orchestration_results_queue()],
                orchestration,
                settings,
            ) as orchestrator,
        ):
            for ns in namespaces:
                for i in range(steps):
                    step = SimpleStepMessage(
                        task_uuid=f"task-{ns}",
                        step_uuid=f"{ns}-{i}",
                        namespace=ns,
                        step_name=f"step_{i}",
                    )
                    await client.send_step_message(ns, step)
            try:
                async with asyncio.timeout(timeout):
                    await done.wait()
            except TimeoutError:
                pass
        return {
            "steps sent": total,
            "steps processed": workers.stats.processed,
            "results processed": orchestrator.stats.processed,
            "processed twice": len(workers.stats.processed_twice())
            + len(orchestrator.stats.processed_twice()),
            "tasks": len(results),
        }
    finally:
        for queue in queues if "queues" in locals() else []:
            await provider.delete_queue(queue)
        await provider.close()


def _run(options: argparse.Namespace) -> int:
    config = load_config()
    if options.backend:
        config = config.with_backend(options.backend)
    mode = DeploymentMode(options.mode)
    namespaces = [ns.strip() for ns in options.namespaces.split(",") if ns.strip()]
    print(f"backend: {config.backend}; requested mode: {mode.value}")
    start = time.monotonic()
    counts = asyncio.run(
        run_demo(
            config, namespaces=namespaces, steps=options.steps, mode=mode, timeout=options.timeout
        )
    )
    for key, value in counts.items():
        print(f"{key}: {value}")
    print(f"took {time.monotonic() - start:.2f} s")
    ok = counts["steps processed"] == counts["results processed"] == counts["steps sent"]
    return 0 if ok and counts["processed twice"] == 0 else 1


def _namespaces(text: str) -> str:
    if not any(ns.strip() for ns in text.split(",")):
        raise argparse.ArgumentTypeError("names no namespace (a comma-separated list)")
    return text


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mqcontract demo``."""
    demo = subparsers.add_parser(
        "demo", help="a worker and an orchestration loop on TASKER_MESSAGING_BACKEND"
    )
    demo.add_argument("--backend", default=None, help="override TASKER_MESSAGING_BACKEND")
    demo.add_argument("--namespaces", type=_namespaces, default="payments,inventory")
    demo.add_argument("--steps", type=positive_int, default=10, help="steps per namespace")
    demo.add_argument(
        "--mode", default=DeploymentMode.HYBRID.value, choices=[m.value for m in DeploymentMode]
    )
    demo.add_argument("--timeout", type=positive_number, default=60.0)
    demo.set_defaults(func=_run)
