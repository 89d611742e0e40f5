"""The one table of how asyncpg and socket errors become mqcontract errors."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
from asyncpg import exceptions as pgerr

from mqcontract._redact import redact
from mqcontract.errors import (
    BackendUnavailable,
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    QueueError,
    QueueNotFound,
)
from mqcontract.providers.pgmq._lane import usable
from mqcontract.translation import ErrorTable, Failure, Translation

__all__ = [
    "ERRORS",
    "PROVIDER",
    "ArchiveMissing",
    "NotifyTriggerUnavailable",
    "StatementCancelled",
    "is_connection_error",
    "is_connection_lost",
    "never_executed",
]

PROVIDER = "pgmq"

#: The server ended the session: whatever was running was rolled back.
_SESSION_ENDED = (pgerr.AdminShutdownError, pgerr.CrashShutdownError, pgerr.CannotConnectNowError)


class NotifyTriggerUnavailable(QueueError):
    """A subscription needs the queue's notify trigger, and it is missing or disabled and
    could not be restored (typically: the role does not own ``pgmq.q_<queue>``). Without
    it nothing is pushed for the queue, so ``subscribe`` refuses rather than go quiet."""

    def __init__(self, queue: str, reason: str) -> None:
        self.reason = reason
        super().__init__(
            queue,
            f"pgmq: the notify trigger of queue {queue!r} is {reason}; push would stay off."
            " Restore it as the table's owner (ALTER TABLE ... ENABLE TRIGGER, or"
            " install_notify_trigger)",
        )


class ArchiveMissing(QueueError):
    """``archive_on_ack`` is on and the queue's archive table ``pgmq.a_<queue>`` is gone
    (dropped or renamed by another client) while the queue is there: an ack moves the
    message into the archive, so it fails and leaves the message in the queue, and so
    does every retry until the table is back (``pgmq.create`` makes it again) or
    ``archive_on_ack`` is off."""

    def __init__(self, queue: str) -> None:
        super().__init__(
            queue,
            f"pgmq: the archive table pgmq.a_{queue} of queue {queue!r} does not exist;"
            " archive_on_ack cannot settle its messages (the message stays in the queue)."
            f" Re-create it with SELECT pgmq.create('{queue}') or turn archive_on_ack off",
        )


class StatementCancelled(OperationTimeout):
    """The server cancelled the statement before it finished: its ``statement_timeout``
    or ``lock_timeout`` ran out, or someone called ``pg_cancel_backend``. It was rolled
    back, so nothing of it took effect; like any :class:`OperationTimeout` it passes
    (the event system retries it), unless the server's limit is too short for the work.
    ``sqlstate``: 57014 (cancelled, statement timeout) or 55P03 (lock timeout)."""

    def __init__(self, operation: str, seconds: float, queue: str, sqlstate: str, why: str):
        super().__init__(operation, seconds, queue)
        self.sqlstate = sqlstate
        where = f" on queue {queue!r}" if queue else ""
        self.args = (
            f"pgmq {operation}{where} was cancelled by the server ({sqlstate}: {why}) and"
            " rolled back: a statement_timeout or lock_timeout of the database or role is"
            " shorter than the work, or another session cancelled it",
        )


def _cancelled(exc: BaseException, failure: Failure) -> MessagingError:
    return StatementCancelled(
        failure.operation or "operation",
        failure.timeout,
        failure.queue,
        getattr(exc, "sqlstate", "") or "",
        redact(str(exc)),
    )


def _failed(exc: BaseException, failure: Failure) -> MessagingError:
    return MessagingError(
        f"pgmq {failure.operation or 'operation'} failed: {type(exc).__name__}: {exc}"
    )


def _statement_failed(exc: BaseException, failure: Failure) -> MessagingError:
    where = f" on queue {failure.queue!r}" if failure.queue else ""
    sqlstate = getattr(exc, "sqlstate", "")
    return MessagingError(
        f"pgmq {failure.operation or 'operation'}{where} failed: "
        f"{sqlstate} {type(exc).__name__}: {redact(str(exc))}"
    )


def _missing_table(exc: BaseException, failure: Failure) -> MessagingError:
    if failure.queue:  # the statement named the queue's tables: which one is gone?
        if f'"pgmq.a_{failure.queue}"' in str(exc):
            return ArchiveMissing(failure.queue)
        return QueueNotFound(failure.queue)
    return _statement_failed(exc, failure)


def _not_installed(exc: BaseException, failure: Failure) -> MessagingError:
    return BackendUnavailable(
        PROVIDER, failure.target, f"PGMQ is not installed (run `mqcontract pgmq install`): {exc}"
    )


def _refused(exc: BaseException, failure: Failure) -> MessagingError:
    # The database does not exist, refuses us, or is full.
    return BackendUnavailable(PROVIDER, failure.target, str(exc))


def _broken_protocol(exc: BaseException) -> bool:
    # The server's FATAL "terminating connection" arrived while the connection sat idle
    # in the pool: asyncpg then refuses the next statement before sending anything.
    return isinstance(exc, pgerr.InternalClientError) and str(exc).startswith(
        "cannot switch to state"
    )


def _internal(exc: BaseException, failure: Failure) -> MessagingError:
    if _broken_protocol(exc):
        return ConnectionLost(PROVIDER, failure.target, f"{type(exc).__name__}: {exc}")
    return _failed(exc, failure)


def _lost(exc: BaseException, failure: Failure) -> MessagingError:
    return ConnectionLost(PROVIDER, failure.target, f"{type(exc).__name__}: {exc}")


_ENTRIES: dict[type[BaseException], Translation] = {
    TimeoutError: OperationTimeout,
    pgerr.UndefinedTableError: _missing_table,
    pgerr.UndefinedFunctionError: _not_installed,
    pgerr.InvalidSchemaNameError: _not_installed,
    pgerr.InvalidCatalogNameError: _refused,
    pgerr.InvalidAuthorizationSpecificationError: _refused,  # and InvalidPasswordError
    pgerr.TooManyConnectionsError: _refused,
    pgerr.PostgresConnectionError: _lost,
    pgerr.QueryCanceledError: _cancelled,
    pgerr.LockNotAvailableError: _cancelled,
    **dict.fromkeys(_SESSION_ENDED, _lost),
    pgerr.InterfaceError: _lost,
    # InterfaceErrors about our own arguments, not the connection.
    pgerr._base.DataError: _failed,
    pgerr.ClientConfigurationError: _failed,
    pgerr.InternalClientError: _internal,
    OSError: _lost,
    asyncpg.PostgresError: _statement_failed,
    Exception: _failed,
}

#: asyncpg's exceptions → mqcontract errors (see :mod:`mqcontract.translation`).
ERRORS = ErrorTable(_ENTRIES)

_PROBE = Failure(PROVIDER, "", "probe")


def is_connection_lost(exc: BaseException) -> bool:
    """Whether the table makes driver exception ``exc`` a lost connection (not a failed
    statement); mqcontract's own errors are not the driver's."""
    if isinstance(exc, MessagingError):
        return False
    return isinstance(ERRORS.translate(exc, _PROBE), ConnectionLost)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection may be dead: lost, or silent past its bound."""
    return isinstance(exc, TimeoutError) or is_connection_lost(exc)


def never_executed(exc: BaseException, conn: Any = None) -> bool:
    """Whether the failed statement certainly did not take effect (so a retry is safe).

    ``conn``: the connection it was tried on. Read from the exception's type and
    attributes and the connection's state, never its words:

    * the server ended the session (``AdminShutdownError`` and kin), raised as such or as
      the cause asyncpg gives the ``ConnectionDoesNotExistError`` it raises when the
      server's FATAL answered the statement and the connection then closed: whatever
      was running was rolled back;
    * asyncpg refused the call before sending anything (a plain ``InterfaceError``, its
      type for a misused API) because ``conn`` was unusable: closed, or a pool proxy
      released back to its pool (asyncpg does that on its own when the connection
      dies). The same type for any other misuse is not a lost connection: not retried.
    """
    if isinstance(exc, _SESSION_ENDED):
        return True
    if isinstance(exc, pgerr.ConnectionDoesNotExistError) and isinstance(
        exc.__cause__, _SESSION_ENDED
    ):
        return True
    if _broken_protocol(exc):
        return True
    if type(exc) is pgerr.InterfaceError:
        return conn is not None and not usable(conn)
    return False
