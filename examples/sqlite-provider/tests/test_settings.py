from __future__ import annotations

from pathlib import Path

import pytest
from mqcontract import load_config
from mqcontract.errors import BackendUnavailable, ConfigurationError

from conftest import run
from mq_sqlite import SqliteQueue, load_settings, open_sqlite_queue


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mq.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_defaults_then_toml_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MQ_SQLITE_PATH", raising=False)
    monkeypatch.delenv("MQ_SQLITE_POLL_INTERVAL_SECONDS", raising=False)
    toml = _toml(
        tmp_path,
        '[messaging]\nbackend = "memory"\n\n'
        '[providers.sqlite]\npath = "from-toml.db"\npoll_interval_seconds = 0.5\n',
    )
    config = load_config(toml, environ={})
    s = load_settings(config)
    assert (s.path, s.poll_interval_seconds, s.busy_timeout_seconds) == ("from-toml.db", 0.5, 5.0)

    monkeypatch.setenv("MQ_SQLITE_PATH", "from-env.db")
    assert load_settings(config).path == "from-env.db"


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("colour = 'blue'", "providers.sqlite.colour"),
        ("poll_interval_seconds = 'fast'", "providers.sqlite.poll_interval_seconds"),
        ("synchronous = 'sometimes'", "providers.sqlite.synchronous"),
        ("poll_interval_seconds = 0", "providers.sqlite.poll_interval_seconds"),
    ],
)
def test_a_bad_setting_names_its_key(tmp_path: Path, line: str, key: str) -> None:
    toml = _toml(tmp_path, f'[messaging]\nbackend = "memory"\n\n[providers.sqlite]\n{line}\n')
    with pytest.raises(ConfigurationError, match=key.replace(".", r"\.")):
        load_settings(load_config(toml, environ={}))


def test_factory_opens_a_wal_database_at_the_configured_path(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "queues.db"
    toml = _toml(
        tmp_path, f'[messaging]\nbackend = "memory"\n\n[providers.sqlite]\npath = "{db}"\n'
    )

    async def scenario() -> None:
        service = await open_sqlite_queue(load_config(toml, environ={}))
        async with service:
            assert isinstance(service, SqliteQueue)
            await service.create_queue("jobs")
        assert db.exists()
        assert db.read_bytes()[18:20] == b"\x02\x02"  # file format 2 = WAL

    run(scenario())


def test_an_unusable_path_is_backend_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    toml = _toml(
        tmp_path,
        f'[messaging]\nbackend = "memory"\n\n[providers.sqlite]\npath = "{blocker / "q.db"}"\n',
    )
    with pytest.raises(BackendUnavailable):
        run(open_sqlite_queue(load_config(toml, environ={})))
