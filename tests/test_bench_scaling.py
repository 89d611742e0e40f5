"""``mqcontract bench scaling``: pacing, percentiles, saturation lines, a quick run on memory."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest

from mqcontract.clock import VirtualClock
from mqcontract.config import load_config
from mqcontract.testing import HarnessSettings
from mqcontract_conformance.bench._measure import percentile, summarize_latencies
from mqcontract_conformance.bench._scaling_pacing import PacedRun, due_times, paced_sends
from mqcontract_conformance.bench._scaling_procs import (
    ChildSpec,
    cross_process_config,
    drain_with_processes,
)
from mqcontract_conformance.bench._scaling_report import knee, round_spread
from mqcontract_conformance.bench._workloads import BenchError
from mqcontract_conformance.cli import main
from mqcontract_conformance.harnesses import load_harness

#: Virtual seconds a paced run may take before the test gives up on it.
VIRTUAL_BOUND = 60.0


async def _paced(
    *, count: int, rate: float | None, senders: int, cost: float
) -> tuple[list[float], PacedRun]:
    """Run ``paced_sends`` on a virtual clock; each send takes ``cost`` virtual seconds."""
    clock = VirtualClock(start=0.0)
    started: list[float] = [0.0] * count

    async def send(i: int) -> None:
        started[i] = clock.now()
        await clock.sleep(cost)

    task = asyncio.create_task(paced_sends(send, count, rate, senders=senders, clock=clock))
    await clock.advance(0)  # the senders start at virtual time 0
    while not task.done() and clock.now() < VIRTUAL_BOUND:
        await clock.advance(0.01)
    return started, await task


def test_sends_are_due_on_a_schedule_fixed_in_advance() -> None:
    assert due_times(10.0, 4.0, 3) == [10.0, 10.25, 10.5]
    assert due_times(10.0, None, 2) == [10.0, 10.0]
    with pytest.raises(ValueError, match="rate"):
        due_times(0.0, 0.0, 1)


async def test_pacing_does_not_drift_when_each_send_takes_time() -> None:
    # Sleeping 0.1 s after each 0.05 s send would start them 0.15 s apart.
    started, run = await _paced(count=5, rate=10.0, senders=1, cost=0.05)
    assert started == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert run.late == 0
    assert run.seconds == pytest.approx(0.4)


async def test_slow_sends_delay_no_other_sender() -> None:
    started, run = await _paced(count=8, rate=10.0, senders=4, cost=0.25)
    assert started == pytest.approx([i / 10 for i in range(8)])
    assert run.late == 0


async def test_a_sender_that_cannot_keep_up_counts_late_sends() -> None:
    started, run = await _paced(count=4, rate=10.0, senders=1, cost=0.25)
    assert started == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert run.lags == pytest.approx([0.0, 0.15, 0.3, 0.45])
    assert run.late == 3
    assert run.max_lag == pytest.approx(0.45)


async def test_no_rate_sends_as_fast_as_the_senders_can() -> None:
    started, _ = await _paced(count=4, rate=None, senders=2, cost=0.1)
    assert started == pytest.approx([0.0, 0.0, 0.1, 0.1])


def test_percentiles_interpolate_and_summaries_are_in_milliseconds() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 99) == pytest.approx(99.0)
    assert percentile([1.0, 2.0], 100) == 2.0
    assert percentile([7.0], 1) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    summary = summarize_latencies([0.001, 0.002, 0.003])
    assert summary["p50_ms"] == pytest.approx(2.0)
    assert summary["max_ms"] == pytest.approx(3.0)
    assert summary["samples"] == 3
    assert summarize_latencies([]) == {}


def test_saturation_is_where_a_step_stops_adding_a_tenth() -> None:
    assert knee([(1, 100.0), (4, 300.0), (16, 310.0)]) == "flat from 4 (300 msg/s; 16: +3%)"
    assert knee([(1, 100.0), (4, 50.0)]) == "best at 1 (100 msg/s; 4: -50%)"
    assert knee([(1, 100.0), (4, 95.0)]) == "flat from 1 (100 msg/s; 4: -5%)"
    assert knee([(1, 100.0), (2, 190.0)]) == "still growing at 2 (190 msg/s, 1.9x 1)"
    assert knee([(1, None)]) == "no data"


def test_the_spread_of_rounds_is_taken_from_the_figures() -> None:
    def point(*rates: float) -> dict[str, object]:
        return {"rounds_msg_s": list(rates)}

    result = {
        "workers": [{"points": [point(100.0, 150.0), point(100.0, 110.0)]}],
        "processes": {"applicable": False},
        "batch_cost": [point(10.0, 40.0), point(5.0)],
    }
    spread = round_spread({"providers": {"p": result}})
    assert spread == (
        "In this run the rounds of one setting differed by 50% (median, fastest over "
        "slowest) and by up to 300%."
    )
    assert round_spread({"providers": {"p": {**result, "batch_cost": [], "workers": []}}}) is None


def test_consumer_processes_reach_the_backend_the_harness_provisioned() -> None:
    settings = HarnessSettings(config=load_config(validate_backend=False), run_id="t")
    assert cross_process_config(load_harness("memory", settings)) is None
    pgmq = load_harness("pgmq", settings)
    config = cross_process_config(pgmq)
    assert config is not None
    assert config.backend == "pgmq"
    assert config.pgmq.database_url == getattr(pgmq, "url", None)
    assert config.pgmq.database_url.endswith("/mqc_t")
    quorum = cross_process_config(load_harness("rabbitmq-quorum", settings))
    assert quorum is not None
    assert quorum.backend == "rabbitmq-quorum"


async def test_a_consumer_process_that_cannot_connect_fails_the_run_at_once() -> None:
    base = load_config(validate_backend=False)
    rabbit = dataclasses.replace(
        base.rabbitmq,
        url="amqp://guest:guest@127.0.0.1:1/%2F",  # nothing listens on port 1
        use_management_api=False,
        connection_timeout_seconds=5.0,
    )
    spec = ChildSpec(
        provider="rabbitmq",
        config=dataclasses.replace(base, rabbitmq=rabbit).with_backend("rabbitmq"),
        queue="scale_unreachable",
        mode="EventDrivenOnly",
        workers=1,
        batch=1,
    )
    with pytest.raises(BenchError, match="consumer process 0 failed"):
        await drain_with_processes(spec, 1, 10, bound=60.0)


def test_a_quick_run_on_memory_writes_json_tables_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need the 'plots' extra")
    args = ["bench", "scaling", "--provider", "memory", "--quick", "-q", "--out", str(tmp_path)]
    assert main(args) == 0

    report = json.loads((tmp_path / "scaling.json").read_text())
    assert report["command"].startswith("mqcontract bench scaling --provider memory --quick")
    assert {"cpu_count", "python", "packages"} <= set(report["machine"])
    result = report["providers"]["memory"]
    assert [series["handler_ms"] for series in result["workers"]] == [0.0, 1.0]
    for series in result["workers"]:
        assert [p["workers"] for p in series["points"]] == [1, 4, 16]
        assert all(p["median_msg_s"] > 0 for p in series["points"])
    assert result["processes"] == {
        "applicable": False,
        "reason": "not applicable: the provider keeps its queues inside one process",
    }
    latency = result["latency"]
    assert latency["capacity_msg_s"] > 0
    assert [p["load"] for p in latency["points"]] == [0.1, 0.5, 0.9]
    assert all(p["p50_ms"] <= p["p99_ms"] for p in latency["points"])
    assert {(r["operation"], r["batch"]) for r in result["batch_cost"]} == {
        (op, b) for op in ("send_batch", "receive_ack", "receive_ack_claims") for b in (1, 10, 100)
    }
    assert all(r["median_cpu_us_per_msg"] > 0 for r in result["batch_cost"])
    assert result["errors"] == []

    markdown = (tmp_path / "scaling.md").read_text()
    for heading in ("by workers", "by consumer processes", "Push latency", "by batch size"):
        assert f"## Event-system throughput {heading}" in markdown or heading in markdown
    assert "| memory | EventDrivenOnly | does nothing |" in markdown
    assert "| memory | EventDrivenOnly | awaits 1 ms |" in markdown
    assert "| memory | not applicable |" in markdown
    assert "**memory** (EventDrivenOnly): workers: idle handler " in markdown
    assert "; processes: not applicable; latency: p99 " in markdown
    assert "shared 2-vCPU" in markdown
    for name in ("workers", "processes", "latency", "batch"):
        svg = tmp_path / f"scaling_{name}.svg"
        assert f"](scaling_{name}.svg)" in markdown
        text = svg.read_text()
        assert "<svg" in text
        assert "memory" in text  # the legend or the not-applicable note names the provider
