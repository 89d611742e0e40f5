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

Every field of a notification is untrusted: any role that may connect can ``NOTIFY`` on
our channels. :func:`parse_notification` checks each one's type and range (a ``delay``
that is not finite and at least 0 is refused, a longer one than a send may ask for is
cut to that); whatever fails is counted in ``malformed`` and dropped. Only queues a
subscription wants are held for, at most :data:`MAX_HELD` notifications at once (beyond
that one is dropped and counted in ``dropped``: fallback polling finds its message), and
a queue's held notifications go with its last subscription.

A subscription outlives its queue: the periodic health check reads each subscribed
queue's table and trigger. A queue deleted (by anyone) leaves its subscriptions open and
quiet; once a queue of that name exists again, or a queue's trigger is missing or
disabled (``pgmq.create`` by another client installs none), the check restores the
trigger (through ``repair_trigger``, the provider's ``install_notify_trigger``) and puts
``Available(queue, None)`` into its subscriptions, as after a reconnect. While the
trigger cannot be restored, every check says so again: never silent for longer than
the health interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from mqcontract._builders import build_message, build_push
from mqcontract.capabilities import Capabilities
from mqcontract.messages import Available, MessageNotification
from mqcontract.providers.pgmq import _sql
from mqcontract.providers.pgmq._errors import is_connection_error
from mqcontract.providers.pgmq._payload import decode
from mqcontract.providers.pgmq._sql import CHANNEL_PREFIX, channel
from mqcontract.subscription import QueueSubscription
from mqcontract.validation import MAX_QUEUE_NAME_LENGTH, QUEUE_NAME_PATTERN

__all__ = ["MAX_DELAY", "MAX_HELD", "ListenerHealth", "PgmqListener", "parse_notification"]

log = logging.getLogger(__name__)

_MESSAGE_MARKER = ',"message":'
_NUMBER = r"(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
#: The head ``mqcontract.pgmq_notify_payload`` writes (queue names are identifiers, so
#: ``to_json`` adds no escapes): queue, msg_id, [delay], [read_ct, enqueued_at].
_HEAD = re.compile(
    rf'\{{"queue":"([A-Za-z0-9_]+)","msg_id":(0|[1-9][0-9]*)(?:,"delay":{_NUMBER})?'
    rf'(?:,"read_ct":(0|[1-9][0-9]*),"enqueued_at":{_NUMBER})?\Z'
)
#: Each subscribed queue that exists (``$1``: their names), whether its notify trigger
#: fires (``enabled``, as ``_sql.QUEUE_TRIGGERS`` reads it) and its table's oid, which
#: changes when the queue is deleted and created again.
_QUEUE_STATE = f"""
SELECT s.queue, s.enabled, to_regclass('pgmq.q_' || s.queue)::oid::int8 AS relid
FROM ({_sql.QUEUE_TRIGGERS}) s
"""
#: Extra wait before handing out a delayed notification, so the message is surely visible.
_DELAY_MARGIN = 0.005
#: The longest delay a send may ask for (the provider declares the default maximum): a
#: notification announcing a later visibility is held this long at most.
MAX_DELAY: float = next(
    cast(float, field.default)
    for field in dataclasses.fields(Capabilities)
    if field.name == "max_delay_seconds"
)
#: Delayed notifications held at once, at most (each holds a timer and maybe a message).
MAX_HELD = 10_000
#: ``msg_id`` is a ``bigint``, ``read_ct`` an ``integer``.
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
_READ_CT_MAX = 2**31 - 1
#: ``timestamptz``'s range in epoch seconds (4713 BC to 294276 AD), for ``enqueued_at``.
_EPOCH_MIN, _EPOCH_MAX = -210_866_803_200.0, 9_224_318_016_000.0
#: Malformed notifications logged one by one; after that, one line per this many.
_LOGGED_ONE_BY_ONE = 10
_LOG_EVERY = 1000


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: The JSON reader for heads the regular expression does not take: no NaN or Infinity.
_HEAD_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _integer(name: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} {value!r:.40} is not an integer from {low} to {high}")
    return value


def _seconds(name: str, value: object, low: float, high: float) -> float:
    if type(value) is not int and type(value) is not float:
        raise ValueError(f"{name} {value!r:.40} is not a number")
    try:
        seconds = float(value)
    except OverflowError:
        raise ValueError(f"{name} {value!r:.40} overflows a float") from None
    if not (math.isfinite(seconds) and low <= seconds <= high):
        raise ValueError(f"{name} {value!r:.40} is not a number from {low:g} to {high:g}")
    return seconds


@functools.lru_cache(maxsize=1024)
def _queue_ok(name: str) -> bool:
    """Whether ``name`` (a string) is a queue name; the few a listener hears, remembered."""
    return len(name) <= MAX_QUEUE_NAME_LENGTH and QUEUE_NAME_PATTERN.fullmatch(name) is not None


def _queue_name(value: object) -> str:
    if (
        type(value) is not str
        or len(value) > MAX_QUEUE_NAME_LENGTH
        or QUEUE_NAME_PATTERN.fullmatch(value) is None
    ):
        raise ValueError(f"queue {value!r:.60} is not a queue name")
    return value


def _undelayed(payload: str) -> bool:
    """Whether a NOTIFY payload announces no delay (a delayed hint is held, not folded)."""
    return '"delay"' not in payload.partition(_MESSAGE_MARKER)[0]


def parse_notification(
    payload: str, *, max_delay: float = MAX_DELAY
) -> tuple[MessageNotification, float]:
    """A notification and the seconds until it may be handed out, from a NOTIFY payload.

    ``message`` is always the last key (see ``NOTIFY_FUNCTION_SQL``); its raw ``jsonb``
    text is cut out rather than re-serialized, so a pushed payload is byte-identical to
    what ``receive_messages`` returns for the same message. The head the notify function
    writes is read with one regular expression (a fifth of ``json.loads``'s cost, paid
    once per message pushed); any other head is read as JSON.

    Anyone may ``NOTIFY``, so every field is checked, however it was read: ``queue`` a
    queue name, ``msg_id`` a ``bigint``, ``read_ct`` an ``integer`` of at least 0,
    ``enqueued_at`` a finite time, ``delay`` a finite number of seconds of at least 0
    (cut to ``max_delay``); ``ValueError``, ``KeyError`` or ``TypeError`` otherwise.
    """
    head, marker, tail = payload.partition(_MESSAGE_MARKER)
    whole = payload.endswith("}")
    if marker and not whole:
        raise ValueError("a notification carrying a message is cut short")
    known = _HEAD.match(head if marker else payload[:-1]) if whole else None
    read_ct: object
    enqueued_at: object
    if known is not None:
        queue, msg_id_text, delay_text, read_ct_text, enqueued_text = known.groups()
        if marker and delay_text is None and read_ct_text is not None:
            # What our trigger sends for nearly every message, checked in line (the
            # expression already took the number forms): the general path below costs
            # a microsecond more per pushed message.
            msg_id_int, read_ct_int = int(msg_id_text), int(read_ct_text)
            stamp = float(enqueued_text)
            if (
                msg_id_int <= _BIGINT_MAX
                and read_ct_int < _READ_CT_MAX
                and _EPOCH_MIN <= stamp <= _EPOCH_MAX
                and _queue_ok(queue)
            ):
                copy = build_message(
                    msg_id_int, queue, decode(tail[:-1]), read_ct_int + 1, stamp, None
                )
                return build_push(copy, False), 0.0
        msg_id: object = int(msg_id_text)
        delay: object = float(delay_text) if delay_text is not None else 0.0
        read_ct = None if read_ct_text is None else int(read_ct_text)
        enqueued_at = None if enqueued_text is None else float(enqueued_text)
    else:
        try:
            fields = _HEAD_DECODER.decode(head + "}" if marker else payload)
        except RecursionError:  # nested past Python's limit: no head of ours
            raise ValueError("a notification nested too deeply") from None
        if not isinstance(fields, dict):
            raise TypeError(f"a notification is a JSON object, not {type(fields).__name__}")
        queue = fields["queue"]
        msg_id = fields["msg_id"]
        delay = fields.get("delay", 0.0)
        read_ct, enqueued_at = fields.get("read_ct"), fields.get("enqueued_at")
    queue = _queue_name(queue)
    msg_id = _integer("msg_id", msg_id, _BIGINT_MIN, _BIGINT_MAX)
    seconds = min(_seconds("delay", delay, 0.0, math.inf), max_delay)
    if not marker:
        return Available(queue, msg_id), seconds
    if read_ct is None or enqueued_at is None:
        raise KeyError("read_ct and enqueued_at come with a message")
    # An unclaimed copy shows the count a claim would give it now.
    message = build_message(
        msg_id,
        queue,
        decode(tail[:-1]),
        _integer("read_ct", read_ct, 0, _READ_CT_MAX) + 1,
        _seconds("enqueued_at", enqueued_at, _EPOCH_MIN, _EPOCH_MAX),
        None,
    )
    return build_push(message, False), seconds


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
        max_delay: float = MAX_DELAY,
        repair_trigger: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._connect = connect
        self._health_interval = health_interval
        self._health_timeout = health_timeout
        self._max_backoff = max_backoff
        self._max_delay = max_delay
        #: Makes a queue's notify trigger exist and fire (the provider's
        #: ``install_notify_trigger``); None: the health check can only say it is broken.
        self.repair_trigger = repair_trigger
        self._conn: Any | None = None
        self._lock = asyncio.Lock()
        self._subs: dict[str, set[QueueSubscription]] = {}
        #: Delayed notifications held, by queue, and how many in all.
        self._held: dict[str, set[asyncio.TimerHandle]] = {}
        self._held_count = 0
        #: The table (``pg_class`` oid) each subscribed queue had at the last health
        #: check; None: the queue did not exist.
        self._tables: dict[str, int | None] = {}
        #: Queues whose broken trigger was reported (reported again once it works).
        self._unrepaired: set[str] = set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._closing = False
        #: Times the connection was lost / re-established (for reports and tests).
        self.disconnects = 0
        self.reconnects = 0
        #: NOTIFY payloads refused (not ours, or a field out of its type or range).
        self.malformed = 0
        #: Delayed notifications dropped because :data:`MAX_HELD` were held already.
        self.dropped = 0
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

    @property
    def held(self) -> int:
        """Delayed notifications held until their messages become visible."""
        return self._held_count

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
                # Nobody wants the queue's held notifications or its state any more.
                self._cancel_held(queue)
                self._tables.pop(queue, None)
                self._unrepaired.discard(queue)
        return emptied

    # -- notifications -----------------------------------------------------------------

    def _on_notify(self, conn: Any, pid: int, channel_name: str, payload: str) -> None:
        queue = channel_name.removeprefix(CHANNEL_PREFIX)
        subs = self._subs.get(queue)
        if subs and _undelayed(payload) and all(sub.hint_waiting(queue) for sub in subs):
            # Every subscriber folds hints and has one of this queue waiting (a burst):
            # what the payload says changes nothing, so it is not read.
            hint = Available(queue, None)
            for sub in subs:
                sub.put(hint)
            return
        try:
            notification, delay = parse_notification(payload, max_delay=self._max_delay)
            if notification.queue_name != channel_name.removeprefix(CHANNEL_PREFIX):
                raise ValueError(f"queue {notification.queue_name!r} on channel {channel_name}")
        except Exception as exc:  # whatever a payload does, it is counted and dropped
            self.malformed += 1
            if self.malformed <= _LOGGED_ONE_BY_ONE or self.malformed % _LOG_EVERY == 0:
                log.warning(
                    "ignoring malformed NOTIFY on %s (%d so far): %r",
                    channel_name,
                    self.malformed,
                    exc,
                )
            return
        if notification.queue_name not in self._subs:
            return  # its last subscription closed since the LISTEN
        if delay <= 0:
            self._fan_out(notification)
            return
        self._hold(notification, delay)

    def _hold(self, notification: MessageNotification, delay: float) -> None:
        """Hand ``notification`` out in ``delay`` seconds (at most ``max_delay``)."""
        if self._held_count >= MAX_HELD:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % _LOG_EVERY == 0:
                log.warning(
                    "pgmq listener holds %d delayed notifications: dropped %d (fallback"
                    " polling finds their messages)",
                    self._held_count,
                    self.dropped,
                )
            return
        queue = notification.queue_name
        handle: asyncio.TimerHandle | None = None

        def due() -> None:
            held = self._held.get(queue)
            if held is not None and handle in held:
                held.discard(handle)
                self._held_count -= 1
                if not held:
                    del self._held[queue]
            self._fan_out(notification)

        handle = asyncio.get_running_loop().call_later(delay + _DELAY_MARGIN, due)
        self._held.setdefault(queue, set()).add(handle)
        self._held_count += 1

    def _cancel_held(self, queue: str) -> None:
        for handle in self._held.pop(queue, ()):
            handle.cancel()
            self._held_count -= 1

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
        """Notice connections that died silently (no FIN), and queues whose trigger went
        away (see the module docstring): one catalog query now and then."""
        while not self._closing:
            await asyncio.sleep(self._health_interval)
            conn = self._conn
            if conn is None or not self._subs or self._lock.locked():
                continue
            queues = sorted(self._subs)
            try:
                async with self._lock, asyncio.timeout(self._health_timeout):
                    rows = await conn.fetch(_QUEUE_STATE, queues)
            except Exception as exc:
                if is_connection_error(exc):
                    log.warning("pgmq listener health check failed: %r", exc)
                    conn.terminate()  # fires the termination listener, which reconnects
                else:  # the server answered: the connection is fine, the catalogs are not
                    log.warning("pgmq listener could not check its queues: %r", exc)
                continue
            try:
                await self._check_queues(queues, {str(r["queue"]): r for r in rows})
            except Exception as exc:  # never the end of the health check
                log.warning("pgmq listener could not check its queues: %r", exc)

    async def _check_queues(self, queues: list[str], rows: dict[str, Any]) -> None:
        """Restore the trigger of a queue that has none that fires, and tell the
        subscriptions of a queue created again or just repaired to catch up."""
        for queue in queues:
            if queue not in self._subs:
                continue  # unsubscribed meanwhile
            row = rows.get(queue)
            # Gone, as queue_exists says: not listed in pgmq.meta, or its table dropped.
            if row is None or row["relid"] is None:
                if self._tables.get(queue, 0) is not None:
                    log.info("pgmq queue %s is gone; its subscriptions stay open", queue)
                self._tables[queue] = None
                continue
            table = int(row["relid"])
            before = self._tables.get(queue, table)  # first look: nothing to compare
            self._tables[queue] = table
            fires = _sql.trigger_fires(row["enabled"])
            if fires and before == table:
                self._unrepaired.discard(queue)
                continue
            if not fires:
                await self._repair(queue)
            # Created again since the last look, or announced nothing for a while:
            # anything sent meanwhile was never announced.
            for subscription in list(self._subs.get(queue, ())):
                subscription.put(Available(queue, None))

    async def _repair(self, queue: str) -> bool:
        """Make ``queue``'s notify trigger fire again; whether that worked."""
        repair, problem = self.repair_trigger, "nothing here can restore it"
        if repair is not None:
            try:
                await repair(queue)
            except Exception as exc:
                problem = f"restoring it failed: {exc!r}"
            else:
                self._unrepaired.discard(queue)
                log.info("pgmq listener restored the notify trigger of queue %s", queue)
                return True
        if queue not in self._unrepaired:
            self._unrepaired.add(queue)
            log.warning(
                "pgmq queue %s has no notify trigger that fires, and %s; its subscriptions"
                " are told to catch up at every health check",
                queue,
                problem,
            )
        return False

    def _timers_cancel(self) -> None:
        for queue in list(self._held):
            self._cancel_held(queue)

    async def close(self) -> None:
        """Close the connection and stop every background task."""
        self._closing = True
        self._timers_cancel()
        for task in (self._reconnect_task, self._health_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task  # a task that failed must not stop the close
        self._reconnect_task = self._health_task = None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=self._health_timeout)
            except Exception:
                conn.terminate()
        self._subs.clear()
