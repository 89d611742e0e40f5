"""The management API as it really is on brokers: often absent, sometimes not even HTTP.

RabbitMQ ships the management plugin off, so every way it can be missing must become
``BackendUnavailable`` naming the call (never a ``TypeError`` or a ``JSONDecodeError``),
and a provider must find it, or not, exactly as the README's table says: the configured
URL as given, else the one derived from the AMQP URL when it answers. A stub HTTP server
plays the API; the broker tests need RabbitMQ (skipped without it, unless required).
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import mqcontract.config
import mqcontract_fixtures.rabbitmq
from mqcontract import open_provider
from mqcontract.config import MessagingConfig, RabbitMqConfig, load_config
from mqcontract.errors import BackendUnavailable, ConfigurationError, UnsupportedOperation
from mqcontract.providers.rabbitmq._management import (
    ManagementClient,
    ManagementRefused,
    find_management,
)
from mqcontract.testing import HarnessSettings
from mqcontract_conformance.provisioning import backends_required, unavailable
from mqcontract_fixtures.rabbitmq import rabbitmq_harness, url_with_vhost

SECRET = "Mgmt-s3cret"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _StubServer

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization", "")))
        status, kind, body = self.server.answers.get(
            self.path.split("?")[0], (404, "text/html", b"<html>Not Found</html>")
        )
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        time.sleep(self.server.put_delay)
        self.do_GET()

    def do_DELETE(self) -> None:
        self.server.deleted.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _StubServer(http.server.ThreadingHTTPServer):
    answers: dict[str, tuple[int, str, bytes]]
    seen: list[tuple[str, str]]
    put_delay: float
    deleted: list[str]


@pytest.fixture
def stub() -> Iterator[_StubServer]:
    """An HTTP server on a free port answering ``answers[path]`` (else an HTML 404)."""
    server = _StubServer(("127.0.0.1", 0), _Handler)
    server.answers, server.seen, server.put_delay, server.deleted = {}, [], 0.0, []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def not_http() -> Iterator[int]:
    """A port that answers every connection with AMQP's protocol header, as 5672 does."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"AMQP\x00\x00\x09\x01")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join(timeout=5)
    listener.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _url(port: int) -> str:
    return f"http://guest:{SECRET}@127.0.0.1:{port}"


JSON = "application/json"
BROKEN = {
    "an HTML page": {"/api/overview": (200, "text/html", b"<html>login</html>")},
    "a 404": {},
    "a 500": {"/api/overview": (500, JSON, b'{"error":"boom"}')},
    "plain text": {"/api/overview": (200, "text/plain", b"ok")},
    "JSON of the wrong shape": {"/api/overview": (200, JSON, b"[1, 2]")},
    "an empty answer": {"/api/overview": (200, JSON, b"")},
}


@pytest.mark.parametrize("case", list(BROKEN))
async def test_a_broken_management_api_is_backend_unavailable(stub: _StubServer, case: str) -> None:
    stub.answers = BROKEN[case]
    client = ManagementClient(_url(stub.server_address[1]), provider="rabbitmq", timeout=5)
    with pytest.raises(BackendUnavailable, match="management API GET /overview") as info:
        await client.overview()
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(("status", "refused"), [(401, True), (403, True), (500, False)])
async def test_a_refusal_is_told_apart_from_every_other_failure(
    stub: _StubServer, status: int, refused: bool
) -> None:
    """A refusal is an answer (the caller may fall back); a 500 or a timeout is not."""
    stub.answers = {"/api/overview": (status, JSON, b'{"error":"no"}')}
    client = ManagementClient(_url(stub.server_address[1]), provider="rabbitmq", timeout=5)
    with pytest.raises(BackendUnavailable, match=f"HTTP {status}") as info:
        await client.overview()
    assert isinstance(info.value, ManagementRefused) is refused


async def test_queues_must_be_a_list_of_objects(stub: _StubServer) -> None:
    stub.answers = {"/api/queues/%2F": (200, JSON, b'{"name": "q"}')}
    client = ManagementClient(_url(stub.server_address[1]), provider="rabbitmq", timeout=5)
    with pytest.raises(BackendUnavailable, match="expected a JSON list of objects"):
        await client.queues("/")


