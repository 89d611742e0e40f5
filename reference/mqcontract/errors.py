"""The one error hierarchy every provider raises.

Every failure a provider reports is a :class:`MessagingError`; each subclass is named for
the condition and carries structured attributes (queue, msg_id, limit, value) so callers
and the conformance suite can branch on them without parsing text. Messages are built here,
in ``__init__``, so they read the same whichever provider raised them.

::

    MessagingError
    ├── QueueError                  (carries .queue)
    │   ├── QueueNotFound
    │   ├── InvalidQueueName
    │   ├── MessageTooLarge         (.size, .limit)
    │   ├── MessageNotFound         (.msg_id)
    │   │   └── StaleClaim          (.reason: lapsed, superseded, settled, ...)
    │   └── SerializationError
    ├── InvalidArgument             (.argument, .value, .constraint)
    ├── UnsupportedOperation        (.provider, .operation)
    ├── ConfigurationError          (.key, .value)
    ├── OperationTimeout            (.operation, .seconds)
    └── BackendUnavailable          (.provider, .target — credentials redacted)
        ├── ConnectionLost
        └── ProviderClosed
"""

from __future__ import annotations

import enum

from mqcontract._redact import redact

__all__ = [
    "BackendUnavailable",
    "ConfigurationError",
    "ConnectionLost",
    "InvalidArgument",
    "InvalidQueueName",
    "MessageNotFound",
    "MessageTooLarge",
    "MessagingError",
    "OperationTimeout",
    "ProviderClosed",
    "QueueError",
    "QueueNotFound",
    "SerializationError",
    "StaleClaim",
    "StaleReason",
    "UnsupportedOperation",
]


def _show(value: object, *, limit: int = 200) -> str:
    """``value`` for a message: bounded, and never failing (Python refuses ``str()`` of
    integers beyond 4300 digits, which would turn a rejection into a ValueError)."""
    try:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    except ValueError:
        text = f"<int of {value.bit_length()} bits>" if isinstance(value, int) else "<?>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class MessagingError(Exception):
    """Base of every error a messaging provider raises.

    Its text never carries a password: whatever words an error is given (a driver's
    message included) pass through :func:`~mqcontract._redact.redact`.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class QueueError(MessagingError):
    """An error about one queue; ``queue`` names it."""

    def __init__(self, queue: str, message: str) -> None:
        self.queue = queue
        super().__init__(message)


class QueueNotFound(QueueError):
    """The queue does not exist (operations never create queues implicitly)."""

    def __init__(self, queue: str) -> None:
        super().__init__(queue, f"queue {queue!r} does not exist")


class InvalidQueueName(QueueError):
    """The name breaks the naming rule; rejected before any backend sees it."""

    def __init__(self, queue: str, reason: str) -> None:
        self.reason = reason
        super().__init__(queue, f"invalid queue name {queue!r}: {reason}")


class MessageTooLarge(QueueError):
    """The payload exceeds the provider's limit; nothing was enqueued."""

    def __init__(self, queue: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            queue,
            f"message of {size} bytes for queue {queue!r} exceeds the limit of {limit} bytes",
        )


class MessageNotFound(QueueError):
    """The id is not a message currently held by a receiver (unknown, acked or released)."""

    def __init__(self, queue: str, msg_id: int) -> None:
        self.msg_id = msg_id
        super().__init__(queue, f"message {_show(msg_id)} is not held on queue {queue!r}")


class StaleReason(enum.StrEnum):
    """Why a claim no longer holds its message (as far as the provider can tell)."""

    LAPSED = "lapsed"  #: its visibility timeout passed, or it was released (nack)
    SUPERSEDED = "superseded"  #: a later claim holds the message now
    SETTLED = "settled"  #: the message is gone (acked through this or another claim)
    OTHER_QUEUE = "other queue"  #: the claim is on another queue than the one named
    NOT_HELD = "not held"  #: not a claim this provider holds (unclaimed copy, other service)


class StaleClaim(MessageNotFound):
    """The claim does not hold its message any more; nothing was changed.

    A subclass of :class:`MessageNotFound`, so callers of ``ack_message`` that catch
    that keep working; ``reason`` says which case it is (best effort: a provider that
    cannot tell says ``lapsed`` or ``not held``).
    """

    def __init__(self, queue: str, msg_id: int, reason: StaleReason) -> None:
        self.reason = reason
        QueueError.__init__(
            self,
            queue,
            f"claim on message {_show(msg_id)} of queue {queue!r} is stale ({reason.value})",
        )
        self.msg_id = msg_id


class SerializationError(QueueError):
    """A payload or model could not be encoded or decoded."""

    def __init__(self, queue: str, detail: str) -> None:
        self.detail = detail
        super().__init__(queue, f"serialization failed for queue {queue!r}: {detail}")


class InvalidArgument(MessagingError):
    """A limit, timeout or delay is outside its allowed range; nothing was changed."""

    def __init__(self, argument: str, value: object, constraint: str, queue: str = "") -> None:
        self.argument = argument
        self.value = value
        self.constraint = constraint
        self.queue = queue
        where = f" for queue {queue!r}" if queue else ""
        super().__init__(f"invalid {argument}={_show(value)}{where}: must be {constraint}")


class UnsupportedOperation(MessagingError):
    """The provider does not offer this operation (see its capabilities)."""

    def __init__(self, provider: str, operation: str, detail: str = "") -> None:
        self.provider = provider
        self.operation = operation
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"provider {provider!r} does not support {operation}{suffix}")


class ConfigurationError(MessagingError):
    """A configuration key has a missing, unknown or malformed value."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        self.value = value
        super().__init__(redact(f"configuration {key}={value!r}: {reason}"))


class OperationTimeout(MessagingError):
    """An operation did not finish within its bound."""

    def __init__(self, operation: str, seconds: float, queue: str = "") -> None:
        self.operation = operation
        self.seconds = seconds
        self.queue = queue
        where = f" on queue {queue!r}" if queue else ""
        super().__init__(f"{operation}{where} did not finish within {seconds:g} s")


class BackendUnavailable(MessagingError):
    """The backend cannot be reached; ``target`` never contains credentials."""

    def __init__(self, provider: str, target: str, detail: str = "") -> None:
        self.provider = provider
        self.target = redact(target)
        suffix = f": {redact(detail)}" if detail else ""
        super().__init__(f"{provider} backend at {self.target} is unavailable{suffix}")


class ConnectionLost(BackendUnavailable):
    """An established connection dropped during an operation."""


class ProviderClosed(BackendUnavailable):
    """The provider was closed; open a new one."""

    def __init__(self, provider: str) -> None:
        super().__init__(provider, "(closed)", "the provider has been closed")
