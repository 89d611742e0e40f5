"""Test support: a service on the machine's NATS, unique queue names, cleanup, polling."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from mqcontract.errors import BackendUnavailable
from mqcontract.messages import QueuedMessage
from mqcontract_conformance.provisioning import backends_required, unavailable

from mqcontract_nats_jetstream import NatsJetStreamConfig, NatsJetStreamMessagingService
from mqcontract_nats_jetstream._config import DEFAULT_NATS_URL
from mqcontract_nats_jetstream.harness import run_streams
from mqcontract_nats_jetstream.service import connect_nats_jetstream

T = TypeVar("T")

RUN_ID = secrets.token_hex(3) + os.environ.get("PYTEST_XDIST_WORKER", "")
#: Every test of this run works under its own prefix: teardown deletes its streams.
PREFIX = f"mqct_{RUN_ID}"
_names = itertools.count(1)


def nats_settings(**changes: Any) -> NatsJetStreamConfig:
    """Settings for the test server (``NATS_URL``, default 127.0.0.1:4222)."""
    url = os.environ.get("NATS_URL") or DEFAULT_NATS_URL
    return dataclasses.replace(NatsJetStreamConfig(url=url, prefix=PREFIX), **changes)


def queue_name(tag: str = "q") -> str:
    """A fresh valid queue name."""
    return f"{tag}_{next(_names)}"


async def open_service(**changes: Any) -> NatsJetStreamMessagingService:
    """A connected service, or a skip (a failure in CI) when NATS is not there."""
    try:
        return await connect_nats_jetstream(nats_settings(**changes), operation_timeout=5.0)
    except BackendUnavailable as exc:
        unavailable(f"NATS not reachable: {exc}", required=backends_required()).enforce()
        raise


async def drop_run_streams(service: NatsJetStreamMessagingService, prefix: str = PREFIX) -> None:
    """Delete every stream this test run made."""
    for stream in await run_streams(service.link, prefix):
        await service.link.api(f"STREAM.DELETE.{stream}")


@pytest.fixture
async def service() -> AsyncIterator[NatsJetStreamMessagingService]:
    """A provider with default settings; this run's streams are dropped afterwards."""
    svc = await open_service()
    try:
        yield svc
    finally:
        await svc.close()
        cleaner = await open_service()
        try:
            await drop_run_streams(cleaner)
        finally:
            await cleaner.close()


@pytest.fixture
async def queue(service: NatsJetStreamMessagingService) -> str:
    """A created queue."""
    name = queue_name()
    await service.create_queue(name)
    return name


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await probe()
        if result:
            return result
        if loop.time() >= deadline:
            pytest.fail(f"{what}: not observed within {within:g} s")
        await asyncio.sleep(0.02)


async def consumer_state(service: NatsJetStreamMessagingService, queue: str) -> dict[str, Any]:
    """The queue consumer's info, read without a delivery."""
    names = service.names(queue)
    return await service.link.api(f"CONSUMER.INFO.{names.stream}.mqcontract")


async def ack_unheard(
    service: NatsJetStreamMessagingService,
    queue: str,
    message: QueuedMessage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ack ``message`` with JetStream's confirmation forged: the ack frame never reaches
    the server (what a consumer leader cut off from its majority does)."""
    link = service.link
    real = link.request

    async def unheard(subject: str, payload: bytes, headers: dict[str, str] | None) -> Any:
        if subject.startswith("$JS.ACK.") and payload == b"":
            return None  # "confirmed"; the server never saw it
        return await real(subject, payload, headers)

    monkeypatch.setattr(link, "request", unheard)
    try:
        await service.ack_claim(queue, message)
    finally:
        monkeypatch.setattr(link, "request", real)
