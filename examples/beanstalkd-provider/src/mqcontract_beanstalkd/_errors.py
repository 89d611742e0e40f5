"""The one table of how the client's exceptions become mqcontract errors.

* an error reply (``OUT_OF_MEMORY``, ``DRAINING``, ``JOB_TOO_BIG`` ...) → :class:`QueueError`
  naming the queue, or :class:`BackendUnavailable` without one;
* the operation's bound expiring → :class:`OperationTimeout`;
* a connection that broke or could not be made → :class:`ConnectionLost`; the command may
  or may not have run, and it is not retried (a retried put could enqueue twice).

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

from mqcontract_beanstalkd._protocol import LinkBroken, ServerError

__all__ = ["ERRORS"]


def _refused(exc: BaseException, failure: Failure) -> MessagingError:
    detail = f"{failure.operation}: {exc}"  # a server reply: never holds an address
    if failure.queue:
        return QueueError(failure.queue, f"beanstalkd refused {detail} (queue {failure.queue!r})")
    return BackendUnavailable(failure.provider, failure.target, detail)


#: The client's exceptions → mqcontract errors.
ERRORS = ErrorTable(
    {
        ServerError: _refused,
        TimeoutError: OperationTimeout,
        LinkBroken: ConnectionLost,
        OSError: ConnectionLost,
    }
)
