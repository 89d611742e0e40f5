"""``mqcontract verify --cluster N``: the suite against a private cluster.

The first tests use a fake opener (no servers): the environment reaches the run and is
put back, the cluster is closed however the run ends, and settings that cannot work are
refused. The last runs a few rules, CLAIM-9 among them, against a private 3-node NATS
JetStream cluster (``-m cluster``, in CI's cluster step).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from mqcontract.errors import ConfigurationError
from mqcontract_conformance import verify_cluster
from mqcontract_conformance.stress import clusters
from mqcontract_fixtures.private.nats import nats_available

#: Bound on the live run, seconds.
BOUND = 300


class FakeBackend:
    addresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]

    def __init__(self) -> None:
        self.closed = False

    def environment(self) -> dict[str, str]:
        return {"NATS_URL": "nats://127.0.0.1:1", "NATS_JETSTREAM_REPLICAS": "3"}

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every cluster the fake opener started: (provider, size, keywords, backend)."""
    started: list[tuple[Any, ...]] = []

    def load(provider: str, spec: str | None = None) -> Any:
        async def opener(provider: str, size: int, **keywords: Any) -> FakeBackend:
            backend = FakeBackend()
            started.append((provider, size, keywords, backend))
            return backend

        return opener

    monkeypatch.setattr(clusters, "load_cluster_opener", load)
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.setenv("NATS_JETSTREAM_REPLICAS", "1")
    return started


def test_the_run_sees_the_clusters_environment_and_it_is_put_back(
    opened: list[tuple[Any, ...]],
) -> None:
    seen: dict[str, str | None] = {}

    def run() -> int:
        seen.update({k: os.environ.get(k) for k in ("NATS_URL", "NATS_JETSTREAM_REPLICAS")})
        return 3

    assert verify_cluster.on_cluster(["nats-jetstream"], 3, None, run) == 3
    assert seen == {"NATS_URL": "nats://127.0.0.1:1", "NATS_JETSTREAM_REPLICAS": "3"}
    assert "NATS_URL" not in os.environ
    assert os.environ["NATS_JETSTREAM_REPLICAS"] == "1"
    ((provider, size, keywords, backend),) = opened
    assert (provider, size, keywords) == ("nats-jetstream", 3, {"netns": False})
    assert backend.closed


def test_the_cluster_is_stopped_when_the_run_fails(opened: list[tuple[Any, ...]]) -> None:
    def run() -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        verify_cluster.on_cluster(["rabbitmq-quorum"], 3, None, run)
    assert opened[0][3].closed


@pytest.mark.parametrize(
    "providers", [["memory"], ["nats-jetstream", "rabbitmq-quorum"], [], ["rabbitmq"]]
)
def test_one_provider_that_runs_on_a_cluster_is_needed(
    opened: list[tuple[Any, ...]], providers: list[str]
) -> None:
    with pytest.raises(ConfigurationError, match="--cluster runs one provider of"):
        verify_cluster.on_cluster(providers, 3, None, lambda: 0)
    assert opened == []


@pytest.mark.cluster
@pytest.mark.skipif(not nats_available(), reason="nats-server not installed")
def test_verify_runs_rules_against_a_private_nats_cluster(tmp_path: Any) -> None:
    out = tmp_path / "nats-cluster.json"
    rules = "CLAIM-9,CLAIM-3,ACK-1,VT-2,LIFE-1"
    command = [sys.executable, "-m", "mqcontract_conformance.cli", "verify"]
    done = subprocess.run(
        [
            *command,
            "--provider",
            "nats-jetstream",
            "--cluster",
            "3",
            "--rules",
            rules,
            "--require-backends",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode == 0, _why(done.stdout) + done.stderr[-3000:]
    assert "private cluster of 3 up" in done.stdout
    assert "CLAIM-9" in out.read_text()


def _why(output: str) -> str:
    """The failures pytest printed (their ``E`` lines), else the output's end."""
    errors = [line for line in output.splitlines() if line.startswith("E ")]
    return "\n".join(errors)[-6000:] if errors else output[-3000:]
