"""The SQLite messaging service and its factory.

Every operation is a protected one behind the base class's public method, which checks
the arguments first and keeps the claims this service made (so ``ack_message`` by id
settles this service's own claim). A claim's token is the message's delivery count at
claim time (see :mod:`.store`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from mqcontract import BaseMessagingService, Capabilities, MessagingConfig, PushKind, QueuedMessage
from mqcontract.capabilities import VisibilityEnforcer
from mqcontract.errors import (
    BackendUnavailable,
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    ProviderClosed,
    QueueNotFound,
    StaleClaim,
)
from mqcontract.messages import Claim
from mqcontract.validation import is_message_id

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


def _claim_key(claim: Claim) -> store.ClaimKey:
    """What the store needs of ``claim``; ``None`` for a value that cannot be a row id or
    a delivery count (it then names no claim and never reaches SQL)."""
    return _storable_id(claim.msg_id), _storable_id(claim.token)


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
            producer_assigned_ids=False,
            # A claim is a visible_at time in the database file: the database returns the
            # message when it passes, whether its holder died, froze or still runs.
            visibility_enforced_by=VisibilityEnforcer.SERVER,
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

    # -- queues --------------------------------------------------------------------------

    async def _create_queue(self, name: str) -> None:
        await self._do("create_queue", name, lambda c: store.create_queue(c, name, time.time()))

    async def _delete_queue(self, name: str) -> None:
        await self._do("delete_queue", name, lambda c: store.drop_queue(c, name))

    async def _queue_exists(self, name: str) -> bool:
        return await self._do("queue_exists", name, lambda c: store.queue_exists(c, name))

    async def _list_queues(self) -> list[str]:
        return await self._do("list_queues", "", store.queue_names)

    # -- sending -------------------------------------------------------------------------

    async def _insert(
        self, operation: str, queue: str, bodies: list[bytes], delay: float
    ) -> list[int]:
        def run(c: sqlite3.Connection) -> list[int]:
            now = time.time()
            return store.insert(c, queue, bodies, now, now + delay)

        return await self._do(operation, queue, run)

    async def _send(self, queue: str, payload: bytes) -> int:
        return (await self._insert("send_message", queue, [payload], 0.0))[0]

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        return (await self._insert("send_message_with_delay", queue, [payload], delay_seconds))[0]

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        if not payloads:
            if not await self._queue_exists(queue):
                raise QueueNotFound(queue)
            return []
        return await self._insert("send_batch", queue, payloads, 0.0)

    # -- receiving and settling ----------------------------------------------------------

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        def run(c: sqlite3.Connection) -> list[store.Row]:
            now = time.time()
            return store.claim(c, queue, limit, now, now + visibility_timeout)

        rows = await self._do("receive_messages", queue, run)
        return [self._message(queue, r, visibility_timeout) for r in rows]

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        wanted = _storable_id(msg_id)
        if wanted is None:
            if not await self._queue_exists(queue):
                raise QueueNotFound(queue)
            return None

        def run(c: sqlite3.Connection) -> store.Row | None:
            now = time.time()
            return store.claim_one(c, queue, wanted, now, now + visibility_timeout)

        row = await self._do("fetch_message", queue, run)
        return None if row is None else self._message(queue, row, visibility_timeout)

    async def _ack(self, queue: str, claim: Claim) -> None:
        await self._settle("ack_message", queue, claim, remove=True)

    async def _nack(self, queue: str, claim: Claim) -> None:
        await self._settle("nack_message", queue, claim, remove=False)

    async def _settle(self, operation: str, queue: str, claim: Claim, *, remove: bool) -> None:
        key = _claim_key(claim)
        (stale,) = await self._do(
            operation, queue, lambda c: store.settle(c, queue, [key], time.time(), remove=remove)
        )
        if stale is not None:
            raise StaleClaim(queue, claim.msg_id, stale)

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        keys = [_claim_key(claim) for claim in claims]
        outcome = await self._do(
            "ack_claims", queue, lambda c: store.settle(c, queue, keys, time.time(), remove=True)
        )
        return [stale is None for stale in outcome]

    @staticmethod
    def _message(queue: str, row: store.Row, visibility_timeout: float) -> QueuedMessage:
        return QueuedMessage(
            msg_id=row.id,
            queue_name=queue,
            payload=row.body,
            receive_count=row.deliveries,
            enqueued_at=row.enqueued_at,
            claim=Claim(queue, row.id, row.deliveries, visibility_timeout),
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
