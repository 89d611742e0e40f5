"""The workloads, and how one of them is timed for one side.

Every workload is *sliced*: each side's messages are cut into slices and the runner
alternates sides slice by slice, each side on a fresh queue of its own made through the
provider (so every side meets the same table or queue and the same server-side work). A
burst of load from elsewhere on a shared machine then lands on every side alike. A slice
of a consuming workload is a whole consumer run: start, consume the slice, stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from mqcontract.errors import MessagingError
from mqcontract.testing.sides import Consumer, Side

from ._measure import Run

__all__ = [
    "BenchError",
    "Workload",
    "consume",
    "make_payload",
    "measure_latency",
    "plan_workloads",
    "prepare",
    "run_slice",
    "wait_until",
]

Kind = Literal[
    "send",
    "send_batch",
    "receive_ack",
    "receive_ack_confirmed",
    "receive_ack_batch",
    "consume_backlog",
    "consume_live",
    "send_plain",
]

#: Bound on waiting for a consumer to finish, per message (and at least a minute).
CONSUME_SECONDS_PER_MESSAGE = 0.05


class BenchError(MessagingError):
    """A workload did not complete (a consumer stalled, a receive came back short)."""


@dataclass(frozen=True, slots=True)
class Workload:
    """One row of the throughput table."""

    key: str
    title: str
    kind: Kind
    mode: str | None = None


def plan_workloads(
    modes: Sequence[str], *, batch: int, unconfirmed_raw_acks: bool = False
) -> list[Workload]:
    """The throughput workloads for a provider whose event system runs in ``modes``.

    ``unconfirmed_raw_acks``: the raw side's acks return before the broker has read them
    (AMQP 0-9-1 acks have no reply) while the provider's are confirmed. Serial receive +
    ack then also runs with the raw side confirming each ack the way the provider does
    (one synchronous method after it): the row that measures what the abstraction adds.
    The unconfirmed row stays, to show what the guarantee itself costs a serial caller.
    """
    serial = "receive 1 + ack (raw ack unconfirmed)" if unconfirmed_raw_acks else "receive 1 + ack"
    plan = [
        Workload("send", "send (one message per call)", "send"),
        Workload("send_batch", f"send_batch ({batch} per call)", "send_batch"),
        Workload("receive_ack", serial, "receive_ack"),
    ]
    if unconfirmed_raw_acks:
        plan.append(
            Workload(
                "receive_ack_confirmed",
                "receive 1 + ack, both confirming the ack",
                "receive_ack_confirmed",
            )
        )
    batched = f"receive {batch} + settle the batch"
    plan.append(Workload("receive_ack_batch", batched, "receive_ack_batch"))
    for mode in modes:
        plan.append(
            Workload(
                f"consume_backlog_{mode}",
                f"event system, {mode}: drain a backlog",
                "consume_backlog",
                mode,
            )
        )
        plan.append(
            Workload(
                f"consume_live_{mode}",
                f"event system, {mode}: send_batch while consuming",
                "consume_live",
                mode,
            )
        )
    plan.append(Workload("send_plain", "send, queue without the notify trigger", "send_plain"))
    return plan


def make_payload(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least 16), stored natively by PGMQ."""
    size = max(size, 16)
    return b'{"pad":"' + b"x" * (size - 10) + b'"}'


async def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``condition`` every millisecond; BenchError after ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            raise BenchError(f"benchmark stalled: {what} within {seconds:g} s")
        await asyncio.sleep(0.001)


class _Stopwatch:
    """Wall and process CPU time of a block."""

    def __enter__(self) -> _Stopwatch:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = time.process_time() - self._cpu

    def run(self, messages: int) -> Run:
        return Run(messages, self.seconds, self.cpu_seconds)


async def prepare(
    workload: Workload, side: Side, queue: str, payloads: Sequence[bytes], *, batch: int
) -> None:
    """Untimed setup before the slices: receive workloads need their messages first."""
    if workload.kind in ("receive_ack", "receive_ack_confirmed", "receive_ack_batch"):
        await side.send_batch(queue, payloads, batch)


async def run_slice(
    workload: Workload,
    side: Side,
    queue: str,
    payloads: Sequence[bytes],
    *,
    batch: int,
    workers: int,
) -> Run:
    """Time one slice (``len(payloads)`` messages) of ``workload``."""
    count = len(payloads)
    kind = workload.kind
    if kind in ("consume_backlog", "consume_live"):
        return await consume(workload, side, queue, payloads, batch=batch, workers=workers)
    with _Stopwatch() as watch:
        if kind in ("send", "send_plain"):
            await side.send(queue, payloads)
        elif kind == "send_batch":
            await side.send_batch(queue, payloads, batch)
        elif kind == "receive_ack_confirmed":
            # A side without the method confirms every ack anyway (the provider's).
            confirmed = getattr(side, "receive_ack_confirmed", side.receive_ack)
            acked = await confirmed(queue, count, 1)
        else:
            limit = 1 if kind == "receive_ack" else batch
            acked = await side.receive_ack(queue, count, limit)
            if acked != count:
                raise BenchError(f"{side.label} received {acked} of {count} on {queue}")
    return watch.run(count)


def _acked(consumer: Consumer, count: int) -> Callable[[], bool]:
    return lambda: consumer.acked >= count


def _consume_bound(count: int) -> float:
    return max(60.0, count * CONSUME_SECONDS_PER_MESSAGE)


async def consume(
    workload: Workload,
    side: Side,
    queue: str,
    payloads: Sequence[bytes],
    *,
    batch: int,
    workers: int,
) -> Run:
    """Time a consuming workload: drain a backlog, or send while consuming."""
    count = len(payloads)
    consumer: Consumer = side.consumer(
        queue, lambda: None, mode=workload.mode or "Hybrid", workers=workers, batch=batch
    )
    what = f"{side.label} consumed {count} messages of {queue}"
    if workload.kind == "consume_backlog":
        await side.send_batch(queue, payloads, batch)
        try:
            with _Stopwatch() as watch:
                await consumer.start()
                await wait_until(_acked(consumer, count), _consume_bound(count), what)
        finally:
            await consumer.stop()
        return watch.run(count)
    await consumer.start()
    try:
        with _Stopwatch() as watch:
            await side.send_batch(queue, payloads, batch)
            await wait_until(_acked(consumer, count), _consume_bound(count), what)
    finally:
        await consumer.stop()
    return watch.run(count)


async def measure_latency(
    side: Side,
    queue: str,
    payload: bytes,
    samples: int,
    *,
    mode: str,
    workers: int,
    batch: int,
    bound: float = 30.0,
) -> list[float]:
    """Seconds from the start of a send to the handler, one message in flight at a time."""
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[float]] = []

    def on_message() -> None:
        if pending and not pending[-1].done():
            pending[-1].set_result(time.perf_counter())

    consumer = side.consumer(queue, on_message, mode=mode, workers=workers, batch=batch)
    await consumer.start()
    latencies: list[float] = []
    try:
        for i in range(samples):
            arrived: asyncio.Future[float] = loop.create_future()
            pending.append(arrived)
            start = time.perf_counter()
            await side.send(queue, [payload])
            try:
                async with asyncio.timeout(bound):
                    latencies.append(await arrived - start)
            except TimeoutError:
                raise BenchError(
                    f"{side.label}: message {i + 1} on {queue} not handled within {bound:g} s"
                ) from None
            # The next message starts once this one is acked, so they never overlap.
            await wait_until(_acked(consumer, i + 1), bound, f"ack of message {i + 1}")
    finally:
        await consumer.stop()
    return latencies
