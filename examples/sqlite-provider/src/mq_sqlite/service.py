"""The SQLite messaging service and its factory."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from mqcontract import BaseMessagingService, Capabilities, MessagingConfig, PushKind, QueuedMessage
from mqcontract.errors import (
    BackendUnavailable,
    ConnectionLost,
    MessageNotFound,
    MessagingError,
    OperationTimeout,
    ProviderClosed,
    QueueNotFound,
)
from mqcontract.validation import (
    check_delay,
    check_limit,
    check_payload,
    check_queue_name,
    check_visibility_timeout,
    is_message_id,
)

from . import store
from .link import Link, LinkClosed, LinkSevered
from .settings import PROVIDER_NAME, SqliteSettings, load_settings

T = TypeVar("T")

_MAX_ROWID = 2**63 - 1


def _storable_id(msg_id: object) -> int | None:
    """``msg_id`` if it can name a row, else ``None`` (bools, floats, out of range...)."""
    if is_message_id(msg_id) and isinstance(msg_id, int) and 0 < msg_id <= _MAX_ROWID:
        return msg_id
    return None


def _is_busy(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return isinstance(name, str) and name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


class SqliteQueue(BaseMessagingService):
    """Queues in one SQLite database file; polling only, fetch by id supported."""

    provider_name = PROVIDER_NAME

    def __init__(self, settings: SqliteSettings, *, timeout: float) -> None:
        self._settings = settings
        self._timeout = timeout
        self._link = Link(settings)
        self._closed = False
        self._caps = Capabilities(
            push=PushKind.NONE,
            requires_fallback_polling=False,
            fallback_polling_interval=settings.poll_interval_seconds,
            fetch_by_id=True,
            max_message_size_bytes=settings.max_message_size_bytes,
        )

    @classmethod
    async def connect(cls, settings: SqliteSettings, *, operation_timeout: float) -> SqliteQueue:
        """Open the database (creating file and schema); ``BackendUnavailable`` if it cannot."""
        service = cls(settings, timeout=operation_timeout)
        try:
            await service._do("connect", "", lambda conn: None)
        except MessagingError as exc:
            await service.close()
            if isinstance(exc, BackendUnavailable):
                raise
            raise BackendUnavailable(PROVIDER_NAME, settings.path, str(exc)) from exc
        return service

    @property
    def settings(self) -> SqliteSettings:
        return self._settings

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def connections_opened(self) -> int:
        """How many sqlite3 connections this service has opened (1 plus one per recovery)."""
        return self._link.opened

    async def cut_connection(self) -> None:
        """Fault injection: kill the connection under the service (see ``Link.cut``)."""
        if not self._closed:
            await self._link.cut()

    # -- one place for bounds and error translation --------------------------------------

    async def _do(self, operation: str, queue: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise ProviderClosed(self.provider_name)
        path = self._settings.path
        try:
            async with asyncio.timeout(self._timeout):
                return await self._link.call(fn)
        except TimeoutError:
            self._link.interrupt()
            raise OperationTimeout(operation, self._timeout, queue) from None
        except store.NoSuchQueue:
            raise QueueNotFound(queue) from None
        except LinkClosed:
            raise ProviderClosed(self.provider_name) from None
        except LinkSevered as exc:
            raise ConnectionLost(self.provider_name, path, f"{operation}: {exc}") from exc
        except sqlite3.Error as exc:
            if self._closed:
                raise ProviderClosed(self.provider_name) from exc
            if _is_busy(exc):
                bound = self._settings.busy_timeout_seconds
                raise OperationTimeout(operation, bound, queue) from exc
            raise BackendUnavailable(self.provider_name, path, f"{operation}: {exc}") from exc
        except OSError as exc:
            raise BackendUnavailable(self.provider_name, path, f"{operation}: {exc}") from exc

    async def _missing_or(self, queue: str, msg_id: int) -> MessagingError:
        exists = await self._do("queue_exists", queue, lambda c: store.queue_exists(c, queue))
        return MessageNotFound(queue, msg_id) if exists else QueueNotFound(queue)

    # -- queues --------------------------------------------------------------------------

    async def create_queue(self, name: str) -> None:
        q = check_queue_name(name)
        await self._do("create_queue", q, lambda c: store.create_queue(c, q, time.time()))

    async def delete_queue(self, name: str) -> None:
        q = check_queue_name(name)
        await self._do("delete_queue", q, lambda c: store.drop_queue(c, q))

    async def queue_exists(self, name: str) -> bool:
        q = check_queue_name(name)
        return await self._do("queue_exists", q, lambda c: store.queue_exists(c, q))

    async def list_queues(self) -> list[str]:
        return await self._do("list_queues", "", store.queue_names)

    # -- sending -------------------------------------------------------------------------

    async def _insert(
        self, operation: str, queue: str, bodies: list[bytes], delay: float
    ) -> list[int]:
        def run(c: sqlite3.Connection) -> list[int]:
            now = time.time()
            return store.insert(c, queue, bodies, now, now + delay)

        return await self._do(operation, queue, run)

    async def send_message(self, queue: str, payload: bytes) -> int:
        q = check_queue_name(queue)
        body = check_payload(q, payload, self._caps)
        return (await self._insert("send_message", q, [body], 0.0))[0]

    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int:
        q = check_queue_name(queue)
        body = check_payload(q, payload, self._caps)
        delay = check_delay(q, delay_seconds, self._caps)
        return (await self._insert("send_message_with_delay", q, [body], delay))[0]

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        q = check_queue_name(queue)
        bodies = [check_payload(q, p, self._caps) for p in payloads]
        if not bodies:
            if not await self.queue_exists(q):
                raise QueueNotFound(q)
            return []
        return await self._insert("send_batch", q, bodies, 0.0)

    # -- receiving and settling ----------------------------------------------------------

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        q = check_queue_name(queue)
        n = check_limit(q, limit, self._caps)
        vt = check_visibility_timeout(q, visibility_timeout, self._caps)

        def run(c: sqlite3.Connection) -> list[store.Row]:
            now = time.time()
            return store.claim(c, q, n, now, now + vt)

        rows = await self._do("receive_messages", q, run)
        return [self._message(q, r) for r in rows]

    async def fetch_message(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        q = check_queue_name(queue)
        vt = check_visibility_timeout(q, visibility_timeout, self._caps)
        wanted = _storable_id(msg_id)
        if wanted is None:
            if not await self.queue_exists(q):
                raise QueueNotFound(q)
            return None

        def run(c: sqlite3.Connection) -> store.Row | None:
            now = time.time()
            return store.claim_one(c, q, wanted, now, now + vt)

        row = await self._do("fetch_message", q, run)
        return None if row is None else self._message(q, row)

    async def ack_message(self, queue: str, msg_id: int) -> None:
        await self._settle("ack_message", queue, msg_id, remove=True)

    async def nack_message(self, queue: str, msg_id: int) -> None:
        await self._settle("nack_message", queue, msg_id, remove=False)

    async def _settle(self, operation: str, queue: str, msg_id: int, *, remove: bool) -> None:
        q = check_queue_name(queue)
        wanted = _storable_id(msg_id)
        if wanted is None:
            raise await self._missing_or(q, msg_id)
        done = await self._do(
            operation, q, lambda c: store.settle(c, q, wanted, time.time(), remove=remove)
        )
        if not done:
            raise MessageNotFound(q, msg_id)

    @staticmethod
    def _message(queue: str, row: store.Row) -> QueuedMessage:
        return QueuedMessage(
            msg_id=row.id,
            queue_name=queue,
            payload=row.body,
            receive_count=row.deliveries,
            enqueued_at=row.enqueued_at,
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._link.shutdown()


async def open_sqlite_queue(config: MessagingConfig) -> SqliteQueue:
    """Provider factory: ``(MessagingConfig) -> service``, settings from ``[providers.sqlite]``."""
    settings = load_settings(config)
    return await SqliteQueue.connect(settings, operation_timeout=config.operation_timeout_seconds)
