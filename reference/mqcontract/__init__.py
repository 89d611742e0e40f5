"""mqcontract: a provider-agnostic messaging abstraction and its reference providers.

Optional providers (``mqcontract.providers.pgmq``, ``.rabbitmq``) import their drivers
themselves; importing this package never needs asyncpg or aio-pika.
"""

from __future__ import annotations

from mqcontract._redact import redact
from mqcontract.capabilities import Capabilities, PayloadFidelity, PushKind, RequeuePosition
from mqcontract.client import MessageClient, QueueClassifier, QueueKind
from mqcontract.clock import Clock, SystemClock, VirtualClock
from mqcontract.config import MessagingConfig, load_config
from mqcontract.errors import (
    BackendUnavailable,
    ConfigurationError,
    ConnectionLost,
    InvalidArgument,
    InvalidQueueName,
    MessageNotFound,
    MessageTooLarge,
    MessagingError,
    OperationTimeout,
    ProviderClosed,
    QueueError,
    QueueNotFound,
    SerializationError,
    UnsupportedOperation,
)
from mqcontract.messages import Available, Message, MessageNotification, QueuedMessage
from mqcontract.models import SimpleStepMessage, StepExecutionResult
from mqcontract.provider import MessagingProvider, open_provider
from mqcontract.service import (
    BaseMessagingService,
    MessagingService,
    Subscription,
    SupportsPushNotifications,
)

__version__ = "0.1.0"

__all__ = [
    "Available",
    "BackendUnavailable",
    "BaseMessagingService",
    "Capabilities",
    "Clock",
    "ConfigurationError",
    "ConnectionLost",
    "InvalidArgument",
    "InvalidQueueName",
    "Message",
    "MessageClient",
    "MessageNotFound",
    "MessageNotification",
    "MessageTooLarge",
    "MessagingConfig",
    "MessagingError",
    "MessagingProvider",
    "MessagingService",
    "OperationTimeout",
    "PayloadFidelity",
    "ProviderClosed",
    "PushKind",
    "QueueClassifier",
    "QueueError",
    "QueueKind",
    "QueueNotFound",
    "QueuedMessage",
    "RequeuePosition",
    "SerializationError",
    "SimpleStepMessage",
    "StepExecutionResult",
    "Subscription",
    "SupportsPushNotifications",
    "SystemClock",
    "UnsupportedOperation",
    "VirtualClock",
    "load_config",
    "open_provider",
    "redact",
]
