"""The Hypothesis state machine behind the MODEL rules, and how a case runs it.

Random programs of create / send / send-with-delay / send-batch / receive / ack / nack /
pass-time (and sever, when faults are on) run against the provider through a
:class:`~._model_driver.Driver`; after every step the driver has compared the outcome
with the model, and (with a backdoor) the stored ids with the model's. At the end of a
program everything due is drained, so a lost or resurrected message cannot hide.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
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
from mqcontract_conformance.cases._queue_model import ModelMismatch
from mqcontract_conformance.context import CaseContext

__all__ = ["PROFILES", "ModelProfile", "run_model"]

PROFILE_ENV = "MQCONTRACT_MODEL_PROFILE"
SEED_ENV = "MQCONTRACT_MODEL_SEED"

PAYLOADS = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"",
            b'{"b": [true, null], "a": 1}',
            b'"text"',
            b"17",
            "h\u00e9llo \u2713 \U0001f389".encode(),
            b"\xff\xfe\x00\xc3(",
        ]
    ),
)


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
    #: Seconds the shrinker may spend on one failure (the rest is shown unshrunk).
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
        shrink_real_time=False,
        shrink_seconds=2,
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


class ContractMachine(RuleBasedStateMachine):
    """Random programs against the provider and the model; see the module docstring.

    Preconditions depend only on the provider's capabilities, never on what a program did
    (budgets are enforced inside the rules): replaying a program then draws the same data.
    """

    driver: Driver
    queues = Bundle("queues")

    def __init__(self) -> None:
        super().__init__()
        self.driver.start_program()
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


async def run_model(ctx: CaseContext, *, faults: bool) -> None:
    """Run the state machine for this case in a worker thread; fail on any mismatch."""
    if faults and type(ctx.harness).sever_connection is Harness.sever_connection:
        raise HookUnavailable(f"{ctx.harness.name}: no sever_connection hook")
    profile = selected_profile()
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
        # Half the case's bound (60 s in virtual time) for programs, the rest for a shrink.
        budget=(60.0 if virtual else ctx.timing.case) * 0.5,
    )
    machine = type("Program", (ContractMachine,), {"driver": driver})
    phases = [Phase.explicit, Phase.generate]
    if virtual or profile.shrink_real_time:
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

    def run() -> BaseException | None:
        try:
            with _shrinking_bounded(profile.shrink_seconds):
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
        programs_skipped_for_time=float(driver.skipped),
        operations=float(driver.operations),
        waited_seconds=round(driver.waited_total, 3),
        seed=float(run_seed),
    )
    if error is None:
        return
    where = f"profile {profile.name}, {SEED_ENV}={run_seed}"
    mismatch = _first_mismatch(error)
    if mismatch is None and driver.first_mismatch is not None:
        # In real time a replay may not repeat a failure (Hypothesis then reports its
        # replay as flaky): the first mismatch is the finding.
        mismatch = driver.first_mismatch
        where += f"; replaying it did not repeat it: {type(error).__name__}"
    if mismatch is not None:
        ctx.fail(f"the provider disagrees with the model ({where}): {mismatch}")
    if isinstance(error, Stopped):
        raise asyncio.CancelledError
    ctx.fail(f"the model run raised {type(error).__name__} ({where}): {error}")


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
