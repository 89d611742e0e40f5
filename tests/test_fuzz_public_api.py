"""Fuzzing the public API: rule HOST-7 on every reference provider, and the escapes it found.

HOST-7 (:mod:`mqcontract_conformance.cases._fuzz`) runs derandomized programs of hostile
and odd calls and then calls a closed service; its broken providers are in
``selftest/broken_hostile.py`` (and run by ``test_broken_providers.py``). Here: the rule
passes every reference provider, its failures carry a call sequence and a replay hint
that replays, programs are the same on every run, and each escape found by fuzzing
stays fixed.

Providers come through the kit's provisioning (``provisioned``): a missing backend skips,
or fails under ``MQCONTRACT_REQUIRE_BACKENDS=1``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

import mqcontract.errors as errors
from mqcontract.errors import MessagingError
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.service import MessagingService
from mqcontract.testing import Harness
from mqcontract_conformance.cases._fuzz import CONDITIONS, PROGRAM_ENV, SEED_ENV, program_rng
from mqcontract_conformance.cases._fuzz_steps import draw_program, operations
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.runner import CaseOutcome, run_case
from mqcontract_conformance.selftest.broken_hostile import (
    ChannelResetOnMissingQueue,
    ClosedChecksArgumentsFirst,
    HeldIndexOutlivesDelete,
)
from mqcontract_conformance.timing import TimingProfile

PROVIDERS = ["memory", "pgmq", "rabbitmq", "rabbitmq-quorum"]
RunRule = Callable[[type[InMemoryMessagingService], str], CaseOutcome]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_host7_passes_every_reference_provider(
    provisioned: Callable[[str], Harness], provider: str
) -> None:
    harness = provisioned(provider)
    rule = get_rule("HOST-7")
    outcome = asyncio.run(
        run_case(harness, rule, TimingProfile.from_scale(), harness.settings.run_id)
    )
    assert outcome.metrics["programs"] >= 4
    assert outcome.metrics["operations"] > outcome.metrics["programs"] * 5


def test_a_failure_shows_the_shrunk_calls_and_how_to_replay_them(run_rule: RunRule) -> None:
    with pytest.raises(ContractViolation) as failed:
        run_rule(HeldIndexOutlivesDelete, "HOST-7")
    text = str(failed.value)
    assert "builtins.KeyError (not a MessagingError)" in text
    assert "delete_queue(W1)" in text
    assert "ack_claim(W1, <claim" in text
    assert f"replay: {SEED_ENV}=0 {PROGRAM_ENV}=" in text


def test_the_replay_hint_runs_that_program_alone(
    run_rule: RunRule, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ContractViolation) as failed:
        run_rule(ChannelResetOnMissingQueue, "HOST-7")
    program = str(failed.value).split(f"{PROGRAM_ENV}=")[1].split()[0]
    monkeypatch.setenv(PROGRAM_ENV, program)
    with pytest.raises(ContractViolation, match=f"program {program} "):
        run_rule(ChannelResetOnMissingQueue, "HOST-7")
    passing = run_rule(InMemoryMessagingService, "HOST-7")
    assert passing.metrics["programs"] == 1


def test_closed_calls_replay_alone(run_rule: RunRule, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROGRAM_ENV, "closed")
    with pytest.raises(ContractViolation, match=r"after close: .* not ProviderClosed"):
        run_rule(ClosedChecksArgumentsFirst, "HOST-7")
    assert run_rule(InMemoryMessagingService, "HOST-7").metrics["programs"] == 0


def test_another_seed_draws_other_programs(
    run_rule: RunRule, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = operations(delay=True, fetch=True, push=True, listing=True)
    first = [str(s) for s in draw_program(program_rng(0, 3), ops)]
    assert first == [str(s) for s in draw_program(program_rng(0, 3), ops)]
    assert first != [str(s) for s in draw_program(program_rng(1, 3), ops)]
    monkeypatch.setenv(SEED_ENV, "1")
    assert run_rule(InMemoryMessagingService, "HOST-7").metrics["programs"] >= 4


# -- escapes found by fuzzing, each kept as a regression case ----------------------------


def released_view() -> bytes:
    """A released memoryview (typed as the bytes it pretends to be)."""
    view = memoryview(b"released")
    view.release()
    return view  # type: ignore[return-value]


Escape = Callable[[MessagingService, str], Awaitable[object]]
FOUND_ESCAPES: dict[str, Escape] = {
    "send_message-released_memoryview": lambda s, q: s.send_message(q, released_view()),
    "send_message_with_delay-released_memoryview": lambda s, q: s.send_message_with_delay(
        q, released_view(), 0
    ),
    "send_batch-released_memoryview_item": lambda s, q: s.send_batch(q, [b"ok", released_view()]),
    **{
        f"send_batch-{type(value).__name__}": (
            lambda s, q, v=value: s.send_batch(q, v)  # type: ignore[misc]
        )
        for value in [None, 5, 1.5, True]
    },
}


@pytest.mark.parametrize("escape", sorted(FOUND_ESCAPES))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_escape_found_by_fuzzing_stays_fixed(
    provisioned: Callable[[str], Harness], provider: str, escape: str
) -> None:
    harness = provisioned(provider)
    queue = f"fz_{harness.settings.run_id}_e{sorted(FOUND_ESCAPES).index(escape)}"

    async def attempt() -> None:
        service = await harness.open(harness.new_clock())
        try:
            await service.create_queue(queue)
            kept = await service.send_message(queue, b"keep")
            with pytest.raises(MessagingError) as failed:
                await FOUND_ESCAPES[escape](service, queue)
            assert isinstance(failed.value, CONDITIONS), repr(failed.value)
            got = await service.receive_messages(queue, 10, 60.0)
            assert [(m.msg_id, m.payload) for m in got] == [(kept, b"keep")]
        finally:
            await harness.cleanup(service, [queue])
            await service.close()

    asyncio.run(attempt())


#: Long enough that redacting the rejection's message took seconds while it was quadratic.
LONG_NAME = 40_000


def test_long_name_is_rejected_quickly(provisioned: Callable[[str], Harness]) -> None:
    harness = provisioned("memory")

    async def attempt() -> None:
        service = await harness.open(harness.new_clock())
        try:
            with pytest.raises(errors.InvalidQueueName):
                await service.create_queue("a" * LONG_NAME)
        finally:
            await service.close()

    started = time.monotonic()
    asyncio.run(attempt())
    assert time.monotonic() - started < 0.5
