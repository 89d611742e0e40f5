"""``mqcontract demo`` installs nothing: like ``open_provider()`` it refuses a bare database.

Needs PostgreSQL at ``DATABASE_URL`` (skipped without it unless
``MQCONTRACT_REQUIRE_BACKENDS`` is set); each test works in a database of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from mqcontract.config import MessagingConfig, PgmqConfig, load_config
from mqcontract.errors import BackendUnavailable
from mqcontract.events.demo import run_demo
from mqcontract.events.modes import DeploymentMode
from mqcontract_conformance.provisioning import backends_required, unavailable
from mqcontract_fixtures.pgmq import create_database, drop_database

ADMIN = load_config(validate_backend=False).pgmq.database_url


@pytest.fixture
async def bare_database() -> AsyncIterator[str]:
    """The URL of a new, empty database (no PGMQ), dropped afterwards."""
    name = f"mqc_demo_{secrets.token_hex(4)}"
    try:
        url = await create_database(ADMIN, name)
    except BackendUnavailable as exc:
        unavailable(f"PostgreSQL unavailable: {exc}", required=backends_required()).enforce()
        raise
    yield url
    await drop_database(ADMIN, name)


async def _schemas(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT nspname FROM pg_namespace")
    finally:
        await conn.close()
    return {r["nspname"] for r in rows} & {"pgmq", "mqcontract"}


async def test_demo_refuses_a_database_without_pgmq_and_installs_nothing(
    bare_database: str,
) -> None:
    config = dataclasses.replace(
        MessagingConfig(backend="pgmq"), pgmq=PgmqConfig(database_url=bare_database)
    )
    with pytest.raises(BackendUnavailable) as info:
        await run_demo(config, namespaces=["a"], steps=1, mode=DeploymentMode.HYBRID, timeout=10)
    assert f"mqcontract pgmq install --dsn {bare_database}" in str(info.value)
    assert await _schemas(bare_database) == set()


async def test_the_demo_command_says_so_in_one_line(bare_database: str) -> None:
    mqcontract = Path(sys.prefix) / "bin" / "mqcontract"
    env = {**os.environ, "DATABASE_URL": bare_database, "TASKER_MESSAGING_BACKEND": "pgmq"}
    env.pop("MQCONTRACT_CONFIG", None)
    done = await asyncio.to_thread(
        subprocess.run,
        [str(mqcontract), "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("mqcontract: BackendUnavailable: ")
    assert f"run `mqcontract pgmq install --dsn {bare_database}`" in line
    assert await _schemas(bare_database) == set()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--steps", "-3"], "--steps: must be at least 1, not -3"),
        (["--steps", "0"], "--steps: must be at least 1, not 0"),
        (["--namespaces", " , "], "--namespaces: names no namespace"),
        (["--timeout", "nan"], "--timeout: must be a finite number"),
    ],
)
def test_a_demo_argument_out_of_range_is_one_line_before_anything_runs(
    args: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--steps -3`` printed "steps sent: -6" and waited out the whole timeout; ``--steps
    0`` and an empty namespace list waited it out too."""
    from mqcontract_conformance.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["demo", "--backend", "memory", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert said in err, err
    assert "Traceback" not in err, err
