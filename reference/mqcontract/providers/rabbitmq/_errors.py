"""The one table of how aio-pika/aiormq exceptions become mqcontract errors.

* ``Basic.Return`` (NO_ROUTE: mandatory publish to a missing queue) and a 404 channel
  error → :class:`QueueNotFound`: nothing was enqueued or created.
* ``Basic.Nack`` from the broker → :class:`QueueError` (the broker refused it); for a
  batch, :class:`BatchRefused`, which says which of it the broker took.
* PRECONDITION_FAILED (406) where the provider declares a queue: ``create_queue`` keeps
  the queue it finds; a delayed send whose wait queue exists with other arguments raises
  :class:`WaitQueueConflict`: a lasting conflict, not an outage to retry.
* RESOURCE_LOCKED (405: the queue is exclusive to another connection) →
  :class:`QueueLocked`, a :class:`QueueError` naming the queue: it exists, only that
  connection may use it, and retrying does not help while that connection lives.
* ACCESS_REFUSED (403: the user's permissions in the virtual host do not cover the
  queue) → :class:`AccessRefused`, a :class:`QueueError` naming the queue and quoting
  the broker: a setting of the broker's users, which retrying does not change.
* the operation's bound expiring → :class:`OperationTimeout`.
* aiormq cancelling a pending call because its channel or connection closed, connection
  or channel failures, and anything else the driver raises (aiormq fails pending writes
  with a bare ``Exception`` when its writer dies with the connection) →
  :class:`ConnectionLost`.

Once the provider is closed, each of these is ``ProviderClosed`` instead.
"""

from __future__ import annotations

import asyncio
import re

from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)

from mqcontract.errors import (
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    QueueError,
    QueueNotFound,
)
from mqcontract.translation import ErrorTable, Failure

__all__ = [
    "ERRORS",
    "AccessRefused",
    "BatchRefused",
    "QueueLocked",
    "UnsupportedQueueType",
    "WaitQueueConflict",
    "unsupported_type",
]


class QueueLocked(QueueError):
    """The queue is exclusive to another connection (RabbitMQ's RESOURCE_LOCKED, 405):
    it exists, but only the connection that declared it may use it, until it closes."""

    def __init__(self, queue: str) -> None:
        super().__init__(
            queue, f"queue {queue!r} is exclusive to another connection (RESOURCE_LOCKED)"
        )


class PublishingBlocked(OperationTimeout):
    """A send ran out of time while the broker blocked this service's publishing
    connection (``connection.blocked``): a memory or disk alarm, which stops every
    publisher until it clears (``rabbitmqctl status`` lists the alarms). Receives and
    settlements go on, on their own connection. Like any timed-out send, whether the
    message was enqueued is unknown: its frames may still be written once the alarm
    clears, so a retry may enqueue it twice."""

    def __init__(self, operation: str, seconds: float, queue: str) -> None:
        super().__init__(operation, seconds, queue)
        self.args = (
            f"{self.args[0]}: the broker blocked publishing (connection.blocked, a memory"
            " or disk alarm; rabbitmqctl status lists it), and sends wait until it clears",
        )


class AccessRefused(QueueError):
    """The broker refused this user the queue (ACCESS_REFUSED, 403): the user's
    configure, write or read permission in the virtual host does not cover it. A
    permission, not an outage: retrying does not help until an administrator changes
    it (``rabbitmqctl set_permissions``). ``reply`` is the broker's reply text."""

    def __init__(self, queue: str, reply: str) -> None:
        self.reply = reply
        super().__init__(
            queue,
            f"the broker refused access to queue {queue!r} ({reply}); the RabbitMQ user's"
            " permissions in this virtual host do not cover it",
        )


#: The queue types whose semantics the provider maps the contract onto.
SUPPORTED_TYPES = frozenset({"classic", "quorum"})
_CURRENT_TYPE = re.compile(r"inequivalent arg 'x-queue-type'.* but current is '([^']*)'")


