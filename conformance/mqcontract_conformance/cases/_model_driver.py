"""Runs contract operations from a worker thread in the case's event loop, against the model.

Hypothesis state machines are synchronous, while a case's provider lives in the case's
event loop (``asyncio.run`` in the runner). The machine therefore runs in a worker thread
and every operation is submitted to the loop with ``run_coroutine_threadsafe``: the same
code drives the in-memory provider in virtual time (advancing the clock is an operation
too) and PGMQ or RabbitMQ in real time. Each operation is timed inside the loop, and its
outcome is handed to :class:`~._queue_model.QueueModel`, which raises on a mismatch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mqcontract.errors import BackendUnavailable, MessageNotFound, MessagingError
from mqcontract.messages import Claim, QueuedMessage
from mqcontract_conformance.cases._queue_model import ModelMismatch, Outcome, QueueModel
from mqcontract_conformance.context import CaseContext

__all__ = ["Driver", "LoopBridge", "Stopped", "TimeParameters"]

T = TypeVar("T")

#: Ids no provider hands out in a case (above every real id, below 2**63).
UNKNOWN_ID_BASE = 9_000_000_000_000_000_001
#: Steps of a failing program shown in the failure (the end of it, where it failed).
SHOWN_STEPS = 60


class Stopped(Exception):
    """The case ended (timeout or cancellation): the machine must stop at once."""


class Stuck(Exception):
    """An operation did not finish within the bridge's bound."""


class LoopBridge:
    """Submits coroutines from the machine's thread to the case's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, bound: float) -> None:
        self._loop = loop
        self._bound = bound
        self._stopped = False

    def stop(self) -> None:
        """Refuse further work (the loop is about to stop serving this case)."""
        self._stopped = True

    def run(self, coro: Coroutine[Any, Any, T], bound: float = math.inf) -> T:
        """Run ``coro`` in the loop and wait for it, within the bridge's bound and ``bound``."""
        if self._stopped:
            coro.close()
            raise Stopped("the case was stopped")
        bound = min(bound, self._bound)
        if bound <= 0:
            coro.close()
            raise Stuck("had no time left")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=bound)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Stuck(f"did not finish within {bound:.3g} s") from None


@dataclass(frozen=True)
class TimeParameters:
    """Visibility timeouts, delays and waits to draw from, and the tolerance band."""

    vts: tuple[float, ...]
    delays: tuple[float, ...]
    waits: tuple[float, ...]
    tolerance: float
    #: Seconds of waiting one program may spend (infinite in virtual time).
    wait_budget: float
    long_vt: float

    @classmethod
    def for_case(cls, ctx: CaseContext, wait_budget: float) -> TimeParameters:
        precision = ctx.caps.visibility_precision_seconds
        if ctx.clock is not None:  # virtual time: exact instants, waiting is free
            return cls(
                vts=(0.5, 1.0, 3.0, 60.0),
                delays=(0.0, 0.5, 2.0),
                waits=(0.25, 0.5, 1.0, 2.0, 5.0),
                tolerance=precision + 1e-6,
                wait_budget=math.inf,
                long_vt=120.0,
            )
        # The timeouts, delays and waits are under test: the same at every timing scale
        # (a sub-second timeout stays sub-second); the tolerance band and budget scale.
        s = ctx.timing.scale
        return cls(
            vts=(0.3, 1.0, 30.0),
            delays=(0.0, 0.3),
            waits=(0.1, 0.25, 0.5),
            tolerance=0.15 * s + precision,
            wait_budget=wait_budget * s,
            long_vt=max(ctx.timing.long, 60.0),
        )


