"""``[rabbitmq] url`` listing several brokers: parsing, first connect, reconnect rotation.

The parsing tests need no service. The others need RabbitMQ at ``RABBITMQ_URL`` (default
``amqp://guest:guest@127.0.0.1:5672/%2F``) and are skipped when it is unreachable unless
``MQCONTRACT_REQUIRE_BACKENDS`` is set. Failover is shown through two local TCP proxies to
that one broker, standing for two cluster nodes: closing the first (a dead node) must move
the provider to the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

import aiormq
import pytest
from yarl import URL

from mqcontract._redact import redact
from mqcontract.config import MessagingConfig, RabbitMqConfig, load_config, split_url_list
from mqcontract.errors import BackendUnavailable, ConfigurationError, OperationTimeout
from mqcontract.providers.rabbitmq import RabbitMqMessagingService, open_rabbitmq
from mqcontract.providers.rabbitmq._blocked import is_blocked
from mqcontract.providers.rabbitmq._channels import FailoverConnection, open_connection

REQUIRE = os.environ.get("MQCONTRACT_REQUIRE_BACKENDS", "").lower() in {"1", "true", "yes"}
#: Bounds every wait here: far above a local reconnect (about one reconnect interval).
DEADLINE = 20.0


def _error(url: str) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        _ = RabbitMqConfig(url=url).urls
    return caught.value


# -- parsing (no service) --------------------------------------------------------------


def test_a_single_url_is_one_url_as_before() -> None:
    assert RabbitMqConfig().urls == (RabbitMqConfig().url,)
    url = "amqp://u:p@mq:5672/%2F"
    assert RabbitMqConfig(url=url).urls == (url,)
    # A raw comma in a password does not start another URL: no scheme follows it.
    assert RabbitMqConfig(url="amqp://u:p,w@mq/vh").urls == ("amqp://u:p,w@mq/vh",)


def test_commas_separate_urls_and_whitespace_around_them_is_ignored() -> None:
    rabbit = RabbitMqConfig(url=" amqp://u:p@a:5672/vh ,amqps://u:p@b:5671/vh,  amqp://c/vh ")
    assert rabbit.urls == ("amqp://u:p@a:5672/vh", "amqps://u:p@b:5671/vh", "amqp://c/vh")


def test_load_config_reads_a_list_from_the_environment() -> None:
    value = "amqp://u:p@n1:5672/%2F, amqp://u:p@n2:5672/%2F"
    config = load_config(environ={"RABBITMQ_URL": value}, validate_backend=False)
    assert config.rabbitmq.url == value  # kept as given
    assert config.rabbitmq.urls == ("amqp://u:p@n1:5672/%2F", "amqp://u:p@n2:5672/%2F")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("amqp://u:pw-one@a/%2F, amqp://u:pw-two@b:99999/%2F", "URL 2 of 2: Port out of range"),
        ("amqp://u:pw-one@a/%2F, http://u:pw-two@b/%2F", "expected an amqp:// or amqps:// URL"),
        ("amqp://u:pw-one@a/%2F,, amqp://u:pw-two@b/%2F", "empty entry"),
        (", amqp://u:pw-one@a/%2F", "empty entry"),
        ("amqp://u:pw-one@a/vh1, amqp://u:pw-two@b/vh2", "the same virtual host"),
        ("amqp://u:pw-one@[::1/", "Invalid IPv6 URL"),
    ],
)
def test_a_bad_url_is_a_configuration_error_without_credentials(url: str, reason: str) -> None:
    error = _error(url)
    assert error.key == "rabbitmq.url"
    assert reason in str(error), str(error)
    assert "pw-one" not in str(error), str(error)
    assert "pw-two" not in str(error), str(error)


async def test_open_connection_rejects_a_bad_list_before_connecting() -> None:
    rabbit = RabbitMqConfig(url="amqp://guest:guest@127.0.0.1:1/%2F, ftp://x/%2F")
    with pytest.raises(ConfigurationError, match=r"rabbitmq\.url.*URL 2 of 2"):
        await open_connection(rabbit, "rabbitmq", "mqcontract-test-bad-list")


def test_the_management_url_is_derived_from_the_first_url() -> None:
    rabbit = RabbitMqConfig(url="amqp://me:pw@n1:5672/%2F, amqp://me:pw@n2:5672/%2F")
    endpoint = rabbit.management_endpoint()
    assert endpoint is not None
    assert (endpoint.url, endpoint.configured) == ("http://me:pw@n1:15672", False)


def test_a_list_hides_its_passwords_and_nothing_else() -> None:
    secrets = [f"pw{uuid.uuid4().hex[:10]}" for _ in range(2)]
    value = f"amqp://app:{secrets[0]}@node-a:5672/%2F, amqp://app:{secrets[1]}@node-b:5672/%2F"
    rabbit = RabbitMqConfig(url=value)  # remembers each password, URL by URL
    shown = repr(rabbit)
    assert not any(secret in shown for secret in secrets), shown
    assert all(f"node-{n}:5672" in shown for n in "ab"), shown
    # Read as one URL, the list would make hosts, ports and "amqp" secrets everywhere.
    text = f"amqp://guest:guest@node-a:5672/ said {secrets[1]}"
    assert redact(text) == "amqp://guest:***@node-a:5672/ said ***"


# -- against a broker ------------------------------------------------------------------


@pytest.fixture
async def broker_url() -> str:
    """The shared broker's (first) URL; skips when it does not answer."""
    rabbit = load_config(validate_backend=False).rabbitmq
    url = rabbit.urls[0]
    probe = dataclasses.replace(rabbit, url=url, connection_timeout_seconds=3)
    try:
        connection = await open_connection(probe, "rabbitmq", "mqcontract-test-urls-probe")
    except BackendUnavailable as exc:
        if REQUIRE:
            pytest.fail(f"RabbitMQ required: {exc}")
        pytest.skip(f"RabbitMQ unavailable: {exc}")
    await connection.close()
    return url


