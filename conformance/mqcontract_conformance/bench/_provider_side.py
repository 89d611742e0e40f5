"""The mqcontract side: the provider's own API and the event system's ``QueueConsumer``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.messages import QueuedMessage
from mqcontract.service import MessagingService
from mqcontract.testing.sides import batches

__all__ = ["ProviderSide"]

#: Visibility timeout of every claim in the benchmark: long enough never to expire.
VISIBILITY_TIMEOUT = 30.0


class _EventSystemConsumer:
    def __init__(self, consumer: QueueConsumer) -> None:
        self._consumer = consumer

    @property
    def acked(self) -> int:
        return self._consumer.stats.processed

    @property
    def polls(self) -> int:
        """Completed fallback polls of every queue."""
        return self._consumer.stats.polls

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()


class ProviderSide:
    """Workloads through ``MessagingService`` and ``QueueConsumer``."""

    label = "provider"

    def __init__(self, service: MessagingService, *, poll_interval: float | None) -> None:
        self.service = service
        self._poll_interval = poll_interval
        self.description = (
            f"mqcontract {service.provider_name} provider: send_message, send_batch, "
            "receive_messages + ack_claim (a batch: ack_claims); QueueConsumer for consuming"
        )

    async def open(self) -> None:
        """The service is opened (and closed) by the runner's harness."""

    async def close(self) -> None:
        """See :meth:`open`."""

    async def send(self, queue: str, payloads: Sequence[bytes]) -> None:
        send = self.service.send_message
        for payload in payloads:
            await send(queue, payload)

    async def send_batch(self, queue: str, payloads: Sequence[bytes], batch: int) -> None:
        for chunk in batches(payloads, batch):
            await self.service.send_batch(queue, chunk)

    async def receive_ack(self, queue: str, count: int, limit: int) -> int:
        """One at a time with ``ack_claim``; a batch settled with ``ack_claims``.

        ``ack_claims`` is the contract's way to settle a batch, as the event system
        does: it settles each claim (RabbitMQ: one ``basic.ack`` per delivery, as raw
        aio-pika sends) and confirms them together, where ``ack_claim`` would confirm
        each alone.
        """
        service = self.service
        acked = 0
        while acked < count:
            claimed = await service.receive_messages(
                queue, min(limit, count - acked), VISIBILITY_TIMEOUT
            )
            if not claimed:
                break
            if len(claimed) == 1:
                await service.ack_claim(queue, claimed[0])
                acked += 1
            else:
                settled = await service.ack_claims(queue, claimed)
                acked += sum(settled)
                if not all(settled):
                    break  # a claim went stale: the caller reports the shortfall
        return acked

    def consumer(
        self, queue: str, on_message: Callable[[], None], *, mode: str, workers: int, batch: int
    ) -> _EventSystemConsumer:
        async def handler(_: QueuedMessage) -> None:
            on_message()

        settings = ConsumerSettings(
            mode=DeploymentMode(mode),
            visibility_timeout=VISIBILITY_TIMEOUT,
            batch_size=batch,
            workers=workers,
            poll_interval=self._poll_interval,
            stop_grace=5.0,
        )
        return _EventSystemConsumer(QueueConsumer(self.service, [queue], handler, settings))
