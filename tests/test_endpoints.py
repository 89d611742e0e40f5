"""Endpoint resolution: explicit URL, then the local port, then a container, else a clear error."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mqcontract.errors import BackendUnavailable
from mqcontract_fixtures._endpoints import RABBITMQ, Backend, Endpoint, docker_engine, resolve

NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def closed_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[int]:
    """A port that accepts TCP connections for the test's duration."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def fake_engine(tmp_path: Path) -> Iterator[str]:
    """``DOCKER_HOST`` pointing at a Unix socket that accepts connections."""
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen()
        yield f"unix://{path}"


def backend(
    port: int, start: Callable[[], tuple[str, dict[str, str], Callable[[], None]]]
) -> Backend:
    url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    return dataclasses.replace(RABBITMQ, default_url=url, start_container=start)


def never_started() -> tuple[str, dict[str, str], Callable[[], None]]:
    raise AssertionError("no container may be started")


def test_an_explicit_url_is_used_as_given() -> None:
    b = backend(closed_port(), never_started)
    env = {"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/%2F", **NO_DOCKER}
    try:
        endpoint = asyncio.run(resolve(b, b.default_url, environ=env))
    except BackendUnavailable:
        pytest.skip("RabbitMQ is not running at 127.0.0.1:5672")
    assert (endpoint.url, endpoint.source) == (env["RABBITMQ_URL"], "RABBITMQ_URL")


def test_an_unreachable_explicit_url_fails_naming_it_redacted_and_what_to_set(
    listening: int,
) -> None:
    b = backend(listening, never_started)  # the local port answers, yet it is not used
    wrong = f"amqp://guest:s3cret@127.0.0.1:{closed_port()}/%2F"
    with pytest.raises(BackendUnavailable) as caught:
        asyncio.run(resolve(b, b.default_url, environ={"RABBITMQ_URL": wrong}))
    message = str(caught.value)
    assert "s3cret" not in message
    assert f"tried RABBITMQ_URL={wrong.replace('s3cret', '***')}" in message
    assert "set RABBITMQ_URL to a reachable RabbitMQ" in message


def test_a_configured_url_other_than_the_default_counts_as_explicit(listening: int) -> None:
    b = backend(closed_port(), never_started)
    configured = f"amqp://guest:guest@127.0.0.1:{listening}/%2F"
    endpoint = asyncio.run(resolve(b, configured, environ=NO_DOCKER))
    assert (endpoint.url, endpoint.source) == (configured, "configuration")


def test_without_an_explicit_url_the_local_port_is_probed(listening: int) -> None:
    b = backend(listening, never_started)
    endpoint = asyncio.run(resolve(b, b.default_url, environ=NO_DOCKER))
    assert (endpoint.url, endpoint.source) == (b.default_url, "local port")


def test_nothing_reachable_and_no_docker_names_every_try() -> None:
    b = backend(closed_port(), never_started)
    with pytest.raises(BackendUnavailable) as caught:
        asyncio.run(resolve(b, b.default_url, environ=NO_DOCKER, timeout=0.5))
    message = str(caught.value)
    assert "guest:***@127.0.0.1:" in message
    assert "guest:guest" not in message
    assert "no Docker engine" in message
    assert "set RABBITMQ_URL" in message


def test_the_docker_engine_is_detected_only_when_it_answers(fake_engine: str) -> None:
    assert docker_engine({"DOCKER_HOST": fake_engine}) == fake_engine
    assert docker_engine(NO_DOCKER) is None
    assert docker_engine({"DOCKER_HOST": f"tcp://127.0.0.1:{closed_port()}"}) is None


def test_a_container_is_started_once_per_process_and_stopped_after_the_last_user(
    fake_engine: str,
) -> None:
    events: list[str] = []

    def start() -> tuple[str, dict[str, str], Callable[[], None]]:
        events.append("start")
        return "amqp://guest:guest@10.0.0.9:32768/%2F", {"management_url": "http://x"}, stop

    def stop() -> None:
        events.append("stop")

    b = backend(closed_port(), start)
    env = {"DOCKER_HOST": fake_engine}
    first, second = (asyncio.run(resolve(b, b.default_url, environ=env)) for _ in range(2))
    assert isinstance(first, Endpoint)
    assert first.source == "container"
    assert first.extra == {"management_url": "http://x"}
    assert second.url == first.url
    first.close()
    first.close()  # idempotent: one release per endpoint
    assert events == ["start"]
    second.close()
    assert events == ["start", "stop"]


def test_a_container_that_fails_to_start_is_reported(fake_engine: str) -> None:
    def start() -> tuple[str, dict[str, str], Callable[[], None]]:
        raise RuntimeError("image pull denied")

    b = backend(closed_port(), start)
    with pytest.raises(BackendUnavailable, match="image pull denied"):
        asyncio.run(resolve(b, b.default_url, environ={"DOCKER_HOST": fake_engine}))


# -- the acceptance check, end to end -------------------------------------------------------


def _verify_rabbitmq(pytester: pytest.Pytester, *extra: str) -> str:
    """The contract for rabbitmq, in process, as ``mqcontract verify`` runs it."""
    args = ["-p", "no:asyncio", "-p", "no:cacheprovider", "--pyargs"]
    args += ["mqcontract_conformance.contract", "--mq-provider", "rabbitmq"]
    result = pytester.runpytest(*args, "--mq-rules", "LIFE-1", "-rs", *extra)
    assert result.ret != 0  # skipped or failed, no rule ran: never a green gate
    return result.stdout.str()


def test_an_unreachable_rabbitmq_fails_with_require_backends_and_skips_without(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F"
    monkeypatch.setenv("RABBITMQ_URL", url)
    monkeypatch.delenv("MQCONTRACT_REQUIRE_BACKENDS", raising=False)
    message = (
        "rabbitmq: backend unavailable: rabbitmq backend at "
        f"{url.replace('guest:guest', 'guest:***')} is unavailable: "
        f"tried RABBITMQ_URL={url.replace('guest:guest', 'guest:***')} (Connection refused); "
        "set RABBITMQ_URL to a reachable RabbitMQ"
    )
    required = _verify_rabbitmq(pytester, "--mq-require-backends")
    assert f"required backend missing: {message}" in required
    assert "1 error" in required
    assert "guest:guest" not in required

    optional = _verify_rabbitmq(pytester)
    assert "SKIPPED [1] " in optional
    assert message in optional
    assert "1 skipped" in optional
    assert "error" not in optional
