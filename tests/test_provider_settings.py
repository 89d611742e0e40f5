"""Settings of providers outside the package: ``[providers.NAME]`` and ``provider_settings``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mqcontract.config import load_config, provider_settings
from mqcontract.errors import ConfigurationError


@dataclass(frozen=True, kw_only=True)
class _Settings:
    url: str = "x://default"
    prefetch_count: int = 100
    poll_interval_seconds: float = 0.5
    strict: bool = False
    label: str | None = None


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mq.toml"
    path.write_text(text)
    return path


def test_a_provider_table_is_kept_and_checked_by_the_provider(tmp_path: Path) -> None:
    path = _write(tmp_path, '[providers.my-queue]\nprefetch_count = 7\nurl = "x://toml"\n')
    config = load_config(path, environ={})
    settings = provider_settings(config, "my-queue", _Settings, environ={})
    assert settings == _Settings(url="x://toml", prefetch_count=7)


def test_defaults_apply_without_a_table() -> None:
    config = load_config(environ={})
    assert provider_settings(config, "my-queue", _Settings, environ={}) == _Settings()


def test_environment_wins_over_the_table_and_is_parsed(tmp_path: Path) -> None:
    path = _write(tmp_path, '[providers.my-queue]\nurl = "x://toml"\n')
    config = load_config(path, environ={})
    settings = provider_settings(
        config,
        "my-queue",
        _Settings,
        env_keys={
            "MY_QUEUE_URL": "url",
            "MY_QUEUE_STRICT": "strict",
            "MY_POLL": "poll_interval_seconds",
        },
        environ={"MY_QUEUE_URL": "x://env", "MY_QUEUE_STRICT": "yes", "MY_POLL": "0.25"},
    )
    assert (settings.url, settings.strict, settings.poll_interval_seconds) == (
        "x://env",
        True,
        0.25,
    )


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("typo_key = 1", "providers.my-queue.typo_key"),
        ('prefetch_count = "many"', "providers.my-queue.prefetch_count"),
        ("poll_interval_seconds = -1", "providers.my-queue.poll_interval_seconds"),
    ],
)
def test_bad_provider_settings_name_the_key(tmp_path: Path, table: str, key: str) -> None:
    config = load_config(_write(tmp_path, f"[providers.my-queue]\n{table}\n"), environ={})
    with pytest.raises(ConfigurationError) as info:
        provider_settings(config, "my-queue", _Settings, environ={})
    assert info.value.key == key


@pytest.mark.parametrize("toml", ["providers = 3\n", "[providers]\nmy-queue = 3\n"])
def test_providers_must_be_tables(tmp_path: Path, toml: str) -> None:
    with pytest.raises(ConfigurationError):
        load_config(_write(tmp_path, toml), environ={})


def test_unknown_top_level_sections_are_still_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        load_config(_write(tmp_path, "[my-queue]\nurl = 'x'\n"), environ={})


def test_a_dataclass_without_postponed_annotations_is_checked_too(tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    exec(  # a module without `from __future__ import annotations`
        "from dataclasses import dataclass\n"
        "@dataclass(frozen=True)\n"
        "class Plain:\n    count: int = 1\n    ratio: float = 0.5\n",
        namespace,
    )
    plain = namespace["Plain"]
    assert isinstance(plain, type)
    config = load_config(_write(tmp_path, "[providers.p]\ncount = 3\nratio = 2\n"), environ={})
    settings: object = provider_settings(config, "p", plain, environ={})
    assert vars(settings) == {"count": 3, "ratio": 2.0}
