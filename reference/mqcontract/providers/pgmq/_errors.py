"""The one place asyncpg and socket errors become mqcontract errors."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
from asyncpg import exceptions as pgerr

from mqcontract._redact import redact
from mqcontract.errors import (
    BackendUnavailable,
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    QueueNotFound,
)

__all__ = ["is_connection_error", "never_executed", "translate"]

PROVIDER = "pgmq"

#: The server ended the session: whatever was running was rolled back.
_SESSION_ENDED = (pgerr.AdminShutdownError, pgerr.CrashShutdownError, pgerr.CannotConnectNowError)


_CONNECTION_ERRORS = (pgerr.PostgresConnectionError, pgerr.InterfaceError, OSError, *_SESSION_ENDED)
#: The database exists not, refuses us, or is full.
_UNAVAILABLE = (
    pgerr.InvalidCatalogNameError,
    pgerr.InvalidAuthorizationSpecificationError,
    pgerr.InvalidPasswordError,
    pgerr.TooManyConnectionsError,
)
#: InterfaceErrors about our own arguments, not the connection.
_CLIENT_ERRORS = (pgerr._base.DataError, pgerr.ClientConfigurationError)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection (not the statement) failed."""
    if _broken_protocol(exc):
        return True
    return isinstance(exc, _CONNECTION_ERRORS) and not isinstance(exc, _CLIENT_ERRORS)


def _broken_protocol(exc: BaseException) -> bool:
    # The server's FATAL "terminating connection" arrived while the connection sat idle
    # in the pool: asyncpg then refuses the next statement before sending anything.
    return isinstance(exc, pgerr.InternalClientError) and str(exc).startswith(
        "cannot switch to state"
    )


def never_executed(exc: BaseException) -> bool:
    """Whether the failed statement certainly did not take effect (so a retry is safe)."""
    if isinstance(exc, _SESSION_ENDED):
        return True  # the backend died: any uncommitted work was rolled back
    if _broken_protocol(exc):
        return True
    # asyncpg checks the connection before sending: nothing reached the server.
    return type(exc) is pgerr.InterfaceError and "closed" in str(exc)


def translate(
    exc: BaseException,
    *,
    target: str,
    queue: str = "",
    operation: str = "",
    timeout: float = 0.0,
    connecting: bool = False,
) -> MessagingError:
    """The mqcontract error for a driver exception (raise it ``from exc``).

    ``connecting``: the failure happened while opening a connection, so the backend is
    unavailable rather than a live connection lost.
    """
    if isinstance(exc, MessagingError):
        return exc
    if isinstance(exc, TimeoutError):
        return OperationTimeout(operation or "operation", timeout, queue)
    if isinstance(exc, pgerr.UndefinedTableError) and queue:
        return QueueNotFound(queue)
    if isinstance(exc, pgerr.UndefinedFunctionError | pgerr.InvalidSchemaNameError):
        return BackendUnavailable(
            PROVIDER, target, f"PGMQ is not installed (run `mqcontract pgmq install`): {exc}"
        )
    if isinstance(
        exc, pgerr.InvalidCatalogNameError | pgerr.InvalidAuthorizationSpecificationError
    ):
        return BackendUnavailable(PROVIDER, target, str(exc))
    if isinstance(exc, pgerr.TooManyConnectionsError | pgerr.InvalidPasswordError):
        return BackendUnavailable(PROVIDER, target, str(exc))
    if is_connection_error(exc):
        if connecting:
            return BackendUnavailable(PROVIDER, target, f"{type(exc).__name__}: {exc}")
        return ConnectionLost(PROVIDER, target, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.PostgresError):
        where = f" on queue {queue!r}" if queue else ""
        return MessagingError(
            f"pgmq {operation or 'operation'}{where} failed: "
            f"{exc.sqlstate} {type(exc).__name__}: {redact(str(exc))}"
        )
    return MessagingError(f"pgmq {operation or 'operation'} failed: {type(exc).__name__}: {exc}")
