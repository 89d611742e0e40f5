"""PGMQ versions: an older SQL install is upgraded in place by a chain of upgrade scripts
(named and shaped like PGMQ's ``pgmq--A--B.sql``), queues and messages survive, and a
version the provider was not tested with is refused by install and by open.

The ``pgmq`` package ships no upgrade scripts, so the older install here is the shipped
one recorded as an older version, and the scripts are written per test: each leaves a
marker, which shows what ran and in which order.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqcontract.config import load_config
from mqcontract.providers.pgmq import (
    TESTED_PGMQ_VERSIONS,
    UnsupportedPgmqVersion,
    embedded_pgmq_version,
    install_pgmq,
    open_pgmq,
)
from mqcontract.providers.pgmq._versions import available_steps, upgrade_path
from mqcontract_conformance.cli import main
from mqcontract_fixtures.pgmq import create_database, drop_database
from tests.pgmq_support import config, sql

ADMIN_URL = load_config(validate_backend=False).pgmq.database_url
OLDER = "1.12.1"
SHIPPED = embedded_pgmq_version()


@pytest.fixture
async def older_install(pgmq_db_url: str) -> AsyncIterator[str]:
    """A private database whose PGMQ says it is ``OLDER``, with a queue of three messages."""
    name = f"mqc_tu_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = await create_database(ADMIN_URL, name)
    try:
        await install_pgmq(url)
        await sql(url, f"COMMENT ON SCHEMA pgmq IS 'PGMQ {OLDER} (SQL install by mqcontract)'")
        await sql(url, "SELECT pgmq.create('kept')")
        for i in range(3):
            await sql(url, "SELECT pgmq.send('kept', $1::jsonb)", f'{{"i": {i}}}')
        yield url
    finally:
        await drop_database(ADMIN_URL, name)


def _scripts(directory: Path, *steps: tuple[str, str], failing: str | None = None) -> Path:
    """Upgrade scripts for ``steps``, each creating ``pgmq.mqc_step_<to>()``; the one to
    ``failing`` fails half-way."""
    directory.mkdir(exist_ok=True)
    for source, target in steps:
        marker = "mqc_step_" + target.replace(".", "_")
        body = (
            '\\echo Use "ALTER EXTENSION pgmq UPDATE" to load this file. \\quit\n'
            f"CREATE FUNCTION @extschema@.{marker}() RETURNS text LANGUAGE sql"
            f" AS $$ SELECT '{source}->{target}' $$;\n"
        )
        if target == failing:
            body += "SELECT 1 / 0;\n"
        (directory / f"pgmq--{source}--{target}.sql").write_text(body, encoding="utf-8")
    return directory


async def _cli(*args: str) -> int:
    """``mqcontract ARGS`` (it runs its own event loop, so in a thread)."""
    return await asyncio.to_thread(main, list(args))


async def _version(url: str) -> str:
    rows = await sql(url, "SELECT obj_description('pgmq'::regnamespace, 'pg_namespace')")
    return str(rows[0][0])


async def _markers(url: str) -> list[str]:
    rows = await sql(
        url,
        "SELECT proname::text FROM pg_proc WHERE pronamespace = 'pgmq'::regnamespace"
        " AND proname LIKE 'mqc_step_%' ORDER BY oid",
    )
    return [str(r[0]) for r in rows]


async def test_an_older_install_is_upgraded_in_place_and_keeps_its_messages(
    older_install: str, tmp_path: Path
) -> None:
    scripts = _scripts(tmp_path / "sql", (OLDER, "1.12.5"), ("1.12.5", SHIPPED), ("1.0.0", "1.1.0"))
    result = await install_pgmq(older_install, upgrade_scripts=[scripts])
    assert (result.action, result.method) == ("upgraded", "sql")
    assert (result.previous, result.version) == (OLDER, SHIPPED)
    assert result.scripts == (f"pgmq--{OLDER}--1.12.5.sql", f"pgmq--1.12.5--{SHIPPED}.sql")
    assert f"PGMQ {OLDER} -> {SHIPPED} (sql) upgraded in" in result.describe()
    assert await _version(older_install) == f"PGMQ {SHIPPED} (SQL install by mqcontract)"
    assert await _markers(older_install) == ["mqc_step_1_12_5", "mqc_step_1_13_0"]

    svc = await open_pgmq(config(older_install))  # the upgraded version is accepted
    try:
        got = await svc.receive_messages("kept", 30, 10)
        assert [m.payload for m in got] == [f'{{"i": {i}}}'.encode() for i in range(3)]
    finally:
        await svc.close()
    again = await install_pgmq(older_install, upgrade_scripts=[scripts])
    assert (again.action, again.version) == ("found", SHIPPED)


async def test_a_failing_upgrade_script_changes_nothing(older_install: str, tmp_path: Path) -> None:
    scripts = _scripts(tmp_path / "sql", (OLDER, SHIPPED), failing=SHIPPED)
    with pytest.raises(Exception, match="division by zero"):
        await install_pgmq(older_install, upgrade_scripts=[scripts])
    assert await _version(older_install) == f"PGMQ {OLDER} (SQL install by mqcontract)"
    assert await _markers(older_install) == []


async def test_an_untested_version_without_upgrade_scripts_is_refused_by_install_and_open(
    older_install: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UnsupportedPgmqVersion) as raised:
        await install_pgmq(older_install, upgrade_scripts=[tmp_path])
    assert raised.value.found == OLDER
    assert raised.value.supported == TESTED_PGMQ_VERSIONS
    text = str(raised.value)
    assert f"PGMQ {OLDER}" in text
    assert all(v in text for v in TESTED_PGMQ_VERSIONS)
    assert f"pgmq--{OLDER}--" in text
    assert str(tmp_path) in text

    with pytest.raises(UnsupportedPgmqVersion, match=f"PGMQ {OLDER}"):
        await open_pgmq(config(older_install))

    assert await _cli("pgmq", "install", "--dsn", older_install, "--no-upgrade") == 2
    refusal = f"UnsupportedPgmqVersion: pgmq: this database has PGMQ {OLDER}"
    assert refusal in capsys.readouterr().err


async def test_the_cli_reports_what_it_found_against_what_it_ships(
    pgmq_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _cli("pgmq", "install", "--dsn", pgmq_db_url) == 0
    out = capsys.readouterr().out
    assert f"PGMQ {SHIPPED} (sql) found in" in out
    assert f"this mqcontract ships PGMQ {SHIPPED}" in out


def test_the_shortest_chain_of_scripts_wins(tmp_path: Path) -> None:
    scripts = _scripts(
        tmp_path,
        ("1.10.0", "1.11.0"),
        ("1.11.0", "1.11.1"),
        ("1.11.1", "1.12.0"),
        ("1.11.0", "1.12.0"),
        ("1.12.0", "1.13.0"),
    )
    steps = available_steps([scripts])
    path = upgrade_path(steps, "1.10.0", "1.13.0")
    assert [(s.source, s.target) for s in path] == [
        ("1.10.0", "1.11.0"),
        ("1.11.0", "1.12.0"),
        ("1.12.0", "1.13.0"),
    ]
    assert upgrade_path(steps, "1.9.0", "1.13.0") == []
    assert upgrade_path(steps, "1.13.0", "1.12.0") == []


def test_the_shipped_sql_is_a_tested_version() -> None:
    """A pgmq package shipping an untested PGMQ fails here before it fails installs."""
    assert SHIPPED in TESTED_PGMQ_VERSIONS
