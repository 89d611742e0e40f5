"""The one table of how the connection's exceptions become mqcontract errors.

* the broker refusing a message or subscription (a reason code >= 128) →
  :class:`QueueError` naming the queue, or :class:`BackendUnavailable` without one;
* the operation's bound expiring → :class:`OperationTimeout`;
* the connection down or lost before the broker answered → :class:`ConnectionLost`: a
  publish may or may not have reached the broker, and it is not retried here.

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
)
from mqcontract.translation import ErrorTable, Failure

from mqcontract_mqtt._link import LinkDown, LinkRefused

__all__ = ["ERRORS"]


def _refused(exc: BaseException, failure: Failure) -> MessagingError:
    detail = f"{failure.operation}: {exc}"  # a reason code: never holds the URL
    if failure.queue:
        return QueueError(failure.queue, f"{detail} (queue {failure.queue!r})")
    return BackendUnavailable(failure.provider, failure.target, detail)


#: Connection exceptions → mqcontract errors.
ERRORS = ErrorTable(
    {
        LinkRefused: _refused,
        TimeoutError: OperationTimeout,
        LinkDown: ConnectionLost,
        OSError: ConnectionLost,
    }
)
