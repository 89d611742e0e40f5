"""Settings, entry points, and what happens when Redis is not there."""

from __future__ import annotations

from pathlib import Path

import pytest
from mqcontract.config import load_config
from mqcontract.errors import BackendUnavailable, ConfigurationError
from mqcontract.registry import provider_names, resolve
from mqcontract.testing import HarnessSettings
from mqcontract_conformance.harnesses import load_harness

from mqcontract_redis_streams import RedisStreamsConfig, load_settings, open_redis_streams
from mqcontract_redis_streams.harness import RedisStreamsHarness
from mqcontract_redis_streams.service import connect_redis_streams


def test_the_provider_and_its_harness_are_registered_by_name() -> None:
    assert "redis-streams" in provider_names()
    assert resolve("redis-streams") is open_redis_streams
    settings = HarnessSettings(config=load_config(environ={}), run_id="t")
    assert isinstance(load_harness("redis-streams", settings), RedisStreamsHarness)


def test_settings_come_from_the_toml_table_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mq.toml"
    path.write_text(
        '[providers.redis-streams]\nurl = "redis://toml:6379/1"\nprefetch_count = 7\n'
        'key_prefix = "app"\n'
    )
    config = load_config(path, environ={})
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_STREAMS_KEY_PREFIX", raising=False)
    assert load_settings(config) == RedisStreamsConfig(
        url="redis://toml:6379/1", prefetch_count=7, key_prefix="app"
    )
    monkeypatch.setenv("REDIS_URL", "redis://env:6379/2")
    assert load_settings(config).url == "redis://env:6379/2"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('key_prefix = "a:b"', "providers.redis-streams.key_prefix"),
        ("prefetch_count = 0", "providers.redis-streams.prefetch_count"),
        ("push_poll_interval_seconds = 0", "providers.redis-streams.push_poll_interval_seconds"),
        ("unknown = 1", "providers.redis-streams.unknown"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, key: str
) -> None:
    monkeypatch.delenv("REDIS_STREAMS_KEY_PREFIX", raising=False)
    path = tmp_path / "mq.toml"
    path.write_text(f"[providers.redis-streams]\n{table}\n")
    with pytest.raises(ConfigurationError) as info:
        load_settings(load_config(path, environ={}))
    assert info.value.key == key


async def test_an_unreachable_server_is_backend_unavailable_without_the_password() -> None:
    settings = RedisStreamsConfig(
        url="redis://user:s3cret@127.0.0.1:1/0", connect_timeout_seconds=2.0
    )
    with pytest.raises(BackendUnavailable) as info:
        await connect_redis_streams(settings, operation_timeout=2.0)
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


async def test_a_url_that_is_not_redis_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        await connect_redis_streams(RedisStreamsConfig(url="http://user:s3cret@host/"))
    assert info.value.key == "providers.redis-streams.url"
    assert "s3cret" not in str(info.value)
