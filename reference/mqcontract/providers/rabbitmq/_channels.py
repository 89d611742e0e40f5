r"""The provider's AMQP connections and every channel it opens, owns and re-opens.

Up to three :class:`aio_pika.RobustConnection`\ s (heartbeat and connect timeout from
``[rabbitmq]``) reconnect in the background: one for operations (receives, settlements,
declares), one for publishing, opened at the first send, and one for push consumers,
opened at the first subscribe. RabbitMQ's advice: a connection that publishes is the one
a resource alarm (memory, disk) or flow control blocks, and the broker then reads nothing
from it, so receives and acks on it would wait for the alarm to clear; on their own
connection they go on, and what is held can still be settled. Losing the push connection
leaves sends and receives working.
With several broker URLs (a cluster's nodes), each is a :class:`FailoverConnection`: the
first connect takes the first URL that answers, and every reconnect attempt goes to the
next URL in turn, so a client on a node that died moves to one that lives.
Every channel is a plain aiormq channel opened here and re-opened lazily, so aio-pika never
re-declares anything on reconnect (which could re-create a deleted queue).

Frames are decoded tolerantly (:mod:`._decoding`): a foreign message carrying a value
pamqp cannot decode (a timestamp past the year 9999) is delivered, not fatal to the
connection.

Channels: one with publisher confirms for sending (on the publishing connection); one
per queue for ``basic.get`` (so a
404 for one queue never releases messages held from another), kept in a small LRU cache;
throwaway ones for passive declares, whose 404 kills only them. (The id lease,
:mod:`._lease`, opens its own short-lived ones on the connection it leases on: a lease
declare that finds the node taken closes its channel the same way.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from functools import partial
from typing import Any, Literal

import aiormq
import aiormq.abc
from aio_pika import RobustConnection
from aio_pika.abc import TimeoutType
from aio_pika.connection import make_url
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp.commands import Connection as ConnectionMethods
from yarl import URL

from mqcontract._redact import redact, scrubbed
from mqcontract.config import RabbitMqConfig
from mqcontract.errors import BackendUnavailable, ConfigurationError, ConnectionLost, ProviderClosed

from . import _decoding
from ._blocked import is_blocked
from ._closing import begin_close
from ._management import vhost_of
from ._tasks import Background

# Before any connection reads a frame: a value pamqp cannot decode must not end the
# connection it arrives on (:mod:`._decoding`).
_decoding.install()

__all__ = [
    "MISSED_HEARTBEATS",
    "RECONNECT_INTERVAL",
    "Channel",
    "Channels",
    "FailoverConnection",
    "Role",
    "heartbeat_seconds",
    "open_connection",
]

_UpdateSecretOk = ConnectionMethods.UpdateSecretOk

#: aiormq's channel class: what its connections open (settling writes to its write queue).
Channel = aiormq.Channel

#: What a connection is for: the first is opened with the service, the others on first
#: use, each named after the service's connection with its role appended.
Role = Literal["operations", "publish", "push"]
_EXTRA: tuple[Role, ...] = ("publish", "push")

#: Seconds between reconnect attempts of the robust connection.
RECONNECT_INTERVAL = 1.0
#: Receive channels kept open for queues with nothing held (least recently used go first).
RX_CHANNEL_CACHE = 64


#: The broker closes a connection that sent nothing for this many heartbeat intervals,
#: and only then requeues what it held (RabbitMQ 3.10, a SIGSTOPped client: 6.05 s with a
#: 2 s heartbeat, 15.1 s with 5 s, 180 s with the usual 60 s).
MISSED_HEARTBEATS = 3
#: The shortest heartbeat used: shorter ones close connections of merely busy clients.
MIN_HEARTBEAT_SECONDS = 5


def heartbeat_seconds(rabbit: RabbitMqConfig) -> int:
    """The heartbeat to ask for: the configured one, shortened so that a frozen holder
    loses its claims no later than the push visibility timeout (it is the timeout this
    provider's own timers enforce, and a frozen process runs no timers)."""
    bound = int(rabbit.push_visibility_timeout_seconds // MISSED_HEARTBEATS)
    return max(1, min(rabbit.heartbeat_seconds, max(MIN_HEARTBEAT_SECONDS, bound)))


class FailoverConnection(RobustConnection):
    """A robust connection that moves to the next broker URL whenever an attempt ends.

    aio-pika calls :meth:`_on_connection_close` exactly once per connection attempt that
    ends: at once when it fails, later when an established connection is lost. Advancing
    ``url`` there makes every reconnect attempt try the next URL in rotation, so a dead
    node is left behind (with one URL nothing changes).
    """

    def __init__(self, urls: Sequence[URL], start: int = 0, **kwargs: Any) -> None:
        self._urls = tuple(urls)
        self._index = start % len(self._urls)
        super().__init__(self._urls[self._index], **kwargs)

    @property
    def urls(self) -> tuple[URL, ...]:
        """Every URL this connection rotates through, in order."""
        return self._urls

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        self._index = (self._index + 1) % len(self._urls)
        self.url = self._urls[self._index]
        await super()._on_connection_close(closing)

    async def update_secret(
        self, new_secret: str, *, reason: str = "", timeout: TimeoutType = None
    ) -> _UpdateSecretOk:
        """Also for the other URLs: a rotation must not bring the old secret back."""
        result = await super().update_secret(new_secret, reason=reason, timeout=timeout)
        self._urls = tuple(url.with_password(new_secret) for url in self._urls)
        return result


async def open_connection(rabbit: RabbitMqConfig, provider: str, name: str) -> RobustConnection:
    """A robust connection named ``name`` to the first of ``rabbit.urls`` that answers.

    Each URL is tried in order, bounded by ``connection_timeout_seconds``; only when all
    fail is the backend unavailable (the error names each URL, redacted, and its failure).
    """
    kwargs: dict[str, Any] = {
        "heartbeat": heartbeat_seconds(rabbit),
        "reconnect_interval": RECONNECT_INTERVAL,
    }
    urls = rabbit.urls
    try:
        parsed = [make_url(url, **kwargs) for url in urls]
    except (ValueError, TypeError) as exc:  # a URL the driver cannot parse
        raise ConfigurationError("rabbitmq.url", redact(rabbit.url), str(exc)) from None
    failures: list[str] = []
    error: Exception | None = None
    for start, url in enumerate(urls):
        try:
            return await _connect(rabbit, parsed, start, name, kwargs)
        except Exception as exc:  # any failure to connect means unavailable
            detail = _refusal(exc, url)
            failures.append(detail if len(urls) == 1 else f"{redact(url)} ({detail})")
            error = exc
    assert error is not None  # there is at least one URL
    detail = failures[0] if len(urls) == 1 else f"no URL answered: {'; '.join(failures)}"
    raise BackendUnavailable(provider, rabbit.url, detail) from scrubbed(error)


def _refusal(exc: BaseException, url: str) -> str:
    """What a failed connect says. A broker that closes the connection in answer to
    ``Connection.Open`` refuses the virtual host (unknown, or not for this user): aiormq
    reports that as an unexpected frame, without the broker's reply."""
    if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(exc):
        return (
            f"the broker refused to open virtual host {vhost_of(url)!r}: it does not exist,"
            " or this user may not use it"
        )
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _connect(
    rabbit: RabbitMqConfig, urls: Sequence[URL], start: int, name: str, kwargs: dict[str, Any]
) -> RobustConnection:
    """A connection to ``urls[start]`` (rotating on from there), or the failure to make it."""
    connection = FailoverConnection(
        urls, start, client_properties={"connection_name": name}, **kwargs
    )
    try:
        async with asyncio.timeout(rabbit.connection_timeout_seconds):
            await connection.connect(timeout=rabbit.connection_timeout_seconds)
    except BaseException:
        # Cancelled too (a first send its caller gave up on): a robust connection left
        # open reconnects in the background for ever, and nobody would close it.
        with contextlib.suppress(Exception):
            await asyncio.shield(connection.close())
        raise
    return connection


async def exists(channel: Channel, name: str) -> bool:
    """Whether queue ``name`` exists (a passive declare; a 404 closes ``channel``)."""
    try:
        await channel.queue_declare(name, passive=True)
    except ChannelNotFoundEntity:
        return False
    return True


class Channels:
    """Connections and channels; see the module docstring.

    ``busy`` names the channels something is held on (never evicted from the cache);
    ``on_channel_closed`` callbacks run, in order, when any channel opened here closes.
    """

    def __init__(
        self,
        config: RabbitMqConfig,
        connection: RobustConnection,
        *,
        provider: str,
        connection_name: str,
        timeout: float,
        tasks: Background,
        is_closed: Callable[[], bool],
        busy: Callable[[], Collection[object]],
    ) -> None:
        self._config = config
        self._conn = connection
        #: The connections opened on first use, by role.
        self._extra: dict[Role, RobustConnection] = {}
        #: One per role: a first subscribe does not wait behind a slow first send's open.
        self._extra_locks: dict[Role, asyncio.Lock] = {role: asyncio.Lock() for role in _EXTRA}
        self._provider = provider
        self.connection_name = connection_name
        self._timeout = timeout
        self._tasks = tasks
        self._is_closed = is_closed
        self._busy = busy
        self._rx: OrderedDict[str, Channel] = OrderedDict()
        self._rx_lock = asyncio.Lock()
        self._pub: Channel | None = None
        self._pub_lock = asyncio.Lock()
        self.on_channel_closed: list[Callable[[Channel], None]] = []
        #: Channel closes under way (``close_channel``), kept until done.
        self._closing: set[asyncio.Future[None]] = set()

    # -- connections -------------------------------------------------------------------

    @property
    def connections(self) -> tuple[RobustConnection, ...]:
        """The open connections: operations first, then publishing and push once opened."""
        return (self._conn, *(self._extra[role] for role in _EXTRA if role in self._extra))

    @property
    def connection_names(self) -> tuple[str, ...]:
        """Client-provided names of :attr:`connections`, in the same order."""
        extra = [self.name_of(role) for role in _EXTRA if role in self._extra]
        return (self.connection_name, *extra)

    def name_of(self, role: Role) -> str:
        """The client-provided name of the connection of ``role``."""
        return self.connection_name if role == "operations" else f"{self.connection_name}-{role}"

    def blocked(self, role: Role) -> bool:
        """Whether the broker blocked the connection of ``role`` (a resource alarm); a
        connection not opened yet, or reconnecting, is not."""
        robust = self._conn if role == "operations" else self._extra.get(role)
        transport = None if robust is None else robust.transport
        return transport is not None and is_blocked(transport.connection)

    @property
    def push_connection(self) -> RobustConnection | None:
        """The push consumers' connection, once a subscribe opened it."""
        return self._extra.get("push")

    def _check_open(self) -> None:
        if self._is_closed():
            raise ProviderClosed(self._provider)

    async def _live(self, role: Role) -> aiormq.abc.AbstractConnection:
        """The live aiormq connection, waiting (bounded) while the robust one reconnects."""
        self._check_open()
        robust = self._conn if role == "operations" else await self._connection(role)
        loop = asyncio.get_running_loop()
        connect_timeout = self._config.connection_timeout_seconds
        deadline = loop.time() + connect_timeout
        while True:
            transport = robust.transport
            if (
                robust.connected.is_set()
                and transport is not None
                and not transport.connection.is_closed
            ):
                return transport.connection
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ConnectionLost(
                    self._provider,
                    self._config.url,
                    f"not reconnected within {connect_timeout:g} s",
                )
            if robust.connected.is_set():
                # The flag lags behind a transport that just died; waiting on a set event
                # would never yield and starve the reconnect itself.
                await asyncio.sleep(min(remaining, 0.02))
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, 0.5)):
                        await robust.connected.wait()
            self._check_open()

    async def _connection(self, role: Role) -> RobustConnection:
        connection = self._extra.get(role)
        if connection is not None:
            return connection  # the lock only guards opening one
        async with self._extra_locks[role]:
            if role not in self._extra:
                connection = await open_connection(self._config, self._provider, self.name_of(role))
                if self._is_closed():  # closed while connecting: do not leak it
                    await connection.close()
                    raise ProviderClosed(self._provider)
                self._extra[role] = connection
            return self._extra[role]

    async def close(self) -> None:
        """Close every connection (the broker requeues everything still unacked)."""
        if self._closing:  # bounded by the operation timeout each
            await asyncio.gather(*self._closing, return_exceptions=True)
        for connection in self.connections:
            with contextlib.suppress(Exception):
                await connection.close()
        self._rx.clear()
        self._pub = None

    # -- channels ----------------------------------------------------------------------

    async def open(self, *, confirms: bool, role: Role = "operations") -> Channel:
        """A new channel on the connection of ``role``."""
        connection = await self._live(role)
        async with asyncio.timeout(self._timeout):
            channel = await connection.channel(publisher_confirms=confirms, on_return_raises=True)
        assert isinstance(channel, Channel)  # aiormq's connections open no other kind
        channel.closing.add_done_callback(partial(self._closed, channel))
        return channel

    def _closed(self, channel: Channel, _: asyncio.Future[Any]) -> None:
        for queue, rx in list(self._rx.items()):
            if rx is channel:
                del self._rx[queue]
        if self._pub is channel:
            self._pub = None
        for callback in self.on_channel_closed:
            callback(channel)

    async def close_channel(self, channel: Channel) -> None:
        """Close ``channel`` if open, bounded; failures do not matter (it is going away).

        A cancellation of the caller (a stopping consumer, the caller's own timeout)
        does not cut the close short: it finishes in the background. aiormq answers a
        cancelled ``channel.close`` by sending a second one; the broker, which freed the
        channel on the first, calls that a connection error (``CHANNEL_ERROR - expected
        'channel.open'``) and closes the connection with every channel and claim on it.
        """
        if channel.is_closed:
            return
        begin_close(channel)
        closing = asyncio.ensure_future(self._close(channel))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        await asyncio.shield(closing)

    async def _close(self, channel: Channel) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await channel.close()

    @contextlib.asynccontextmanager
    async def scratch(self) -> AsyncIterator[Channel]:
        """A throwaway channel, for work bounded by the operation timeout."""
        channel = await self.open(confirms=False)
        try:
            async with asyncio.timeout(self._timeout):
                yield channel
        finally:
            await self.close_channel(channel)

    async def publisher(self) -> Channel:
        """The channel with publisher confirms that every send uses (keeps send order)."""
        channel = self._pub
        if channel is not None and not channel.is_closed:
            return channel  # the lock only guards opening a channel
        async with self._pub_lock:
            if self._pub is None or self._pub.is_closed:
                self._pub = await self.open(confirms=True, role="publish")
            return self._pub

    async def receiver(self, queue: str) -> Channel:
        """The channel ``basic.get`` uses for ``queue``."""
        channel = self._rx.get(queue)
        if channel is not None and not channel.is_closed:
            self._rx.move_to_end(queue)
            return channel
        async with self._rx_lock:
            channel = self._rx.get(queue)
            if channel is None or channel.is_closed:
                channel = await self.open(confirms=False)
                self._rx[queue] = channel
            self._rx.move_to_end(queue)
            self._evict_receivers()
            return channel

    def _evict_receivers(self) -> None:
        if len(self._rx) <= RX_CHANNEL_CACHE:
            return
        busy = self._busy()
        for queue, channel in list(self._rx.items())[:-1]:
            if len(self._rx) <= RX_CHANNEL_CACHE:
                return
            if channel not in busy:
                del self._rx[queue]
                self._tasks.spawn(self.close_channel(channel))

    def drop_receiver(self, queue: str) -> None:
        """Close ``queue``'s receive channel (the queue was deleted)."""
        rx = self._rx.pop(queue, None)
        if rx is not None:
            self._tasks.spawn(self.close_channel(rx))
