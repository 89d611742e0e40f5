"""Settings, entry points, and what happens when NATS is not there."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from mqcontract.config import load_config
from mqcontract.errors import BackendUnavailable, ConfigurationError
from mqcontract.registry import provider_names, resolve
from mqcontract.testing import HarnessSettings
from mqcontract_conformance.harnesses import load_harness
from mqcontract_conformance.provisioning import backends_required, unavailable

from mqcontract_nats_jetstream import NatsJetStreamConfig, load_settings, open_nats_jetstream
from mqcontract_nats_jetstream._config import DEFAULT_NATS_URL
from mqcontract_nats_jetstream.harness import NatsJetStreamHarness
from mqcontract_nats_jetstream.service import connect_nats_jetstream


def test_the_provider_and_its_harness_are_registered_by_name() -> None:
    assert "nats-jetstream" in provider_names()
    assert resolve("nats-jetstream") is open_nats_jetstream
    settings = HarnessSettings(config=load_config(environ={}), run_id="t")
    assert isinstance(load_harness("nats-jetstream", settings), NatsJetStreamHarness)


def test_settings_come_from_the_toml_table_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mq.toml"
    path.write_text(
        '[providers.nats-jetstream]\nurl = "nats://toml:4222"\nprefetch_count = 7\nprefix = "app"\n'
    )
    config = load_config(path, environ={})
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.delenv("NATS_JETSTREAM_PREFIX", raising=False)
    assert load_settings(config) == NatsJetStreamConfig(
        url="nats://toml:4222", prefetch_count=7, prefix="app"
    )
    monkeypatch.setenv("NATS_URL", "nats://env:4222")
    assert load_settings(config).url == "nats://env:4222"


def test_replicas_default_to_one_and_come_from_the_toml_table_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NATS_JETSTREAM_REPLICAS", raising=False)
    assert load_settings(load_config(environ={})).replicas == 1
    path = tmp_path / "mq.toml"
    path.write_text("[providers.nats-jetstream]\nreplicas = 3\n")
    config = load_config(path, environ={})
    assert load_settings(config).replicas == 3
    monkeypatch.setenv("NATS_JETSTREAM_REPLICAS", "5")
    assert load_settings(config).replicas == 5


@pytest.mark.parametrize("value", ["0", "6", "x"])
def test_a_bad_replicas_variable_names_the_key(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NATS_JETSTREAM_REPLICAS", value)
    with pytest.raises(ConfigurationError) as info:
        load_settings(load_config(environ={}))
    assert info.value.key == "providers.nats-jetstream.replicas"


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("nats://a:4222", ["nats://a:4222"]),
        ("nats://a:1,nats://b:2,nats://c:3", ["nats://a:1", "nats://b:2", "nats://c:3"]),
        (" nats://a:1 , nats://b:2,", ["nats://a:1", "nats://b:2"]),
    ],
)
def test_a_url_may_name_several_servers_separated_by_commas(url: str, servers: list[str]) -> None:
    assert NatsJetStreamConfig(url=url).servers == servers


def test_a_cluster_comes_from_the_toml_table_or_nats_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mq.toml"
    path.write_text(
        '[providers.nats-jetstream]\nurl = "nats://n1:14221,nats://n2:14222,nats://n3:14223"\n'
    )
    config = load_config(path, environ={})
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.delenv("NATS_JETSTREAM_PREFIX", raising=False)
    assert load_settings(config).servers == [
        "nats://n1:14221",
        "nats://n2:14222",
        "nats://n3:14223",
    ]
    monkeypatch.setenv("NATS_URL", "nats://e1:4222, nats://e2:4222")
    assert load_settings(config).servers == ["nats://e1:4222", "nats://e2:4222"]


async def test_a_server_list_connects_through_the_one_that_answers() -> None:
    url = os.environ.get("NATS_URL") or DEFAULT_NATS_URL
    settings = NatsJetStreamConfig(url=f"nats://127.0.0.1:1,{url}", connect_timeout_seconds=2.0)
    try:
        service = await connect_nats_jetstream(settings, operation_timeout=5.0)
    except BackendUnavailable as exc:
        unavailable(f"NATS not reachable: {exc}", required=backends_required()).enforce()
        raise
    try:
        assert await service.list_queues() is not None
    finally:
        await service.close()


async def test_no_password_of_a_server_list_is_shown() -> None:
    settings = NatsJetStreamConfig(
        url="nats://user:s3cretA@127.0.0.1:1,nats://user:s3cretB@127.0.0.1:2",
        connect_timeout_seconds=1.0,
    )
    with pytest.raises(BackendUnavailable) as info:
        await connect_nats_jetstream(settings, operation_timeout=2.0)
    assert "s3cretA" not in str(info.value)
    assert "s3cretB" not in str(info.value)
    assert "127.0.0.1:2" in str(info.value)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('url = ""', "providers.nats-jetstream.url"),
        ('url = " , "', "providers.nats-jetstream.url"),
        ('url = "nats://a:1,nats://b 2"', "providers.nats-jetstream.url"),
        ('prefix = "a-b"', "providers.nats-jetstream.prefix"),
        ('prefix = "a.b"', "providers.nats-jetstream.prefix"),
        ("prefetch_count = 0", "providers.nats-jetstream.prefetch_count"),
        ("fetch_grace_seconds = 0.5", "providers.nats-jetstream.fetch_grace_seconds"),
        ("replicas = 0", "providers.nats-jetstream.replicas"),
        ("replicas = 6", "providers.nats-jetstream.replicas"),
        ("replicas = -1", "providers.nats-jetstream.replicas"),
        ('replicas = "three"', "providers.nats-jetstream.replicas"),
        ("replicas = 2.5", "providers.nats-jetstream.replicas"),
        ("unknown = 1", "providers.nats-jetstream.unknown"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, key: str
) -> None:
    monkeypatch.delenv("NATS_JETSTREAM_PREFIX", raising=False)
    path = tmp_path / "mq.toml"
    path.write_text(f"[providers.nats-jetstream]\n{table}\n")
    with pytest.raises(ConfigurationError) as info:
        load_settings(load_config(path, environ={}))
    assert info.value.key == key


async def test_an_unreachable_server_is_backend_unavailable_without_the_password() -> None:
    settings = NatsJetStreamConfig(
        url="nats://user:s3cret@127.0.0.1:1", connect_timeout_seconds=1.0
    )
    with pytest.raises(BackendUnavailable) as info:
        await connect_nats_jetstream(settings, operation_timeout=2.0)
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


async def test_an_unanswered_jetstream_info_at_connect_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A just-formed cluster can leave one ``$JS.API.INFO`` unanswered: connect asks
    again within its bound instead of failing (seen in CI)."""
    from mqcontract_nats_jetstream._link import Link

    api = Link.api
    asked: list[str] = []

    async def first_unanswered(
        self: Link, what: str, body: dict[str, object] | None = None
    ) -> dict[str, object]:
        asked.append(what)
        if what == "INFO" and asked.count("INFO") == 1:
            await asyncio.Event().wait()  # never answered
        return await api(self, what, body)

    url = os.environ.get("NATS_URL") or DEFAULT_NATS_URL
    settings = NatsJetStreamConfig(url=url, connect_timeout_seconds=2.0)
    try:  # reachable at all (else skipped, or failed when backends are required)
        await (await connect_nats_jetstream(settings, operation_timeout=5.0)).close()
    except BackendUnavailable as exc:
        unavailable(f"NATS not reachable: {exc}", required=backends_required()).enforce()
        raise
    monkeypatch.setattr(Link, "api", first_unanswered)
    service = await connect_nats_jetstream(settings, operation_timeout=5.0)
    try:
        assert asked.count("INFO") == 2
    finally:
        await service.close()