class Driver:
    """One program at a time: queues, the model of each, and the log of steps so far."""

    def __init__(
        self,
        ctx: CaseContext,
        bridge: LoopBridge,
        params: TimeParameters,
        *,
        backdoor: bool,
        backdoor_every_step: bool,
        faults: bool,
        budget: float,
    ) -> None:
        self.ctx = ctx
        self.caps = ctx.caps
        self.bridge = bridge
        self.params = params
        self.backdoor = backdoor
        self.backdoor_every_step = backdoor and backdoor_every_step
        self.faults = faults
        self.programs = 0
        self.models: dict[str, QueueModel] = {}
        self.log: list[str] = []
        self.severs = 0
        self.waited = 0.0
        self.failed = False
        #: Totals over every program, for the case's metrics.
        self.operations = 0
        self.waited_total = 0.0
        #: Real seconds for new programs; later ones are skipped (unless shrinking).
        self.deadline = time.monotonic() + budget
        self.mismatch_seen = False
        #: The first mismatch of the case, kept in case a real-time replay cannot repeat it.
        self.first_mismatch: ModelMismatch | None = None
        self.skipping = False
        self.skipped = 0
        #: Our claims per (queue, msg_id), in the order made: generation n is [n - 1].
        self.claims: dict[tuple[str, int], list[Claim | None]] = {}
        #: Real seconds the current program may take, and when it started.
        self.program_budget = math.inf
        self.program_deadline = math.inf
        #: The current program's index, and the index of the first that failed.
        self.index = 0
        self.failing_index: int | None = None
        #: Seconds of waiting the current program may spend (draining included).
        self.wait_allowance = params.wait_budget

    # -- plumbing ----------------------------------------------------------------------

    def start_program(
        self,
        budget: float,
        *,
        index: int,
        skip: bool = False,
        required: bool = False,
        waiting: float | None = None,
    ) -> None:
        """Forget the previous program (its queues are deleted after the case).

        Past the time budget, new programs are skipped (their steps do nothing) so a long
        profile ends within the case's bound; a failure found earlier still shrinks.
        ``budget`` is the real seconds this program may take: past it, the program fails
        at the step that was running instead of the case timing out. ``index`` names the
        program for a replay; ``required`` programs run whatever the time.
        """
        self.models, self.log, self.claims = {}, [], {}
        self.severs, self.waited, self.failed = 0, 0.0, False
        late = not required and not self.mismatch_seen and time.monotonic() > self.deadline
        self.skipping = skip or late
        self.index = index
        if self.skipping:
            self.skipped += 1
        else:
            self.programs += 1
        self.program_budget = budget
        self.program_deadline = time.monotonic() + budget
        self.wait_allowance = self.params.wait_budget if waiting is None else waiting

    def _timed(
        self, make: Callable[[], Awaitable[T]], step: str = "the next operation"
    ) -> tuple[float, float, T | None, MessagingError | None]:
        ctx = self.ctx

        self.operations += 1

        async def timed() -> tuple[float, float, T | None, MessagingError | None]:
            t0 = ctx.now()
            try:
                result = await make()
            except MessagingError as exc:
                return t0, ctx.now(), None, exc
            return t0, ctx.now(), result, None

        try:
            return self.bridge.run(timed(), self.program_deadline - time.monotonic())
        except Stuck as exc:
            if time.monotonic() >= self.program_deadline - 1e-3:
                message = (
                    f"the program exceeded its time budget of {self.program_budget:.3g} s "
                    f"(the operation {exc})"
                )
            else:
                message = f"an operation {exc}"
            self.log.append(f"{step} -> stuck")
            raise self._fail(step, message) from None

    def _fail(self, step: str, message: str) -> ModelMismatch:
        self.failed = self.mismatch_seen = True
        shown = self.log[-SHOWN_STEPS:]
        skipped = len(self.log) - len(shown)
        program = "\n  ".join(f"{i}. {s}" for i, s in enumerate(shown, start=skipped + 1))
        mismatch = ModelMismatch(
            f"{message}\n  at step {len(self.log)}: {step}\n"
            f"the program ({len(self.log)} steps"
            + (f", the last {len(shown)} shown" if skipped else "")
            + f"):\n  {program}"
        )
        if self.first_mismatch is None:
            self.first_mismatch = mismatch
            self.failing_index = self.index
        return mismatch

    def _check(self, step: str, check: Callable[[], None]) -> None:
        try:
            check()
        except ModelMismatch as exc:
            raise self._fail(step, str(exc)) from None

    def _indeterminate(self, exc: MessagingError) -> bool:
        """A connection error after a fault in this program: the outcome is unknown."""
        return self.severs > 0 and isinstance(exc, BackendUnavailable)

    def _unexpected(self, step: str, exc: MessagingError) -> ModelMismatch:
        return self._fail(step, f"unexpected {type(exc).__name__}: {exc}")

    # -- operations --------------------------------------------------------------------

    def create_queue(self) -> str:
        """Create a fresh queue and its model."""
        name = self.ctx.queue_name()
        step = f"create_queue({name})"
        self.log.append(step)
        _, _, _, exc = self._timed(lambda: self.ctx.service.create_queue(name), step)
        if exc is not None:
            raise self._unexpected(step, exc)
        self.models[name] = QueueModel(name, self.caps, self.params.tolerance)
        return name

    def recreate_queue(self, queue: str) -> None:
        """Create an existing queue again: idempotent, its messages stay."""
        step = f"create_queue({queue}) again"
        self.log.append(step)
        _, _, _, exc = self._timed(lambda: self.ctx.service.create_queue(queue), step)
        if exc is not None and not self._indeterminate(exc):
            raise self._unexpected(step, exc)

    def send(self, queue: str, payload: bytes, delay: float | None) -> int | None:
        """Send (with a delay when ``delay`` is not None); the id, None if unknown."""
        svc, model = self.ctx.service, self.models[queue]
        if delay is None:
            step = f"send({queue}, {payload[:24]!r})"
            t0, t1, msg_id, exc = self._timed(lambda: svc.send_message(queue, payload), step)
        else:
            step = f"send_with_delay({queue}, {payload[:24]!r}, {delay:g})"
            t0, t1, msg_id, exc = self._timed(
                lambda: svc.send_message_with_delay(queue, payload, delay), step
            )
        self.log.append(f"{step} @{t0:.3f}..{t1:.3f} -> {msg_id if exc is None else exc!r}")
        if exc is not None:
            if not self._indeterminate(exc):
                raise self._unexpected(step, exc)
            model.send_unknown(payload)
            return None
        assert msg_id is not None
        self._check(step, lambda: model.sent(t0, t1, msg_id, payload, delay or 0.0))
        return msg_id

    def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        """Send several payloads in one call; their ids (none if unknown)."""
        model = self.models[queue]
        step = f"send_batch({queue}, {len(payloads)} payloads)"
        t0, t1, ids, exc = self._timed(lambda: self.ctx.service.send_batch(queue, payloads), step)
        self.log.append(f"{step} @{t0:.3f}..{t1:.3f} -> {ids if exc is None else exc!r}")
        if exc is not None:
            if not self._indeterminate(exc):
                raise self._unexpected(step, exc)
            for payload in payloads:
                model.send_unknown(payload)
            return []
        assert ids is not None
        if len(ids) != len(payloads):
            raise self._fail(step, f"{len(payloads)} payloads sent, {len(ids)} ids returned")
        for msg_id, payload in zip(ids, payloads, strict=True):
            self._check(step, functools.partial(model.sent, t0, t1, msg_id, payload))
        return ids

    def receive(self, queue: str, limit: int, vt: float) -> list[QueuedMessage]:
        """Receive and compare with the model; returns what came back."""
        limit = min(limit, self.caps.max_receive_limit)
        model = self.models[queue]
        step = f"receive({queue}, limit={limit}, vt={vt:g})"
        t0, t1, got, exc = self._timed(
            lambda: self.ctx.service.receive_messages(queue, limit, vt), step
        )
        self.log.append(f"{step} @{t0:.3f}..{t1:.3f} -> {_summary(got) if exc is None else exc!r}")
        if exc is not None:
            if not self._indeterminate(exc):
                raise self._unexpected(step, exc)
            model.receive_unknown(t0, t1, vt)
            return []
        assert got is not None
        self._check(step, lambda: model.received(t0, t1, limit, vt, got))
        for g in got:
            self.claims.setdefault((queue, g.msg_id), []).append(g.claim)
        return got

    def fetch(self, queue: str, msg_id: int, vt: float) -> QueuedMessage | None:
        """Fetch one message by id and compare with the model."""
        model = self.models[queue]
        step = f"fetch({queue}, {msg_id}, vt={vt:g})"
        t0, t1, got, exc = self._timed(
            lambda: self.ctx.service.fetch_message(queue, msg_id, vt), step
        )
        shown = _summary([got]) if got is not None else "None"
        self.log.append(f"{step} @{t0:.3f}..{t1:.3f} -> {shown if exc is None else exc!r}")
        if exc is not None:
            if not self._indeterminate(exc):
                raise self._unexpected(step, exc)
            model.receive_unknown(t0, t1, vt)
            return None
        self._check(step, lambda: model.fetched(t0, t1, msg_id, vt, got))
        if got is not None:
            self.claims.setdefault((queue, got.msg_id), []).append(got.claim)
        return got

    def claim_of(self, queue: str, msg_id: int, generation: int) -> Claim | None:
        """Our claim number ``generation`` (1-based) on ``msg_id``, if we made it."""
        made = self.claims.get((queue, msg_id), [])
        return made[generation - 1] if 0 < generation <= len(made) else None

    def pick_claim(self, queue: str, choice: str, index: int) -> tuple[int, int] | None:
        """(msg_id, generation) of a claim we made: the latest on a held message
        (``live``), an earlier one (``stale``), or any; None if we made none."""
        model = self.models[queue]
        made = [
            (msg_id, n + 1)
            for (q, msg_id), claims in sorted(self.claims.items())
            if q == queue
            for n, claim in enumerate(claims)
            if claim is not None
        ]
        if not made:
            return None

        def live(c: tuple[int, int]) -> bool:
            m = model.messages.get(c[0])
            return m is not None and m.held and m.claims == c[1]

        pool = {
            "live": [c for c in made if live(c)],
            "stale": [c for c in made if not live(c)],
        }.get(choice) or made
        return pool[index % len(pool)]

    def settle_claim(self, queue: str, msg_id: int, generation: int, *, ack: bool) -> None:
        """Ack or nack our claim number ``generation`` on ``msg_id`` by claim."""
        claim = self.claim_of(queue, msg_id, generation)
        if claim is None:
            return
        model = self.models[queue]
        step = f"{'ack' if ack else 'nack'}_claim({queue}, {msg_id}#{generation})"
        svc = self.ctx.service
        call = svc.ack_claim if ack else svc.nack_claim
        t0, t1, _, exc = self._timed(lambda: call(queue, claim), step)
        outcome = self._outcome(step, t0, t1, exc)
        self.log.append(f"{step} @{t0:.3f}..{t1:.3f} -> {outcome}")
        self._check(step, lambda: model.settled_claim(t0, t1, msg_id, generation, outcome, ack=ack))

    def ack_claims(self, queue: str, picks: Sequence[tuple[int, int]]) -> None:
        """Ack several of our claims in one call (distinct messages)."""
        chosen: dict[int, tuple[int, Claim]] = {}
        for msg_id, generation in picks:
            claim = self.claim_of(queue, msg_id, generation)
            if claim is not None and msg_id not in chosen:
                chosen[msg_id] = (generation, claim)
        model = self.models[queue]
        names = ", ".join(f"{i}#{g}" for i, (g, _) in chosen.items())
        step = f"ack_claims({queue}, [{names}])"
        claims = [c for _, c in chosen.values()]
        t0, t1, settled, exc = self._timed(lambda: self.ctx.service.ack_claims(queue, claims), step)
        self.log.append(f"{step} @{t0:.3f}..{t1:.3f} -> {settled if exc is None else exc!r}")
        if exc is not None:
            if not self._indeterminate(exc):
                raise self._unexpected(step, exc)
            outcomes = [Outcome.UNKNOWN] * len(chosen)
        else:
            assert settled is not None
            if len(settled) != len(chosen):
                raise self._fail(step, f"{len(chosen)} claims, {len(settled)} outcomes")
            outcomes = [Outcome.OK if ok else Outcome.NOT_FOUND for ok in settled]
        for (msg_id, (generation, _)), outcome in zip(chosen.items(), outcomes, strict=True):
            self._check(
                step,
                functools.partial(
                    model.settled_claim, t0, t1, msg_id, generation, outcome, ack=True
                ),
            )

    def _outcome(self, step: str, t0: float, t1: float, exc: MessagingError | None) -> str:
        if exc is None:
            return Outcome.OK
        if isinstance(exc, MessageNotFound):
            return Outcome.NOT_FOUND
        if self._indeterminate(exc):
            return Outcome.UNKNOWN
        self.log.append(f"{step} @{t0:.3f}..{t1:.3f} -> {exc!r}")
        raise self._unexpected(step, exc)

    def settle(self, queue: str, choice: str, index: int, *, ack: bool) -> None:
        """Ack or nack a held message, a known one, or an id never handed out."""
        self.settle_id(queue, self._pick(self.models[queue], choice, index), ack=ack)

    def settle_id(self, queue: str, msg_id: int, *, ack: bool) -> None:
        """Ack or nack ``msg_id`` and compare the outcome with the model."""
        model = self.models[queue]
        step = f"{'ack' if ack else 'nack'}({queue}, {msg_id})"
        svc = self.ctx.service
        call = svc.ack_message if ack else svc.nack_message
        t0, t1, _, exc = self._timed(lambda: call(queue, msg_id), step)
        outcome = self._outcome(step, t0, t1, exc)
        self.log.append(f"{step} @{t0:.3f}..{t1:.3f} -> {outcome}")
        self._check(step, lambda: model.settled(t0, t1, msg_id, outcome, ack=ack))

    @staticmethod
    def _pick(model: QueueModel, choice: str, index: int) -> int:
        held = sorted(i for i, m in model.messages.items() if m.held)
        known = sorted(set(model.messages) | model.acked)
        if choice == "held" and held:
            return held[index % len(held)]
        if choice != "unknown" and known:
            return known[index % len(known)]
        return UNKNOWN_ID_BASE + index

    def pass_time(self, seconds: float) -> None:
        """Let time pass (virtual time advances; real time is waited out)."""
        seconds = min(seconds, max(self.wait_allowance - self.waited, 0.0))
        if seconds <= 0:
            return  # this program's waiting budget is spent
        self.waited += seconds
        t0, t1, _, _ = self._timed(lambda: self.ctx.pause(seconds), f"pass_time({seconds:g})")
        self.waited_total += t1 - t0
        self.log.append(f"pass_time({seconds:g}) @{t0:.3f}..{t1:.3f}")

    def sever(self) -> None:
        """Kill the provider's connections (harness hook), then wait until it works again."""
        step = "sever_connection()"
        ctx = self.ctx
        t0, t1, _, exc = self._timed(lambda: ctx.harness.sever_connection(ctx.service), step)
        self.log.append(f"{step} @{t0:.3f}..{t1:.3f}")
        if exc is not None:
            raise self._unexpected(step, exc)
        self.severs += 1
        for model in self.models.values():
            model.severed(t0)
        probe = next(iter(self.models))

        async def usable() -> bool:
            try:
                return await ctx.service.queue_exists(probe)
            except BackendUnavailable:
                return False

        t0, t1, _, exc = self._timed(
            lambda: ctx.eventually(usable, ctx.timing.slack * 3, "provider usable after sever")
        )
        self.log.append(f"usable again @{t1:.3f}")

    def check_storage(self) -> None:
        """Backdoor: what is stored equals what the model holds."""
        if not self.backdoor:
            return
        ctx = self.ctx
        for queue, model in self.models.items():
            _, _, ids, exc = self._timed(
                functools.partial(ctx.harness.stored_ids, ctx.service, queue)
            )
            if exc is not None:
                raise self._unexpected(f"stored_ids({queue})", exc)
            assert ids is not None
            self._check(f"stored_ids({queue}) = {ids}", functools.partial(model.stored, ids))

    def drain(self) -> None:
        """End of a program: let due messages come back, receive everything, ack it."""
        params = self.params
        now = self._timed(_now(self.ctx))[2]
        assert now is not None
        horizon = max(self.wait_allowance - self.waited, 0.0)
        due = max((m.last_due(now + horizon) for m in self.models.values()), default=-math.inf)
        if due > now:
            wait = due - now + 0.01
            self.waited += wait
            t0, t1, _, _ = self._timed(lambda: self.ctx.pause(wait), "pass_time to drain")
            self.waited_total += t1 - t0
            self.log.append(f"pass_time({wait:.3f}) to drain @{t0:.3f}..{t1:.3f}")
        limit = min(100, self.caps.max_receive_limit)
        for queue, model in self.models.items():
            while len(self.receive(queue, limit, params.long_vt)) == limit:
                pass
            for msg_id in sorted(i for i, m in model.messages.items() if m.held):
                self.settle_id(queue, msg_id, ack=True)
        self.check_storage()


def _now(ctx: CaseContext) -> Callable[[], Awaitable[float]]:
    async def now() -> float:
        return ctx.now()

    return now


def _summary(got: Sequence[QueuedMessage] | None) -> str:
    if got is None:
        return "None"
    return "[" + ", ".join(f"{m.msg_id}(rc={m.receive_count})" for m in got) + "]"
