"""The Redis Streams provider: mqcontract's protocol on streams and one consumer group.

How the contract maps onto Redis (the scripts in :mod:`._scripts` hold the details):

* **Queues.** A stream with the consumer group ``mqcontract``, plus a few keys beside it
  (:mod:`._keys`); the queue registry is a set, so ``list_queues`` and the existence
  check every operation makes are one command. Names are checked before Redis sees them.
* **Ids.** An ``INCR`` counter per queue, stored in the entry; a hash maps msg_id to the
  stream entry id. Assigned inside the send script, so they increase in send order, and
  never by a producer (``producer_assigned_ids=False``): no two messages share an id.
* **Receive.** One script: promote due delayed messages, reclaim released or expired
  entries (``XCLAIM``, found through an index, never a scan), read unread ones
  (``XREADGROUP``), set each claim's deadline.
  Reclaimed entries precede every unread one in the stream, so a redelivered message
  keeps its original position and the whole reply is oldest first.
* **receive_count.** The pending entry's delivery count: exact.
* **Visibility.** Per claim, to the millisecond, on the server's clock (see :mod:`._scripts`).
* **Claims.** Each claim's token is the pending entry's delivery count as that claim
  made it. Ack (``XACK`` + ``XDEL``) and nack (reclaimable at once) settle a claim only
  while its entry is pending with that count and its deadline has not passed, checked in
  the script that acts; any other claim is ``StaleClaim`` saying why, and changes
  nothing. ``ack_claims`` settles a whole batch in one script call.
* **Delay.** A sorted set scored by due time, promoted into the stream by the next
  receive (or push round) after the message is due.
* **Push.** Full, claimed messages from a claim loop per subscription (:mod:`._push`).
* **Not offered.** Fetch by id: a consumer group can only hand out unread entries in
  order, so one specific unread message cannot be claimed without breaking that order.
* **Connections.** redis-py's blocking pool of at most ``max_connections``: a call
  beyond it waits for a free connection within its operation bound (the default pool
  raised ``Too many connections`` at once, a spurious outage under a burst of calls).
  A broken connection is replaced on next use. A
  command that fails with the connection is not retried (a send might enqueue twice):
  it raises ``ConnectionLost`` and the next call works again.
* **Checks and errors.** ``BaseMessagingService`` checks every argument and the closed
  state before an operation here runs, and applies the error table of :mod:`._errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Sequence
from typing import Any

from mqcontract.capabilities import Capabilities, PayloadFidelity, PushKind, RequeuePosition
from mqcontract.config import MessagingConfig
from mqcontract.errors import (
    BackendUnavailable,
    ConfigurationError,
    InvalidArgument,
    QueueNotFound,
    StaleClaim,
    StaleReason,
)
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.service import BaseMessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract.validation import check_queue_name
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mqcontract_redis_streams import _scripts
from mqcontract_redis_streams._config import PROVIDER_NAME, RedisStreamsConfig, load_settings
from mqcontract_redis_streams._errors import ERRORS
from mqcontract_redis_streams._keys import QueueKeys, registry_key
from mqcontract_redis_streams._push import ClaimResult, PushLoop

__all__ = ["RedisStreamsMessagingService", "connect_redis_streams", "open_redis_streams"]

#: The oldest server the scripts are written for (from 7.0, XCLAIM drops a pending entry
#: whose message was deleted instead of returning a hole).
MIN_SERVER_VERSION = (7, 0)


def make_client(settings: RedisStreamsConfig, name: str) -> Redis:
    """A redis-py client that never retries a command on its own (see module docstring).

    It has no socket timeout: every call is bounded by ``asyncio.timeout`` instead. With
    a socket timeout redis-py sends through ``asyncio.wait_for``, which on Python 3.11
    can lose a cancellation of the calling task (CPython gh-86296), so a consumer being
    stopped would keep running.
    """
    try:
        pool = BlockingConnectionPool.from_url(
            settings.url,
            max_connections=settings.max_connections,
            timeout=None,  # the caller's operation bound ends the wait
            client_name=name,
            socket_timeout=None,
            socket_connect_timeout=settings.connect_timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
    except ValueError as exc:
        raise ConfigurationError(f"providers.{PROVIDER_NAME}.url", "(hidden)", str(exc)) from None
    return Redis.from_pool(pool)


def _may_be_stored(msg_id: object) -> bool:
    """Whether ``msg_id`` could be an id ``INCR`` handed out (an int in 1..2**63-1)."""
    return isinstance(msg_id, int) and not isinstance(msg_id, bool) and 0 < msg_id < 2**63


def _claim_args(claim: Claim) -> list[str]:
    """The script's msg_id and token for ``claim``; ``"", "0"`` (not held: no claim this
    provider made) for an id ``INCR`` cannot have made or a token that is no delivery
    count, so neither can name another message or be misread by Lua's numbers."""
    token = claim.token
    if (
        not _may_be_stored(claim.msg_id)
        or not isinstance(token, int)
        or isinstance(token, bool)
        or not 0 < token < 2**53
    ):
        return ["", "0"]
    return [str(claim.msg_id), str(token)]


