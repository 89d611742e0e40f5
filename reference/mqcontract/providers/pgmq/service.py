"""``PgmqMessagingService``: the contract on PGMQ (PostgreSQL) with asyncpg.

* One asyncpg pool for operations, one of its connections kept for operations that run
  one at a time (``_lane``); one dedicated connection for LISTEN (``_listener``).
* Queues are PGMQ queues (``pgmq.create``/``pgmq.drop_queue``/``pgmq.meta``) plus our
  ``AFTER INSERT`` trigger that NOTIFYs ``mqcontract_<queue>``, so every producer (``psql``,
  other PGMQ clients) is announced. A queue exists while ``pgmq.meta`` lists it and its
  table is there: one whose table was dropped from outside is missing to every operation,
  ``queue_exists`` and ``list_queues`` too; ``delete_queue`` removes what is left of it.
* Claims (receive, fetch), ack and nack are our own SQL (``_sql``): sub-second visibility.
  A claim's token carries the row's ``read_ct`` at claim time and its ``enqueued_at``;
  ack and nack succeed only while the row still has both and is invisible, checked in
  the statement that changes it, so a lapsed claim, one superseded by any PGMQ client's
  read, or one made before its queue was deleted and created again (ids restart) settles
  nothing (``_settle``).
* Payloads follow ``_payload`` (JSON stored natively, other bytes in a base64 envelope).
* Connection failures: a statement that certainly did not run, or an idempotent one, is
  retried on a fresh pool connection (``_runner``); otherwise ``ConnectionLost`` is
  raised. Either way the pool replaces dead connections, so the next operation works.
* ``subscribe`` makes sure every queue's notify trigger exists and fires (it reads
  ``pg_trigger.tgenabled`` in the query that checks the queues exist) and restores one
  that was dropped or disabled from outside, in one round trip per broken queue; when
  that is not allowed it raises ``NotifyTriggerUnavailable`` naming the queue.
* Partitioned queues (``pgmq.create_partitioned``, range partitions by ``msg_id``): the
  trigger on the parent is cloned onto every partition and the notify function names the
  queue after the partition root, so push, claims and settlement work as on a plain
  queue. A clone disabled on one partition counts as the trigger not firing.
* Listener health: ``listener_health`` is a read-only snapshot (``ListenerHealth``):
  ``connected``, ``backend_pid``, ``reconnecting``, ``connected_at``/``disconnected_at``
  (epoch seconds of the last (re)connect / loss), ``disconnects``, ``reconnects`` and
  the queues it LISTENs to.
* Arguments are checked and the closed state guarded by ``BaseMessagingService``;
  asyncpg's exceptions become mqcontract errors through one table (``_errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
from asyncpg import exceptions as pgerr

from mqcontract._builders import build_claim, build_message
from mqcontract.capabilities import Capabilities, PayloadFidelity, PushKind, RequeuePosition
from mqcontract.config import PgmqConfig
from mqcontract.errors import QueueNotFound, StaleClaim, StaleReason
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.pgmq import _sql
from mqcontract.providers.pgmq._errors import (
    ERRORS,
    PROVIDER,
    NotifyTriggerUnavailable,
    is_connection_error,
)
from mqcontract.providers.pgmq._listener import ListenerHealth, PgmqListener
from mqcontract.providers.pgmq._payload import decode, encode, envelope
from mqcontract.providers.pgmq._runner import StatementRunner
from mqcontract.providers.pgmq._settle import (
    READ_BITS,
    claim_key,
    settled_flags,
    stale_reason,
    storable_id,
)
from mqcontract.service import BaseMessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract.validation import check_queue_name

__all__ = ["CONNECT_TIMEOUT", "PgmqMessagingService"]

T = TypeVar("T")

#: Connection attempts are bounded by this (and by the operation timeout, if smaller).
CONNECT_TIMEOUT = 10.0


class PgmqMessagingService(BaseMessagingService):
    """PGMQ queues on PostgreSQL; open it with :func:`~mqcontract.providers.pgmq.open_pgmq`."""

    provider_name = PROVIDER
    error_table = ERRORS

    def __init__(
        self,
        pool: Any,
        *,
        config: PgmqConfig,
        operation_timeout: float,
        application_name: str,
        notify_current: bool = True,
    ) -> None:
        self._pool = pool
        #: False: the database keeps an older notify function (not ours to replace), which
        #: announces a partitioned queue's messages under a partition's name.
        self._notify_current = notify_current
        self._config = config
        self._target = config.database_url
        self._operation_timeout = operation_timeout
        self._closed = False
        self._statements = StatementRunner(
            pool, timeout=operation_timeout, is_closed=lambda: self._closed
        )
        #: ``application_name`` of the pool's connections (the listener's adds ``-listen``).
        self.application_name = application_name
        self._subscriptions: set[QueueSubscription] = set()
        self._listener = PgmqListener(
            self._connect_listener,
            health_interval=max(config.fallback_polling_interval_seconds, 1.0),
            health_timeout=min(operation_timeout, CONNECT_TIMEOUT),
            # The health check restores a subscribed queue's notify trigger that went
            # missing (the queue deleted and created again by another PGMQ client).
            repair_trigger=self.install_notify_trigger,
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

    @property
    def listener_health(self) -> ListenerHealth:
        """A snapshot of the LISTEN connection: up or not, since when, how often lost."""
        return self._listener.health()

    # -- plumbing ----------------------------------------------------------------------

    async def _connect_listener(self) -> Any:
        return await asyncpg.connect(
            self._target,
            timeout=min(self._operation_timeout, CONNECT_TIMEOUT),
            command_timeout=self._operation_timeout,
            server_settings={"application_name": f"{self.application_name}-listen"},
        )

    def _run(
        self, work: Callable[[Any], Awaitable[T]], *, idempotent: bool, single: bool = False
    ) -> Awaitable[T]:
        return self._statements.run(work, idempotent=idempotent, single=single)

    # -- lifecycle ---------------------------------------------------------------------

    async def _create_queue(self, name: str) -> None:
        async def work(conn: Any) -> None:
            async with conn.transaction():
                # pgmq.create holds the queue's advisory lock until commit, which also
                # serializes concurrent trigger installs.
                await conn.execute(_sql.CREATE, name)
                await self._ensure_trigger(conn, name)

        await self._run(work, idempotent=True)

    async def install_notify_trigger(self, name: str) -> None:
        """Install (or refresh) our notify trigger on an existing queue, e.g. one made by
        ``SELECT pgmq.create(...)``; ``subscribe`` does this on its own when it is missing."""
        self._check_open()
        queue = check_queue_name(name)
        await self._translated("install_notify_trigger", queue, self._install_trigger(queue))

    async def _install_trigger(self, name: str) -> None:
        async def work(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(_sql.QUEUE_LOCK, name)
                await self._ensure_trigger(conn, name)

        await self._run(work, idempotent=True)

    async def _ensure_trigger(self, conn: Any, name: str) -> None:
        row = await conn.fetchrow(_sql.QUEUE_TRIGGERS, [name])
        if row is None:
            raise QueueNotFound(name)
        if row["args"] != _sql.trigger_args(self._config.push_threshold_bytes):
            await conn.execute(_sql.create_trigger(name, self._config.push_threshold_bytes))
        if row["args"] is not None and not _sql.trigger_fires(row["enabled"]):
            await conn.execute(f"ALTER TABLE pgmq.q_{name} ENABLE TRIGGER {_sql.TRIGGER_NAME}")

    async def _delete_queue(self, name: str) -> None:
        async def work(conn: Any) -> None:
            async with conn.transaction():
                if await conn.fetchval(_sql.DROP, name) or not await conn.fetchval(
                    _sql.LISTED, name
                ):
                    return  # dropped, or missing altogether
                # Listed with its table dropped from outside: pgmq.drop_queue removes
                # nothing then, and the queue would stay listed for good. Given its table
                # back, it removes everything it knows of (archive, meta row, partman
                # configuration) as for any queue.
                await conn.execute(_sql.CREATE, name)
                await conn.execute(_sql.DROP, name)

        await self._run(work, idempotent=True)

    async def _queue_exists(self, name: str) -> bool:
        async def work(conn: Any) -> bool:
            return bool(await conn.fetchval(_sql.EXISTS, name))

        return await self._run(work, idempotent=True)

    async def _list_queues(self) -> list[str]:
        async def work(conn: Any) -> list[str]:
            return sorted(str(r[0]) for r in await conn.fetch(_sql.LIST))

        return await self._run(work, idempotent=True)

    # -- sending -----------------------------------------------------------------------

    async def _send(self, queue: str, payload: bytes) -> int:
        return await self._insert(queue, payload, None)

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        return await self._insert(queue, payload, delay_seconds)

    async def _insert(self, queue: str, payload: bytes, delay: float | None) -> int:
        text = encode(payload)
        sqls = _sql.queue_sql(queue)
        sql, args = (sqls.send, ()) if delay is None else (sqls.send_delayed, (delay,))

        async def work(conn: Any) -> int:
            try:
                return int(await conn.fetchval(sql, text, *args))
            except pgerr.DataError:
                # jsonb refused what Python's json accepted (e.g. numeric overflow).
                if text.startswith('{"$mqcontract_b64"'):
                    raise
                return int(await conn.fetchval(sql, envelope(payload), *args))

        return await self._run(work, idempotent=False, single=True)

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        texts = [encode(p) for p in payloads]
        sql = _sql.queue_sql(queue)

        async def work(conn: Any) -> list[int]:
            if not texts:
                await conn.execute(sql.empty_check)  # QueueNotFound for a missing queue
                return []
            try:
                rows = await conn.fetch(sql.send_batch, texts)
            except pgerr.DataError:
                for i, text in enumerate(texts):
                    try:
                        await conn.fetchval(_sql.PROBE_JSONB, text)
                    except pgerr.DataError:
                        texts[i] = envelope(payloads[i])
                rows = await conn.fetch(sql.send_batch, texts)
            return sorted(int(r[0]) for r in rows)

        return await self._run(work, idempotent=False)

    # -- receiving ---------------------------------------------------------------------

    @staticmethod
    def _message(queue: str, row: Any, visibility_timeout: float) -> QueuedMessage:
        msg_id = int(row["msg_id"])
        read_ct = int(row["read_ct"])
        enqueued_us: int = row["enqueued_us"]  # a bigint: asyncpg gives an int
        return build_message(
            msg_id,
            queue,
            decode(row["message"]),
            read_ct,
            enqueued_us / 1_000_000,
            # claim_token(read_ct, enqueued_us), inlined: this runs per received message.
            build_claim(queue, msg_id, (enqueued_us << READ_BITS) | read_ct, visibility_timeout),
        )

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        sql = _sql.queue_sql(queue).receive

        async def work(conn: Any) -> list[QueuedMessage]:
            rows = await conn.fetch(sql, limit, visibility_timeout)
            got = (self._message(queue, r, visibility_timeout) for r in rows)
            return sorted(got, key=lambda m: m.msg_id)

        # A retry after a lost response can only strand claims until their timeout.
        return await self._run(work, idempotent=True, single=True)

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        if not storable_id(msg_id):
            return None
        sql = _sql.queue_sql(queue).fetch

        async def work(conn: Any) -> QueuedMessage | None:
            row = await conn.fetchrow(sql, msg_id, visibility_timeout)
            return None if row is None else self._message(queue, row, visibility_timeout)

        return await self._run(work, idempotent=True, single=True)

    async def _ack(self, queue: str, claim: Claim) -> None:
        sqls = _sql.queue_sql(queue)
        sql = sqls.ack_archive if self._config.archive_on_ack else sqls.ack_delete
        key = claim_key(claim)

        async def work(conn: Any) -> StaleReason | None:
            if key is not None and await conn.fetchval(sql, *key) is not None:
                return None
            return await stale_reason(conn, sqls, claim)

        # Retried after a lost connection: deleting twice deletes once. Without the retry
        # an ack cut off mid-statement (rolled back) left the message held, and it was
        # processed again after its timeout; with it, the worst case is StaleClaim
        # (settled) for an ack whose first attempt did commit.
        reason = await self._run(work, idempotent=True, single=True)
        if reason is not None:
            raise StaleClaim(queue, claim.msg_id, reason)

    async def _nack(self, queue: str, claim: Claim) -> None:
        sqls = _sql.queue_sql(queue)
        threshold = self._config.push_threshold_bytes
        key = claim_key(claim)

        async def work(conn: Any) -> StaleReason | None:
            if key is not None and await conn.fetchval(sqls.nack, *key, threshold) is not None:
                return None
            return await stale_reason(conn, sqls, claim)

        reason = await self._run(work, idempotent=False, single=True)
        if reason is not None:
            raise StaleClaim(queue, claim.msg_id, reason)

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        sqls = _sql.queue_sql(queue)
        sql = sqls.ack_many_archive if self._config.archive_on_ack else sqls.ack_many_delete
        keys = [claim_key(c) for c in claims]
        ids = [k[0] for k in keys if k is not None]
        reads = [k[1] for k in keys if k is not None]
        enqueued = [k[2] for k in keys if k is not None]

        async def work(conn: Any) -> list[Any]:
            if not ids:
                await conn.execute(sqls.empty_check)  # QueueNotFound for a missing queue
                return []
            return list(await conn.fetch(sql, ids, reads, enqueued))

        # One statement for the whole batch; retried like a single ack.
        return settled_flags(keys, await self._run(work, idempotent=True, single=True))

    # -- push --------------------------------------------------------------------------

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        async def work(conn: Any) -> list[tuple[str, str | None]]:
            rows = {r["queue"]: r for r in await conn.fetch(_sql.QUEUE_TRIGGERS, list(names))}
            for name in names:
                if name not in rows:
                    raise QueueNotFound(name)
                if rows[name]["partitioned"] and not self._notify_current:
                    raise NotifyTriggerUnavailable(
                        name,
                        "partitioned, and this database's notify function predates"
                        " partitioned queues; run `mqcontract pgmq install` as its owner",
                    )
            # Missing (a queue made by another PGMQ client, or dropped from outside) or
            # not firing (disabled from outside): push would silently stay off.
            return [
                (n, rows[n]["enabled"])
                for n in names
                if rows[n]["args"] is None or not _sql.trigger_fires(rows[n]["enabled"])
            ]

        subscription = QueueSubscription(names, on_close=self._unsubscribe)

        async def listen() -> None:
            if names:
                async with asyncio.timeout(self._operation_timeout):
                    # The listener's first connection: failing it means unavailable.
                    listening = self._listener.add(subscription)
                    await self._translated("subscribe", "", listening, connecting=True)

        # The trigger check and the LISTEN go together (a consumer's start waits for one
        # round trip, not two). Whatever ends it early (a failed check, a failed LISTEN,
        # a trigger not restored, the caller cancelled) takes the registration back.
        try:
            checked, listened = await asyncio.gather(
                self._run(work, idempotent=True, single=True), listen(), return_exceptions=True
            )
            if isinstance(checked, BaseException):
                raise checked
            if isinstance(listened, BaseException):
                raise listened
            for name, enabled in sorted(checked):
                await self._restore_trigger(name, enabled)
        except BaseException:
            if names:
                await self._forget(subscription)
            raise
        self._subscriptions.add(subscription)
        return subscription

    async def _forget(self, subscription: QueueSubscription) -> None:
        """Take back a registration ``_subscribe`` did not finish (bounded, best effort:
        ``remove`` is idempotent, and its UNLISTEN must not hang a failing subscribe)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._operation_timeout):
                await asyncio.shield(self._listener.remove(subscription))

    async def _restore_trigger(self, name: str, enabled: str | None) -> None:
        """Make ``name``'s notify trigger exist and fire again (one round trip), or raise
        :class:`NotifyTriggerUnavailable` naming the queue."""
        script = _sql.restore_trigger(
            name, self._config.push_threshold_bytes, create=enabled is None
        )

        async def work(conn: Any) -> None:
            await conn.execute(script)

        try:
            await self._run(work, idempotent=True)
        except pgerr.UndefinedTableError:
            raise QueueNotFound(name) from None  # dropped meanwhile
        except asyncpg.PostgresError as exc:
            if is_connection_error(exc):
                raise
            state = "missing" if enabled is None else f"disabled (tgenabled {enabled!r})"
            raise NotifyTriggerUnavailable(
                name, f"{state} and could not be restored: {exc.sqlstate} {exc}"
            ) from exc

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
        await self._statements.close(min(self._operation_timeout, CONNECT_TIMEOUT))