async def test_something_that_is_not_http_is_backend_unavailable(not_http: int) -> None:
    client = ManagementClient(_url(not_http), provider="rabbitmq", timeout=5)
    with pytest.raises(BackendUnavailable, match="management API GET /connections") as info:
        await client.connections()
    assert SECRET not in str(info.value)


async def test_nothing_listening_is_backend_unavailable() -> None:
    client = ManagementClient(_url(_closed_port()), provider="rabbitmq", timeout=5)
    with pytest.raises(BackendUnavailable, match="management API GET /overview"):
        await client.overview()


@pytest.mark.parametrize("url", [None, "", f"amqp://guest:{SECRET}@h:5672/", "http://", "x"])
def test_a_management_url_that_is_not_http_is_a_configuration_error(url: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"rabbitmq\.management_url") as info:
        ManagementClient(url, provider="rabbitmq")
    assert SECRET not in str(info.value)


# -- where a provider finds the API (the README's table) --------------------------------


def _rabbit(url: str, **changes: Any) -> RabbitMqConfig:
    return dataclasses.replace(RabbitMqConfig(url=url), **changes)


async def test_a_derived_url_is_used_when_it_answers(
    stub: _StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqcontract.config, "DEFAULT_MANAGEMENT_PORT", stub.server_address[1])
    stub.answers = {"/api/vhosts/vh": (200, JSON, b'{"name": "vh"}')}
    found = await find_management(
        _rabbit(f"amqp://me:{SECRET}@127.0.0.1:5672/vh"), provider="rabbitmq", timeout=5
    )
    assert found is not None
    assert SECRET not in found.display_url
    # The probe carried the AMQP credentials.
    token = base64.b64encode(f"me:{SECRET}".encode()).decode()
    assert stub.seen == [("/api/vhosts/vh", f"Basic {token}")]


