"""A look that is still running when a claim's timeout ends may see the message rightly.

``CaseContext.never(..., due=...)`` watches for something that must not happen before
``due`` (a claim leaking early): only an answer returned before ``due`` fails; what a
look that returned at or after ``due`` saw is handed back to the caller. CI failed
``pgmq::DUR-3`` once without this: the watch ended 1 ms before the claim did, and its
last look, begun inside the watch, was answered after the claim had ended, on a machine
busy with six test workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from mqcontract.clock import VirtualClock
from mqcontract.config import MemoryConfig
from mqcontract.errors import MessageNotFound
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.context import CaseContext, ContractViolation
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.runner import CaseOutcome, run_case
from mqcontract_conformance.selftest.broken_durability import RestartHarness
from mqcontract_conformance.selftest.references import RestartableMemory
from mqcontract_conformance.timing import TimingProfile
from tests.conftest import ClassHarness

#: How long a slow look takes (virtual seconds): more than one polling step.
SLOW = 0.3


async def _watch(*, answer_at: float, due: float | None = 1.0) -> list[int] | None:
    """``never`` over a 1 s window whose probe, started at its last step, returns
    :data:`SLOW` seconds later, seeing something if ``answer_at`` seconds have passed since
    the window began; ``due``: when what it sees may rightly be seen (None: never)."""
    clock = VirtualClock()
    async with InMemoryMessagingService(clock=clock) as service:
        ctx = CaseContext(
            rule_id="T-1",
            service=service,
            harness=ClassHarness(InMemoryMessagingService),
            timing=TimingProfile(),
            clock=clock,
            run_id="t",
        )
        start = clock.now()

        async def probe() -> list[int]:
            if clock.now() - start >= 1 - ctx.timing.step:  # the last look: a slow one
                await clock.advance(SLOW)
            return [7] if clock.now() - start >= answer_at else []

        return await ctx.never(probe, 1.0, "seen", due=None if due is None else start + due)


def test_an_answer_given_once_due_is_returned_not_failed() -> None:
    assert asyncio.run(_watch(answer_at=1.0)) == [7]


def test_an_answer_given_after_the_window_but_before_due_still_fails() -> None:
    """A window that ends a margin before ``due``: an answer inside the margin is early."""
    with pytest.raises(ContractViolation, match="seen: observed"):
        asyncio.run(_watch(answer_at=1.0, due=1.0 + SLOW + 0.1))


def test_an_answer_after_the_window_fails_a_watch_with_nothing_due() -> None:
    """For "never again" watches the window's end means nothing: anything seen fails."""
    with pytest.raises(ContractViolation, match="seen: observed"):
        asyncio.run(_watch(answer_at=1.0, due=None))


def test_an_answer_given_before_the_deadline_still_fails() -> None:
    with pytest.raises(ContractViolation, match="seen: observed"):
        asyncio.run(_watch(answer_at=0.5))


def test_nothing_seen_returns_none() -> None:
    assert asyncio.run(_watch(answer_at=5.0)) is None


class SlowWatcher(RestartableMemory):
    """Correct, but a look begun less than :data:`SLOW` seconds before a held message's
    claim ends is answered just after it ends (a machine busy after the restart), except
    a service's first look (the holder's one receive is quick)."""

    #: Whether a look straddled a claim's end (the case met the edge it is about).
    straddled = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.receives = 0

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        self.receives += 1
        clock, now = self.clock, self.clock.now()
        entries = self._queue(queue).entries.values()
        end = min((e.visible_at for e in entries if e.visible_at > now), default=None)
        first = self.receives == 1
        if not first and isinstance(clock, VirtualClock) and end is not None and end - now < SLOW:
            type(self).straddled = True
            await clock.advance(end - now + 0.001)
        return await super()._receive(queue, limit, visibility_timeout)


def test_dur_3_takes_a_claim_back_from_a_look_answered_as_it_ended() -> None:
    """The watcher's last look before the claim ends is answered after it, with the
    message: DUR-3 counts it as back (not as back too early, not as never back)."""
    SlowWatcher.straddled = False
    outcome = asyncio.run(
        run_case(RestartHarness(SlowWatcher), get_rule("DUR-3"), TimingProfile(), "edge")
    )
    assert SlowWatcher.straddled
    assert outcome.outcome is Outcome.PASSED, outcome.reason


class _SlowAcks(InMemoryMessagingService):
    """Correct, on a backend where an ack takes 0.4 s to arrive (a loaded server)."""

    async def _ack(self, queue: str, claim: Claim) -> None:
        assert isinstance(self.clock, VirtualClock)  # the case's time passes in the call
        await self.clock.advance(0.4)
        await super()._ack(queue, claim)


def test_ack_8_settles_the_short_held_pair_at_once(
    run_rule: Callable[[type[InMemoryMessagingService], str], CaseOutcome],
) -> None:
    """ACK-8 holds a pair for a short unscaled timeout and settles one of the pair: a
    settle held back a third of the timeout, plus an ack taking 0.4 s on a loaded
    server, arrived after the claim ended and failed a correct provider."""
    outcome = run_rule(_SlowAcks, "ACK-8")
    assert outcome.outcome is Outcome.PASSED, outcome.reason


class _VerySlowAcks(InMemoryMessagingService):
    """Correct, on a backend where an ack takes 0.7 s: longer than the pair's claim."""

    async def _ack(self, queue: str, claim: Claim) -> None:
        assert isinstance(self.clock, VirtualClock)
        await self.clock.advance(0.7)
        await super()._ack(queue, claim)


class _RefusesAPairsSecond(InMemoryMessagingService):
    """Broken: an ack of a message received with another at once says it is not held."""

    async def _ack(self, queue: str, claim: Claim) -> None:
        if claim.visibility_timeout < 1:  # the pair's short claim
            raise MessageNotFound(queue, claim.msg_id)
        await super()._ack(queue, claim)


def test_ack_8_calls_an_ack_that_lands_after_the_claim_ended_inconclusive(
    run_rule: Callable[[type[InMemoryMessagingService], str], CaseOutcome],
) -> None:
    """Nothing can be judged of the others when the first settle reaches the backend
    after the claim may have ended; one refused before that still fails."""
    outcome = run_rule(_VerySlowAcks, "ACK-8")
    assert outcome.outcome is Outcome.PASSED, outcome.reason
    assert outcome.metrics.get("ack_inconclusive") == 1.0, outcome.metrics
    with pytest.raises(ContractViolation, match=r"^\[ACK-8\] ack of message"):
        run_rule(_RefusesAPairsSecond, "ACK-8")


def _prefetching(count: int) -> type[InMemoryMessagingService]:
    class SmallPrefetch(InMemoryMessagingService):
        """Correct, configured to hold at most ``count`` claimed pushes at once."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(MemoryConfig(prefetch_count=count), *args[1:], **kwargs)

    return SmallPrefetch


@pytest.mark.parametrize(
    ("rule_id", "prefetch"), [("PUSH-1", 4), ("PUSH-5", 5), ("PUSH-14", 2), ("PUSH-19", 2)]
)
def test_push_rules_that_send_many_settle_as_they_go_under_a_small_prefetch(
    run_rule: Callable[[type[InMemoryMessagingService], str], CaseOutcome],
    rule_id: str,
    prefetch: int,
) -> None:
    """The prefetch is the user's configuration, not a capability: a rule that collected
    every notification before settling any stopped a claimed push at the prefetch, and
    failed a correct provider as if it capped its queues."""
    outcome = run_rule(_prefetching(prefetch), rule_id)
    assert outcome.outcome is Outcome.PASSED, outcome.reason
