"""HOST-7: derandomized programs of hostile and odd calls, each checked as it runs.

Every program starts from fresh queues (``B`` the bystander with visible and held
messages, ``W1`` with two messages, ``W2`` missing) and runs 6 to 14 calls drawn by
:mod:`._fuzz_steps` from a fixed seed. After each call:

* a failure is a documented :mod:`mqcontract.errors` condition (never a bare
  ``MessagingError``, a ``TypeError``, a driver exception or a hang), and a hostile
  queue name fails with ``InvalidQueueName``;
* an argument that must be refused is refused, an operation on a queue the program
  deleted (or never created) does not succeed, and a live claim (or a held id) settles;
* nothing a call must not change changed: through the harness's ``stored_ids`` where it
  has one, the bystander after every call and every queue after a failed call; by
  receiving otherwise, at the end, where the bystander's visible messages come back
  unchanged and its held ones still settle with the claims made at the start.

Then the service is closed and calls with any arguments must raise ``ProviderClosed``
at once. A failing program is shrunk (calls dropped while it still fails) and printed
with a replay hint (``MQCONTRACT_HOSTILE_SEED``, ``MQCONTRACT_HOSTILE_PROGRAM``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mqcontract.errors as errors
from mqcontract.capabilities import PushKind
from mqcontract.errors import InvalidQueueName, MessagingError, ProviderClosed
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.testing import HookUnavailable
from mqcontract_conformance.cases._fuzz_steps import (
    Need,
    Step,
    draw_closed_call,
    draw_program,
    operations,
)
from mqcontract_conformance.cases._fuzz_world import Tracked, World
from mqcontract_conformance.cases._hostile_corpus import shown
from mqcontract_conformance.cases._payloads import same_payload
from mqcontract_conformance.context import CaseContext

__all__ = ["CONDITIONS", "PROGRAM_ENV", "SEED_ENV", "fuzz_public_api", "program_rng"]

SEED_ENV = "MQCONTRACT_HOSTILE_SEED"
#: A program index to run alone, or ``closed`` for the closed-service calls alone.
PROGRAM_ENV = "MQCONTRACT_HOSTILE_PROGRAM"
SCALE_ENV = "MQCONTRACT_TIMING_SCALE"
#: Programs drawn per run at most; a networked provider stops earlier, at its budget.
MAX_PROGRAMS = 40
#: Programs every run makes, whatever the time.
MIN_PROGRAMS = 4
#: Share of the operation bound (``TimingProfile.operation``) new programs may start in.
BUDGET_SHARE = 0.6
CLOSED_CALLS = 40

#: The conditions a provider may report: every documented error but the two bases,
#: which name no condition.
CONDITIONS: tuple[type[MessagingError], ...] = tuple(
    cls
    for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type)
    and issubclass(cls, MessagingError)
    and cls not in (MessagingError, errors.QueueError)
)
#: Operations that must not succeed on a queue that does not exist.
_NEED_QUEUE = {
    "send_message",
    "send_message_with_delay",
    "send_batch",
    "receive_messages",
    "fetch_message",
    "ack_message",
    "nack_message",
    "ack_claim",
    "nack_claim",
    "subscribe",
    "subscribe_many",
}
_BYSTANDER_PAYLOADS = (b"bystander-0", b"\x00bystander-1", b"bystander-2", b"\xffbystander-3")


class Finding(Exception):
    """A property broke at a call (or at the end of the program)."""


@dataclass
class Run:
    """One program's outcome: the calls made with what each returned, and a finding."""

    log: list[str]
    names: dict[str, str]
    finding: Finding | None = None


def _condition(exc: MessagingError) -> str | None:
    """Why ``exc`` is not a documented condition (None when it is one)."""
    if isinstance(exc, CONDITIONS):
        return None
    return f"{type(exc).__module__}.{type(exc).__qualname__} names no documented condition"


def _outcome(result: object) -> str:
    if isinstance(result, list):
        return (
            "[" + ", ".join(_short(r) for r in result[:6]) + (", ...]" if len(result) > 6 else "]")
        )
    return _short(result)


def _short(value: object) -> str:
    if isinstance(value, QueuedMessage):
        return f"message {value.msg_id}"
    return shown(value, 40)


