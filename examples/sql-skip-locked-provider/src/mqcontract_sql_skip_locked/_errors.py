"""How each driver's exceptions become mqcontract errors: one table per dialect.

Common to both: :class:`~._store.NoSuchQueue` and a foreign-key failure on insert (the
queue was deleted under the send) are ``QueueNotFound``; the operation's bound expiring
is ``OperationTimeout``; a connection that broke, was killed or could not be made is
``ConnectionLost`` (the statement may or may not have run, and it is not retried: a
retried send could enqueue twice); the server refusing us (unknown database, bad
password) is ``BackendUnavailable``; any other server error fails the operation.
"""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pymysql  # type: ignore[import-untyped]
from asyncpg import exceptions as pgerr
from mqcontract._redact import redact
from mqcontract.errors import (
    BackendUnavailable,
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    QueueNotFound,
)
from mqcontract.translation import ErrorTable, Failure

from mqcontract_sql_skip_locked._store import NoSuchQueue

__all__ = ["MARIADB_ERRORS", "POSTGRES_ERRORS"]


def _no_queue(exc: BaseException, failure: Failure) -> MessagingError:
    return QueueNotFound(failure.queue)


def _gone_queue(exc: BaseException, failure: Failure) -> MessagingError:
    if failure.queue:
        return QueueNotFound(failure.queue)
    return _failed(exc, failure)


def _failed(exc: BaseException, failure: Failure) -> MessagingError:
    where = f" on queue {failure.queue!r}" if failure.queue else ""
    return MessagingError(
        f"{failure.provider} {failure.operation or 'operation'}{where} failed: "
        f"{type(exc).__name__}: {redact(str(exc))}"
    )


def _lost(exc: BaseException, failure: Failure) -> MessagingError:
    return ConnectionLost(failure.provider, failure.target, f"{type(exc).__name__}: {exc}")


def _refused(exc: BaseException, failure: Failure) -> MessagingError:
    return BackendUnavailable(failure.provider, failure.target, f"{type(exc).__name__}: {exc}")


# -- PostgreSQL (asyncpg) -------------------------------------------------------------


def _pg_internal(exc: BaseException, failure: Failure) -> MessagingError:
    # The server's FATAL "terminating connection" arrived while the connection sat idle
    # in the pool: asyncpg then refuses the next statement before sending anything.
    if str(exc).startswith("cannot switch to state"):
        return _lost(exc, failure)
    return _failed(exc, failure)


POSTGRES_ERRORS = ErrorTable(
    {
        NoSuchQueue: _no_queue,
        TimeoutError: OperationTimeout,
        pgerr.ForeignKeyViolationError: _gone_queue,
        pgerr.InvalidCatalogNameError: _refused,
        pgerr.InvalidAuthorizationSpecificationError: _refused,
        pgerr.TooManyConnectionsError: _refused,
        pgerr.UndefinedTableError: _refused,  # the tables were dropped under us
        pgerr.PostgresConnectionError: _lost,
        pgerr.AdminShutdownError: _lost,  # pg_terminate_backend
        pgerr.CrashShutdownError: _lost,
        pgerr.CannotConnectNowError: _lost,
        pgerr.InterfaceError: _lost,
        pgerr.InternalClientError: _pg_internal,
        OSError: _lost,
        asyncpg.PostgresError: _failed,
    }
)

# -- MariaDB (aiomysql on PyMySQL) ------------------------------------------------------

#: Client and server codes that mean the session is gone or never was.
_LOST_CODES = {
    2003,  # can't connect
    2006,  # server has gone away
    2013,  # lost connection during query
    2055,  # lost connection (socket error)
    1053,  # server shutdown in progress
    1927,  # connection was killed
}
#: Codes that mean the server refuses us for good.
_REFUSED_CODES = {1044, 1045, 1049, 1146, 1040}  # access, password, database, table, too many


def _my_code(exc: BaseException) -> int:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else 0


def _my_operational(exc: BaseException, failure: Failure) -> MessagingError:
    code = _my_code(exc)
    if code in _LOST_CODES:
        return _lost(exc, failure)
    if code in _REFUSED_CODES:
        return _refused(exc, failure)
    if code == 1205:  # lock wait timeout: a lock held past innodb_lock_wait_timeout
        return OperationTimeout(failure.operation, failure.timeout, failure.queue)
    return _failed(exc, failure)


def _my_integrity(exc: BaseException, failure: Failure) -> MessagingError:
    if _my_code(exc) == 1452:  # the queue row went away under an insert
        return _gone_queue(exc, failure)
    return _failed(exc, failure)


def _my_programming(exc: BaseException, failure: Failure) -> MessagingError:
    if _my_code(exc) in _REFUSED_CODES:
        return _refused(exc, failure)
    return _failed(exc, failure)


MARIADB_ERRORS = ErrorTable(
    {
        NoSuchQueue: _no_queue,
        TimeoutError: OperationTimeout,
        pymysql.err.OperationalError: _my_operational,
        pymysql.err.InternalError: _my_operational,
        pymysql.err.IntegrityError: _my_integrity,
        pymysql.err.ProgrammingError: _my_programming,
        pymysql.err.InterfaceError: _lost,  # "(0, '')": the connection is closed
        OSError: _lost,
        pymysql.err.MySQLError: _failed,
    }
)
