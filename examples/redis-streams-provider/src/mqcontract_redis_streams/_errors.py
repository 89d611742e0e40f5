"""The one place redis-py exceptions become mqcontract errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from mqcontract.errors import (
    BackendUnavailable,
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    ProviderClosed,
    QueueError,
    QueueNotFound,
)
from redis import exceptions as rx

from mqcontract_redis_streams._scripts import NO_QUEUE

__all__ = ["translated"]


@asynccontextmanager
async def translated(
    provider: str,
    target: str,
    *,
    operation: str,
    timeout: float,
    queue: str = "",
    is_closed: Callable[[], bool] = lambda: False,
) -> AsyncIterator[None]:
    """Bound the body by ``timeout`` and re-raise driver errors as mqcontract errors.

    * the scripts' ``MQC_NO_QUEUE`` reply → :class:`QueueNotFound`;
    * a connection that broke or could not be made → :class:`ConnectionLost` (or
      :class:`ProviderClosed` once the provider is closed); the command may or may not
      have run, and it is not retried (a retried send could enqueue twice);
    * the bound expiring → :class:`OperationTimeout`;
    * any other reply error (out of memory, a foreign key of the wrong type) →
      :class:`QueueError` naming the queue, or :class:`BackendUnavailable` without one.
    """
    try:
        async with asyncio.timeout(timeout):
            yield
    except MessagingError:
        raise
    except rx.ResponseError as exc:
        if str(exc).startswith(NO_QUEUE):
            raise QueueNotFound(queue) from exc
        detail = f"{operation}: {exc}"  # a server reply: never holds the URL
        if queue:
            raise QueueError(queue, f"redis refused {detail} (queue {queue!r})") from exc
        raise BackendUnavailable(provider, target, detail) from exc
    except TimeoutError as exc:
        if is_closed():
            raise ProviderClosed(provider) from exc
        raise OperationTimeout(operation, timeout, queue) from exc
    except (rx.ConnectionError, rx.TimeoutError, rx.RedisError, OSError) as exc:
        if is_closed():
            raise ProviderClosed(provider) from exc
        raise ConnectionLost(provider, target, f"{operation}: {type(exc).__name__}: {exc}") from exc