class Program:
    """Runs programs against the case's service, one fresh set of queues each."""

    def __init__(self, ctx: CaseContext) -> None:
        self.ctx = ctx
        self.svc = ctx.service
        self.backdoor = True
        self.calls = 0

    async def run(self, steps: Sequence[Step]) -> Run:
        ctx = self.ctx
        keys = ("B", "W1", "W2", "M")
        names = {key: ctx.queue_name() for key in keys}
        run = Run([], names)
        world = await self._setup(names)
        try:
            for number, step in enumerate(steps, start=1):
                try:
                    outcome = await self._call(world, step)
                except Finding as finding:
                    run.log.append(f"{number}. {step} -> {finding}")
                    run.finding = finding
                    return run
                run.log.append(f"{number}. {step} -> {outcome}")
            try:
                await self._final(world)
            except Finding as finding:
                run.log.append(f"end of the program: {finding}")
                run.finding = finding
            return run
        finally:
            for name in names.values():
                try:
                    await self.svc.delete_queue(name)
                except MessagingError:
                    continue  # left to the cleanup after the case
                ctx.queues.remove(name)

    # -- setup and the end ---------------------------------------------------------------

    async def _setup(self, names: dict[str, str]) -> World:
        ctx, svc = self.ctx, self.svc
        long = ctx.timing.long
        queues = {
            "B": Tracked("B", names["B"], True),
            "W1": Tracked("W1", names["W1"], True),
            "W2": Tracked("W2", names["W2"], False),
            "M": Tracked("M", names["M"], False),
        }
        world = World(ctx.caps, long, queues)
        bystander, w1 = queues["B"], queues["W1"]
        for tracked, payloads in ((bystander, _BYSTANDER_PAYLOADS), (w1, (b"w-0", b"w-1"))):
            await ctx.accepts(svc.create_queue(tracked.name), f"create_queue({tracked.name})")
            ids = await ctx.accepts(svc.send_batch(tracked.name, list(payloads)), "send_batch")
            for msg_id, payload in zip(ids, payloads, strict=True):
                tracked.sent(msg_id)
                tracked.payloads[msg_id] = payload
        held: list[QueuedMessage] = []

        async def two_held() -> bool:
            held.extend(await svc.receive_messages(bystander.name, 2 - len(held), long))
            return len(held) >= 2

        await ctx.eventually(two_held, ctx.timing.delivery, "two bystander messages to hold")
        for message in held:
            bystander.claimed(message)
        world.visible = [i for i in bystander.ids if i not in bystander.live]
        return world

    async def _final(self, world: World) -> None:
        ctx, svc = self.ctx, self.svc
        for tracked in world.queues.values():
            if tracked.exists is False and await svc.queue_exists(tracked.name):
                raise Finding(f"{tracked.key} exists, but the program never created it again")
        bystander = world.queues["B"]
        got: list[QueuedMessage] = []

        async def all_visible() -> bool:
            got.extend(await svc.receive_messages(bystander.name, 10, world.long))
            return len(got) >= len(world.visible)

        with contextlib.suppress(AssertionError):  # fewer is reported below, with the ids
            await ctx.eventually(all_visible, ctx.timing.delivery, "the visible bystanders")
        got.extend(await svc.receive_messages(bystander.name, 10, world.long))
        ids = sorted(m.msg_id for m in got)
        if ids != sorted(world.visible):
            raise Finding(
                f"B gave back {ids}; visible were {sorted(world.visible)}, held "
                f"{sorted(bystander.live)} (a held one received again was released)"
            )
        fidelity = ctx.caps.payload_fidelity
        for m in got:
            sent = bystander.payloads[m.msg_id]
            if m.receive_count != 1 or not same_payload(fidelity, sent, m.payload):
                raise Finding(
                    f"B's message {m.msg_id} changed: receive_count {m.receive_count}, "
                    f"payload {m.payload[:30]!r} (sent {sent[:30]!r})"
                )
        for msg_id, claim in sorted(bystander.live.items()):
            try:
                await svc.ack_claim(bystander.name, claim)
            except MessagingError as exc:
                raise Finding(
                    f"B's message {msg_id}, held since the start, no longer settles with "
                    f"its claim: {type(exc).__name__}: {exc}"
                ) from None

    # -- one call ------------------------------------------------------------------------

    async def _call(self, world: World, step: Step) -> str:
        self.calls += 1
        values = [arg.make(world) for arg in step.args]
        before = _Expectation(world, step, values)
        method = getattr(self.svc, step.op)
        bound = self.ctx.timing.operation
        result: Any = None
        failed: MessagingError | None = None
        try:
            async with asyncio.timeout(bound) as deadline:
                result = await method(*values)
        except MessagingError as exc:
            failed = exc
        except TimeoutError as exc:
            if deadline.expired():
                raise Finding(f"did not return within {bound:g} s") from None
            raise Finding(f"raised builtins.TimeoutError (not a MessagingError): {exc}") from None
        except Exception as exc:
            kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
            raise Finding(f"raised {kind} (not a MessagingError): {shown(str(exc), 200)}") from None
        if failed is not None:
            outcome = f"{type(failed).__name__}"
            await self._failed(world, step, before, failed)
        else:
            outcome = _outcome(result)
            await self._succeeded(world, step, before, values, result)
        await self._check_stored(world, everything=failed is not None)
        return outcome

    async def _failed(
        self, world: World, step: Step, before: _Expectation, exc: MessagingError
    ) -> None:
        why = _condition(exc)
        if why is not None:
            raise Finding(f"{why}: {shown(str(exc), 200)}")
        if before.hostile_name and not isinstance(exc, InvalidQueueName):
            raise Finding(f"{type(exc).__name__} for a hostile name, not InvalidQueueName: {exc}")
        if before.must_settle:
            raise Finding(f"refused to settle a live claim: {type(exc).__name__}: {exc}")
        target = before.tracked
        if step.op in {"create_queue", "delete_queue"} and target is not None and target.key != "B":
            target.exists = None  # it may or may not exist now

    async def _succeeded(
        self, world: World, step: Step, before: _Expectation, values: list[object], result: Any
    ) -> None:
        op, target = step.op, before.tracked
        if op in {"subscribe", "subscribe_many"}:
            await result.aclose()
        if before.refusals and not (op == "fetch_message" and result is None):
            raise Finding(f"accepted {', '.join(before.refusals)}: returned {_outcome(result)}")
        if before.missing and op in _NEED_QUEUE:
            raise Finding(f"succeeded on a queue that does not exist: {_outcome(result)}")
        if op == "ack_claims":
            self._settled_many(before, values[1], result)
        if target is None:
            if op == "list_queues" and world.name_of("B") not in result:
                raise Finding(f"B is not listed: {shown(result, 200)}")
            return
        if op == "create_queue" and target.exists is not True:
            target.exists = True
        elif op == "delete_queue" and target.key != "B":
            target.gone()
        elif op == "queue_exists":
            if result is not True and result is not False:
                raise Finding(f"queue_exists returned {result!r}, not a bool")
            if target.exists is not None and result is not target.exists:
                raise Finding(
                    f"queue_exists says {result}; the program's calls say {target.exists}"
                )
        elif op in {"send_message", "send_message_with_delay"}:
            self._sent(target, [result], 1)
        elif op == "send_batch":
            if not isinstance(result, list):
                raise Finding(f"send_batch returned {result!r}, not a list of ids")
            self._sent(target, result, step.args[1].size)
        elif op == "receive_messages":
            limit = values[1]
            if not isinstance(result, list) or len(result) > limit:  # type: ignore[operator]
                raise Finding(f"receive with limit {limit} returned {_outcome(result)}")
            for message in result:
                self._claimed(target, message)
        elif op == "fetch_message" and result is not None:
            if result.msg_id != values[1] or type(values[1]) is not int:
                raise Finding(f"fetch of {shown(values[1])} returned message {result.msg_id}")
            self._claimed(target, result)
        elif op in {"ack_message", "nack_message"}:
            if not before.must_settle:
                raise Finding(f"settled id {shown(values[1])}, which this service does not hold")
            target.settled(values[1], ack=op == "ack_message")  # type: ignore[arg-type]
        elif op in {"ack_claim", "nack_claim"}:
            if not before.must_settle:
                raise Finding("settled a claim that holds nothing")
            claim = values[1]
            if isinstance(claim, QueuedMessage):
                claim = claim.claim
            assert isinstance(claim, Claim)
            target.settled(claim.msg_id, ack=op == "ack_claim")

    @staticmethod
    def _sent(target: Tracked, ids: list[object], count: int | None) -> None:
        if count is not None and len(ids) != count:
            raise Finding(f"{count} payloads sent, {len(ids)} ids returned: {ids}")
        for msg_id in ids:
            if type(msg_id) is not int or msg_id in target.stored:
                raise Finding(f"returned id {msg_id!r}, already stored or not an int")
            target.sent(msg_id)

    @staticmethod
    def _claimed(target: Tracked, message: QueuedMessage) -> None:
        if message.msg_id not in target.stored:
            raise Finding(
                f"handed out message {message.msg_id}, which is not stored on {target.key}"
            )
        if message.msg_id in target.live:
            raise Finding(f"handed out message {message.msg_id}, which this service holds")
        target.claimed(message)

    @staticmethod
    def _settled_many(before: _Expectation, items: object, result: object) -> None:
        target = before.tracked
        assert isinstance(items, list)
        if not isinstance(result, list) or len(result) != len(items):
            raise Finding(f"{len(items)} claims, returned {_outcome(result)}")
        if target is None:
            return
        ids = [getattr(getattr(c, "claim", c), "msg_id", None) for c in items]
        acked: set[int] = set()
        for item, msg_id, ok in zip(items, ids, result, strict=True):
            if ok is not True and ok is not False:
                raise Finding(f"returned {ok!r} for a claim, not a bool")
            live = target.live_claim(item)
            if ids.count(msg_id) > 1:  # the same message twice: which one settles is open
                if ok and live:
                    acked.add(msg_id)  # type: ignore[arg-type]
                continue
            if ok and not live:
                raise Finding(f"reported True for {_short(item)}, which holds nothing")
            if live and not ok and target.exists:
                raise Finding(f"reported False for the live claim on message {msg_id}")
            if ok:
                acked.add(msg_id)  # type: ignore[arg-type]
        for msg_id in acked:
            target.settled(msg_id, ack=True)

    async def _check_stored(self, world: World, *, everything: bool) -> None:
        """Backdoor: the bystander (and after a failure every existing queue) stores
        exactly what the program's calls left there."""
        if not self.backdoor:
            return
        for tracked in world.queues.values():
            if tracked.exists is not True or (tracked.key != "B" and not everything):
                continue
            try:
                stored = await self.ctx.harness.stored_ids(self.svc, tracked.name)
            except HookUnavailable:
                self.backdoor = False
                return
            if sorted(stored) != sorted(tracked.stored):
                raise Finding(
                    f"{tracked.key} stores {sorted(stored)}; the calls so far leave "
                    f"{sorted(tracked.stored)}"
                )


