"""Settings, entry points, and what happens when a server is not there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from mqcontract.config import load_config
from mqcontract.errors import BackendUnavailable, ConfigurationError
from mqcontract.registry import provider_names, resolve
from mqcontract.testing import HarnessSettings
from mqcontract_conformance.harnesses import load_harness

from mqcontract_sql_skip_locked import (
    SqlQueueConfig,
    connect_sql_mariadb,
    connect_sql_postgres,
    load_settings,
    open_sql_mariadb,
    open_sql_postgres,
)
from mqcontract_sql_skip_locked._config import MARIADB
from mqcontract_sql_skip_locked._mariadb import MariaDbStore
from mqcontract_sql_skip_locked.harness import MariaDbHarness, PostgresHarness, SqlHarness


def test_both_providers_and_their_harnesses_are_registered_by_name() -> None:
    assert {"sql-postgres", "sql-mariadb"} <= set(provider_names())
    assert resolve("sql-postgres") is open_sql_postgres
    assert resolve("sql-mariadb") is open_sql_mariadb
    settings = HarnessSettings(config=load_config(environ={}), run_id="t")
    assert isinstance(load_harness("sql-postgres", settings), PostgresHarness)
    assert isinstance(load_harness("sql-mariadb", settings), MariaDbHarness)


def test_settings_come_from_the_toml_table_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mq.toml"
    path.write_text(
        '[providers.sql-mariadb]\nurl = "mysql://app@db:3306/jobs"\ntable_prefix = "app"\n'
        "pool_size = 3\n"
    )
    config = load_config(path, environ={})
    monkeypatch.delenv("SQL_MARIADB_URL", raising=False)
    monkeypatch.delenv("SQL_POSTGRES_URL", raising=False)
    assert load_settings(config, "sql-mariadb") == SqlQueueConfig(
        url="mysql://app@db:3306/jobs", table_prefix="app", pool_size=3
    )
    assert load_settings(config, "sql-postgres").url == "postgresql://127.0.0.1:5432/test"
    monkeypatch.setenv("SQL_MARIADB_URL", "mysql://env@db2/x")
    assert load_settings(config, "sql-mariadb").url == "mysql://env@db2/x"


@pytest.mark.parametrize(
    ("key", "value"),
    [("table_prefix", '"Bad-Prefix"'), ("pool_size", "0"), ("poll_interval_seconds", "0")],
)
def test_a_bad_setting_names_its_key(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "mq.toml"
    path.write_text(f"[providers.sql-postgres]\n{key} = {value}\n")
    with pytest.raises(ConfigurationError) as info:
        load_settings(load_config(path, environ={}), "sql-postgres")
    assert info.value.key == f"providers.sql-postgres.{key}"


async def test_an_unreachable_server_is_backend_unavailable_without_the_password() -> None:
    for connect, url in (
        (connect_sql_postgres, "postgresql://user:s3cret@127.0.0.1:1/db"),
        (connect_sql_mariadb, "mysql://user:s3cret@127.0.0.1:1/db"),
    ):
        settings = SqlQueueConfig(url=url, connect_timeout_seconds=2.0)
        with pytest.raises(BackendUnavailable) as info:
            await connect(settings, operation_timeout=2.0)
        assert "s3cret" not in str(info.value)
        assert "127.0.0.1:1" in str(info.value)


async def test_a_url_of_the_wrong_kind_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        await connect_sql_postgres(SqlQueueConfig(url="mysql://user:s3cret@host/db"))
    assert info.value.key == "providers.sql-postgres.url"
    with pytest.raises(ConfigurationError) as info:
        await connect_sql_mariadb(SqlQueueConfig(url="http://user:s3cret@host/"))
    assert info.value.key == "providers.sql-mariadb.url"
    assert "s3cret" not in str(info.value)


async def test_a_mariadb_whose_sysdate_is_frozen_is_refused(
    harness: SqlHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settlements check claims against ``SYSDATE(6)``; a server started with
    ``--sysdate-is-now`` freezes it like ``NOW(6)``, and the provider refuses it."""
    if harness.name != MARIADB:
        pytest.skip("MariaDB only")
    settings = dataclasses.replace(harness.config, connect_timeout_seconds=5.0)
    service = await connect_sql_mariadb(settings, operation_timeout=5.0)
    try:
        assert isinstance(service.store, MariaDbStore)
        assert await service.store.sysdate_moves()  # this machine's server: it moves
    finally:
        await service.close()

    async def frozen(self: MariaDbStore) -> bool:
        return False

    monkeypatch.setattr(MariaDbStore, "sysdate_moves", frozen)
    with pytest.raises(ConfigurationError, match="sysdate-is-now") as info:
        await connect_sql_mariadb(settings, operation_timeout=5.0)
    assert info.value.key == "providers.sql-mariadb.url"
