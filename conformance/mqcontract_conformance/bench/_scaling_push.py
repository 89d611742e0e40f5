"""Push under load: capacity, then send → handler latency at a paced fraction of it.

Messages are matched to their handling by ``msg_id`` (the id ``send_message`` returned),
so latency needs nothing in the payload and stays right when workers finish out of order.
Capacity is measured the same way with no pacing: the senders send as fast as they can
while the consumer handles, and the rate is messages over the time until the last ack.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mqcontract.clock import SystemClock
from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.messages import QueuedMessage
from mqcontract.service import MessagingService

from ._measure import summarize_latencies
from ._provider_side import VISIBILITY_TIMEOUT
from ._scaling_pacing import PacedRun, paced_sends
from ._workloads import BenchError, wait_until

__all__ = ["PushRun", "push_run"]

#: Bound on the consumer catching up after the last send, per message (and at least 60 s).
SECONDS_PER_MESSAGE = 0.05


@dataclass(frozen=True, slots=True)
class PushRun:
    """One push run: its send schedule, its latencies (seconds) and its duration."""

    messages: int
    seconds: float
    paced: PacedRun
    latencies: list[float]
    #: From the first message handled to the last.
    handling_seconds: float
    #: This process's CPU time over the run (sending and consuming).
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Messages handled per second, from the first due send to the last ack."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def summary(self, offered: float | None) -> dict[str, float | int | None]:
        """The JSON row: offered and achieved rates, percentiles, how late sends were."""
        sent_for, handled_for = self.paced.seconds, self.handling_seconds
        # Both over the n - 1 intervals between n events, as the offered rate is.
        return {
            "offered_msg_s": offered,
            "sent_msg_s": (self.messages - 1) / sent_for if sent_for > 0 else None,
            "handled_msg_s": (self.messages - 1) / handled_for if handled_for > 0 else None,
            "messages": self.messages,
            "cpu_us_per_msg": self.cpu_seconds / self.messages * 1e6,
            "late_sends": self.paced.late,
            "max_send_lag_ms": self.paced.max_lag * 1000,
            **summarize_latencies(self.latencies),
        }


async def push_run(
    service: MessagingService,
    queue: str,
    payload: bytes,
    count: int,
    rate: float | None,
    *,
    mode: str,
    workers: int,
    batch: int,
    senders: int,
) -> PushRun:
    """Send ``count`` messages at ``rate`` (None: flat out) while a consumer handles them."""
    clock = SystemClock()
    handled: dict[int, float] = {}
    sent: dict[int, float] = {}

    async def handler(message: QueuedMessage) -> None:
        handled.setdefault(message.msg_id, clock.now())

    async def send(_: int) -> None:
        began = clock.now()
        sent[await service.send_message(queue, payload)] = began

    settings = ConsumerSettings(
        mode=DeploymentMode(mode),
        visibility_timeout=VISIBILITY_TIMEOUT,
        batch_size=batch,
        workers=workers,
        stop_grace=5.0,
    )
    consumer = QueueConsumer(service, [queue], handler, settings)
    await consumer.start()
    cpu = time.process_time()
    try:
        start = clock.now()
        paced = await paced_sends(send, count, rate, senders=senders, clock=clock)
        await wait_until(
            lambda: consumer.stats.processed >= count,
            max(60.0, count * SECONDS_PER_MESSAGE),
            f"{count} pushed messages of {queue} handled",
        )
        seconds = clock.now() - start
        cpu = time.process_time() - cpu
    finally:
        await consumer.stop()
    latencies = [handled[msg_id] - began for msg_id, began in sent.items() if msg_id in handled]
    if len(latencies) < count:
        raise BenchError(
            f"{queue}: {len(latencies)} of {count} handled messages match a sent msg_id"
        )
    return PushRun(
        messages=count,
        seconds=seconds,
        paced=paced,
        latencies=latencies,
        handling_seconds=max(handled.values()) - min(handled.values()),
        cpu_seconds=cpu,
    )
