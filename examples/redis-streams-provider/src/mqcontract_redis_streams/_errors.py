"""The one table of how redis-py exceptions become mqcontract errors.

* the scripts' ``MQC_NO_QUEUE`` reply → :class:`QueueNotFound`;
* any other reply error (out of memory, a foreign key of the wrong type) →
  :class:`QueueError` naming the queue, or :class:`BackendUnavailable` without one;
* the operation's bound expiring → :class:`OperationTimeout`;
* a connection that broke or could not be made → :class:`ConnectionLost`; the command
  may or may not have run, and it is not retried (a retried send could enqueue twice).

Once the provider is closed, each of these is ``ProviderClosed`` instead
(:mod:`mqcontract.translation` applies the table).
"""

from __future__ import annotations

from mqcontract.errors import (
    BackendUnavailable,
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    QueueError,
    QueueNotFound,
)
from mqcontract.translation import ErrorTable, Failure
from redis import exceptions as rx

from mqcontract_redis_streams._scripts import NO_QUEUE

__all__ = ["ERRORS"]


def _refused(exc: BaseException, failure: Failure) -> MessagingError:
    queue = failure.queue
    if str(exc).startswith(NO_QUEUE):
        return QueueNotFound(queue)
    detail = f"{failure.operation}: {exc}"  # a server reply: never holds the URL
    if queue:
        return QueueError(queue, f"redis refused {detail} (queue {queue!r})")
    return BackendUnavailable(failure.provider, failure.target, detail)


#: redis-py's exceptions → mqcontract errors.
ERRORS = ErrorTable(
    {
        rx.ResponseError: _refused,
        TimeoutError: OperationTimeout,
        rx.RedisError: ConnectionLost,  # rx.ConnectionError, rx.TimeoutError and the rest
        OSError: ConnectionLost,
    }
)
