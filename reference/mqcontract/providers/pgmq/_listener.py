"""The push side: ONE dedicated LISTEN connection per provider, fanned out to subscriptions.

Pool connections cannot LISTEN (asyncpg runs ``UNLISTEN *`` when they are released), so
the listener owns a connection of its own. It LISTENs on ``mqcontract_<queue>`` for every
queue some subscription wants and UNLISTENs when the last one closes.

Notifications are lost for good while the connection is down. When asyncpg reports the
connection closed (or the periodic health check fails) the listener reconnects with capped
exponential backoff, LISTENs again and then puts ``Available(queue, None)`` into every
live subscription: "notifications may have been lost, catch up by receiving".

A message that is not visible yet when inserted (a delayed send) is announced with its
remaining ``delay``; the listener holds the notification and hands it out when the message
becomes visible. Pushed messages are unclaimed copies (``Message(..., claimed=False)``):
claim one with ``fetch_message`` before processing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mqcontract._builders import build_message, build_push
from mqcontract.messages import Available, MessageNotification
from mqcontract.providers.pgmq._errors import is_connection_error
from mqcontract.providers.pgmq._payload import decode
from mqcontract.providers.pgmq._sql import CHANNEL_PREFIX, channel
from mqcontract.subscription import QueueSubscription

__all__ = ["ListenerHealth", "PgmqListener", "parse_notification"]

log = logging.getLogger(__name__)

_MESSAGE_MARKER = ',"message":'
_NUMBER = r"(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
#: The head ``mqcontract.pgmq_notify_payload`` writes (queue names are identifiers, so
#: ``to_json`` adds no escapes): queue, msg_id, [delay], [read_ct, enqueued_at].
_HEAD = re.compile(
    rf'\{{"queue":"([A-Za-z0-9_]+)","msg_id":(0|[1-9][0-9]*)(?:,"delay":{_NUMBER})?'
    rf'(?:,"read_ct":(0|[1-9][0-9]*),"enqueued_at":{_NUMBER})?\Z'
)
#: Extra wait before handing out a delayed notification, so the message is surely visible.
_DELAY_MARGIN = 0.005


def parse_notification(payload: str) -> tuple[MessageNotification, float]:
    """A notification and the seconds until it may be handed out, from a NOTIFY payload.

    ``message`` is always the last key (see ``NOTIFY_FUNCTION_SQL``); its raw ``jsonb``
    text is cut out rather than re-serialized, so a pushed payload is byte-identical to
    what ``receive_messages`` returns for the same message. The head the notify function
    writes is read with one regular expression (a fifth of ``json.loads``'s cost, paid
    once per message pushed); any other head is read as JSON.
    """
    head, marker, tail = payload.partition(_MESSAGE_MARKER)
    known = None
    if payload.endswith("}"):  # anything cut short is read as JSON, and refused there
        known = _HEAD.match(head if marker else payload[:-1])
    if known is not None:
        queue, msg_id_text, delay_text, read_ct, enqueued_at = known.groups()
        msg_id = int(msg_id_text)
        delay = max(float(delay_text), 0.0) if delay_text is not None else 0.0
    else:
        fields = json.loads(head + "}" if marker else payload)
        queue = fields["queue"]
        msg_id = int(fields["msg_id"])
        delay = max(float(fields.get("delay", 0.0)), 0.0)
        read_ct, enqueued_at = fields.get("read_ct"), fields.get("enqueued_at")
    if not marker:
        return Available(queue, msg_id), delay
    if read_ct is None or enqueued_at is None:
        raise KeyError("read_ct and enqueued_at come with a message")
    # An unclaimed copy shows the count a claim would give it now.
    message = build_message(
        msg_id, queue, decode(tail[:-1]), int(read_ct) + 1, float(enqueued_at), None
    )
    return build_push(message, False), delay


@dataclass(frozen=True, slots=True)
class ListenerHealth:
    """A snapshot of the LISTEN connection's state (read-only; see ``PgmqListener.health``)."""

    #: Whether the LISTEN connection is up.
    connected: bool
    #: Its server pid (``pg_stat_activity.pid``), None while down.
    backend_pid: int | None
    #: Whether a reconnect is in progress (the connection was lost and is not back yet).
    reconnecting: bool
    #: Wall-clock time (epoch seconds) of the last successful (re)connect; None: never.
    connected_at: float | None
    #: Wall-clock time (epoch seconds) the connection was last lost; None: never.
    disconnected_at: float | None
    #: Times the connection was lost / re-established since the service opened.
    disconnects: int
    reconnects: int
    #: Queues LISTENed to (those with at least one live subscription).
    listening: frozenset[str]


