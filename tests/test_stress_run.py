"""A tiny stress run end to end (in memory), and the command line around it."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from mqcontract.errors import (
    ConfigurationError,
    MessageTooLarge,
    MessagingError,
    OperationTimeout,
    QueueError,
)
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.cli import main
from mqcontract_conformance.stress import StressSettings, run_stress
from mqcontract_conformance.stress._load import _Run

SMALL = StressSettings(
    provider="memory",
    messages=300,
    producers=2,
    consumers=2,
    workers=3,
    fail_rate=0.1,
    slow_rate=0.02,
    vt=0.5,
    seed=7,
    max_seconds=60,
)


async def test_a_small_memory_run_loses_nothing_and_processes_nothing_twice() -> None:
    account = await run_stress(SMALL, out=None)
    assert account.ok, account.to_dict()
    assert account.sent == account.processed == account.acked == 300
    assert account.injected_failures > 0
    assert account.slow_handlers > 0
    assert account.overran_claims >= account.slow_handlers
    assert account.max_redelivery >= 1
    data = account.to_dict()
    assert data["finished_within_bound"] is True
    assert data["settings"]["messages"] == 300
    assert data["consumers"]["by_path"]


async def test_nack_on_failure_is_available_for_comparison() -> None:
    settings = dataclasses.replace(SMALL, nack_on_failure=True, slow_rate=0.0)
    account = await run_stress(settings, out=None)
    assert account.ok, account.to_dict()


async def test_consumers_run_in_the_mode_asked_for() -> None:
    """EventDrivenOnly: everything comes by push, nothing by the poller's receives."""
    settings = dataclasses.replace(SMALL, mode="EventDrivenOnly", slow_rate=0.0)
    account = await run_stress(settings, out=None)
    assert account.ok, account.to_dict()
    data = account.to_dict()
    assert data["settings"]["mode"] == "EventDrivenOnly"
    assert set(data["consumers"]["by_path"]) == {"push"}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"messages": 0}, "messages"),
        ({"fail_rate": 1.0}, "fail_rate"),
        ({"fault": "earthquake"}, "fault"),
        ({"mode": "Sometimes"}, "mode"),
        ({"fault": "restart"}, "fault"),  # memory has no private server
    ],
)
async def test_settings_out_of_range_are_configuration_errors(
    change: dict[str, object], key: str
) -> None:
    settings = dataclasses.replace(SMALL, **change)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=f"stress.{key}"):
        await run_stress(settings, out=None)


async def test_a_fault_the_provider_cannot_take_is_refused_up_front() -> None:
    settings = dataclasses.replace(SMALL, fault="restart")
    with pytest.raises(ConfigurationError, match="memory has no private_backend hook"):
        await run_stress(settings, out=None)


def test_the_command_prints_the_account_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stress" / "memory.json"
    status = main(
        [
            "stress",
            "--provider",
            "memory",
            "--messages",
            "200",
            "--vt",
            "0.5",
            "--seed",
            "3",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr()
    assert status == 0, printed.out
    assert "lost" in printed.out
    assert "OK: nothing lost" in printed.out
    assert "[stress memory]" in printed.err  # the progress line
    data = json.loads(out.read_text())
    assert data["ok"] is True
    assert data["sent"] == 200
    assert {"lost", "duplicated", "acked_twice", "unexpected", "max_redelivery"} <= set(data)


class _RefusingSends(InMemoryMessagingService):
    """Refuses one batch (as a quorum queue electing a leader does) and lets one run out
    of time; every other batch is stored."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[MessagingError] = []

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        calls = len(self.failures)
        if calls < 2:
            self.failures.append(
                QueueError(queue, "the broker refused the message")
                if calls == 0
                else OperationTimeout("send_batch", 5.0, queue)
            )
            raise self.failures[-1]
        return await super().send_batch(queue, payloads)


async def test_a_refused_or_timed_out_send_is_indeterminate_and_the_run_goes_on() -> None:
    settings = dataclasses.replace(SMALL, producers=1, batch=10)
    run = _Run(settings, out=None)
    service = _RefusingSends()
    await service.create_queue(run.queue)
    await run.produce(service, 0)
    assert len(service.failures) == 2
    assert len(run.ledger.indeterminate) == 20  # the two batches' keys
    assert len(run.ledger.sent) == settings.messages - 20
    await service.close()


class _TooLarge(InMemoryMessagingService):
    """Refuses every batch for a reason that is certain, not an unknown outcome."""

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        raise MessageTooLarge(queue, 10, 1)


async def test_a_certain_send_failure_ends_the_run_instead_of_counting_as_unknown() -> None:
    run = _Run(dataclasses.replace(SMALL, producers=1, batch=10), out=None)
    service = _TooLarge()
    await service.create_queue(run.queue)
    with pytest.raises(MessageTooLarge):
        await run.produce(service, 0)
    assert not run.ledger.indeterminate
    await service.close()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--max-seconds", "inf"), "argument --max-seconds: must be a finite number"),
        (("--max-seconds", "-1"), "argument --max-seconds: must be greater than 0"),
        (("--vt", "nan"), "argument --vt: must be a finite number"),
        (("--poll-interval", "0"), "argument --poll-interval: must be greater than 0"),
        (("--fail-rate", "1.5"), "argument --fail-rate: must be at least 0 and less than 1"),
        (("--messages", "0"), "argument --messages: must be at least 1"),
    ],
)
def test_a_value_no_run_can_honour_is_refused_while_parsing(
    args: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mqcontract_conformance.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["stress", "--provider", "memory", *args])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


def test_settings_with_endless_seconds_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="max_seconds"):
        dataclasses.replace(SMALL, max_seconds=math.inf).validate()
    with pytest.raises(ConfigurationError, match="poll_interval"):
        dataclasses.replace(SMALL, poll_interval=math.nan).validate()


@pytest.mark.parametrize("flag", ["--json", "--markdown"])
def test_an_output_that_cannot_be_written_fails_before_the_load_runs(
    flag: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mqcontract_conformance.stress import _load

    def loaded(*args: object, **kwargs: object) -> None:
        pytest.fail("the load ran before its output was checked")

    monkeypatch.setattr(_load, "run_stress", loaded)
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = blocker / "account.json"
    args = ["stress", "--provider", "memory", "--messages", "10", "--quiet", flag, str(target)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: {flag} {target}: cannot write there ("), err
    assert len(err.splitlines()) == 1