class _Expectation:
    """What a call must do, decided from the program's knowledge before it runs."""

    def __init__(self, world: World, step: Step, values: list[object]) -> None:
        queue = step.queue
        self.tracked = world.queues.get(queue.key) if queue and queue.key else None
        self.hostile_name = queue is not None and queue.key is None
        self.refusals = [a.text for a in step.args if a.need is Need.FAIL]
        keys = (step.args[0].key or "").split(",") if step.op == "subscribe_many" else []
        self.missing = world.missing(queue.key if queue else None) or any(
            world.missing(k) for k in keys
        )
        target = self.tracked
        settle = target is not None and target.exists is True and not self.refusals
        if step.op in {"ack_claim", "nack_claim"}:
            self.must_settle = settle and target is not None and target.live_claim(values[1])
        elif step.op in {"ack_message", "nack_message"}:
            self.must_settle = settle and target is not None and target.holds_id(values[1])
        else:
            self.must_settle = False


# -- the rule -------------------------------------------------------------------------------


def _operations(ctx: CaseContext) -> list[str]:
    caps = ctx.caps
    return operations(
        delay=caps.delay,
        fetch=caps.fetch_by_id,
        push=caps.push is not PushKind.NONE,
        listing=caps.list_queues,
    )


def program_rng(seed: int, index: int | str) -> random.Random:
    """The generator of program ``index`` (or ``closed``) of a run with ``seed``."""
    return random.Random(f"HOST-7/{seed}/{index}")


