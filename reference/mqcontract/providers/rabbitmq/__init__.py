"""The RabbitMQ providers: ``rabbitmq`` (classic queues) and ``rabbitmq-quorum``.

Both speak AMQP 0-9-1 through aio-pika; they differ only in the queue type they declare
and therefore in what they can promise: classic queues requeue a released message at its
original position but keep no delivery count; quorum queues requeue at the back and count
every delivery exactly (``x-delivery-count``). See :mod:`.service` for the mapping of the
contract onto the broker.
"""

from __future__ import annotations

from mqcontract.config import MessagingConfig

from ._errors import (
    AccessRefused,
    BatchRefused,
    PublishingBlocked,
    QueueLocked,
    UnsupportedQueueType,
    WaitQueueConflict,
)
from ._policies import DelayUnsafe
from .service import RabbitMqMessagingService, connect_rabbitmq

__all__ = [
    "AccessRefused",
    "BatchRefused",
    "DelayUnsafe",
    "PublishingBlocked",
    "QueueLocked",
    "RabbitMqMessagingService",
    "UnsupportedQueueType",
    "WaitQueueConflict",
    "connect_rabbitmq",
    "open_rabbitmq",
    "open_rabbitmq_quorum",
]


async def open_rabbitmq(config: MessagingConfig) -> RabbitMqMessagingService:
    """Provider factory for the ``rabbitmq`` entry point (durable classic queues)."""
    return await connect_rabbitmq(config, quorum=False)


async def open_rabbitmq_quorum(config: MessagingConfig) -> RabbitMqMessagingService:
    """Provider factory for the ``rabbitmq-quorum`` entry point (quorum queues)."""
    return await connect_rabbitmq(config, quorum=True)
