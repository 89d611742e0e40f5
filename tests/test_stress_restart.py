"""``mqcontract stress --fault restart`` on the harness's private server, PGMQ and RabbitMQ.

The run starts the provider's private server (``Harness.private_backend``), puts the
whole load on it and SIGKILLs and restarts it every interval; the shared services are
never touched. Each run is small (200 messages) and bounded; it skips where the server
binaries or the shared service the harness sets up on are missing.
"""

from __future__ import annotations

from typing import Any

import pytest

from mqcontract.errors import BackendUnavailable
from mqcontract_conformance.provisioning import backends_required, unavailable
from mqcontract_conformance.stress import StressSettings, run_stress
from mqcontract_conformance.stress.account import Account
from mqcontract_fixtures.private.postgres import PrivatePostgres
from mqcontract_fixtures.private.rabbitmq import rabbitmq_available

#: Bound on each run's load phase, seconds (a private RabbitMQ restart takes ~5 s).
BOUND = 120.0


def _settings(provider: str, fault_interval: float) -> StressSettings:
    return StressSettings(
        provider=provider,
        messages=200,
        producers=2,
        consumers=2,
        workers=2,
        vt=1.0,
        slow_rate=0.0,
        fault="restart",
        fault_interval=fault_interval,
        poll_interval=0.5,
        max_seconds=BOUND,
        seed=1,
    )


async def _run(settings: StressSettings) -> Account:
    try:
        return await run_stress(settings, out=None)
    except BackendUnavailable as exc:  # the shared service the harness sets up on
        message = f"{settings.provider} unavailable: {exc}"
        unavailable(message, required=backends_required()).enforce()
        raise


def _check_restarted(data: dict[str, Any], server: str) -> None:
    """The faults were restarts of the private server, and the load ran on it."""
    faults, backend = data["faults"], data["backend"]
    assert faults["kind"] == "restart"
    assert faults["injected"] >= 1, faults
    assert "SIGKILL" in faults["how"]
    assert len(faults["restart_seconds"]) == faults["injected"]
    assert str(backend["server"]).startswith(server), backend
    assert data["finished_within_bound"] is True


async def test_pgmq_restarted_by_sigkill_loses_nothing_and_confirms_nothing_twice() -> None:
    if PrivatePostgres.binary() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    account = await _run(_settings("pgmq", fault_interval=0.5))
    data = account.to_dict()
    _check_restarted(data, "private PostgreSQL")
    assert data["backend"]["fsync"] == "on"
    assert account.ok, data


async def test_rabbitmq_restarted_by_sigkill_loses_nothing() -> None:
    """Nothing confirmed is lost; acks may be undone (RabbitMQ 3.10 writes a classic
    queue's acks lazily, the known DUR-2 break), so ``ok`` is not asserted."""
    if not rabbitmq_available():
        pytest.skip("RabbitMQ server is not installed")
    account = await _run(_settings("rabbitmq", fault_interval=2.0))
    data = account.to_dict()
    _check_restarted(data, "private RabbitMQ")
    assert account.sent == 200, data
    assert (account.lost, account.unfinished, account.unexpected) == (0, 0, 0), data
    assert account.processed == 200