#: The SETTLE script's codes for a stale claim.
_STALE = {
    _scripts.LAPSED: StaleReason.LAPSED,
    _scripts.SUPERSEDED: StaleReason.SUPERSEDED,
    _scripts.GONE: StaleReason.SETTLED,
    _scripts.NOT_HELD: StaleReason.NOT_HELD,
}


class RedisStreamsMessagingService(BaseMessagingService):
    """Queues as Redis streams; see the module docstring."""

    provider_name = PROVIDER_NAME
    error_table = ERRORS

    def __init__(
        self,
        settings: RedisStreamsConfig,
        client: Redis,
        *,
        operation_timeout: float,
        client_name: str,
        server_version: str = "",
    ) -> None:
        self.settings = settings
        self.client = client
        #: CLIENT SETNAME of the operation connections; push readers add ``-push``.
        self.client_name = client_name
        self.server_version = server_version
        self._target = settings.url
        self._operation_timeout = operation_timeout
        self._closed = False
        self._scripts = {
            name: client.register_script(source)
            for name, source in {
                "create": _scripts.CREATE,
                "delete": _scripts.DELETE,
                "send": _scripts.SEND,
                "receive": _scripts.RECEIVE,
                "settle": _scripts.SETTLE,
            }.items()
        }
        self._loops: dict[QueueSubscription, PushLoop] = {}
        self._pushed: dict[Claim, PushLoop] = {}
        self._capabilities = Capabilities(
            push=PushKind.FULL,
            pushed_messages_claimed=True,
            fetch_by_id=False,
            requires_fallback_polling=False,
            fallback_polling_interval=None,
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
        self.max_receive_limit = self._capabilities.max_receive_limit
        #: Idle time (ms) at which a claim has expired: the longest visibility timeout.
        self._hold_ms = int(self._capabilities.max_visibility_timeout_seconds * 1000)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- plumbing ----------------------------------------------------------------------

    def _keys(self, queue: str) -> list[str]:
        return QueueKeys.of(self.settings.key_prefix, queue).all()

    async def _script(self, name: str, queue: str, *args: Any) -> Any:
        async with asyncio.timeout(self._operation_timeout):
            return await self._scripts[name](keys=self._keys(queue), args=[queue, *args])

    def stream_key(self, queue: str) -> str:
        """The stream of ``queue`` (for push readers and tests)."""
        return QueueKeys.of(self.settings.key_prefix, queue).stream

    @property
    def _registry(self) -> str:
        return registry_key(self.settings.key_prefix)

    # -- lifecycle ---------------------------------------------------------------------

    async def _create_queue(self, name: str) -> None:
        await self._script("create", name)

    async def _delete_queue(self, name: str) -> None:
        await self._script("delete", name)

    async def _queue_exists(self, name: str) -> bool:
        async with asyncio.timeout(self._operation_timeout):
            return bool(await self.client.sismember(self._registry, name))

    async def _list_queues(self) -> list[str]:
        async with asyncio.timeout(self._operation_timeout):
            members = await self.client.smembers(self._registry)
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    # -- messages ----------------------------------------------------------------------

    async def _enqueue(self, queue: str, payloads: Sequence[bytes], delay: float) -> list[int]:
        delay_ms = math.ceil(delay * 1000)
        ids = await self._script("send", queue, delay_ms, *payloads)
        return [int(i) for i in ids]

    async def _send(self, queue: str, payload: bytes) -> int:
        (msg_id,) = await self._enqueue(queue, [payload], 0)
        return msg_id

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        (msg_id,) = await self._enqueue(queue, [payload], delay_seconds)
        return msg_id

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        return await self._enqueue(queue, payloads, 0)

    async def claim(self, queue: str, limit: int, visibility_timeout: float) -> ClaimResult:
        """Claim up to ``limit`` messages; also the last entry id and the next due delay."""
        self._check_open()
        return await self._translated(
            "receive", queue, self._claim(queue, limit, visibility_timeout)
        )

    async def _claim(self, queue: str, limit: int, visibility_timeout: float) -> ClaimResult:
        vt_ms = max(1, math.ceil(visibility_timeout * 1000))
        reply = await self._script("receive", queue, limit, vt_ms, self._hold_ms)
        last_id, due_ms = reply[0].decode(), int(reply[1])
        messages = []
        for i in range(2, len(reply), 4):
            msg_id, count = int(reply[i]), int(reply[i + 2])
            messages.append(
                QueuedMessage(
                    msg_id=msg_id,
                    queue_name=queue,
                    payload=bytes(reply[i + 1]),
                    receive_count=count,
                    enqueued_at=int(reply[i + 3]) / 1_000_000,
                    claim=Claim(queue, msg_id, count, visibility_timeout),
                )
            )
        return messages, last_id, (due_ms / 1000 if due_ms >= 0 else None)

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        messages, _, _ = await self._claim(queue, limit, visibility_timeout)
        return messages

    async def _settle(self, queue: str, claims: Sequence[Claim], mode: str) -> list[int]:
        """Settle ``claims`` in one script call; the script's code for each."""
        args = [arg for claim in claims for arg in _claim_args(claim)]
        codes = [int(c) for c in await self._script("settle", queue, self._hold_ms, mode, *args)]
        for claim, code in zip(claims, codes, strict=True):
            loop = self._pushed.pop(claim, None)
            if loop is not None:  # settled or stale, the loop no longer holds it
                loop.settled(claim, visible_again=mode == "nack" and code == _scripts.SETTLED_NOW)
        return codes

    async def _settle_one(self, queue: str, claim: Claim, mode: str) -> None:
        (code,) = await self._settle(queue, [claim], mode)
        if code != _scripts.SETTLED_NOW:
            raise StaleClaim(queue, claim.msg_id, _STALE[code])

    async def _ack(self, queue: str, claim: Claim) -> None:
        await self._settle_one(queue, claim, "ack")

    async def _nack(self, queue: str, claim: Claim) -> None:
        await self._settle_one(queue, claim, "nack")

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        codes = await self._settle(queue, claims, "ack")
        return [code == _scripts.SETTLED_NOW for code in codes]

    async def release(self, claim: Claim) -> None:
        """Hand back a pushed message the consumer never took: visible, delivery undone
        (only while ``claim`` still holds it)."""
        self._check_open()
        queue = claim.queue_name
        await self._translated("release", queue, self._settle(queue, [claim], "release"))

    async def stored_ids(self, queue: str) -> list[int]:
        """Backdoor for tests: every stored id on ``queue``, whatever its state."""
        self._check_open()
        keys = QueueKeys.of(self.settings.key_prefix, check_queue_name(queue))

        async def read() -> list[int]:
            async with asyncio.timeout(self._operation_timeout):
                entries: list[Any] = await self.client.xrange(keys.stream) or []
                delayed: list[Any] = await self.client.zrange(keys.delayed, 0, -1)
            return sorted([int(fields[b"id"]) for _, fields in entries] + [int(m) for m in delayed])

        return await self._translated("stored_ids", queue, read())

    # -- push --------------------------------------------------------------------------

    async def _subscribe(self, queues: tuple[str, ...]) -> QueueSubscription:
        if not queues:
            raise InvalidArgument("queues", [], "at least one queue name")
        async with asyncio.timeout(self._operation_timeout):
            found = await self.client.smismember(self._registry, list(queues))
        for name, present in zip(queues, found, strict=True):
            if not present:
                raise QueueNotFound(name)
        subscription = QueueSubscription(queues, on_close=self._unsubscribe)
        reader = make_client(self.settings, f"{self.client_name}-push")
        loop = PushLoop(self, subscription, self.settings, reader, timeout=self._operation_timeout)
        self._loops[subscription] = loop
        loop.start()
        return subscription

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        loop = self._loops.pop(subscription, None)
        if loop is not None:
            await loop.stop()

    @property
    def subscription_count(self) -> int:
        """Open subscriptions (each has a reader connection named ``<client_name>-push``)."""
        return len(self._loops)

    def track(self, claim: Claim, loop: PushLoop) -> None:
        self._pushed[claim] = loop

    def untrack(self, claim: Claim, loop: PushLoop) -> None:
        if self._pushed.get(claim) is loop:
            del self._pushed[claim]

    async def close(self) -> None:
        if self._closed:
            return
        for subscription in list(self._loops):
            await subscription.aclose()
        self._closed = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._operation_timeout):
                await self.client.aclose()