class PgmqListener:
    """Owns the LISTEN connection; see the module docstring."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        *,
        health_interval: float,
        health_timeout: float,
        max_backoff: float = 2.0,
    ) -> None:
        self._connect = connect
        self._health_interval = health_interval
        self._health_timeout = health_timeout
        self._max_backoff = max_backoff
        self._conn: Any | None = None
        self._lock = asyncio.Lock()
        self._subs: dict[str, set[QueueSubscription]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._closing = False
        #: Times the connection was lost / re-established (for reports and tests).
        self.disconnects = 0
        self.reconnects = 0
        #: NOTIFY payloads that could not be parsed (ignored).
        self.malformed = 0
        self._connected_at: float | None = None
        self._disconnected_at: float | None = None

    # -- introspection -----------------------------------------------------------------

    @property
    def backend_pid(self) -> int | None:
        """The server pid of the LISTEN connection, or None while disconnected."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return None
        return int(conn.get_server_pid())

    @property
    def connected(self) -> bool:
        """Whether the LISTEN connection is up."""
        return self.backend_pid is not None

    @property
    def listening(self) -> frozenset[str]:
        """Queues with at least one live subscription."""
        return frozenset(self._subs)

    def health(self) -> ListenerHealth:
        """The connection's state now: up or not, since when, how often it was lost."""
        pid = self.backend_pid
        return ListenerHealth(
            connected=pid is not None,
            backend_pid=pid,
            reconnecting=self._reconnect_task is not None,
            connected_at=self._connected_at,
            disconnected_at=self._disconnected_at,
            disconnects=self.disconnects,
            reconnects=self.reconnects,
            listening=self.listening,
        )

    # -- subscriptions -----------------------------------------------------------------

    async def add(self, subscription: QueueSubscription) -> None:
        """Start delivering notifications for ``subscription.queues``.

        Connects on first use; raises (driver errors) if that first connect fails. While a
        reconnect is in progress the subscription is registered and served once it is back.
        """
        async with self._lock:
            if self._conn is None and self._reconnect_task is None:
                self._conn = await self._open()
            new = [q for q in subscription.queues if q not in self._subs]
            for queue in subscription.queues:
                self._subs.setdefault(queue, set()).add(subscription)
            conn = self._conn
            if conn is not None:
                try:
                    for queue in new:
                        await conn.add_listener(channel(queue), self._on_notify)
                except Exception as exc:
                    if not is_connection_error(exc):
                        self._discard(subscription)
                        raise
                    # The reconnect LISTENs for every registered queue and then sends
                    # this subscription its catch-up signal.
                    conn.terminate()
        if self._health_task is None:
            self._health_task = asyncio.create_task(
                self._health(), name="mqcontract-pgmq-listener-health"
            )

    async def remove(self, subscription: QueueSubscription) -> None:
        """Stop delivering to ``subscription``; UNLISTEN queues nobody wants any more."""
        emptied = self._discard(subscription)
        if not emptied or self._closing or self._conn is None:
            return  # while reconnecting: the new connection LISTENs only to wanted queues
        async with self._lock:
            conn = self._conn
            if conn is None or conn.is_closed():
                return
            for queue in emptied:
                if queue in self._subs:
                    continue  # re-subscribed meanwhile
                try:
                    await conn.remove_listener(channel(queue), self._on_notify)
                except Exception as exc:  # a dead connection forgets its LISTENs anyway
                    log.debug("UNLISTEN %s failed: %r", queue, exc)

    def _discard(self, subscription: QueueSubscription) -> list[str]:
        emptied = []
        for queue in subscription.queues:
            subs = self._subs.get(queue)
            if subs is None:
                continue
            subs.discard(subscription)
            if not subs:
                del self._subs[queue]
                emptied.append(queue)
        return emptied

    # -- notifications -----------------------------------------------------------------

    def _on_notify(self, conn: Any, pid: int, channel_name: str, payload: str) -> None:
        try:
            notification, delay = parse_notification(payload)
        except (ValueError, KeyError, TypeError) as exc:
            self.malformed += 1
            log.warning("ignoring malformed NOTIFY on %s: %r", channel_name, exc)
            return
        if notification.queue_name != channel_name.removeprefix(CHANNEL_PREFIX):
            self.malformed += 1
            return
        if delay <= 0:
            self._fan_out(notification)
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def due() -> None:
            if handle is not None:
                self._timers.discard(handle)
            self._fan_out(notification)

        handle = loop.call_later(delay + _DELAY_MARGIN, due)
        self._timers.add(handle)

    def _fan_out(self, notification: MessageNotification) -> None:
        for subscription in list(self._subs.get(notification.queue_name, ())):
            subscription.put(notification)

    # -- connection lifecycle ----------------------------------------------------------

    async def _open(self) -> Any:
        conn = await self._connect()
        try:
            conn.add_termination_listener(self._on_terminated)
            for queue in list(self._subs):
                await conn.add_listener(channel(queue), self._on_notify)
            if conn.is_closed():
                raise ConnectionError("listener connection closed while it was set up")
        except BaseException:
            conn.terminate()
            raise
        self._connected_at = time.time()
        return conn

    def _on_terminated(self, conn: Any) -> None:
        if conn is not self._conn or self._closing:
            return
        self._conn = None
        self.disconnects += 1
        self._disconnected_at = time.time()
        log.warning("pgmq listener connection lost; reconnecting")
        # Held delayed notifications stay valid: their messages were announced already.
        if self._reconnect_task is None:
            self._reconnect_task = asyncio.create_task(
                self._reconnect(), name="mqcontract-pgmq-listener-reconnect"
            )

    async def _reconnect(self) -> None:
        backoff = 0.05
        try:
            while not self._closing:
                try:
                    async with self._lock:
                        self._conn = await self._open()
                    break
                except Exception as exc:
                    if not is_connection_error(exc) and not isinstance(exc, TimeoutError):
                        log.error("pgmq listener reconnect failed: %r", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
            else:
                return
            self.reconnects += 1
            # Anything sent while we were away was never announced: say so.
            for queue, subs in list(self._subs.items()):
                for subscription in list(subs):
                    subscription.put(Available(queue, None))
        finally:
            self._reconnect_task = None

    async def _health(self) -> None:
        """Notice connections that died silently (no FIN): a cheap query now and then."""
        while not self._closing:
            await asyncio.sleep(self._health_interval)
            conn = self._conn
            if conn is None or not self._subs or self._lock.locked():
                continue
            try:
                async with self._lock, asyncio.timeout(self._health_timeout):
                    await conn.fetchval("SELECT 1")
            except Exception as exc:
                log.warning("pgmq listener health check failed: %r", exc)
                conn.terminate()  # fires the termination listener, which reconnects

    def _timers_cancel(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    async def close(self) -> None:
        """Close the connection and stop every background task."""
        self._closing = True
        self._timers_cancel()
        for task in (self._reconnect_task, self._health_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reconnect_task = self._health_task = None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=self._health_timeout)
            except Exception:
                conn.terminate()
        self._subs.clear()
