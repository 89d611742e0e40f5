"""Running one rule against one provider, in its own event loop, with cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mqcontract.errors import BackendUnavailable, ConnectionLost, MessagingError, ProviderClosed
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HookUnavailable
from mqcontract_conformance._where import in_rule_traceback
from mqcontract_conformance.context import CaseContext, ContractViolation
from mqcontract_conformance.leftovers import PerHarness
from mqcontract_conformance.measurement import Measurement
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.registry import Rule
from mqcontract_conformance.timing import TimingProfile

__all__ = ["CaseOutcome", "ProviderErrorInRule", "ProviderHung", "run_case"]

T = TypeVar("T")


class ProviderErrorInRule(Exception):
    """The provider raised where the rule expects the call to succeed.

    A failure of the run, but not a rule's verdict (not a ``ContractViolation``): a
    known-broken rule (a strict xfail for ``AssertionError``) is not excused by it, and
    the selftest does not count it as a catch. Its text names the rule and the call.
    """


class ProviderHung(Exception):
    """Opening the case's service, or closing what the case opened, did not finish
    within its bound.

    Like :class:`ProviderErrorInRule`, a failure of the run and not a rule's verdict:
    every case opens and closes, so it says nothing about the rule the case checks (ERR-3
    closes inside its check, where a close that hangs is that rule's failure). Without
    the bound one such call hung the whole run.
    """


#: How many cases in a row each step of a harness's provider hung past its bound: the
#: next case waits less there (:func:`_bound`), so a provider whose close never returns
#: fails a whole run in minutes, not in an hour of case bounds.
_HUNG: PerHarness[Counter[str]] = PerHarness()

#: Seconds the reference providers' own connect and operation timeouts default to: after
#: one hang a step still gets that long (times the scale), as a slow but working close
#: may need; after two in a row, the operation bound.
_PROVIDER_DEFAULT_BOUND = 30.0

OPENING = "opening the service"
CHECKING = "the rule's check"
CLOSING = "closing what the case opened"


def _hung_on(harness: Harness) -> Counter[str]:
    hung = _HUNG.get(harness)
    if hung is None:
        hung = Counter()
        _HUNG.set(harness, hung)
    return hung


def _bound(timing: TimingProfile, harness: Harness, step: str) -> float:
    times = _hung_on(harness)[step]
    if times == 0:
        return timing.case
    if times == 1:
        return min(timing.case, _PROVIDER_DEFAULT_BOUND * timing.scale)
    return min(timing.case, timing.operation)


@dataclass
class _Progress:
    """Where a case is, and until when its current step may run: its bound, then the
    operation bound for it to end once cancelled (see :func:`run_case`)."""

    grace: float
    step: str = OPENING
    deadline: float = float("inf")
    failure: BaseException | None = None
    #: Set by the watcher when it gave the case up: what the task still does then (in
    #: the loop's shutdown, or when the garbage collector closes it) changes nothing.
    abandoned: bool = False
    #: Set on each step, so the watcher reads the new deadline at once.
    moved: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self, step: str, bound: float) -> None:
        self.step = step
        self.deadline = asyncio.get_running_loop().time() + bound + self.grace
        self.moved.set()


async def _step(
    start: Callable[[], Coroutine[Any, Any, T]],
    what: str,
    harness: Harness,
    timing: TimingProfile,
    run_id: str,
    progress: _Progress,
) -> T:
    """Run ``start()`` within the case bound (shorter when the harness hung on ``what``
    last time); past it, :class:`ProviderHung` names the step. In the case's own task:
    a provider may open in one and close in the same (an anyio task group, a cancel
    scope); the watcher in :func:`run_case` leaves a step that does not end when
    cancelled."""
    __tracebackhide__ = True  # pytest shows the rule's frames, not the kit's
    bound = _bound(timing, harness, what)
    progress.enter(what, bound)
    hung = _hung_on(harness)
    try:
        async with asyncio.timeout(bound) as deadline:
            result = await start()
    except Exception as exc:  # a cancellation from outside, or the task's close, passes
        if not deadline.expired() or progress.abandoned:
            raise
        hung[what] += 1
        raise _hung(harness, what, bound, run_id) from exc
    if deadline.expired() and not progress.abandoned:  # it swallowed the cancellation
        hung[what] += 1
        if isinstance(result, MessagingService):  # opened late: not left open
            with contextlib.suppress(Exception):
                async with asyncio.timeout(progress.grace):
                    await result.close()
        raise _hung(harness, what, bound, run_id)
    hung[what] = 0
    return result


def _hung(harness: Harness, what: str, bound: float, run_id: str) -> ProviderHung:
    return ProviderHung(
        f"{harness.name}: {what} did not finish within {bound:g} s (run {run_id}); "
        "every call the kit makes is bounded, and this one is a provider's to keep"
    )


@dataclass
class CaseOutcome:
    """What happened when the check did not raise: it passed, or it did not run and why.

    A failure is an exception (``ContractViolation``), which pytest reports as such.
    """

    outcome: Outcome = Outcome.PASSED
    #: Why the rule did not run (empty when it passed).
    reason: str = ""
    capabilities: str = "{}"
    metrics: dict[str, float] = field(default_factory=dict)
    #: Capabilities the check measured (see :mod:`.measurement`).
    measured: list[Measurement] = field(default_factory=list)

    @property
    def skip_reason(self) -> str | None:
        """The reason, when the rule did not run; None when it ran."""
        return self.reason if self.outcome.skip else None


async def run_case(
    harness: Harness,
    rule: Rule,
    timing: TimingProfile,
    run_id: str,
    *,
    into: CaseOutcome | None = None,
) -> CaseOutcome:
    """Open a fresh service, run the rule's check, always clean up and close.

    ``into``, when given, is the outcome filled in: what a check measured (metrics,
    measured capabilities) is there even when the check raised.

    Each step (open, check, close) has its bound (``asyncio.timeout``), in one task, as
    a provider may need (an anyio task group opened in ``open`` is closed in ``close``).
    That task is watched from outside: a step still running the operation bound after
    its own bound passed (it swallowed the cancellation, or awaits something unbounded
    in its cleanup) is left, and the case fails naming it.
    """
    __tracebackhide__ = True  # pytest shows the rule's frames, not the kit's
    outcome = CaseOutcome() if into is None else into
    progress = _Progress(grace=timing.operation)
    progress.enter(OPENING, _bound(timing, harness, OPENING))
    task = asyncio.ensure_future(_run_case(harness, rule, timing, run_id, outcome, progress))
    try:
        await _watch(task, progress)
    except asyncio.CancelledError:  # the caller's: the case ends first, within the grace
        task.cancel()
        await asyncio.wait({task}, timeout=progress.grace)
        raise
    if task.done():
        return task.result()
    progress.abandoned = True
    task.cancel()  # and left: the loop's bounded shutdown reaps or abandons it
    if progress.step != CHECKING:
        _hung_on(harness)[progress.step] += 1
    text = (
        f"{progress.step} ran past its bound and did not end within {progress.grace:g} s"
        f" of being cancelled (run {run_id})"
    )
    if progress.step == CHECKING:
        raise ContractViolation(f"[{rule.id}] {text}")
    hung = ProviderHung(f"{harness.name}: {text}")
    if progress.failure is not None:
        progress.failure.add_note(str(hung))  # the case's own failure comes first
        raise progress.failure
    if progress.step == CLOSING and outcome.outcome.skip:
        outcome.reason = f"{outcome.reason} ({hung})"  # the rule did not apply
        return outcome
    raise hung


async def _watch(task: asyncio.Task[CaseOutcome], progress: _Progress) -> None:
    """Wait until ``task`` ends or its current step's deadline passes, reading the
    deadline again each time the case moves to another step."""
    loop = asyncio.get_running_loop()
    while not task.done() and (left := progress.deadline - loop.time()) > 0:
        progress.moved.clear()
        moved = asyncio.ensure_future(progress.moved.wait())
        try:
            await asyncio.wait({task, moved}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            moved.cancel()


async def _run_case(
    harness: Harness,
    rule: Rule,
    timing: TimingProfile,
    run_id: str,
    outcome: CaseOutcome,
    progress: _Progress,
) -> CaseOutcome:
    __tracebackhide__ = True  # pytest shows the rule's frames, not the kit's
    clock = harness.new_clock()
    try:
        service = await _step(
            lambda: harness.open(clock), OPENING, harness, timing, run_id, progress
        )
    except BackendUnavailable as exc:
        if isinstance(exc, ConnectionLost | ProviderClosed):
            raise
        # A harness without a setup probe (a plain module:factory) finds out here.
        outcome.outcome = Outcome.BACKEND_UNAVAILABLE
        outcome.reason = f"{harness.name}: backend unavailable: {exc}"
        return outcome
    outcome.capabilities = json.dumps(service.capabilities.to_dict())
    ctx = CaseContext(
        rule_id=rule.id,
        service=service,
        harness=harness,
        timing=timing,
        clock=clock,
        run_id=run_id,
    )
    bound = timing.case if clock is None else 60.0
    progress.enter(CHECKING, bound)
    try:
        if not rule.applies_when.applies(service.capabilities):
            outcome.outcome = Outcome.NOT_CLAIMED
            outcome.reason = f"{rule.id} not claimed: applies when {rule.applies_when}"
            return outcome
        deadline_hit = False
        try:
            async with asyncio.timeout(bound) as deadline:
                await rule.check(ctx)
        except HookUnavailable as exc:
            outcome.outcome = Outcome.NEEDS_HOOK
            outcome.reason = f"{rule.id} needs a harness hook: {exc}"
        except TimeoutError:
            deadline_hit = True
        except MessagingError as exc:
            if deadline.expired():  # the bound cut the call short: not the provider's error
                raise ContractViolation(
                    f"[{rule.id}] the case did not finish within {bound:g} s (run {run_id})"
                ) from exc
            raise ProviderErrorInRule(_unexpected(rule.id, exc, run_id)) from exc
        # Checked separately: code under test that swallows cancellation would otherwise
        # let a case that hit its bound finish as if it had passed.
        if deadline_hit or deadline.expired():
            raise ContractViolation(
                f"[{rule.id}] the case did not finish within {bound:g} s (run {run_id})"
            )
        return outcome
    except BaseException as exc:
        progress.failure = exc
        raise
    finally:
        outcome.metrics = dict(ctx.metrics)
        outcome.measured = list(ctx.measured)
        if not progress.abandoned:  # given up on: its service is left, like the task
            await _close_after(ctx, harness, service, clock, timing, run_id, progress, outcome)


async def _close_after(
    ctx: CaseContext,
    harness: Harness,
    service: object,
    clock: object,
    timing: TimingProfile,
    run_id: str,
    progress: _Progress,
    outcome: CaseOutcome,
) -> None:
    """Close what the case opened, within its bound; a hang is the case's failure, a note
    on the failure it already had, or (a rule that did not apply) part of its reason."""
    __tracebackhide__ = True  # pytest shows the rule's frames, not the kit's
    try:
        await _step(
            lambda: _close_case(ctx, harness, service, clock),
            CLOSING,
            harness,
            timing,
            run_id,
            progress,
        )
    except ProviderHung as hung:
        if progress.failure is not None:
            progress.failure.add_note(str(hung))  # the case's own failure comes first
        elif outcome.outcome.skip:  # the rule did not apply: it stays so, saying why
            outcome.reason = f"{outcome.reason} ({hung})"
        else:
            raise


async def _close_case(ctx: CaseContext, harness: Harness, service: object, clock: object) -> None:
    for sub in ctx.subscriptions:
        with contextlib.suppress(Exception):
            await sub.aclose()
    for other in ctx.others:
        with contextlib.suppress(Exception):
            await other.close()
    await _cleanup(harness, service, ctx.queues, clock)


def _unexpected(rule_id: str, exc: MessagingError, run_id: str) -> str:
    """A failure's text for an error raised (by the provider, or a harness hook) where the
    rule expected none
    (the rule's own expected errors are checked with ``ctx.raises``): the rule, the
    error, and the line of the rule's check that made the call."""
    line = in_rule_traceback(exc.__traceback__)
    where = f" at {line}" if line else ""
    return (
        f"[{rule_id}] {type(exc).__name__} raised where the rule expects the call to "
        f"succeed{where}: {exc} (run id {run_id})"
    )


async def _cleanup(harness: Harness, service: object, queues: list[str], clock: object) -> None:
    assert isinstance(service, MessagingService)
    try:
        await harness.cleanup(service, queues)
    except ProviderClosed:
        fresh = await harness.open(clock)  # type: ignore[arg-type]
        try:
            await harness.cleanup(fresh, queues)
        finally:
            await fresh.close()
    except MessagingError:
        pass
    finally:
        with contextlib.suppress(Exception):
            await service.close()
