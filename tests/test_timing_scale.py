"""The timing scale stretches bounds and margins, never the durations under test.

A recording provider (the correct in-memory one, noting every visibility timeout it is
asked to hold a message for, by receive, fetch or push, and every delay) runs every rule
at scale 1 and at scale 3: the durations it is asked for are the same at both scales,
except for bounds (a timeout that must outlast the case), which grow by exactly the
scale; no sub-second duration is ever scaled. The bounds the cases wait within differ.
The model rules draw their durations at random, so their table is checked instead.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, ClassVar, cast

import pytest

from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.cases._model_driver import TimeParameters
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.rules import all_rules
from mqcontract_conformance.runner import run_case
from mqcontract_conformance.selftest.harness import SpecimenHarness
from mqcontract_conformance.timing import TimingProfile

SCALE = 3.0
#: Durations a rule handed the provider: ("vt" | "delay", seconds), per rule id.
Asked = dict[str, set[tuple[str, float]]]


class RecordingMemory(InMemoryMessagingService):
    """The correct in-memory provider, noting every duration it is asked to honour."""

    asked: ClassVar[list[tuple[str, float]]] = []

    def _claim(self, queue: Any, entry: Any, visibility_timeout: float) -> QueuedMessage:
        RecordingMemory.asked.append(("vt", round(visibility_timeout, 6)))
        return super()._claim(queue, entry, visibility_timeout)

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        RecordingMemory.asked.append(("delay", round(delay_seconds, 6)))
        return await super()._send_delayed(queue, payload, delay_seconds)


def _run_every_rule(
    timing: TimingProfile, monkeypatch: pytest.MonkeyPatch
) -> tuple[Asked, dict[str, set[float]]]:
    """What every rule asked the provider for, and the bounds it waited within."""
    asked: Asked = {}
    bounds: dict[str, set[float]] = {}
    waited: list[float] = []
    eventually = CaseContext.eventually

    async def recording_eventually(self: CaseContext, probe: Any, within: float, what: str) -> Any:
        waited.append(round(within, 6))
        return await eventually(self, probe, within, what)

    monkeypatch.setattr(CaseContext, "eventually", recording_eventually)
    for rule in all_rules():
        if rule.group == "MODEL":  # random programs: their durations are checked below
            continue
        RecordingMemory.asked.clear()
        waited.clear()
        asyncio.run(run_case(SpecimenHarness(RecordingMemory), rule, timing, "ts"))
        asked[rule.id] = set(RecordingMemory.asked)
        bounds[rule.id] = set(waited)
    monkeypatch.undo()
    return asked, bounds


def _profile(scale: float) -> TimingProfile:
    return TimingProfile.from_scale(scale)


@pytest.fixture(scope="module")
def runs() -> Iterator[tuple[tuple[Asked, dict[str, set[float]]], ...]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield tuple(_run_every_rule(_profile(s), monkeypatch) for s in (1.0, SCALE))


def test_the_profile_scales_bounds_and_margins_only() -> None:
    one, three = TimingProfile.from_scale(1), TimingProfile.from_scale(SCALE)
    assert (three.unit, three.step) == (one.unit, one.step)
    assert one.unit < 1.0
    for name in ("long", "delivery", "operation", "slack", "margin", "case"):
        assert getattr(three, name) == pytest.approx(getattr(one, name) * SCALE), name


def test_durations_under_test_are_the_same_at_every_scale(
    runs: tuple[tuple[Asked, dict[str, set[float]]], ...],
) -> None:
    """Durations under test are shorter than the slack (a case waits them out); bounds
    are at least the slack (a hold that must outlast the case's operations)."""
    (asked_1, _), (asked_3, _) = runs
    assert asked_1.keys() == asked_3.keys()
    slack = TimingProfile.from_scale(1).slack
    every_1 = set().union(*asked_1.values())
    every_3 = set().union(*asked_3.values())
    problems = []
    for rule_id in asked_1:
        at_1, at_3 = asked_1[rule_id], asked_3[rule_id]
        under_test_1 = {d for d in at_1 if d[1] < slack}
        under_test_3 = {d for d in at_3 if d[1] < slack}
        if under_test_1 != under_test_3:
            problems.append(f"{rule_id}: {sorted(under_test_1)} became {sorted(under_test_3)}")
        # A bound grows by exactly the scale (which of them a polling rule happened to
        # claim a message with may differ, so they are matched over every rule).
        for kind, seconds in at_3 - at_1:
            if seconds >= slack and (kind, round(seconds / SCALE, 6)) not in every_1:
                problems.append(f"{rule_id}: {kind} {seconds:g} s at scale 3 is not a bound")
        for kind, seconds in at_1 - at_3:
            if (kind, round(seconds * SCALE, 6)) not in every_3:
                problems.append(f"{rule_id}: {kind} {seconds:g} s at scale 1 was not scaled")
    assert not problems, "\n".join(problems)
    assert any(s < 1.0 for _, s in every_3), "no sub-second duration reached the provider"


def test_sub_second_durations_reach_the_provider_at_scale_3(
    runs: tuple[tuple[Asked, dict[str, set[float]]], ...],
) -> None:
    (_, _), (asked_3, _) = runs
    unit = TimingProfile.from_scale(SCALE).unit
    for rule_id, kind in (("VT-2", "vt"), ("VT-5", "vt"), ("DLY-2", "delay"), ("DLY-3", "delay")):
        assert (kind, unit) in asked_3[rule_id], (rule_id, sorted(asked_3[rule_id]))


def test_case_bounds_differ_between_scales(
    runs: tuple[tuple[Asked, dict[str, set[float]]], ...],
) -> None:
    (_, bounds_1), (_, bounds_3) = runs
    unit = TimingProfile().unit
    for rule_id in ("VT-2", "VT-4", "DLY-2", "ACK-8"):
        assert bounds_1[rule_id], rule_id
        assert bounds_1[rule_id] != bounds_3[rule_id], rule_id
        assert max(bounds_3[rule_id]) > max(bounds_1[rule_id]) > unit, rule_id


def test_model_programs_use_the_same_durations_at_every_scale() -> None:
    def params(scale: float) -> TimeParameters:
        ctx = SimpleNamespace(
            clock=None,
            caps=InMemoryMessagingService().capabilities,
            timing=TimingProfile.from_scale(scale),
        )
        return TimeParameters.for_case(cast(CaseContext, ctx), wait_budget=10.0)

    one, three = params(1), params(SCALE)
    assert (three.vts, three.delays, three.waits) == (one.vts, one.delays, one.waits)
    assert min(three.vts) < 1.0
    assert three.tolerance > one.tolerance
    assert three.wait_budget == pytest.approx(one.wait_budget * SCALE)


@pytest.mark.parametrize("scale", [0, -2, math.nan, math.inf, -math.inf])
def test_a_scale_that_is_not_a_finite_positive_number_is_refused(scale: float) -> None:
    """0 or less leaves no time to wait; inf waits forever (and blames the provider)."""
    with pytest.raises(ValueError, match=r"must be a finite number greater than 0"):
        TimingProfile.from_scale(scale)


@pytest.mark.parametrize("text", ["abc", "0", "-1", "nan", "inf", "1e999"])
def test_a_bad_scale_in_the_environment_is_refused_naming_the_variable(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MQCONTRACT_TIMING_SCALE", text)
    with pytest.raises(ValueError, match=rf"^MQCONTRACT_TIMING_SCALE={text}: "):
        TimingProfile.from_scale()


def test_an_unset_or_blank_scale_in_the_environment_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQCONTRACT_TIMING_SCALE", " ")
    assert TimingProfile.from_scale().scale == 1.0
    monkeypatch.setenv("MQCONTRACT_TIMING_SCALE", "2.5")
    assert TimingProfile.from_scale().case == 2.5 * TimingProfile().case
