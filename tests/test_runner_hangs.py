"""A provider whose open or close never returns fails its cases; it does not hang the run.

Each case opens a service and closes what it opened. Both were awaited without a bound:
a provider (or a harness) that hung there hung ``verify`` for ever, since the case bound
covers the rule's check only. Now each is bounded by the case bound, and by the
operation bound once the same harness hung on it, so the rest of a run fails in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from mqcontract.clock import VirtualClock
from mqcontract.errors import StaleClaim, StaleReason
from mqcontract.messages import Claim
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.service import MessagingService
from mqcontract_conformance import provisioning
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.loop import run_bounded
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.runner import CaseOutcome, ProviderErrorInRule, ProviderHung, run_case
from mqcontract_conformance.timing import TimingProfile

from .conftest import ClassHarness

#: Small bounds, so a hang costs a test about a second (the scale makes the shorter
#: bound for a step that hung before 0.3 s).
TIMING = TimingProfile(case=1.0, operation=0.2, scale=0.01)
#: The test's own watchdog: a bound that regressed fails the test, never hangs it.
WATCHDOG = 20.0

T = TypeVar("T")


class CloseNeverReturns(InMemoryMessagingService):
    """Closes, then waits for ever (a consumer task it awaits that never ends)."""

    async def close(self) -> None:
        await super().close()
        await asyncio.Event().wait()


class CleanupAndCloseNeverReturn(InMemoryMessagingService):
    """Deleting a queue (the case's cleanup) and closing both wait for ever, and the
    close swallows the cancellation meant to end it."""

    async def _delete_queue(self, queue: str) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                continue


class CloseSwallowsCancellation(InMemoryMessagingService):
    """Closes, then waits for ever, swallowing every cancellation."""

    async def close(self) -> None:
        await super().close()
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()


class SendSwallowsCancellation(InMemoryMessagingService):
    """A send that never returns and swallows every cancellation (a rule's check hangs)."""

    async def _send(self, queue: str, payload: bytes) -> int:
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()


class RealTime(ClassHarness):
    """Runs its provider on real time: the check's bound is the case bound."""

    def new_clock(self) -> VirtualClock | None:
        return None


class HungCloseAndStaleAcks(CloseNeverReturns):
    """Also fails ACK-1: every ack says the claim lapsed."""

    async def _ack(self, queue: str, claim: Claim) -> None:
        raise StaleClaim(queue, claim.msg_id, StaleReason.LAPSED)


class OpenNeverReturns(ClassHarness):
    """A harness whose open waits for ever (a connect with no timeout of its own)."""

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class OpenTimesOutItself(ClassHarness):
    """A harness whose open raises its own TimeoutError at once."""

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        raise TimeoutError("the provider's own connect timeout")


class SetupNeverReturns(ClassHarness):
    """A harness whose setup waits for ever (a server that never says it is ready)."""

    async def setup(self) -> None:
        await asyncio.Event().wait()


def _watched(call: Callable[[], T]) -> T:
    """``call()`` in a thread, failing the test if it outlives the watchdog."""
    got: list[T] = []
    raised: list[BaseException] = []

    def target() -> None:
        try:
            got.append(call())
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(WATCHDOG)
    assert not thread.is_alive(), f"still running after {WATCHDOG:g} s: the bound did not hold"
    if raised:
        raise raised[0]
    return got[0]


def _run(harness: ClassHarness, rule_id: str, *, shutdown: float = 1.0) -> CaseOutcome:
    case = get_rule(rule_id)
    return _watched(lambda: run_bounded(run_case(harness, case, TIMING, "t"), shutdown=shutdown))


def test_a_close_that_never_returns_fails_the_case_naming_the_step() -> None:
    harness = ClassHarness(CloseNeverReturns)
    started = time.monotonic()
    with pytest.raises(ProviderHung) as hung:
        _run(harness, "SEND-1")
    assert time.monotonic() - started < 5 * TIMING.case
    text = str(hung.value)
    assert "CloseNeverReturns: closing what the case opened did not finish within 1 s" in text
    # Not a rule's verdict: the rule it happened under says nothing about it.
    assert not isinstance(hung.value, ContractViolation | AssertionError)
    # The next cases of the same harness wait less there: 30 s times the scale, then
    # the operation bound.
    with pytest.raises(ProviderHung, match=r"within 0\.3 s"):
        _run(harness, "SEND-2")
    with pytest.raises(ProviderHung, match=r"within 0\.2 s"):
        _run(harness, "SEND-3")


def test_a_rule_that_does_not_apply_stays_not_claimed_when_the_close_hangs() -> None:
    outcome = _run(ClassHarness(CloseNeverReturns), "DLY-6")  # memory claims delays
    assert outcome.outcome is Outcome.NOT_CLAIMED
    assert outcome.reason.startswith("DLY-6 not claimed: applies when not delay (")
    assert "closing what the case opened did not finish within 1 s" in outcome.reason


def test_a_cleanup_and_close_that_swallow_cancellation_still_end_the_case() -> None:
    with pytest.raises(ProviderHung) as hung:
        _run(ClassHarness(CleanupAndCloseNeverReturn), "SEND-1")
    assert "closing what the case opened ran past its bound and did not end within 0.2 s" in str(
        hung.value
    )


class TaskBound(InMemoryMessagingService):
    """Records the task that opened it and the one that closes it (an anyio task group
    or cancel scope entered in open must be left in the same task)."""

    tasks: list[asyncio.Task[object] | None] = []

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        TaskBound.tasks.append(asyncio.current_task())

    async def close(self) -> None:
        TaskBound.tasks.append(asyncio.current_task())
        await super().close()


def test_a_case_opens_checks_and_closes_in_one_task() -> None:
    TaskBound.tasks = []
    _run(ClassHarness(TaskBound), "SEND-1")
    opened, *closed = TaskBound.tasks
    assert closed, TaskBound.tasks
    assert all(task is opened for task in closed), TaskBound.tasks


def test_an_open_that_never_returns_fails_the_case_naming_the_step() -> None:
    harness = OpenNeverReturns(InMemoryMessagingService)
    with pytest.raises(ProviderHung, match="opening the service did not finish within 1 s"):
        _run(harness, "LIFE-1")


def test_a_providers_own_timeout_is_not_taken_for_the_bound() -> None:
    with pytest.raises(TimeoutError, match="own connect timeout"):
        _run(OpenTimesOutItself(InMemoryMessagingService), "LIFE-1")


def test_a_case_that_failed_keeps_its_failure_when_the_close_then_hangs() -> None:
    with pytest.raises(ProviderErrorInRule) as failed:
        _run(ClassHarness(HungCloseAndStaleAcks), "ACK-1")
    assert str(failed.value).startswith("[ACK-1] StaleClaim raised")
    notes = getattr(failed.value, "__notes__", [])
    assert any("closing what the case opened did not finish" in n for n in notes), notes


def test_a_harness_setup_that_never_returns_is_the_harness_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(provisioning, "HARNESS_BOUND", 0.5)
    harness = SetupNeverReturns(InMemoryMessagingService)
    verdict = _watched(provisioning.Provisioner(harness, required=True).provision)
    assert verdict.readiness is provisioning.Readiness.BROKEN
    assert verdict.message.endswith(": harness setup did not finish within 0.5 s")


def test_a_close_that_swallows_cancellation_costs_later_cases_the_shorter_bounds() -> None:
    harness = ClassHarness(CloseSwallowsCancellation)
    took = []
    for rule_id in ("SEND-1", "SEND-2", "SEND-3"):
        started = time.monotonic()
        with pytest.raises(ProviderHung, match="closing what the case opened ran past its bound"):
            _run(harness, rule_id, shutdown=0.1)
        took.append(time.monotonic() - started)
    # The watcher reads each step's deadline as the case reaches it: the third case waits
    # the operation bound and its grace (0.4 s), not the opening step's (1.2 s).
    assert took[2] < 0.75 * took[0], took


def test_a_check_given_up_on_fails_its_rule_and_leaves_nothing_behind() -> None:
    unraisable: list[object] = []
    previous = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with pytest.raises(ContractViolation, match=r"\[SEND-1\] the rule's check ran past"):
            _run(RealTime(SendSwallowsCancellation), "SEND-1")
        gc.collect()  # the abandoned case's coroutine is closed: its finally must not run
    finally:
        sys.unraisablehook = previous
    assert unraisable == []
