"""A consumer's workers end when their task is cancelled, whoever asks.

A worker withdrew every cancellation that was not stop's, taking it for its handler's
own. A loop shut down without ``stop()`` (``asyncio.run`` returning, a case cut short by
its bound) cancels every task and waits for each: a worker that was running a handler
then withdrew it and waited for the next message for ever, and so did ``asyncio.run``.
The same followed a ``stop()`` that was itself cancelled halfway. Each case runs in a
child process bounded in time, since the defect is a hang.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.timing import TimingProfile

TIMING = TimingProfile.from_scale()

_SCRIPT = r"""
import asyncio, sys
from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.providers.memory import InMemoryMessagingService

async def main(how: str) -> None:
    service = InMemoryMessagingService()
    await service.create_queue("jobs")
    await service.send_batch("jobs", [b"1", b"2", b"3"])
    running = asyncio.Event()

    async def handler(_message) -> None:
        running.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # a handler that cleans up before it ends
            raise

    settings = ConsumerSettings(
        mode=DeploymentMode.POLLING_ONLY, workers=2, poll_interval=0.05, stop_grace=0.5
    )
    consumer = QueueConsumer(service, ["jobs"], handler, settings)
    await consumer.start()
    await running.wait()
    if how == "stop-cancelled":
        stopping = asyncio.create_task(consumer.stop())
        while not any(t.cancelling() for t in consumer._workers):  # stop cancels them
            await asyncio.sleep(0)
        stopping.cancel()
    # "no-stop": return with the consumer running, its handlers mid-run

asyncio.run(main(sys.argv[1]))
print("ended", flush=True)
"""


@pytest.mark.parametrize("how", ["no-stop", "stop-cancelled"])
def test_a_loop_shut_down_while_handlers_run_ends(how: str) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, how],
            capture_output=True,
            text=True,
            timeout=TIMING.operation * 2,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"asyncio.run did not return within {TIMING.operation * 2:g} s ({how})")
    assert done.stdout.strip() == "ended", done.stderr[-2000:]


async def test_a_worker_ended_by_its_handler_is_replaced_after_a_restart_too() -> None:
    """A restarted consumer kept its first run's (cancelled) intake tasks, took them for
    a loop shutting down, and so replaced no worker: its only one gone, it claimed on and
    ran nothing."""
    service = InMemoryMessagingService()
    await service.create_queue("jobs")
    ran: list[bytes] = []

    async def handler(message: QueuedMessage) -> None:
        if not ran:
            ran.append(b"cancelled itself")
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(1)
        ran.append(message.payload)

    settings = ConsumerSettings(mode=DeploymentMode.POLLING_ONLY, workers=1, poll_interval=0.05)
    consumer = QueueConsumer(service, ["jobs"], handler, settings)
    await consumer.start()
    await consumer.stop()
    await consumer.start()
    try:
        await service.send_batch("jobs", [b"1", b"2"])
        async with asyncio.timeout(TIMING.delivery):
            while consumer.stats.processed < 2:  # noqa: ASYNC110
                await asyncio.sleep(TIMING.step)
    finally:
        await consumer.stop()
        await service.close()
    assert sorted(ran[1:]) == [b"1", b"2"]
