"""Drain a backlog with one ``QueueConsumer``: throughput by workers, with a handler that
does nothing or one that waits as an I/O-bound handler would.

With a handler that does nothing, the client's CPU and the backend bound throughput and
more workers cannot help; with a handler that awaits, each worker is busy for that long
per message, which is what workers are for. Both are measured so the table shows where
each limit sets in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.messages import QueuedMessage
from mqcontract.service import MessagingService
from mqcontract.testing.sides import batches

from ._measure import Run
from ._provider_side import VISIBILITY_TIMEOUT
from ._workloads import wait_until

__all__ = ["drain_run"]

#: Bound on draining, per message (and at least 60 s).
SECONDS_PER_MESSAGE = 0.05


async def drain_run(
    service: MessagingService,
    queue: str,
    payloads: Sequence[bytes],
    *,
    mode: str,
    workers: int,
    batch: int,
    handler_seconds: float,
) -> Run:
    """Send ``payloads`` (untimed), then time a consumer draining them all."""
    for chunk in batches(payloads, batch):
        await service.send_batch(queue, chunk)

    async def idle(_: QueuedMessage) -> None:
        return None

    async def waits(_: QueuedMessage) -> None:
        await asyncio.sleep(handler_seconds)

    settings = ConsumerSettings(
        mode=DeploymentMode(mode),
        visibility_timeout=VISIBILITY_TIMEOUT,
        batch_size=batch,
        workers=workers,
        stop_grace=5.0,
    )
    handler = waits if handler_seconds > 0 else idle
    consumer = QueueConsumer(service, [queue], handler, settings)
    count = len(payloads)
    wall, cpu = time.perf_counter(), time.process_time()
    await consumer.start()
    try:
        await wait_until(
            lambda: consumer.stats.processed >= count,
            max(60.0, count * (SECONDS_PER_MESSAGE + handler_seconds)),
            f"{count} messages of {queue} drained by {workers} workers",
        )
        return Run(count, time.perf_counter() - wall, time.process_time() - cpu)
    finally:
        await consumer.stop()
