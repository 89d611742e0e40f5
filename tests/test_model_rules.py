"""The MODEL rules have teeth: random programs catch broken providers, pass correct ones."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

from mqcontract.clock import VirtualClock
from mqcontract.config import MessagingConfig
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings, HookUnavailable
from mqcontract_conformance.cases import _model_machine
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.runner import CaseOutcome, run_case
from mqcontract_conformance.selftest.broken_core import (
    BatchAcksByIds,
    ConcurrentDoubleDelivery,
    DelayIgnored,
    IdsRestartWhenEmpty,
    LapsedAckAccepted,
    LimitIgnored,
    NackDeletes,
    NoopAck,
    ReceiveCountStuck,
    ReceivesOneAtATime,
    RepeatedClaims,
    ReversedReceive,
    SettlesAnyClaim,
    SilentAckOfUnknown,
    VisibilityNeverExpires,
)
from mqcontract_conformance.selftest.references import SignalMemory
from mqcontract_conformance.timing import TimingProfile

RunRule = Callable[[type[InMemoryMessagingService], str], CaseOutcome]

#: Broken providers whose defect lies in the model's domain (one service: ordering, ack,
#: nack, claims, visibility, delays, limits, ids, counts). Not here: defects that need a
#: second holder (IdSettlesCurrentClaim) or time between a send and a receive
#: (DeadlineFromSend, which only random programs reach).
BROKEN = [
    NoopAck,
    NackDeletes,
    VisibilityNeverExpires,
    ReversedReceive,
    LimitIgnored,
    DelayIgnored,
    ReceiveCountStuck,
    ConcurrentDoubleDelivery,
    LapsedAckAccepted,
    SettlesAnyClaim,
    RepeatedClaims,
    BatchAcksByIds,
    IdsRestartWhenEmpty,
    ReceivesOneAtATime,
    SilentAckOfUnknown,
]


def _caught(run_rule: RunRule, broken: type[InMemoryMessagingService]) -> str | None:
    try:
        run_rule(broken, "MODEL-1")
    except ContractViolation as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("seed", ["1", "2", "3", "4", "5"])
def test_model_1_catches_every_broken_provider_in_its_domain_at_every_seed(
    run_rule: RunRule, monkeypatch: pytest.MonkeyPatch, seed: str
) -> None:
    monkeypatch.setenv(_model_machine.SEED_ENV, seed)
    caught = {cls.__name__: _caught(run_rule, cls) for cls in BROKEN}
    missed = sorted(name for name, text in caught.items() if text is None)
    assert not missed, f"seed {seed}: MODEL-1 missed {missed}"
    for text in caught.values():
        assert text is not None
        assert text.startswith("[MODEL-1] the provider disagrees with the model in program")
        assert f"MQCONTRACT_MODEL_SEED={seed} " in text
        assert "MQCONTRACT_MODEL_PROGRAM=" in text
        assert "at step" in text


@pytest.mark.parametrize("seed", ["1", "2", "3"])
def test_correct_providers_pass_model_1(
    run_rule: RunRule, monkeypatch: pytest.MonkeyPatch, seed: str
) -> None:
    monkeypatch.setenv(_model_machine.SEED_ENV, seed)
    for provider in (InMemoryMessagingService, SignalMemory):
        outcome = run_rule(provider, "MODEL-1")
        assert outcome.skip_reason is None
        assert outcome.metrics["programs"] >= 10 + outcome.metrics["pair_programs"]
        assert outcome.metrics["operations"] > 1000


def test_model_2_is_skipped_without_a_sever_hook(run_rule: RunRule) -> None:
    outcome = run_rule(InMemoryMessagingService, "MODEL-2")
    assert outcome.skip_reason is not None
    assert "sever_connection" in outcome.skip_reason


class DecliningSever(Harness):
    """Overrides ``sever_connection`` only to decline it, as the provider guide says to."""

    def __init__(self) -> None:
        super().__init__("declines", HarnessSettings(config=MessagingConfig(), run_id="ds"))

    def new_clock(self) -> VirtualClock | None:
        return VirtualClock()

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        return InMemoryMessagingService(clock=clock)

    async def sever_connection(self, service: MessagingService) -> None:
        raise HookUnavailable("in-process store: no connection to sever")


def test_model_2_is_skipped_when_the_harness_declines_the_sever_hook() -> None:
    """Declined while the programs run (in their thread, under Hypothesis): a needs-hook
    skip naming the harness's reason, not a failure of the provider."""
    outcome = asyncio.run(run_case(DecliningSever(), get_rule("MODEL-2"), TimingProfile(), "ds"))
    assert outcome.outcome is Outcome.NEEDS_HOOK
    assert outcome.skip_reason is not None
    assert "no connection to sever" in outcome.skip_reason


def test_profiles_are_chosen_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_model_machine.PROFILE_ENV, raising=False)
    assert _model_machine.selected_profile().name == "short"
    monkeypatch.setenv(_model_machine.PROFILE_ENV, "LONG")
    long = _model_machine.selected_profile()
    assert long.examples > 10
    assert long.steps > 20
    monkeypatch.setenv(_model_machine.PROFILE_ENV, "endless")
    with pytest.raises(ValueError, match="MQCONTRACT_MODEL_PROFILE"):
        _model_machine.selected_profile()


class RealTimeMemory(Harness):
    """The in-memory provider on the real clock, like a networked backend."""

    def __init__(self) -> None:
        super().__init__("real-memory", HarnessSettings(config=MessagingConfig(), run_id="rt"))

    def new_clock(self) -> VirtualClock | None:
        return None

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        return InMemoryMessagingService()

    async def stored_ids(self, service: MessagingService, queue: str) -> list[int]:
        assert isinstance(service, InMemoryMessagingService)
        return service.stored_ids(queue)


def test_real_time_programs_pass_within_their_budget() -> None:
    start = time.monotonic()
    outcome = asyncio.run(run_case(RealTimeMemory(), get_rule("MODEL-1"), TimingProfile(), "rt"))
    assert outcome.skip_reason is None
    assert outcome.metrics["programs"] >= 6
    assert time.monotonic() - start < 30


def test_a_cancelled_case_stops_the_machine_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_model_machine.PROFILE_ENV, "long")
    threads = threading.active_count()

    async def cancelled_soon() -> None:
        harness = RealTimeMemory()
        await asyncio.wait_for(
            run_case(harness, get_rule("MODEL-1"), TimingProfile(), "rt"), timeout=1.0
        )

    start = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(cancelled_soon())
    assert time.monotonic() - start < 15
    deadline = time.monotonic() + 5
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)  # the worker thread winds down after its last operation
    assert threading.active_count() <= threads


def test_programs_past_the_time_budget_are_skipped_without_upsetting_hypothesis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    short = _model_machine.PROFILES["short"]
    many = dataclasses.replace(short, examples=80, real_time_examples=80, wait_budget=0.05)
    monkeypatch.setitem(_model_machine.PROFILES, "short", many)
    # A budget of 3 s for programs; the rest of the case's bound is for Hypothesis to
    # draw the programs it skips, slow on a machine as loaded as CI's (over 6 s there).
    timing = dataclasses.replace(TimingProfile(), case=60.0)
    monkeypatch.setattr(_model_machine, "PROGRAMS_SHARE", 0.05)
    outcome = asyncio.run(run_case(RealTimeMemory(), get_rule("MODEL-1"), timing, "rt"))
    assert outcome.skip_reason is None
    assert outcome.metrics["programs_skipped_for_time"] > 0
