"""The one table of how this provider's failures become mqcontract errors.

* :class:`JsError`, a JetStream API error reply → :class:`QueueError` naming the queue, or
  :class:`BackendUnavailable` without one (a missing queue is found and raised as
  :class:`QueueNotFound` where it happens, in the service);
* :class:`Severed`, the connection dropped while the operation was in flight →
  :class:`ConnectionLost`: it may or may not have happened, and it is not retried (a
  retried send could enqueue twice);
* the operation's bound expiring → :class:`OperationTimeout`;
* any other nats-py error (closed, no responders: JetStream gone) → :class:`ConnectionLost`.

Once the provider is closed, each of these is ``ProviderClosed`` instead
(:mod:`mqcontract.translation` applies the table).
"""

from __future__ import annotations

import nats.errors
from mqcontract.errors import (
    BackendUnavailable,
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    QueueError,
)
from mqcontract.translation import ErrorTable, Failure

__all__ = [
    "CONSUMER_NOT_FOUND",
    "ERRORS",
    "MESSAGE_NOT_FOUND",
    "NOT_CLUSTERED",
    "REPLICAS_REFUSED",
    "STORE_NOT_CREATED",
    "STREAM_NOT_FOUND",
    "WRONG_LAST_SEQUENCE",
    "JsError",
    "Severed",
]

#: JetStream API error codes this provider tells apart.
STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
MESSAGE_NOT_FOUND = 10037
#: An expected-last-sequence check failed: 10071 names the sequence found; 10164 is what a
#: clustered stream's leader answers when it refuses before proposing (a write in flight
#: on the same subject: two overlapping settlements of one claim on a 3-node cluster).
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
#: A stream asked for more than one replica on a server without a cluster.
NOT_CLUSTERED = 10074
#: How the server refuses a stream whose replicas it cannot place: no cluster, or fewer
#: (running) nodes than replicas ("no suitable peers for placement").
REPLICAS_REFUSED = frozenset({NOT_CLUSTERED, 10005})
#: "error creating store for stream": nats-server 2.9.10 removes the account's streams
#: directory when its last stream is deleted, and a stream created in the same instant
#: finds no directory to make its own in (seen once in CI, two workers on one server).
STORE_NOT_CREATED = 10049


class JsError(Exception):
    """An error reply of the JetStream API (``{"error": {code, err_code, description}}``)."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (status {code}, error {err_code})")
        self.code = code
        self.err_code = err_code


class Severed(Exception):
    """The connection dropped while an operation was waiting for its answer."""


def _refused(exc: BaseException, failure: Failure) -> MessagingError:
    detail = f"{failure.operation}: {exc}"  # a server reply: never holds the URL
    if failure.queue:
        return QueueError(failure.queue, f"JetStream refused {detail} (queue {failure.queue!r})")
    return BackendUnavailable(failure.provider, failure.target, detail)


ERRORS = ErrorTable(
    {
        JsError: _refused,
        Severed: ConnectionLost,
        TimeoutError: OperationTimeout,
        nats.errors.TimeoutError: OperationTimeout,  # also a nats.errors.Error: named first
        nats.errors.Error: ConnectionLost,
        OSError: ConnectionLost,
    }
)