async def connect_redis_streams(
    settings: RedisStreamsConfig,
    *,
    operation_timeout: float = 30.0,
    client_name: str | None = None,
) -> RedisStreamsMessagingService:
    """Connect, check the server version, and return the service."""
    name = client_name or f"mqc-rs-{uuid.uuid4().hex[:12]}"
    client = make_client(settings, name)
    try:
        async with asyncio.timeout(settings.connect_timeout_seconds):
            info = await client.info("server")
    except Exception as exc:  # any failure to reach the server means unavailable
        with contextlib.suppress(Exception):
            await client.aclose()
        raise BackendUnavailable(
            PROVIDER_NAME, settings.url, f"{type(exc).__name__}: {exc}"
        ) from exc
    version = str(info.get("redis_version", "0"))
    parsed = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parsed < MIN_SERVER_VERSION:
        await client.aclose()
        raise BackendUnavailable(
            PROVIDER_NAME, settings.url, f"Redis {version} is too old: 7.0 or later is needed"
        )
    return RedisStreamsMessagingService(
        settings,
        client,
        operation_timeout=operation_timeout,
        client_name=name,
        server_version=version,
    )


async def open_redis_streams(config: MessagingConfig) -> RedisStreamsMessagingService:
    """Provider factory for the ``redis-streams`` entry point."""
    return await connect_redis_streams(
        load_settings(config), operation_timeout=config.operation_timeout_seconds
    )
