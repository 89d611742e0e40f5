"""Fallback recovery: how long a message waits when its push notification is lost.

Two faults, both through the provider's conformance harness hooks, each with the event
system running in Hybrid mode:

* ``suppress_notifications``: the queue stops announcing messages (PGMQ: its notify
  trigger is disabled); one message is sent; the time until the handler sees it is what
  the fallback poller takes (bounded by its interval).
* ``kill_listener``: the push connection is killed (PGMQ: ``pg_terminate_backend`` of
  the LISTEN backend; RabbitMQ: the connection is closed by the broker); one message is
  sent at once; the time from the kill to the handler covers noticing, reconnecting,
  catching up (or the poller, whichever is first).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HookUnavailable

from ._measure import median
from ._progress import Progress
from ._provider_side import ProviderSide
from ._workloads import wait_until

__all__ = ["measure_recovery"]

FAULTS = ("suppress_notifications", "kill_listener")
#: Longest wait for one message to be handled after a fault.
RECOVERY_BOUND = 60.0


async def _one(
    side: ProviderSide,
    queue: str,
    payload: bytes,
    fault: Callable[[], Awaitable[Callable[[], Awaitable[None]] | None]],
) -> float:
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future[float] = loop.create_future()

    def on_message() -> None:
        if not arrived.done():
            arrived.set_result(time.perf_counter())

    consumer = side.consumer(queue, on_message, mode="Hybrid", workers=1, batch=10)
    await consumer.start()
    try:
        # The poller's first drain runs at once: let it pass, so it cannot find the message
        # by luck; from then on only push or the next poll can.
        await wait_until(lambda: consumer.polls >= 1, RECOVERY_BOUND, "the first poll")
        restore = await fault()
        start = time.perf_counter()
        try:
            await side.service.send_message(queue, payload)
            async with asyncio.timeout(RECOVERY_BOUND):
                return await arrived - start
        finally:
            if restore is not None:
                await restore()
    finally:
        await consumer.stop()


async def measure_recovery(
    harness: Harness,
    service: MessagingService,
    make_queue: Callable[[], Awaitable[str]],
    drop_queue: Callable[[str], Awaitable[None]],
    payload: bytes,
    *,
    samples: int,
    poll_interval: float,
    progress: Progress,
) -> list[dict[str, Any]]:
    """One entry per fault: samples in seconds and their median, or why it was skipped."""
    side = ProviderSide(service, poll_interval=poll_interval)
    results: list[dict[str, Any]] = []
    for name in FAULTS:
        entry: dict[str, Any] = {
            "fault": name,
            "mode": "Hybrid",
            "poll_interval_s": poll_interval,
            "samples_s": [],
        }
        for i in range(samples):
            progress.step(f"recovery after {name} ({i + 1}/{samples})")
            queue = await make_queue()
            try:
                if name == "suppress_notifications":

                    async def fault(q: str = queue) -> Callable[[], Awaitable[None]] | None:
                        return await harness.suppress_notifications(service, q)
                else:

                    async def fault(q: str = queue) -> Callable[[], Awaitable[None]] | None:
                        await harness.kill_listener(service)
                        return None

                seconds = await _one(side, queue, payload, fault)
                entry["samples_s"].append(seconds)
                progress.note(f"{seconds:.3f} s")
            except HookUnavailable as exc:
                entry["skipped"] = str(exc)
                progress.note(f"skipped: {exc}")
                break
            except TimeoutError:
                entry["samples_s"].append(None)
                entry.setdefault("errors", []).append(f"not handled within {RECOVERY_BOUND:g} s")
                progress.note("not recovered")
            finally:
                await drop_queue(queue)
        done = [s for s in entry["samples_s"] if s is not None]
        entry["median_s"] = median(done)
        entry["max_s"] = max(done) if done else None
        results.append(entry)
    return results
