"""``mqcontract bench``: a smoke run on the in-memory provider (no figure is checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mqcontract_conformance.bench import BenchSettings, run_bench
from mqcontract_conformance.bench._measure import percentile, summarize_latencies
from mqcontract_conformance.bench._progress import Progress
from mqcontract_conformance.bench._report import render_markdown, render_text
from mqcontract_conformance.bench._workloads import make_payload, plan_workloads
from mqcontract_conformance.cli import build_parser, main


def test_payloads_are_json_of_the_requested_size() -> None:
    for size in (16, 256, 10_000):
        payload = make_payload(size)
        assert len(payload) == size
        assert json.loads(payload)["pad"]


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert summarize_latencies([0.001, 0.002])["p50_ms"] == pytest.approx(1.5)


async def test_a_tiny_run_on_memory_measures_every_workload() -> None:
    settings = BenchSettings(
        providers=("memory",),
        messages=20,
        batch=5,
        rounds=1,
        slices=2,
        workers=2,
        latency_samples=3,
        recovery_samples=1,
        recovery_poll_interval=0.05,
    )
    report = await run_bench(settings, Progress(0, quiet=True))
    result = report["providers"]["memory"]
    assert {e["workload"] for e in result["throughput"]} >= {
        "send",
        "send_batch",
        "receive_ack",
        "receive_ack_batch",
        "consume_backlog_EventDrivenOnly",
        "consume_live_Hybrid",
    }
    for entry in result["throughput"]:
        assert entry["sides"]["provider"]["median_msg_s"] > 0, entry
    assert [len(e["sides"]["provider"]) > 0 for e in result["latency"]] == [True, True]
    suppressed, killed = result["recovery"]
    assert suppressed["fault"] == "suppress_notifications"
    assert suppressed["median_s"] is not None
    assert killed["fault"] == "kill_listener"  # a sever of the store connection
    assert killed["median_s"] is not None
    json.dumps(report)  # JSON-ready as it is
    assert "receive 5 + settle the batch" in render_text(report)
    assert "| workload |" in render_markdown(report, command="mqcontract bench")


def test_the_command_writes_json_and_markdown(tmp_path: Path) -> None:
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    args = ["bench", "--provider", "memory", "--messages", "10", "--batch", "5"]
    args += ["--rounds", "1", "--slices", "1", "--latency-samples", "0", "--no-recovery"]
    assert build_parser().parse_args(args).func is not None
    assert main([*args, "-q", "--json", str(out), "--markdown", str(md)]) == 0
    assert json.loads(out.read_text())["command"].startswith("mqcontract bench --provider memory")
    assert "## memory" in md.read_text()


async def test_the_provider_side_settles_a_received_batch_with_ack_claims() -> None:
    from collections.abc import Sequence

    from mqcontract.messages import ClaimRef
    from mqcontract.providers.memory import InMemoryMessagingService
    from mqcontract_conformance.bench._provider_side import ProviderSide

    class Counting(InMemoryMessagingService):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []
            self.singles = 0

        async def ack_claims(self, queue: str, claims: Sequence[ClaimRef]) -> list[bool]:
            self.batches.append(len(claims))
            return await super().ack_claims(queue, claims)

        async def ack_claim(self, queue: str, claim: ClaimRef) -> None:
            self.singles += 1
            await super().ack_claim(queue, claim)

    service = Counting()
    side = ProviderSide(service, poll_interval=None)
    await service.create_queue("q")
    await side.send_batch("q", [b"%d" % i for i in range(12)], 5)
    assert await side.receive_ack("q", 10, 5) == 10
    assert (service.batches, service.singles) == ([5, 5], 0)
    assert await side.receive_ack("q", 2, 1) == 2  # one at a time: ack_claim
    assert (service.batches, service.singles) == ([5, 5], 2)


def test_serial_acks_are_also_compared_confirmed_when_the_raw_side_does_not_confirm() -> None:
    """RabbitMQ's raw acks have no reply; the provider confirms its own, so the serial
    row is measured twice: as raw does it, and with raw confirming the same way."""
    plain = [w.key for w in plan_workloads(["Hybrid"], batch=10)]
    assert "receive_ack_confirmed" not in plain
    both = plan_workloads(["Hybrid"], batch=10, unconfirmed_raw_acks=True)
    keys = [w.key for w in both]
    assert keys.index("receive_ack") + 1 == keys.index("receive_ack_confirmed")
    assert "unconfirmed" in both[keys.index("receive_ack")].title


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--latency-samples", "-1"), "argument --latency-samples: must be at least 0"),
        (("--recovery-poll-interval", "nan"), "argument --recovery-poll-interval: must be a fini"),
        (("--recovery-poll-interval", "inf"), "argument --recovery-poll-interval: must be a fini"),
        (("--recovery-poll-interval", "0"), "argument --recovery-poll-interval: must be greater"),
        (("--messages", "0"), "argument --messages: must be at least 1"),
        (("scaling", "--latency-seconds", "inf"), "argument --latency-seconds: must be a finite"),
    ],
)
def test_a_value_no_run_can_honour_is_refused_while_parsing(
    args: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["bench", *args])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("--json",), "--json"),
        (("--markdown",), "--markdown"),
        (("scaling", "--out"), "--out"),
    ],
)
def test_an_output_that_cannot_be_written_fails_before_anything_is_measured(
    args: tuple[str, ...],
    flag: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mqcontract_conformance.bench import _scaling_cli, cli

    def measured(*args: object, **kwargs: object) -> None:
        pytest.fail("the bench ran before its output was checked")

    monkeypatch.setattr(cli, "run_bench", measured)
    monkeypatch.setattr(_scaling_cli, "run_scaling", measured)
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = blocker / "out"
    assert main(["bench", *args, str(target), "--provider", "memory", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: {flag} {target}: cannot write there ("), err
    assert len(err.splitlines()) == 1


def test_an_output_check_leaves_nothing_behind(tmp_path: Path) -> None:
    from mqcontract._arguments import output_problem

    assert output_problem("--out", tmp_path / "a" / "b", directory=True) is None
    assert output_problem("--json", tmp_path / "c.json") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert output_problem("--json", "") == "--json names no file (it is empty)"
