"""``PgmqMessagingService``: the contract on PGMQ (PostgreSQL) with asyncpg.

* One asyncpg pool for operations, one of its connections kept for operations that run
  one at a time (``_lane``); one dedicated connection for LISTEN (``_listener``).
* Queues are PGMQ queues (``pgmq.create``/``pgmq.drop_queue``/``pgmq.meta``) plus our
  ``AFTER INSERT`` trigger that NOTIFYs ``mqcontract_<queue>``, so every producer (``psql``,
  other PGMQ clients) is announced.
* Claims (receive, fetch), ack and nack are our own SQL (``_sql``): sub-second visibility,
  and ack/nack only succeed for a message that is currently held.
* Payloads follow ``_payload`` (JSON stored natively, other bytes in a base64 envelope).
* Connection failures: a statement that certainly did not run, or an idempotent one, is
  retried once on a fresh pool connection; otherwise ``ConnectionLost`` is raised. Either
  way the pool replaces dead connections, so the next operation works.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
from asyncpg import exceptions as pgerr

from mqcontract.capabilities import Capabilities, PayloadFidelity, PushKind, RequeuePosition
from mqcontract.config import MessagingConfig, PgmqConfig
from mqcontract.errors import (
    BackendUnavailable,
    ConnectionLost,
    MessageNotFound,
    MessagingError,
    ProviderClosed,
    QueueNotFound,
)
from mqcontract.messages import QueuedMessage
from mqcontract.providers.pgmq import _sql
from mqcontract.providers.pgmq._errors import PROVIDER, never_executed, translate
from mqcontract.providers.pgmq._lane import PoolLane
from mqcontract.providers.pgmq._listener import PgmqListener
from mqcontract.providers.pgmq._payload import decode, encode, envelope
from mqcontract.service import BaseMessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract.validation import (
    check_delay,
    check_limit,
    check_payload,
    check_queue_name,
    check_visibility_timeout,
    is_message_id,
)

__all__ = ["PgmqMessagingService", "open_pgmq"]

T = TypeVar("T")

#: Connection attempts are bounded by this (and by the operation timeout, if smaller).
CONNECT_TIMEOUT = 10.0
#: Tries of one statement across connection failures (see ``_run``).
_MAX_ATTEMPTS = 3
#: ``msg_id`` is a ``bigint``: other values name no message (and asyncpg would refuse
#: them, or truncate a float).
_BIGINT = range(-(2**63), 2**63)


def _storable_id(msg_id: object) -> bool:
    return is_message_id(msg_id) and msg_id in _BIGINT


class PgmqMessagingService(BaseMessagingService):
    """PGMQ queues on PostgreSQL; open it with :func:`open_pgmq`."""

    provider_name = PROVIDER

    def __init__(
        self, pool: Any, *, config: PgmqConfig, operation_timeout: float, application_name: str
    ) -> None:
        self._pool = pool
        self._lane = PoolLane(pool)
        self._config = config
        self._dsn = config.database_url
        self._timeout = operation_timeout
        self._closed = False
        #: ``application_name`` of the pool's connections (the listener's adds ``-listen``).
        self.application_name = application_name
        self._subscriptions: set[QueueSubscription] = set()
        self._listener = PgmqListener(
            self._connect_listener,
            health_interval=max(config.fallback_polling_interval_seconds, 1.0),
            health_timeout=min(operation_timeout, CONNECT_TIMEOUT),
        )
        threshold = _sql.effective_threshold(config.push_threshold_bytes)
        self._capabilities = Capabilities(
            push=PushKind.MIXED if threshold > 0 else PushKind.SIGNAL,
            push_payload_threshold_bytes=threshold if threshold > 0 else None,
            pushed_messages_claimed=False,
            fetch_by_id=True,
            requires_fallback_polling=True,
            fallback_polling_interval=config.fallback_polling_interval_seconds,
            delay=True,
            visibility_precision_seconds=0.001,
            requeue_position=RequeuePosition.ORIGINAL,
            exact_receive_count=True,
            fifo=True,
            payload_fidelity=PayloadFidelity.JSON_VALUE,
            max_message_size_bytes=config.max_message_size_bytes,
            list_queues=True,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- introspection for harnesses and reports ---------------------------------------

    @property
    def listener(self) -> PgmqListener:
        """The push listener (``backend_pid``, ``reconnects``, ``disconnects``)."""
        return self._listener

    @property
    def listener_backend_pid(self) -> int | None:
        """Server pid of the LISTEN connection (None before the first subscribe)."""
        return self._listener.backend_pid

    @property
    def listener_reconnects(self) -> int:
        """How often the listener re-established its connection."""
        return self._listener.reconnects

    # -- plumbing ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ProviderClosed(self.provider_name)

    async def _connect_listener(self) -> Any:
        return await asyncpg.connect(
            self._dsn,
            timeout=min(self._timeout, CONNECT_TIMEOUT),
            command_timeout=self._timeout,
            server_settings={"application_name": f"{self.application_name}-listen"},
        )

    async def _run(
        self,
        operation: str,
        queue: str,
        work: Callable[[Any], Awaitable[T]],
        *,
        idempotent: bool,
        single: bool = False,
    ) -> T:
        """Run ``work`` on a connection (see ``_lane``), translating errors; retry when safe.

        After a connection failure every pool connection is expired (a server restart or
        a mass termination kills them all) and the statement is retried on a fresh one if
        it certainly did not run or is ``idempotent``; otherwise ``ConnectionLost``.

        ``single``: ``work`` is one statement (two at most, for a payload ``jsonb``
        refused), each bounded by the pool's ``command_timeout``. On the kept connection
        nothing else can wait, so the ``asyncio.timeout`` around it is skipped: its timer
        cost as much client CPU as the rest of the provider's own work per call.
        """
        self._check_open()
        attempt = 0
        while True:
            attempt += 1
            try:
                if single and self._lane.ready:
                    async with self._lane.connection() as conn:
                        return await work(conn)
                async with asyncio.timeout(self._timeout):
                    async with self._lane.connection() as conn:
                        return await work(conn)
            except MessagingError:
                raise
            except Exception as exc:
                if self._closed:
                    raise ProviderClosed(self.provider_name) from exc
                error = translate(
                    exc, target=self._dsn, queue=queue, operation=operation, timeout=self._timeout
                )
                if not isinstance(error, ConnectionLost):
                    raise error from exc
                await self._pool.expire_connections()
                retry = idempotent or never_executed(exc)
                if not retry or attempt >= _MAX_ATTEMPTS:
                    raise error from exc

    # -- lifecycle ---------------------------------------------------------------------

    async def create_queue(self, name: str) -> None:
        self._check_open()
        check_queue_name(name)

        async def work(conn: Any) -> None:
            async with conn.transaction():
                # pgmq.create holds the queue's advisory lock until commit, which also
                # serializes concurrent trigger installs.
                await conn.execute(_sql.CREATE, name)
                await self._ensure_trigger(conn, name)

        await self._run("create_queue", name, work, idempotent=True)

    async def install_notify_trigger(self, name: str) -> None:
        """Install (or refresh) our notify trigger on an existing queue, e.g. one made by
        ``SELECT pgmq.create(...)``; ``subscribe`` does this on its own when it is missing."""
        self._check_open()
        check_queue_name(name)

        async def work(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(_sql.QUEUE_LOCK, name)
                await self._ensure_trigger(conn, name)

        await self._run("install_notify_trigger", name, work, idempotent=True)

    async def _ensure_trigger(self, conn: Any, name: str) -> None:
        row = await conn.fetchrow(_sql.QUEUE_TRIGGERS, [name])
        if row is None:
            raise QueueNotFound(name)
        if row["args"] != _sql.trigger_args(self._config.push_threshold_bytes):
            await conn.execute(_sql.create_trigger(name, self._config.push_threshold_bytes))

    async def delete_queue(self, name: str) -> None:
        self._check_open()
        check_queue_name(name)

        async def work(conn: Any) -> None:
            await conn.execute(_sql.DROP, name)  # false (no error) when it is missing

        await self._run("delete_queue", name, work, idempotent=True)

    async def queue_exists(self, name: str) -> bool:
        self._check_open()
        check_queue_name(name)

        async def work(conn: Any) -> bool:
            return bool(await conn.fetchval(_sql.EXISTS, name))

        return await self._run("queue_exists", name, work, idempotent=True)

    async def list_queues(self) -> list[str]:
        self._check_open()

        async def work(conn: Any) -> list[str]:
            return sorted(str(r[0]) for r in await conn.fetch(_sql.LIST))

        return await self._run("list_queues", "", work, idempotent=True)

    # -- sending -----------------------------------------------------------------------

    async def _send(self, queue: str, payload: bytes, delay: float | None) -> int:
        text = encode(payload)

        async def work(conn: Any) -> int:
            try:
                return await self._insert(conn, queue, text, delay)
            except pgerr.DataError:
                # jsonb refused what Python's json accepted (e.g. numeric overflow).
                if text.startswith('{"$mqcontract_b64"'):
                    raise
                return await self._insert(conn, queue, envelope(payload), delay)

        return await self._run("send_message", queue, work, idempotent=False, single=True)

    @staticmethod
    async def _insert(conn: Any, queue: str, text: str, delay: float | None) -> int:
        if delay is None:
            return int(await conn.fetchval(_sql.SEND, queue, text))
        return int(await conn.fetchval(_sql.SEND_DELAYED, queue, text, delay))

    async def send_message(self, queue: str, payload: bytes) -> int:
        self._check_open()
        check_queue_name(queue)
        data = check_payload(queue, payload, self._capabilities)
        return await self._send(queue, data, None)

    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int:
        self._check_open()
        check_queue_name(queue)
        data = check_payload(queue, payload, self._capabilities)
        delay = check_delay(queue, delay_seconds, self._capabilities)
        return await self._send(queue, data, delay)

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        self._check_open()
        check_queue_name(queue)
        checked = [check_payload(queue, p, self._capabilities) for p in payloads]
        texts = [encode(p) for p in checked]
        sql = _sql.queue_sql(queue)

        async def work(conn: Any) -> list[int]:
            if not texts:
                await conn.execute(sql.empty_check)  # QueueNotFound for a missing queue
                return []
            try:
                rows = await conn.fetch(_sql.SEND_BATCH, queue, texts)
            except pgerr.DataError:
                for i, text in enumerate(texts):
                    try:
                        await conn.fetchval(_sql.PROBE_JSONB, text)
                    except pgerr.DataError:
                        texts[i] = envelope(checked[i])
                rows = await conn.fetch(_sql.SEND_BATCH, queue, texts)
            # One INSERT ... SELECT unnest(...) assigns ids in array order.
            return sorted(int(r[0]) for r in rows)

        return await self._run("send_batch", queue, work, idempotent=False)

    # -- receiving ---------------------------------------------------------------------

    @staticmethod
    def _message(queue: str, row: Any) -> QueuedMessage:
        return QueuedMessage(
            msg_id=int(row["msg_id"]),
            queue_name=queue,
            payload=decode(row["message"]),
            receive_count=int(row["read_ct"]),
            enqueued_at=float(row["enqueued_at"]),
        )

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        self._check_open()
        check_queue_name(queue)
        check_limit(queue, limit, self._capabilities)
        vt = check_visibility_timeout(queue, visibility_timeout, self._capabilities)
        sql = _sql.queue_sql(queue).receive

        async def work(conn: Any) -> list[QueuedMessage]:
            rows = await conn.fetch(sql, limit, vt)
            return sorted((self._message(queue, r) for r in rows), key=lambda m: m.msg_id)

        # A retry after a lost response can only strand claims until their timeout.
        return await self._run("receive_messages", queue, work, idempotent=True, single=True)

    async def fetch_message(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        self._check_open()
        check_queue_name(queue)
        vt = check_visibility_timeout(queue, visibility_timeout, self._capabilities)
        if not _storable_id(msg_id):
            return None
        sql = _sql.queue_sql(queue).fetch

        async def work(conn: Any) -> QueuedMessage | None:
            row = await conn.fetchrow(sql, msg_id, vt)
            return None if row is None else self._message(queue, row)

        return await self._run("fetch_message", queue, work, idempotent=True, single=True)

    async def ack_message(self, queue: str, msg_id: int) -> None:
        self._check_open()
        check_queue_name(queue)
        if not _storable_id(msg_id):
            raise MessageNotFound(queue, msg_id)
        sqls = _sql.queue_sql(queue)
        sql = sqls.ack_archive if self._config.archive_on_ack else sqls.ack_delete

        async def work(conn: Any) -> bool:
            return await conn.fetchval(sql, msg_id) is not None

        # Retried after a lost connection: deleting twice deletes once. Without the retry
        # an ack cut off mid-statement (rolled back) left the message held, and it was
        # processed again after its timeout; with it, the worst case is MessageNotFound
        # for an ack whose first attempt did commit.
        if not await self._run("ack_message", queue, work, idempotent=True, single=True):
            raise MessageNotFound(queue, msg_id)

    async def nack_message(self, queue: str, msg_id: int) -> None:
        self._check_open()
        check_queue_name(queue)
        if not _storable_id(msg_id):
            raise MessageNotFound(queue, msg_id)
        sql = _sql.queue_sql(queue).nack
        threshold = self._config.push_threshold_bytes

        async def work(conn: Any) -> bool:
            return await conn.fetchval(sql, msg_id, threshold) is not None

        if not await self._run("nack_message", queue, work, idempotent=False, single=True):
            raise MessageNotFound(queue, msg_id)

    # -- push --------------------------------------------------------------------------

    async def subscribe_many(self, queues: Sequence[str]) -> QueueSubscription:
        self._check_open()
        names = tuple(dict.fromkeys(check_queue_name(q) for q in queues))

        async def work(conn: Any) -> list[str]:
            rows = {
                r["queue"]: r["args"] for r in await conn.fetch(_sql.QUEUE_TRIGGERS, list(names))
            }
            for name in names:
                if name not in rows:
                    raise QueueNotFound(name)
            return [n for n in names if rows[n] is None]

        for name in await self._run("subscribe", ",".join(names), work, idempotent=True):
            await self.install_notify_trigger(name)  # a queue made by another PGMQ client

        subscription = QueueSubscription(names, on_close=self._unsubscribe)
        if names:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._listener.add(subscription)
            except Exception as exc:
                error = translate(
                    exc,
                    target=self._dsn,
                    operation="subscribe",
                    timeout=self._timeout,
                    connecting=True,
                )
                raise error from exc
        self._subscriptions.add(subscription)
        return subscription

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        self._subscriptions.discard(subscription)
        await self._listener.remove(subscription)

    # -- close -------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Listener first: closing the subscriptions then needs no UNLISTEN round trips.
        await self._listener.close()
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        try:
            async with asyncio.timeout(min(self._timeout, CONNECT_TIMEOUT)):
                await self._lane.close()
                await self._pool.close()
        except Exception:
            self._pool.terminate()


async def _keep_session(conn: Any) -> None:
    """Pool release without asyncpg's default reset query (a second round trip per call).

    The provider leaves no session state behind: no SET, no session advisory locks, no
    cursors, no LISTEN (the listener has a connection of its own). asyncpg still rolls
    back a transaction left open and drops listeners before this runs.
    """


async def open_pgmq(config: MessagingConfig) -> PgmqMessagingService:
    """Provider factory for the ``pgmq`` entry point: a connected service.

    PGMQ and mqcontract's notify function must be installed (``mqcontract pgmq install``
    or :func:`mqcontract.providers.pgmq.install_pgmq`); otherwise ``BackendUnavailable``.
    """
    pg = config.pgmq
    timeout = config.operation_timeout_seconds
    application_name = f"mqcontract-pgmq-{secrets.token_hex(4)}"
    try:
        async with asyncio.timeout(min(timeout, CONNECT_TIMEOUT) + 1.0):
            pool = await asyncpg.create_pool(
                pg.database_url,
                min_size=min(pg.pool_min_size, max(pg.pool_max_size, 1)),
                max_size=max(pg.pool_max_size, 1),
                timeout=min(timeout, CONNECT_TIMEOUT),
                command_timeout=timeout,
                server_settings={"application_name": application_name},
                reset=_keep_session,
            )
    except Exception as exc:
        error = translate(
            exc, target=pg.database_url, operation="connect", timeout=timeout, connecting=True
        )
        if not isinstance(error, BackendUnavailable):
            error = BackendUnavailable(PROVIDER, pg.database_url, str(error))
        raise error from exc
    try:
        async with asyncio.timeout(timeout):
            row = await pool.fetchrow(_sql.INSTALLED)
    except Exception as exc:
        pool.terminate()
        raise translate(exc, target=pg.database_url, operation="connect", timeout=timeout) from exc
    if not (row["pgmq"] and row["notify"]):
        pool.terminate()
        missing = " and ".join(
            name
            for name, present in (
                ("PGMQ (schema pgmq)", row["pgmq"]),
                ("mqcontract's notify function (schema mqcontract)", row["notify"]),
            )
            if not present
        )
        raise BackendUnavailable(
            PROVIDER,
            pg.database_url,
            f"{missing} missing from this database; "
            f"run `mqcontract pgmq install --dsn {pg.database_url}` (idempotent)",  # redacted
        )
    return PgmqMessagingService(
        pool, config=pg, operation_timeout=timeout, application_name=application_name
    )