def _with_port(url: str, port: int) -> str:
    """``url`` pointing at 127.0.0.1:``port``, credentials, vhost and query kept."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(urls: list[str]) -> MessagingConfig:
    base = load_config(validate_backend=False)
    rabbit = dataclasses.replace(
        base.rabbitmq, url=", ".join(urls), connection_timeout_seconds=5, use_management_api=False
    )
    return dataclasses.replace(base, rabbitmq=rabbit, operation_timeout_seconds=5)


@contextlib.asynccontextmanager
async def _service(config: MessagingConfig) -> AsyncIterator[tuple[RabbitMqMessagingService, str]]:
    """An open provider and a fresh queue on it, both removed afterwards."""
    svc = await open_rabbitmq(config)
    queue = f"t_rmq_urls_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    try:
        await svc.create_queue(queue)
        yield svc, queue
    finally:
        with contextlib.suppress(Exception):
            await svc.delete_queue(queue)
        await svc.close()


async def _round_trip(svc: RabbitMqMessagingService, queue: str) -> None:
    payload = uuid.uuid4().bytes
    await svc.send_message(queue, payload)
    got = await svc.receive_messages(queue, 1, 30)
    assert [m.payload for m in got] == [payload]
    await svc.ack_message(queue, got[0].msg_id)


def _operations(svc: RabbitMqMessagingService) -> FailoverConnection:
    connection = svc._channels.connections[0]
    assert isinstance(connection, FailoverConnection)
    return connection


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (checked every 20 ms), failing after :data:`DEADLINE`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not condition():
        assert loop.time() < deadline, f"not within {DEADLINE:g} s: {what}"
        await asyncio.sleep(0.02)


async def test_the_first_connect_skips_a_dead_url(broker_url: str) -> None:
    dead = _with_port(broker_url, _closed_port())
    async with _service(_config([dead, broker_url])) as (svc, queue):
        assert _operations(svc).url.port == urlsplit(broker_url).port
        await _round_trip(svc, queue)


async def test_the_first_connect_fails_only_when_every_url_fails() -> None:
    ports = [_closed_port(), _closed_port()]
    urls = [f"amqp://app:pw-{i}-hidden@127.0.0.1:{port}/%2F" for i, port in enumerate(ports)]
    with pytest.raises(BackendUnavailable) as caught:
        await open_rabbitmq(_config(urls))
    message = str(caught.value)
    assert "no URL answered" in message, message
    assert all(f"127.0.0.1:{port}/%2F (" in message for port in ports), message
    assert "hidden" not in message, message


class _Proxy:
    """A TCP proxy on a free local port to ``target``: a broker node that can be killed."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)

    @property
    def live(self) -> int:
        """Client and upstream sockets still open (two per proxied connection)."""
        return len(self._writers)

    async def kill(self) -> None:
        """Stop listening and reset every connection through it, as a dead node would."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if self._server is not None:
            await self._server.wait_closed()


@pytest.mark.parametrize("dead_between", [False, True], ids=["next", "past-a-dead-one"])
async def test_a_lost_connection_reconnects_through_the_next_url(
    broker_url: str, dead_between: bool
) -> None:
    """Node 1 dies: the provider reconnects through node 2 (past a dead URL, if one is
    listed between them: a failed attempt moves on too)."""
    target = urlsplit(broker_url)
    proxies = [_Proxy((target.hostname or "127.0.0.1", target.port or 5672)) for _ in range(2)]
    ports = [await proxy.start() for proxy in proxies]
    urls = [_with_port(broker_url, port) for port in ports]
    if dead_between:
        urls.insert(1, _with_port(broker_url, _closed_port()))
    try:
        async with _service(_config(urls)) as (svc, q):
            connection = _operations(svc)
            assert connection.url.port == ports[0]
            await _round_trip(svc, q)
            assert proxies[0].live > 0
            assert proxies[1].accepted == 0

            await proxies[0].kill()  # node 1 dies with the provider's connection on it
            await _until(
                lambda: connection.url.port == ports[1] and connection.connected.is_set(),
                "reconnected through the second URL",
            )
            await _round_trip(svc, q)
            assert proxies[1].live > 0
    finally:
        for proxy in proxies:
            await proxy.kill()


class _MuteProxy(_Proxy):
    """Passes the connection's own frames (channel 0: handshake, heartbeats, close) on and
    holds every other frame: a node that keeps connections up and serves nothing, as
    RabbitMQ's ``pause_minority`` leaves a node that lost its majority."""

    held = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._frames(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readexactly(8))  # the protocol header
            while True:
                head = await reader.readexactly(7)  # type, channel, size
                _, channel, size = struct.unpack(">BHI", head)
                rest = await reader.readexactly(size + 1)
                if channel != 0:
                    self.held += 1
                    continue
                writer.write(head + rest)
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)


