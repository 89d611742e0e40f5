"""Consumers in separate OS processes draining one queue together.

Each child is started with ``multiprocessing``'s *spawn* method (a fresh interpreter, no
state inherited from the parent's event loop), opens its own service on the backend the
harness provisioned, reports ready, and starts its ``QueueConsumer`` only when the parent
says go, so the timed span holds consuming alone, not interpreter start-up. Children and
parent share a few counters in shared memory: one slot per child, written by that child
only, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from mqcontract.config import MessagingConfig
from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.messages import QueuedMessage
from mqcontract.registry import resolve
from mqcontract.testing import Harness

from ._measure import Run
from ._provider_side import VISIBILITY_TIMEOUT
from ._workloads import BenchError, wait_until

__all__ = ["ChildSpec", "child_main", "cross_process_config", "drain_with_processes"]

# Child states (one slot per child) and the parent's phase.
STARTING, READY, DONE, FAILED = 0, 1, 2, -1
WAIT, GO, STOP = 0, 1, 2
#: Bound on a child starting its interpreter and connecting.
READY_BOUND = 120.0
#: Bound on children stopping and exiting once told to.
EXIT_BOUND = 30.0
#: How often a consuming child looks for the stop signal.
STOP_POLL = 0.005

NOT_SHARED = "not applicable: the provider keeps its queues inside one process"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What one child needs to open the provider and consume (picklable)."""

    provider: str
    config: MessagingConfig
    queue: str
    mode: str
    workers: int
    batch: int


def cross_process_config(harness: Harness) -> MessagingConfig | None:
    """The configuration another process uses to reach this harness's backend, or None.

    The kit may not import the reference harnesses, so this reads what they expose: a
    harness that re-points its whole configuration (RabbitMQ: a virtual host of its own)
    keeps it as ``config``; PGMQ's keeps the URL of its own database as ``url``. A harness
    with neither (the in-memory one) cannot share a queue across processes.
    """
    config = getattr(harness, "config", None)
    if isinstance(config, MessagingConfig):
        return config.with_backend(harness.name)
    url = getattr(harness, "url", None)
    if isinstance(url, str) and url.startswith(("postgres://", "postgresql://")):
        base = harness.settings.config
        pgmq = dataclasses.replace(base.pgmq, database_url=url)
        return dataclasses.replace(base, pgmq=pgmq).with_backend(harness.name)
    return None


# -- the child ----------------------------------------------------------------------------


async def _poll(condition: Callable[[], bool], step: float, bound: float) -> None:
    """Look at ``condition`` every ``step`` seconds (shared memory has no waiter to await)."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no signal from the parent within {bound:g} s")
        await asyncio.sleep(step)


async def _child(
    spec: ChildSpec, index: int, state: Any, handled: Any, cpu: Any, phase: Any
) -> None:
    service = await resolve(spec.provider)(spec.config)
    try:
        state[index] = READY
        await _poll(lambda: phase.value != WAIT, 0.001, READY_BOUND)
        if phase.value != GO:
            return

        async def handler(_: QueuedMessage) -> None:
            handled[index] += 1

        settings = ConsumerSettings(
            mode=DeploymentMode(spec.mode),
            visibility_timeout=VISIBILITY_TIMEOUT,
            batch_size=spec.batch,
            workers=spec.workers,
            stop_grace=5.0,
        )
        consumer = QueueConsumer(service, [spec.queue], handler, settings)
        began = time.process_time()
        await consumer.start()
        try:
            await _poll(lambda: phase.value == STOP, STOP_POLL, READY_BOUND)
            cpu[index] = time.process_time() - began
        finally:
            await consumer.stop()
    finally:
        await service.close()


def child_main(spec: ChildSpec, index: int, state: Any, handled: Any, cpu: Any, phase: Any) -> None:
    """Entry point of one consumer process (module level, so *spawn* can find it)."""
    for name in ("mqcontract", "aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        asyncio.run(_child(spec, index, state, handled, cpu, phase))
    except BaseException as exc:
        state[index] = FAILED
        sys.stderr.write(f"consumer process {index}: {type(exc).__name__}: {exc}\n")
        raise SystemExit(1) from None
    state[index] = DONE


# -- the parent ---------------------------------------------------------------------------


def _check_alive(processes: Sequence[BaseProcess], state: Any) -> None:
    for i, process in enumerate(processes):
        if state[i] == FAILED or (process.exitcode is not None and state[i] != DONE):
            raise BenchError(f"consumer process {i} failed (exit code {process.exitcode})")


async def _reap(processes: Sequence[BaseProcess]) -> None:
    """Wait (bounded) for every started child to exit; kill what is left."""
    processes = [p for p in processes if p.pid is not None]
    try:
        await wait_until(
            lambda: all(not p.is_alive() for p in processes), EXIT_BOUND, "consumers exit"
        )
    except BenchError:
        for process in processes:
            if process.is_alive():
                process.kill()
    for process in processes:
        process.join(timeout=5.0)


async def drain_with_processes(spec: ChildSpec, processes: int, count: int, *, bound: float) -> Run:
    """Time ``processes`` children draining ``count`` messages already on ``spec.queue``.

    The run's CPU time is the children's, from their consumer's start to the stop signal.
    """
    ctx = multiprocessing.get_context("spawn")
    state = ctx.RawArray("i", processes)
    handled = ctx.RawArray("q", processes)
    cpu = ctx.RawArray("d", processes)
    phase = ctx.RawValue("i", WAIT)
    children = [
        ctx.Process(
            target=child_main,
            args=(spec, i, state, handled, cpu, phase),
            name=f"mqcontract-bench-consumer-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    try:
        for child in children:
            child.start()

        def ready() -> bool:
            _check_alive(children, state)
            return all(state[i] == READY for i in range(processes))

        await wait_until(ready, READY_BOUND, f"{processes} consumer processes ready")
        start = time.perf_counter()
        phase.value = GO

        def drained() -> bool:
            _check_alive(children, state)
            return bool(sum(handled) >= count)

        await wait_until(drained, bound, f"{processes} processes consumed {count} messages")
        seconds = time.perf_counter() - start
        phase.value = STOP
        await wait_until(
            lambda: all(
                state[i] in (DONE, FAILED) or not children[i].is_alive() for i in range(processes)
            ),
            EXIT_BOUND,
            "consumer processes stop",
        )
        _check_alive(children, state)
        return Run(count, seconds, sum(cpu))
    finally:
        phase.value = STOP
        await _reap(children)
