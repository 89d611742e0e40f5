"""The one table of how aio-pika/aiormq exceptions become mqcontract errors.

* ``Basic.Return`` (NO_ROUTE: mandatory publish to a missing queue) and a 404 channel
  error → :class:`QueueNotFound`: nothing was enqueued or created.
* ``Basic.Nack`` from the broker → :class:`QueueError` (the broker refused it).
* RESOURCE_LOCKED (405: the queue is exclusive to another connection) →
  :class:`QueueLocked`, a :class:`QueueError` naming the queue: it exists, only that
  connection may use it, and retrying does not help while that connection lives.
* the operation's bound expiring → :class:`OperationTimeout`.
* aiormq cancelling a pending call because its channel or connection closed, connection
  or channel failures, and anything else the driver raises (aiormq fails pending writes
  with a bare ``Exception`` when its writer dies with the connection) →
  :class:`ConnectionLost`.

Once the provider is closed, each of these is ``ProviderClosed`` instead.
"""

from __future__ import annotations

import asyncio

from aiormq.exceptions import (
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

__all__ = ["ERRORS", "QueueLocked"]


class QueueLocked(QueueError):
    """The queue is exclusive to another connection (RabbitMQ's RESOURCE_LOCKED, 405):
    it exists, but only the connection that declared it may use it, until it closes."""

    def __init__(self, queue: str) -> None:
        super().__init__(
            queue, f"queue {queue!r} is exclusive to another connection (RESOURCE_LOCKED)"
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
        TimeoutError: OperationTimeout,
        asyncio.CancelledError: _interrupted,
        Exception: _lost,
    }
)