@pytest.mark.parametrize("answer", ["refused", "an HTML page"])
async def test_a_derived_url_that_does_not_answer_is_not_used(
    stub: _StubServer, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    port = _closed_port() if answer == "refused" else stub.server_address[1]
    monkeypatch.setattr(mqcontract.config, "DEFAULT_MANAGEMENT_PORT", port)
    stub.answers = {"/api/vhosts/%2F": (200, "text/html", b"<html></html>")}
    rabbit = _rabbit("amqp://guest:guest@127.0.0.1:5672/%2F")
    assert await find_management(rabbit, provider="rabbitmq", timeout=5) is None


async def test_a_configured_url_is_used_as_given_and_off_means_off(stub: _StubServer) -> None:
    rabbit = _rabbit("amqp://127.0.0.1/", management_url=_url(stub.server_address[1]))
    assert await find_management(rabbit, provider="rabbitmq", timeout=5) is not None
    off = dataclasses.replace(rabbit, use_management_api=False)
    assert await find_management(off, provider="rabbitmq", timeout=5) is None
    tls = _rabbit(f"amqps://guest:{SECRET}@127.0.0.1/")
    assert await find_management(tls, provider="rabbitmq", timeout=5) is None
    assert stub.seen == []  # nothing probed


# -- on a real broker ---------------------------------------------------------------------


async def _broker_config() -> MessagingConfig:
    config = load_config(validate_backend=False)
    config = dataclasses.replace(
        config,
        rabbitmq=dataclasses.replace(
            config.rabbitmq, management_url=None, connection_timeout_seconds=3
        ),
    )
    try:
        async with await open_provider(config, backend="rabbitmq"):
            pass
    except BackendUnavailable as exc:
        unavailable(f"RabbitMQ unavailable: {exc}", required=backends_required()).enforce()
        raise
    return config


async def test_open_provider_derives_the_management_url(
    stub: _StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = await _broker_config()
    monkeypatch.setattr(mqcontract.config, "DEFAULT_MANAGEMENT_PORT", stub.server_address[1])
    listed = b'[{"name": "t_listed", "arguments": {"x-mqcontract": "classic"}},'
    listed += b' {"name": "not_ours", "arguments": {}}]'
    stub.answers = {
        "/api/vhosts/%2F": (200, JSON, b'{"name": "/"}'),
        "/api/queues/%2F": (200, JSON, listed),
    }
    url = url_with_vhost(config.rabbitmq.url, "/")  # the stub answers for "/"
    config = dataclasses.replace(config, rabbitmq=dataclasses.replace(config.rabbitmq, url=url))
    async with await open_provider(config, backend="rabbitmq") as provider:
        assert provider.capabilities.list_queues
        assert await provider.list_queues() == ["t_listed"]


async def test_open_provider_without_the_plugin_does_not_claim_list_queues(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = await _broker_config()
    monkeypatch.setattr(mqcontract.config, "DEFAULT_MANAGEMENT_PORT", _closed_port())
    start = time.monotonic()
    async with await open_provider(config, backend="rabbitmq-quorum") as provider:
        assert time.monotonic() - start < 3.0  # a refused probe costs nothing
        assert not provider.capabilities.list_queues
        with pytest.raises(UnsupportedOperation, match="management API"):
            await provider.list_queues()


def _vhost_harness(config: MessagingConfig, stub: _StubServer) -> Any:
    rabbit = dataclasses.replace(config.rabbitmq, management_url=_url(stub.server_address[1]))
    settings = HarnessSettings(config=dataclasses.replace(config, rabbitmq=rabbit), run_id="vh")
    stub.answers = {"/api/overview": (200, JSON, b'{"rabbitmq_version": "3.10"}')}
    return rabbitmq_harness(settings)


async def test_the_harness_shares_the_vhost_only_when_refused_one(stub: _StubServer) -> None:
    """A user that may not create virtual hosts runs in the URL's own."""
    harness = _vhost_harness(await _broker_config(), stub)
    stub.answers["/api/vhosts/mqcontract_vh"] = (401, JSON, b'{"error":"not_authorised"}')
    await harness.setup()
    try:
        assert harness.describe()["vhost"] == "shared (cannot create one per run)"
        assert stub.deleted == ["/api/vhosts/mqcontract_vh"]  # in case it was made
    finally:
        await harness.teardown()


async def test_a_vhost_creation_that_times_out_fails_setup(
    stub: _StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vhost may exist without the user's permissions after a timeout: sharing the
    URL's vhost then would leave callers of the expected one refused, so setup fails."""
    harness = _vhost_harness(await _broker_config(), stub)
    monkeypatch.setattr(mqcontract_fixtures.rabbitmq, "VHOST_TIMEOUT", 0.3)
    stub.put_delay = 1.0
    stub.answers["/api/vhosts/mqcontract_vh"] = (201, JSON, b"")
    with pytest.raises(BackendUnavailable, match="PUT /vhosts/mqcontract_vh"):
        await harness.setup()
    assert stub.deleted == ["/api/vhosts/mqcontract_vh"]  # it may exist: not left behind
    await harness.teardown()


@pytest.fixture
def silent() -> Iterator[int]:
    """A port that takes connections and never answers (a hung management API)."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()[1]
    listener.close()


async def test_a_management_api_that_never_answers_does_not_fail_delete_queue(
    silent: int,
) -> None:
    """``delete_queue`` lists other processes' wait queues through the management API; a
    configured API that accepted the connection and said nothing took the delete's whole
    bound (OperationTimeout, the queue left behind). The listing is a courtesy (wait
    queues expire on their own), bounded by a third of the operation's bound."""
    config = await _broker_config()
    rabbit = dataclasses.replace(config.rabbitmq, management_url=_url(silent))
    config = dataclasses.replace(config, rabbitmq=rabbit, operation_timeout_seconds=3.0)
    name = f"t_mgmt_silent_{time.monotonic_ns()}"
    async with await open_provider(config, backend="rabbitmq") as provider:
        await provider.create_queue(name)
        start = time.monotonic()
        await provider.delete_queue(name)
        assert time.monotonic() - start < 2.5
        assert not await provider.queue_exists(name)
