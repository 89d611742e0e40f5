"""How a provider's driver exceptions become mqcontract errors: one table per provider.

A provider states once, in an :class:`ErrorTable`, which exception types of its driver
become which :class:`~mqcontract.errors.MessagingError`; ``BaseMessagingService`` applies
the table at the edge of every operation and raises the result ``from`` the driver's
exception, so no driver exception escapes and none is lost from the traceback (httpx maps
httpcore's exceptions the same way).

* The most specific entry wins: the exception's type and then its bases are looked up,
  so a table can map a driver's base class and treat one subclass differently.
* An entry is an error class, built from the :class:`Failure` (``QueueNotFound``,
  ``OperationTimeout``, ``BackendUnavailable`` and its subclasses), or a function
  ``(exc, failure) -> MessagingError`` when the answer depends on the exception itself.
* An exception no entry matches is not a backend failure: it propagates unchanged, so a
  bug looks like one.
* Two rules hold for every provider: once the provider is closed, a backend failure is
  ``ProviderClosed``; while a connection is being opened, a lost connection means the
  backend is unavailable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from mqcontract._redact import scrubbed
from mqcontract.errors import (
    BackendUnavailable,
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    ProviderClosed,
    QueueNotFound,
)

__all__ = ["ErrorTable", "Failure", "Translation", "await_translated"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Failure:
    """The call that failed: everything an error built from a table needs to say."""

    provider: str
    #: Where the backend is (a URL or path); errors redact credentials from it.
    target: str
    operation: str
    queue: str = ""
    #: The bound the operation was held to (what ``OperationTimeout`` reports).
    timeout: float = 0.0
    #: The provider was closed by the time the call failed.
    closed: bool = False
    #: The call was opening a connection, not using one.
    connecting: bool = False

    def detail(self, exc: BaseException) -> str:
        """``operation: ExceptionType: message``, for errors that carry a detail."""
        text = str(exc)
        kind = type(exc).__name__
        return f"{self.operation}: {kind}: {text}" if text else f"{self.operation}: {kind}"


Translation = type[MessagingError] | Callable[[BaseException, Failure], MessagingError]
"""A table entry: an error class built from the failure, or a function that decides."""

#: Error classes an entry may name directly (each is built from a ``Failure`` alone).
_BUILDABLE = (QueueNotFound, OperationTimeout, BackendUnavailable)


def _build(kind: type[MessagingError], exc: BaseException, failure: Failure) -> MessagingError:
    if issubclass(kind, ProviderClosed):
        return ProviderClosed(failure.provider)
    if issubclass(kind, BackendUnavailable):
        return kind(failure.provider, failure.target, failure.detail(exc))
    if issubclass(kind, OperationTimeout):
        return kind(failure.operation or "operation", failure.timeout, failure.queue)
    if issubclass(kind, QueueNotFound):
        return kind(failure.queue)
    raise TypeError(f"{kind.__name__} cannot be built from a Failure; map to a function")


class ErrorTable:
    """Driver exception type → :data:`Translation`; see the module docstring."""

    def __init__(self, entries: Mapping[type[BaseException], Translation]) -> None:
        for kind, translation in entries.items():
            if isinstance(translation, type) and not issubclass(translation, _BUILDABLE):
                raise TypeError(
                    f"{kind.__name__} -> {translation.__name__}: an error class in a table "
                    f"must be one of {', '.join(c.__name__ for c in _BUILDABLE)}"
                )
        self._entries = dict(entries)

    def entry_for(self, exc: BaseException) -> Translation | None:
        """The entry for the most specific type of ``exc`` in the table, if any."""
        for kind in type(exc).__mro__:
            translation = self._entries.get(kind)
            if translation is not None:
                return translation
        return None

    def translate(self, exc: BaseException, failure: Failure) -> MessagingError | None:
        """The error to raise ``from exc``; ``None`` when ``exc`` is not the backend's."""
        if isinstance(exc, MessagingError):
            return exc
        translation = self.entry_for(exc)
        if translation is None:
            return None
        if failure.closed:
            return ProviderClosed(failure.provider)
        if isinstance(translation, type):
            error = _build(translation, exc, failure)
        else:
            error = translation(exc, failure)
        if failure.connecting and type(error) is ConnectionLost:
            return BackendUnavailable(failure.provider, failure.target, failure.detail(exc))
        return error


async def await_translated(
    call: Awaitable[T], table: ErrorTable, failure: Callable[[], Failure]
) -> T:
    """Await ``call``; what it raises goes through ``table`` and is raised ``from`` it.

    ``failure`` is called only when something fails, so it reports the state then (was
    the provider closed meanwhile?). A cancellation of this task propagates untouched;
    any other ``CancelledError`` (drivers cancel pending calls when their connection
    closes) is translated like any exception, if the table has an entry for it.
    """
    try:
        return await call
    except (Exception, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
            raise
        error = table.translate(exc, failure())
        if error is None or error is exc:
            raise
        raise error from scrubbed(exc)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
