"""The one table of how aio-pika/aiormq exceptions become mqcontract errors.

* ``Basic.Return`` (NO_ROUTE: mandatory publish to a missing queue) and a 404 channel
  error → :class:`QueueNotFound`: nothing was enqueued or created.
* ``Basic.Nack`` from the broker → :class:`QueueError` (the broker refused it).
* the operation's bound expiring → :class:`OperationTimeout`.
* aiormq cancelling a pending call because its channel or connection closed, connection
  or channel failures, and anything else the driver raises (aiormq fails pending writes
  with a bare ``Exception`` when its writer dies with the connection) →
  :class:`ConnectionLost`.

Once the provider is closed, each of these is ``ProviderClosed`` instead.
"""

from __future__ import annotations

import asyncio

from aiormq.exceptions import ChannelNotFoundEntity, DeliveryError, PublishError

from mqcontract.errors import (
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    QueueError,
    QueueNotFound,
)
from mqcontract.translation import ErrorTable, Failure

__all__ = ["ERRORS"]


def _refused(exc: BaseException, failure: Failure) -> MessagingError:
    queue = failure.queue
    return QueueError(queue, f"the broker refused the message for queue {queue!r}")


def _not_found(exc: BaseException, failure: Failure) -> MessagingError:
    if failure.queue:
        return QueueNotFound(failure.queue)
    return ConnectionLost(failure.provider, failure.target, str(exc))


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
        TimeoutError: OperationTimeout,
        asyncio.CancelledError: _interrupted,
        Exception: _lost,
    }
)
