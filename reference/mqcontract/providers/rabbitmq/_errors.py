"""The one place aio-pika/aiormq exceptions become mqcontract errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiormq.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)

from mqcontract.errors import (
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    ProviderClosed,
    QueueError,
    QueueNotFound,
)

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

    * ``Basic.Return`` (NO_ROUTE: mandatory publish to a missing queue) and a 404 channel
      error → :class:`QueueNotFound` — nothing was enqueued or created.
    * ``Basic.Nack`` from the broker → :class:`QueueError` (the broker refused it).
    * connection or channel failures, and anything else the driver raises →
      :class:`ConnectionLost`, or :class:`ProviderClosed` when the provider was closed
      meanwhile.
    * the bound expiring → :class:`OperationTimeout`.
    """
    try:
        async with asyncio.timeout(timeout):
            yield
    except MessagingError:
        raise
    except PublishError as exc:
        raise QueueNotFound(queue) from exc
    except DeliveryError as exc:
        raise QueueError(queue, f"the broker refused the message for queue {queue!r}") from exc
    except ChannelNotFoundEntity as exc:
        if queue:
            raise QueueNotFound(queue) from exc
        raise ConnectionLost(provider, target, str(exc)) from exc
    except TimeoutError as exc:
        raise OperationTimeout(operation, timeout, queue) from exc
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        # aiormq cancels pending calls when their channel or connection closes.
        if is_closed():
            raise ProviderClosed(provider) from exc
        raise ConnectionLost(provider, target, f"{operation} interrupted") from exc
    except (AMQPError, ChannelInvalidStateError, ConnectionError, OSError) as exc:
        if is_closed():
            raise ProviderClosed(provider) from exc
        raise ConnectionLost(provider, target, f"{operation}: {exc!r}") from exc
    except Exception as exc:
        # aiormq fails pending writes with a bare Exception when its writer dies with
        # the connection; nothing a driver raises may escape as a non-MessagingError.
        if is_closed():
            raise ProviderClosed(provider) from exc
        raise ConnectionLost(provider, target, f"{operation}: {exc!r}") from exc
