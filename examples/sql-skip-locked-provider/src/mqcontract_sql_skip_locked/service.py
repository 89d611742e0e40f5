"""The queue logic both dialects share: mqcontract's protocol on a :class:`~._store.Store`.

The base class has checked every argument and the closed state before an operation here
runs, and applies the dialect's error table afterwards. What is left: bounding each call,
turning claims into the ``(msg_id, token)`` keys the SQL compares (a value no column
could hold names no claim and never reaches SQL), and saying why a claim is stale from
the ``receive_count`` the settle statement found beside its row:

* no row: *settled* (acked, through this claim or another one);
* a higher count: *superseded* (claimed again since);
* a lower count: *not held* (a token this row never had);
* the same count: *lapsed* (its ``vt`` passed, or a nack released it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, ClassVar, TypeVar

from mqcontract.capabilities import Capabilities, PayloadFidelity, PushKind, RequeuePosition
from mqcontract.errors import QueueNotFound, StaleClaim, StaleReason
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.service import BaseMessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract.translation import ErrorTable
from mqcontract.validation import check_queue_name

from mqcontract_sql_skip_locked._config import MARIADB, POSTGRES, SqlQueueConfig
from mqcontract_sql_skip_locked._errors import MARIADB_ERRORS, POSTGRES_ERRORS
from mqcontract_sql_skip_locked._listen import Listener
from mqcontract_sql_skip_locked._postgres import PostgresStore
from mqcontract_sql_skip_locked._store import MAX_ID, MAX_TOKEN, ClaimKey, Outcome, Row, Store

__all__ = ["MariaDbQueueService", "PostgresQueueService", "SqlQueueService", "claim_key"]

T = TypeVar("T")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def claim_key(claim: Claim) -> ClaimKey | None:
    """``(msg_id, token)`` of ``claim``, or ``None`` when either could not be stored in
    its column (then the claim is not one this provider made)."""
    msg_id, token = claim.msg_id, claim.token
    if not (_is_int(msg_id) and _is_int(token)):
        return None
    if 0 < msg_id <= MAX_ID and 0 < int(token) <= MAX_TOKEN:
        return msg_id, int(token)
    return None


def stale_reason(token: int, outcome: Outcome) -> StaleReason:
    """Why a claim with ``token`` did not settle, from what the statement found."""
    if outcome.receive_count is None:
        return StaleReason.SETTLED
    if outcome.receive_count > token:
        return StaleReason.SUPERSEDED
    if outcome.receive_count < token:
        return StaleReason.NOT_HELD
    return StaleReason.LAPSED


class SqlQueueService(BaseMessagingService):
    """Queues as rows of one table; see :mod:`._store` for the design."""

    error_table: ClassVar[ErrorTable]

    def __init__(
        self,
        store: Store,
        settings: SqlQueueConfig,
        *,
        operation_timeout: float,
        session_name: str,
    ) -> None:
        self.store = store
        self.settings = settings
        #: ``application_name`` (PostgreSQL) of this service's connections.
        self.session_name = session_name
        self._target = settings.url
        self._operation_timeout = operation_timeout
        self._closed = False
        self._capabilities = Capabilities(
            **self._push(settings),
            fallback_polling_interval=settings.poll_interval_seconds,
            fetch_by_id=True,
            delay=True,
            visibility_precision_seconds=0.001,
            requeue_position=RequeuePosition.ORIGINAL,
            exact_receive_count=True,
            fifo=True,
            payload_fidelity=PayloadFidelity.BYTES,
            max_message_size_bytes=settings.max_message_size_bytes,
            list_queues=True,
            producer_assigned_ids=False,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def _push(self, settings: SqlQueueConfig) -> dict[str, Any]:
        """The push capabilities: none here (a dialect that pushes overrides this)."""
        return {"push": PushKind.NONE, "requires_fallback_polling": False}

    async def _bounded(self, call: Awaitable[T]) -> T:
        async with asyncio.timeout(self._operation_timeout):
            return await call

    # -- queues ------------------------------------------------------------------------

    async def _create_queue(self, name: str) -> None:
        await self._bounded(self.store.create_queue(name))

    async def _delete_queue(self, name: str) -> None:
        await self._bounded(self.store.drop_queue(name))

    async def _queue_exists(self, name: str) -> bool:
        return await self._bounded(self.store.queue_exists(name))

    async def _list_queues(self) -> list[str]:
        return await self._bounded(self.store.queue_names())

    # -- sending -----------------------------------------------------------------------

    async def _send(self, queue: str, payload: bytes) -> int:
        (msg_id,) = await self._bounded(self.store.insert(queue, [payload], 0.0))
        return msg_id

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        (msg_id,) = await self._bounded(self.store.insert(queue, [payload], delay_seconds))
        return msg_id

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        if not payloads:
            if not await self._queue_exists(queue):
                raise QueueNotFound(queue)
            return []
        return await self._bounded(self.store.insert(queue, payloads, 0.0))

    # -- claiming and settling ---------------------------------------------------------

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        rows = await self._bounded(self.store.claim(queue, limit, visibility_timeout))
        return [_message(queue, row, visibility_timeout) for row in rows]

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        if not (_is_int(msg_id) and 0 < msg_id <= MAX_ID):  # no row has it: answer without SQL
            if not await self._queue_exists(queue):
                raise QueueNotFound(queue)
            return None
        rows = await self._bounded(self.store.claim(queue, 1, visibility_timeout, msg_id))
        return _message(queue, rows[0], visibility_timeout) if rows else None

    async def _settle_one(self, queue: str, claim: Claim, *, remove: bool) -> None:
        key = claim_key(claim)
        if key is None:
            if not await self._queue_exists(queue):
                raise QueueNotFound(queue)
            raise StaleClaim(queue, claim.msg_id, StaleReason.NOT_HELD)
        (outcome,) = await self._bounded(self.store.settle(queue, [key], remove=remove))
        if not outcome.settled:
            raise StaleClaim(queue, claim.msg_id, stale_reason(key[1], outcome))

    async def _ack(self, queue: str, claim: Claim) -> None:
        await self._settle_one(queue, claim, remove=True)

    async def _nack(self, queue: str, claim: Claim) -> None:
        await self._settle_one(queue, claim, remove=False)

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        """One statement for the whole batch; a claim named twice settles once."""
        keys = [claim_key(claim) for claim in claims]
        wanted = sorted({key for key in keys if key is not None})
        if not wanted:
            if not await self._queue_exists(queue):
                raise QueueNotFound(queue)
            return [False] * len(claims)
        outcomes = await self._bounded(self.store.settle(queue, wanted, remove=True))
        settled = {key for key, outcome in zip(wanted, outcomes, strict=True) if outcome.settled}
        answers: list[bool] = []
        for key in keys:
            answers.append(key in settled)
            if key is not None:
                settled.discard(key)
        return answers

    async def stored_ids(self, queue: str) -> list[int]:
        """Backdoor for tests: every id stored on ``queue``, in any state."""
        self._check_open()
        name = check_queue_name(queue)
        return await self._translated(
            "stored_ids", name, self._bounded(self.store.stored_ids(name))
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(self._operation_timeout):
                await self.store.close()
        except Exception:  # closing a pool whose server is gone: nothing left to release
            pass
        await super().close()


def _message(queue: str, row: Row, visibility_timeout: float) -> QueuedMessage:
    return QueuedMessage(
        msg_id=row.id,
        queue_name=queue,
        payload=row.body,
        receive_count=row.receive_count,
        enqueued_at=row.enqueued_at,
        claim=Claim(queue, row.id, row.receive_count, visibility_timeout),
    )


class PostgresQueueService(SqlQueueService):
    """The table queue on PostgreSQL (:mod:`._postgres`), with NOTIFY push (:mod:`._listen`)."""

    provider_name = POSTGRES
    error_table = POSTGRES_ERRORS

    def __init__(
        self,
        store: PostgresStore,
        settings: SqlQueueConfig,
        *,
        operation_timeout: float,
        session_name: str,
    ) -> None:
        super().__init__(
            store, settings, operation_timeout=operation_timeout, session_name=session_name
        )
        self.postgres = store
        self.listener = Listener(
            lambda: store.listen_connection(f"{session_name}-listen"),
            store.channel,
            timeout=operation_timeout,
        )

    def _push(self, settings: SqlQueueConfig) -> dict[str, Any]:
        # NOTIFY is lost while the listener is away, and nothing announces an expired
        # claim or a delay that ended: consumers must poll as well.
        return {"push": PushKind.SIGNAL, "requires_fallback_polling": True}

    async def _subscribe(self, queues: tuple[str, ...]) -> QueueSubscription:
        for name in queues:
            if not await self._queue_exists(name):
                raise QueueNotFound(name)
        subscription = QueueSubscription(queues, on_close=self.listener.remove)
        await self.listener.add(subscription)
        return subscription

    async def close(self) -> None:
        if not self._closed:
            await self.listener.close()
        await super().close()


class MariaDbQueueService(SqlQueueService):
    """The table queue on MariaDB (:mod:`._mariadb`)."""

    provider_name = MARIADB
    error_table = MARIADB_ERRORS
