"""mqcontract: a provider-agnostic messaging abstraction and its reference providers.

**For applications** — open the configured provider and use it::

    from mqcontract import open_provider
    async with await open_provider() as provider:      # TASKER_MESSAGING_BACKEND decides
        await provider.create_queue("jobs")

``open_provider``/``MessagingProvider``, ``MessagingConfig``/``load_config``, the
message and notification types (``QueuedMessage``, ``Message``, ``Available``), the
declared ``Capabilities`` and the errors. The workflow engine's step messages and
``MessageClient`` are in :mod:`mqcontract.tasker`; the event system (``QueueConsumer``,
deployment modes) in :mod:`mqcontract.events`.

**For provider authors** — subclass ``BaseMessagingService`` (it validates and guards
every call, then calls your operations), declare ``Capabilities``, and check yourself
with the conformance kit; :mod:`mqcontract.validation` has the input checks,
:mod:`mqcontract.testing` the ``Harness`` protocol, ``VirtualClock`` lets timing rules
run in virtual time. ``docs/provider-guide.md`` walks through it.

Optional providers (``mqcontract.providers.pgmq``, ``.rabbitmq``) import their drivers
themselves; importing this package never needs asyncpg, aio-pika, pytest or hypothesis.
"""

from __future__ import annotations

from mqcontract._redact import redact
from mqcontract.capabilities import (
    Capabilities,
    PayloadFidelity,
    PushKind,
    RequeuePosition,
    VisibilityEnforcer,
)
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
    StaleClaim,
    StaleReason,
    UnsupportedOperation,
)
from mqcontract.messages import (
    Available,
    Claim,
    ClaimRef,
    Message,
    MessageNotification,
    QueuedMessage,
)
from mqcontract.provider import MessagingProvider, open_provider
from mqcontract.service import (
    BaseMessagingService,
    MessagingService,
    QueueOperations,
    Subscription,
    SupportsPushNotifications,
)

__version__ = "0.1.0"

__all__ = [  # noqa: RUF022 (grouped by audience, not sorted)
    # For applications
    "open_provider",
    "MessagingProvider",
    "MessagingConfig",
    "load_config",
    "QueuedMessage",
    "Claim",
    "ClaimRef",
    "Message",
    "Available",
    "MessageNotification",
    "Subscription",
    "Capabilities",
    "PushKind",
    "PayloadFidelity",
    "RequeuePosition",
    "VisibilityEnforcer",
    "redact",
    "MessagingError",
    "QueueError",
    "QueueNotFound",
    "InvalidQueueName",
    "InvalidArgument",
    "MessageTooLarge",
    "MessageNotFound",
    "StaleClaim",
    "StaleReason",
    "SerializationError",
    "UnsupportedOperation",
    "ConfigurationError",
    "OperationTimeout",
    "BackendUnavailable",
    "ConnectionLost",
    "ProviderClosed",
    # For provider authors, beyond the above
    "BaseMessagingService",
    "MessagingService",
    "QueueOperations",
    "SupportsPushNotifications",  # the former name of MessagingService
    "Clock",
    "SystemClock",
    "VirtualClock",
]

#: The names applications use, and those provider authors use beyond them (a test keeps
#: ``__all__`` equal to both, so each name belongs to exactly one audience).
APPLICATION_API = frozenset(__all__[: __all__.index("BaseMessagingService")])
PROVIDER_API = frozenset(__all__[__all__.index("BaseMessagingService") :])