async def _shrink(
    program: Program, steps: list[Step], first: Run, until: float
) -> tuple[list[Step], Run]:
    """Drop calls (last first) while the program still fails, until ``until``."""
    best, run = list(steps), first
    index = len(best) - 1
    while index >= 0 and time.monotonic() < until:
        smaller = best[:index] + best[index + 1 :]
        attempt = await program.run(smaller)
        if attempt.finding is not None:
            best, run = smaller, attempt
        index -= 1
    return best, run


async def fuzz_public_api(ctx: CaseContext) -> None:
    """HOST-7's check: the programs, then the closed service."""
    seed = int(os.environ.get(SEED_ENV, "0") or 0)
    only = os.environ.get(PROGRAM_ENV, "").strip() or None
    ops = _operations(ctx)
    program = Program(ctx)
    started = time.monotonic()
    deadline = started + ctx.timing.operation * BUDGET_SHARE
    ran = 0
    for index in range(MAX_PROGRAMS):
        if only is not None and only != str(index):
            continue
        if only is None and index >= MIN_PROGRAMS and time.monotonic() > deadline:
            break
        steps = draw_program(program_rng(seed, index), ops)
        ran += 1
        run = await program.run(steps)
        if run.finding is None:
            continue
        shrunk, shown_run = await _shrink(
            program, steps, run, time.monotonic() + ctx.timing.operation
        )
        names = ", ".join(f"{k} = {v}" for k, v in shown_run.names.items())
        ctx.fail(
            f"program {index} (seed {seed}; {len(steps)} calls, shrunk to {len(shrunk)}): "
            f"{shown_run.finding}\n  "
            + "\n  ".join(shown_run.log)
            + f"\n  ({names})\n"
            + _replay(ctx, seed, str(index))
        )
    ctx.metrics.update(programs=float(ran), operations=float(program.calls))
    if only is None or only == "closed":
        await _closed(ctx, seed, ops)
    ctx.metrics["seconds"] = round(time.monotonic() - started, 3)