class UnsupportedQueueType(QueueError):
    """``queue`` exists as a RabbitMQ queue type the provider cannot serve (declared by
    another client: a ``stream``, say). A stream answers ``basic.get`` by closing the
    whole connection (540 NOT_IMPLEMENTED), which voided every other claim on it and
    read as an outage to retry: it is refused by name instead, at ``create_queue``
    (the broker's reply names the type) or after the first such close on a receive
    (``queue_type`` is then ``None``: the broker did not say)."""

    def __init__(self, queue: str, queue_type: str | None) -> None:
        self.queue_type = queue_type
        kind = f"a {queue_type!r} queue" if queue_type else "of a queue type that"
        does = "" if queue_type else " does not support basic.get (540 NOT_IMPLEMENTED)"
        super().__init__(
            queue,
            f"queue {queue!r} is {kind}{does}; the provider serves classic and quorum"
            " queues only. Delete it (or use another name) to use it here",
        )


def unsupported_type(reply: str) -> str | None:
    """The queue type a PRECONDITION_FAILED ``reply`` names, when it is one the provider
    cannot serve (None: the conflict is about something else, or a type it serves)."""
    found = _CURRENT_TYPE.search(reply)
    if found is None or found.group(1) in SUPPORTED_TYPES:
        return None
    return found.group(1)


class WaitQueueConflict(QueueError):
    """A delayed send to ``queue`` needs its wait queue ``wait_queue``, and that exists with
    other arguments than this provider declares (another client's, or another version's
    with another expiry): RabbitMQ refuses the declare (PRECONDITION_FAILED) until that
    queue is deleted, so retrying does not help. ``reply`` is the broker's reply text,
    which names the argument that differs."""

    def __init__(self, queue: str, wait_queue: str, reply: str) -> None:
        self.wait_queue = wait_queue
        self.reply = reply
        super().__init__(
            queue,
            f"a delayed send to queue {queue!r} needs its wait queue {wait_queue!r}, which"
            f" exists with other arguments ({reply}); delete it to let it be declared again",
        )


class BatchRefused(QueueError):
    """The broker refused messages of a ``send_batch`` (``Basic.Nack``: say a queue
    declared with ``x-max-length`` and ``x-overflow=reject-publish``), and took the others.

    ``sent_ids``: the ids of the messages it confirmed, which are enqueued, in batch order
    (not always a prefix: one refused may be followed by one taken); every other message
    of the batch was refused. A refusal for a queue's bound (``reject-publish``) means
    not enqueued, so sending those again duplicates nothing; AMQP promises less for a
    nack of the broker's own failure, which may follow a message it did enqueue.
    ``size``: how many messages the batch had."""

    def __init__(self, queue: str, sent_ids: list[int], size: int) -> None:
        self.sent_ids = sent_ids
        self.size = size
        super().__init__(
            queue,
            f"the broker refused {size - len(sent_ids)} of the {size} messages of a batch"
            f" for queue {queue!r}; {len(sent_ids)} were enqueued (their ids, in batch order:"
            " sent_ids), and only the others may be sent again",
        )


def _refused(exc: BaseException, failure: Failure) -> MessagingError:
    queue = failure.queue
    return QueueError(queue, f"the broker refused the message for queue {queue!r}")


def _not_found(exc: BaseException, failure: Failure) -> MessagingError:
    if failure.queue:
        return QueueNotFound(failure.queue)
    return ConnectionLost(failure.provider, failure.target, str(exc))


def _locked(exc: BaseException, failure: Failure) -> MessagingError:
    if failure.queue:
        return QueueLocked(failure.queue)
    return _lost(exc, failure)


def _access_refused(exc: BaseException, failure: Failure) -> MessagingError:
    if failure.queue:
        return AccessRefused(failure.queue, str(exc.args[0] if exc.args else exc))
    return _lost(exc, failure)


def _interrupted(exc: BaseException, failure: Failure) -> MessagingError:
    return ConnectionLost(failure.provider, failure.target, f"{failure.operation} interrupted")


def _lost(exc: BaseException, failure: Failure) -> MessagingError:
    return ConnectionLost(failure.provider, failure.target, f"{failure.operation}: {exc!r}")


#: aiormq's exceptions → mqcontract errors (see :mod:`mqcontract.translation`).
ERRORS = ErrorTable(
    {
        PublishError: QueueNotFound,
        DeliveryError: _refused,
        ChannelNotFoundEntity: _not_found,
        ChannelLockedResource: _locked,
        ChannelAccessRefused: _access_refused,
        TimeoutError: OperationTimeout,
        asyncio.CancelledError: _interrupted,
        Exception: _lost,
    }
)
