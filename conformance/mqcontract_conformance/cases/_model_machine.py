"""The programs behind the MODEL rules, and how a case runs them.

First the pair programs (:mod:`._model_pairs`: every ordered pair of operation kinds,
the same every run), then random programs from a Hypothesis state machine: create /
send / send-with-delay / send-batch / receive / fetch / ack and nack by id and by claim /
ack_claims / pass-time (and sever, when faults are on). Both run against the provider
through a :class:`~._model_driver.Driver`; after every step the driver has compared the
outcome with the model, and (with a backdoor) the stored ids with the model's. At the
end of a program everything due is drained, so a lost or resurrected message cannot hide.

Programs are numbered: the pair programs first, then the random ones in the order the
seed generates them. Each has a time budget from the timing profile; one that exceeds it
fails at the step that was running. A failure is shrunk (pair programs to the failing
pair, random ones by Hypothesis) and names the seed, the program and the timing scale
that replay it (``MQCONTRACT_MODEL_PROGRAM`` runs that program only).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, Verbosity, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    get_state_machine_test,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from mqcontract.testing import Harness, HookUnavailable
from mqcontract_conformance.cases._model_driver import Driver, LoopBridge, Stopped, TimeParameters
from mqcontract_conformance.cases._model_pairs import (
    SAMPLE_PAYLOADS,
    PairProgram,
    PairRunner,
    kinds_for,
    pair_programs,
)
from mqcontract_conformance.cases._queue_model import ModelMismatch
from mqcontract_conformance.context import CaseContext

__all__ = ["PROFILES", "ModelProfile", "run_model"]

PROFILE_ENV = "MQCONTRACT_MODEL_PROFILE"
SEED_ENV = "MQCONTRACT_MODEL_SEED"
PROGRAM_ENV = "MQCONTRACT_MODEL_PROGRAM"
SCALE_ENV = "MQCONTRACT_TIMING_SCALE"

PAYLOADS = st.one_of(st.binary(max_size=40), st.sampled_from(SAMPLE_PAYLOADS))
CLAIM_CHOICES = st.sampled_from(["live", "live", "stale", "any"])


@dataclass(frozen=True, kw_only=True)
class ModelProfile:
    """How much the MODEL rules explore: programs, steps each, waiting allowed."""

    name: str
    #: Programs per case in virtual time, in real time, and with faults (real time).
    examples: int
    real_time_examples: int
    fault_examples: int
    steps: int
    #: Real seconds one program may wait, draining included (times the timing scale).
    wait_budget: float
    #: Compare the backdoor after every step in real time too (always in virtual time;
    #: otherwise at the end of each program).
    backdoor_every_step: bool
    #: Shrink failures on real-time backends too (always on in virtual time).
    shrink_real_time: bool
    #: Seconds the shrinker may spend on one failure (the rest is shown unshrunk), times
    #: the timing scale.
    shrink_seconds: float


PROFILES = {
    "short": ModelProfile(
        name="short",
        examples=10,
        real_time_examples=6,
        fault_examples=2,
        steps=20,
        wait_budget=0.8,
        backdoor_every_step=False,
        shrink_real_time=True,
        shrink_seconds=5,
    ),
    "long": ModelProfile(
        name="long",
        examples=200,
        real_time_examples=60,
        fault_examples=20,
        steps=50,
        wait_budget=3.0,
        backdoor_every_step=True,
        shrink_real_time=True,
        shrink_seconds=120,
    ),
}


def selected_profile() -> ModelProfile:
    """``MQCONTRACT_MODEL_PROFILE`` (short by default)."""
    name = os.environ.get(PROFILE_ENV, "short").strip().lower() or "short"
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={name!r}: expected one of {sorted(PROFILES)}")
    return PROFILES[name]


@dataclass
class RandomPlan:
    """Numbers the random programs and decides which run (all, or the one replayed)."""

    first_index: int
    budget: float
    only: int | None = None
    started: int = 0

    def start(self, driver: Driver) -> None:
        index = self.first_index + self.started
        self.started += 1
        skip = self.only is not None and index != self.only and not driver.mismatch_seen
        driver.start_program(self.budget, index=index, skip=skip)


class ContractMachine(RuleBasedStateMachine):
    """Random programs against the provider and the model; see the module docstring.

    Preconditions depend only on the provider's capabilities, never on what a program did
    (budgets are enforced inside the rules): replaying a program then draws the same data.
    """

    driver: Driver
    plan: RandomPlan
    queues = Bundle("queues")

    def __init__(self) -> None:
        super().__init__()
        self.plan.start(self.driver)
        self.made = 0  # queues in the bundle (also while skipping: same draws either way)

    def _new_queue(self) -> str:
        self.made += 1
        return f"skipped_{self.made}" if self.driver.skipping else self.driver.create_queue()

    @initialize(target=queues)
    def first_queue(self) -> str:
        return self._new_queue()

    @rule(target=queues, queue=queues, fresh=st.booleans())
    def create(self, queue: str, fresh: bool) -> str | MultipleResults[str]:
        if fresh and self.made < 2:
            return self._new_queue()
        if not self.driver.skipping:
            self.driver.recreate_queue(queue)  # idempotent: its messages must stay
        return multiple()

    @rule(queue=queues, payload=PAYLOADS)
    def send(self, queue: str, payload: bytes) -> None:
        if self.driver.skipping:
            return
        self.driver.send(queue, payload, None)

    @precondition(lambda self: self.driver.caps.delay)
    @rule(queue=queues, payload=PAYLOADS, pick=st.integers(0, 7))
    def send_with_delay(self, queue: str, payload: bytes, pick: int) -> None:
        if self.driver.skipping:
            return
        delays = self.driver.params.delays
        self.driver.send(queue, payload, delays[pick % len(delays)])

    @rule(queue=queues, payloads=st.lists(PAYLOADS, min_size=1, max_size=4))
    def send_batch(self, queue: str, payloads: list[bytes]) -> None:
        if self.driver.skipping:
            return
        self.driver.send_batch(queue, payloads)

    @rule(queue=queues, limit=st.integers(1, 4), pick=st.integers(0, 7))
    def receive(self, queue: str, limit: int, pick: int) -> None:
        if self.driver.skipping:
            return
        vts = self.driver.params.vts
        self.driver.receive(queue, limit, vts[pick % len(vts)])

    @rule(
        queue=queues,
        choice=st.sampled_from(["held", "held", "known", "unknown"]),
        index=st.integers(0, 31),
    )
    def ack(self, queue: str, choice: str, index: int) -> None:
        if self.driver.skipping:
            return
        self.driver.settle(queue, choice, index, ack=True)

    @rule(
        queue=queues,
        choice=st.sampled_from(["held", "held", "known", "unknown"]),
        index=st.integers(0, 31),
    )
    def nack(self, queue: str, choice: str, index: int) -> None:
        if self.driver.skipping:
            return
        self.driver.settle(queue, choice, index, ack=False)

    @precondition(lambda self: self.driver.caps.fetch_by_id)
    @rule(
        queue=queues,
        choice=st.sampled_from(["held", "known", "known", "unknown"]),
        index=st.integers(0, 31),
        pick=st.integers(0, 7),
    )
    def fetch(self, queue: str, choice: str, index: int, pick: int) -> None:
        if self.driver.skipping:
            return
        d = self.driver
        vts = d.params.vts
        d.fetch(queue, d._pick(d.models[queue], choice, index), vts[pick % len(vts)])

    @rule(queue=queues, choice=CLAIM_CHOICES, index=st.integers(0, 31), ack=st.booleans())
    def settle_claim(self, queue: str, choice: str, index: int, ack: bool) -> None:
        if self.driver.skipping:
            return
        picked = self.driver.pick_claim(queue, choice, index)
        if picked is not None:
            self.driver.settle_claim(queue, *picked, ack=ack)

    @rule(
        queue=queues,
        choices=st.lists(st.tuples(CLAIM_CHOICES, st.integers(0, 31)), min_size=1, max_size=3),
    )
    def ack_claims(self, queue: str, choices: list[tuple[str, int]]) -> None:
        if self.driver.skipping:
            return
        picks = [self.driver.pick_claim(queue, choice, index) for choice, index in choices]
        self.driver.ack_claims(queue, [p for p in picks if p is not None])

    @rule(pick=st.integers(0, 7))
    def pass_time(self, pick: int) -> None:
        if self.driver.skipping:
            return
        waits = self.driver.params.waits
        self.driver.pass_time(waits[pick % len(waits)])

    @precondition(lambda self: self.driver.faults)
    @rule()
    def sever(self) -> None:
        if self.driver.skipping or self.driver.severs >= 1:
            return
        self.driver.sever()

    @invariant()
    def storage_agrees(self) -> None:
        driver = self.driver
        if driver.models and not driver.failed and driver.backdoor_every_step:
            driver.check_storage()

    def teardown(self) -> None:
        if self.driver.models and not self.driver.failed:
            self.driver.drain()


async def _backdoor_available(ctx: CaseContext) -> bool:
    q = await ctx.queue()
    try:
        await ctx.harness.stored_ids(ctx.service, q)
    except HookUnavailable:
        return False
    return True


@dataclass
class PairFailure:
    """A pair program that failed, the program it shrank to, and the mismatch."""

    index: int
    program: PairProgram
    shrunk: PairProgram
    mismatch: ModelMismatch


#: The share of the case's bound that programs may start in (the rest is for the one under
#: way when it runs out, and for a shrink).
PROGRAMS_SHARE = 0.5


def program_budget(ctx: CaseContext, steps: int, waiting: float) -> float:
    """Real seconds a program of about ``steps`` operations may take (waiting included):
    two operation bounds, a fiftieth of one per step, and its planned waiting."""
    operation = ctx.timing.operation
    planned = 0.0 if ctx.clock is not None or math.isinf(waiting) else waiting
    return 2 * operation + steps * operation / 50 + planned


def _selected_program() -> int | None:
    text = os.environ.get(PROGRAM_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(f"{PROGRAM_ENV}={text!r}: expected a program number")
    return int(text)


async def run_model(ctx: CaseContext, *, faults: bool) -> None:
    """Run the programs for this case in a worker thread; fail on any mismatch."""
    if faults and type(ctx.harness).sever_connection is Harness.sever_connection:
        raise HookUnavailable(f"{ctx.harness.name}: no sever_connection hook")
    profile = selected_profile()
    only = _selected_program()
    virtual = ctx.clock is not None
    if faults:
        examples = profile.fault_examples
    else:
        examples = profile.examples if virtual else profile.real_time_examples
    params = TimeParameters.for_case(ctx, profile.wait_budget)
    bridge = LoopBridge(asyncio.get_running_loop(), bound=ctx.timing.operation * 12)
    driver = Driver(
        ctx,
        bridge,
        params,
        backdoor=await _backdoor_available(ctx),
        backdoor_every_step=virtual or profile.backdoor_every_step,
        faults=faults,
        # A share of the case's bound (60 s in virtual time) for programs, the rest for a
        # shrink.
        budget=(60.0 if virtual else ctx.timing.case) * PROGRAMS_SHARE,
    )
    pairs = [] if faults else pair_programs(kinds_for(ctx.caps))
    shrinking = virtual or profile.shrink_real_time
    shrink_seconds = profile.shrink_seconds * ctx.timing.scale
    plan = RandomPlan(
        first_index=len(pairs),
        budget=program_budget(ctx, profile.steps * 3, params.wait_budget),
        only=only,
    )
    machine = type("Program", (ContractMachine,), {"driver": driver, "plan": plan})
    phases = [Phase.explicit, Phase.generate]
    if shrinking:
        phases.append(Phase.shrink)
    run_seed = int(os.environ.get(SEED_ENV) or random.getrandbits(32))
    test = seed(run_seed)(
        get_state_machine_test(
            machine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=profile.steps,
                deadline=None,
                database=None,
                phases=phases,
                suppress_health_check=list(HealthCheck),
                print_blob=False,
                verbosity=Verbosity.quiet,  # the driver's log says what happened
            ),
        )
    )

    def run() -> BaseException | PairFailure | None:
        try:
            failure = _run_pairs(ctx, driver, pairs, only, shrink_seconds if shrinking else 0)
            if failure is not None or (only is not None and only < len(pairs)):
                return failure
            with _shrinking_bounded(shrink_seconds):
                test()
        except BaseException as exc:  # handed back to the loop, which decides
            return exc
        return None

    task = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        error = await asyncio.shield(task)
    except asyncio.CancelledError:
        bridge.stop()  # the thread stops at its next operation; wait for it
        await asyncio.wait({task})
        raise
    ctx.metrics.update(
        programs=float(driver.programs),
        pair_programs=float(len(pairs)),
        pairs=float(sum(len(p.pairs) for p in pairs)),
        programs_skipped_for_time=float(driver.skipped),
        operations=float(driver.operations),
        waited_seconds=round(driver.waited_total, 3),
        seed=float(run_seed),
    )
    if error is None:
        return
    if isinstance(error, BaseException) and (declined := _hook_declined(error)) is not None:
        raise declined  # the harness said no to sever_connection: needs a hook, no failure
    scale = f"{ctx.timing.scale:g}"

    def replay(index: int | None) -> str:
        program = f" {PROGRAM_ENV}={index}" if index is not None else ""
        return (
            f"replay: {PROFILE_ENV}={profile.name} {SEED_ENV}={run_seed}{program} "
            f"{SCALE_ENV}={scale} mqcontract verify --provider {ctx.harness.name} "
            f"--rules {ctx.rule_id}"
        )

    if isinstance(error, PairFailure):
        shrunk = error.shrunk.describe() if error.shrunk != error.program else "not shrunk"
        ctx.fail(
            f"the provider disagrees with the model in program {error.index} (pairs of "
            f"operations, {error.program.layout}: {len(error.program.pairs)} pairs; "
            f"shrunk to: {shrunk}): {error.mismatch}\n{replay(error.index)}"
        )
    mismatch = _first_mismatch(error)
    note = ""
    if mismatch is None and driver.first_mismatch is not None:
        # In real time a replay may not repeat a failure (Hypothesis then reports its
        # replay as flaky): the first mismatch is the finding.
        mismatch = driver.first_mismatch
        note = f" (replaying it did not repeat it: {type(error).__name__})"
    index = driver.failing_index
    if mismatch is not None:
        ctx.fail(
            f"the provider disagrees with the model in program {index} (random, shrunk by "
            f"Hypothesis{'' if shrinking else ': off'}){note}: {mismatch}\n{replay(index)}"
        )
    if isinstance(error, Stopped):
        raise asyncio.CancelledError
    ctx.fail(f"the model run raised {type(error).__name__}: {error}\n{replay(index)}")


def _hook_declined(error: BaseException) -> HookUnavailable | None:
    """The ``HookUnavailable`` a hook raised during the programs (the documented way to
    decline one): the run's error itself, or a group of nothing else. A group with any
    other failure in it is a failure, not a skip."""
    if isinstance(error, HookUnavailable):
        return error
    if isinstance(error, BaseExceptionGroup):
        leaves = _leaves(error)
        if leaves and all(isinstance(leaf, HookUnavailable) for leaf in leaves):
            first = leaves[0]
            assert isinstance(first, HookUnavailable)
            return first
    return None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _run_pairs(
    ctx: CaseContext,
    driver: Driver,
    programs: list[PairProgram],
    only: int | None,
    shrink_seconds: float,
) -> PairFailure | None:
    """Run the pair programs (or the one replayed); shrink the first that fails to the
    single pair that fails on its own, within ``shrink_seconds``."""
    runner = PairRunner(driver)

    def attempt(program: PairProgram, index: int) -> ModelMismatch | None:
        waiting = runner.waiting(program)
        budget = program_budget(ctx, program.steps, waiting)
        driver.start_program(budget, index=index, waiting=waiting)
        if driver.skipping:  # past the case's time for programs (a very slow backend)
            return None
        try:
            runner.run(program)
        except ModelMismatch as mismatch:
            return mismatch
        return None

    for index, program in enumerate(programs):
        if only is not None and index != only:
            continue
        mismatch = attempt(program, index)
        if mismatch is None:
            continue
        shrunk = program
        until = time.monotonic() + shrink_seconds
        for pair in program.pairs if len(program.pairs) > 1 else ():
            if time.monotonic() > until:
                break
            smaller = program.only([pair])
            found = attempt(smaller, index)
            if found is not None:
                shrunk, mismatch = smaller, found
                break
        return PairFailure(index, program, shrunk, mismatch)
    return None


@contextlib.contextmanager
def _shrinking_bounded(seconds: float) -> Iterator[None]:
    """Bound Hypothesis' shrinking (5 minutes by default) for the duration of one run.

    Hypothesis documents the constant as the way to change that bound; a version without
    it simply keeps its own.
    """
    from hypothesis.internal.conjecture import engine

    previous = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if previous is None:
        yield
        return
    engine.MAX_SHRINKING_SECONDS = seconds  # type: ignore[assignment]
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = previous


def _first_mismatch(error: BaseException) -> ModelMismatch | None:
    if isinstance(error, ModelMismatch):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_mismatch(inner)
            if found is not None:
                return found
    cause = error.__cause__ or error.__context__
    return _first_mismatch(cause) if cause is not None else None