def _replay(ctx: CaseContext, seed: int, program: str) -> str:
    return (
        f"replay: {SEED_ENV}={seed} {PROGRAM_ENV}={program} {SCALE_ENV}={ctx.timing.scale:g} "
        f"mqcontract verify --provider {ctx.harness.name} --rules HOST-7"
    )


async def _closed(ctx: CaseContext, seed: int, ops: list[str]) -> None:
    """Close the service; every call with any arguments raises ProviderClosed at once."""
    svc, long = ctx.service, ctx.timing.long
    names = {key: ctx.queue_name() for key in ("B", "W1", "W2", "M")}
    queues = {key: Tracked(key, name, key == "W1") for key, name in names.items()}
    world = World(ctx.caps, long, queues)
    w1 = queues["W1"]
    await svc.create_queue(w1.name)
    for msg_id in await svc.send_batch(w1.name, [b"c-0", b"c-1"]):
        w1.sent(msg_id)
    for message in await svc.receive_messages(w1.name, 1, long):
        w1.claimed(message)
    await svc.close()
    rng = program_rng(seed, "closed")
    bound = ctx.timing.operation
    for number in range(1, CLOSED_CALLS + 1):
        step = draw_closed_call(rng, ops)
        values = [arg.make(world) for arg in step.args]
        what = f"call {number} after close: {step} (W1 = {w1.name})"
        try:
            async with asyncio.timeout(bound) as deadline:
                result = await getattr(svc, step.op)(*values)
        except ProviderClosed:
            continue
        except TimeoutError as exc:
            problem = f"did not return within {bound:g} s" if deadline.expired() else repr(exc)
        except Exception as exc:
            problem = (
                f"raised {type(exc).__module__}.{type(exc).__qualname__}: {shown(str(exc), 200)}"
            )
        else:
            aclose = getattr(result, "aclose", None)
            if aclose is not None:
                await aclose()
            problem = f"returned {_outcome(result)}"
        ctx.fail(f"{what} {problem}, not ProviderClosed\n{_replay(ctx, seed, 'closed')}")