async def test_a_node_that_answers_nothing_is_left_after_an_operation_times_out(
    broker_url: str,
) -> None:
    """Node 1 dies and the reconnect lands on node 2, which completes the handshake and
    then answers nothing. The next operation times out; the provider must then leave
    node 2 for node 3 by itself, instead of timing out on node 2 for ever."""
    target = urlsplit(broker_url)
    upstream = (target.hostname or "127.0.0.1", target.port or 5672)
    first, mute, last = _Proxy(upstream), _MuteProxy(upstream), _Proxy(upstream)
    ports = [await proxy.start() for proxy in (first, mute, last)]
    try:
        async with _service(_config([_with_port(broker_url, p) for p in ports])) as (svc, q):
            connection = _operations(svc)
            await _round_trip(svc, q)
            await first.kill()
            await _until(
                lambda: connection.url.port == ports[1] and connection.connected.is_set(),
                "reconnected to the mute node",
            )
            with pytest.raises(OperationTimeout):
                await _round_trip(svc, q)
            assert mute.held > 0
            await _until(
                lambda: connection.url.port == ports[2] and connection.connected.is_set(),
                "left the mute node for the next one",
            )
            await _round_trip(svc, q)
    finally:
        for proxy in (first, mute, last):
            await proxy.kill()


def test_split_url_list_keeps_a_single_url_whole() -> None:
    assert split_url_list("amqp://u:p@h/%2F") == ["amqp://u:p@h/%2F"]


async def test_a_connection_the_broker_blocked_counts_as_alive() -> None:
    """A resource alarm blocks a publishing connection: it reads no probe until the
    alarm clears, on every node. The liveness probe must not close it for that (the
    state is read from aiormq's own event; renamed there, this fails)."""
    connection = aiormq.Connection(URL("amqp://guest:guest@127.0.0.1:1/"))
    unblocked = connection._Connection__connection_unblocked  # type: ignore[attr-defined]
    unblocked.set()
    assert not is_blocked(connection)
    unblocked.clear()  # as on a Connection.Blocked frame
    assert is_blocked(connection)


async def test_a_virtual_host_the_broker_refuses_is_named(broker_url: str) -> None:
    """The broker closes a connection whose ``Connection.Open`` names an unknown virtual
    host; aiormq reported that as "InvalidFrameError: Expected one of
    ['Connection.OpenOk'], got <Connection.Close object at 0x…>"."""
    vhost = f"mqcontract_missing_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(broker_url)
    url = urlunsplit(parts._replace(path=f"/{vhost}"))
    rabbit = dataclasses.replace(
        load_config(validate_backend=False).rabbitmq, url=url, connection_timeout_seconds=5
    )
    with pytest.raises(BackendUnavailable) as caught:
        await open_connection(rabbit, "rabbitmq", "mqcontract-test-missing-vhost")
    message = str(caught.value)
    assert f"virtual host {vhost!r}" in message, message
    assert "object at 0x" not in message
