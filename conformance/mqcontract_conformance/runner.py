"""Running one rule against one provider, in its own event loop, with cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from mqcontract.errors import BackendUnavailable, ConnectionLost, MessagingError, ProviderClosed
from mqcontract.testing import Harness, HookUnavailable
from mqcontract_conformance.context import CaseContext, ContractViolation
from mqcontract_conformance.rules import Rule
from mqcontract_conformance.timing import TimingProfile

__all__ = ["CaseOutcome", "run_case"]


@dataclass
class CaseOutcome:
    """What happened; ``skip_reason`` set means the rule did not run (``skip_kind`` says why)."""

    skip_reason: str | None = None
    #: ``not-claimed``, ``needs-hook`` or ``backend-unavailable`` (``results.SKIP_KINDS``).
    skip_kind: str = ""
    capabilities: str = "{}"
    metrics: dict[str, float] = field(default_factory=dict)


async def run_case(harness: Harness, rule: Rule, timing: TimingProfile, run_id: str) -> CaseOutcome:
    """Open a fresh service, run the rule's check, always clean up and close."""
    clock = harness.new_clock()
    try:
        service = await harness.open(clock)
    except BackendUnavailable as exc:
        if isinstance(exc, ConnectionLost | ProviderClosed):
            raise
        # A harness without a setup probe (a plain module:factory) finds out here.
        reason = f"{harness.name}: backend unavailable: {exc}"
        return CaseOutcome(skip_reason=reason, skip_kind="backend-unavailable")
    outcome = CaseOutcome(capabilities=json.dumps(service.capabilities.to_dict()))
    ctx = CaseContext(
        rule_id=rule.id,
        service=service,
        harness=harness,
        timing=timing,
        clock=clock,
        run_id=run_id,
    )
    try:
        unmet = rule.unmet(service.capabilities)
        if unmet is not None:
            outcome.skip_reason, outcome.skip_kind = unmet, "not-claimed"
            return outcome
        bound = timing.case if clock is None else 60.0
        deadline_hit = False
        try:
            async with asyncio.timeout(bound) as deadline:
                await rule.check(ctx)
        except HookUnavailable as exc:
            outcome.skip_reason = f"{rule.id} needs a harness hook: {exc}"
            outcome.skip_kind = "needs-hook"
        except TimeoutError:
            deadline_hit = True
        # Checked separately: code under test that swallows cancellation would otherwise
        # let a case that hit its bound finish as if it had passed.
        if deadline_hit or deadline.expired():
            raise ContractViolation(
                f"[{rule.id}] the case did not finish within {bound:g} s (run {run_id})"
            )
        return outcome
    finally:
        outcome.metrics = dict(ctx.metrics)
        for sub in ctx.subscriptions:
            with contextlib.suppress(Exception):
                await sub.aclose()
        await _cleanup(harness, service, ctx.queues, clock)


async def _cleanup(harness: Harness, service: object, queues: list[str], clock: object) -> None:
    from mqcontract.service import SupportsPushNotifications

    assert isinstance(service, SupportsPushNotifications)
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
