"""CAP: what a provider declares is measured, whatever it declares.

Rules are selected by the declared capabilities, so a provider that declares less than
it does (no push, inexact receive counts, a coarse visibility precision) is held to less:
the rules that would check the rest are skipped or loosened. These rules probe the
provider regardless of its declaration, record declared against measured (they reach the
terminal summary and the report), and fail an under-declaration. Over-declaring mostly
needs no rule here: the rules the capability enables fail it. The visibility precision
is the exception: it is the tolerance of the timing rules, which also allow seconds of
slack for a loaded machine, so CAP-2 fails a timeout that surely ended well past the
declared precision before its message came back. An operation the provider really lacks
(``UnsupportedOperation``) measures as absent, never as a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from dataclasses import dataclass

from mqcontract.capabilities import Capabilities, PushKind, RequeuePosition
from mqcontract.errors import UnsupportedOperation
from mqcontract.messages import Available, Message, MessageNotification, QueuedMessage
from mqcontract.service import MessagingService, Subscription
from mqcontract.testing import HookUnavailable
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext, ContractViolation
from mqcontract_conformance.measurement import Measurement, Scalar, Verdict, render
from mqcontract_conformance.registry import registered, rule

__all__ = ["PRECISION_READERS", "rules_skipped_by"]

#: Push kinds from the least to the most a provider can promise.
_PUSH_ORDER = (PushKind.NONE, PushKind.SIGNAL, PushKind.MIXED, PushKind.FULL)
#: Payload size that tells mixed push from full push when no threshold is declared.
_LARGE_PROBE_BYTES = 64 * 1024
#: The rules whose timing tolerance is the declared visibility precision.
PRECISION_READERS = ("VT-2", "VT-6", "ACK-1", "ACK-4", "ORD-4", "CLAIM-2", "CLAIM-3")
#: A declared precision is an under-declaration only past both of these: this many times
#: the measured imprecision (headroom for a loaded machine) and this many seconds.
_PRECISION_HEADROOM = 4.0
_PRECISION_FLOOR = 0.25
#: A declared precision is an over-declaration once every timeout has surely ended (see
#: ``_Lateness.certain``) this much past it (times the timing scale, at most twice) and
#: the message is still not receivable.
_LATENESS_ALLOWANCE = 0.1


def rules_skipped_by(declared: Capabilities, measured: Capabilities) -> tuple[str, ...]:
    """Rules that apply to the ``measured`` capabilities but not to the ``declared`` ones."""
    return tuple(
        r.id
        for r in registered()
        if r.applies_when.applies(measured) and not r.applies_when.applies(declared)
    )


def _compare(
    ctx: CaseContext,
    capability: str,
    measured: Scalar,
    measured_caps: Capabilities,
    *,
    more: bool,
    note: str,
) -> Measurement:
    """Declared against measured for one field; ``more``: measured promises more."""
    declared = getattr(ctx.caps, capability)
    declared_value: Scalar = declared.value if hasattr(declared, "value") else declared
    if declared_value == measured:
        return Measurement(capability, declared_value, measured, Verdict.AGREES, note=note)
    skipped = rules_skipped_by(ctx.caps, measured_caps) if more else ()
    if skipped:
        verdict = Verdict.UNDER_DECLARED
    else:
        verdict = Verdict.DIFFERS if more else Verdict.OVER_DECLARED
    return Measurement(capability, declared_value, measured, verdict, skipped, note)


def _fail_under_declared(ctx: CaseContext, how: str) -> None:
    under = [m for m in ctx.measured if m.verdict is Verdict.UNDER_DECLARED]
    if not under:
        return
    declares = ", ".join(f"{m.capability}={render(m.declared)}" for m in under)
    measured = ", ".join(f"{m.capability}={render(m.measured)}" for m in under)
    rules = sorted({r for m in under for r in m.rules}, key=_rule_order)
    raise ContractViolation(
        f"[{ctx.rule_id}] under-declared: declares {declares}, measured {measured} "
        f"(rules {', '.join(rules)} {how}) (run id {ctx.run_id})"
    )


def _rule_order(rule_id: str) -> int:
    ids = [r.id for r in registered()]
    return ids.index(rule_id) if rule_id in ids else len(ids)


# -- push ------------------------------------------------------------------------------


async def _settle(ctx: CaseContext, q: str, note: MessageNotification) -> None:
    if isinstance(note, Message) and note.claimed and note.message.claim is not None:
        await ctx.service.ack_claim(q, note.message.claim)


async def _pushed(
    ctx: CaseContext, q: str, sub: Subscription, payload: bytes
) -> MessageNotification:
    """The notification announcing ``payload`` sent to ``q`` (catch-up signals skipped)."""
    sent = await ctx.service.send_message(q, payload)
    notes = await ctx.collect_notifications(sub, [(q, sent)])
    return notes[(q, sent)]


async def _measure_push(ctx: CaseContext) -> list[Measurement]:
    q = ctx.queue_name()
    await ctx.service.create_queue(q)
    try:
        sub = await ctx.subscribe(q)
    except UnsupportedOperation:
        kind, claimed, note = PushKind.NONE, None, "subscribe raises UnsupportedOperation"
    else:
        try:
            small = await _pushed(ctx, q, sub, body(1, "cap"))
        except ContractViolation:
            kind, claimed = PushKind.NONE, None
            note = f"subscribe works, but nothing was pushed within {ctx.timing.delivery:g} s"
        else:
            await _settle(ctx, q, small)
            threshold = ctx.caps.push_payload_threshold_bytes
            size = min(
                threshold + 1 if threshold is not None else _LARGE_PROBE_BYTES,
                ctx.caps.max_message_size_bytes,
            )
            large = await _pushed(ctx, q, sub, b"cap-" + b"x" * max(size - 4, 0))
            await _settle(ctx, q, large)
            if isinstance(small, Available):
                kind = PushKind.SIGNAL
            else:
                kind = PushKind.FULL if isinstance(large, Message) else PushKind.MIXED
            claimed = small.claimed if isinstance(small, Message) else None
            note = f"one small and one {size}-byte message pushed"
    measured_caps = dataclasses.replace(
        ctx.caps,
        push=kind,
        push_payload_threshold_bytes=(ctx.caps.push_payload_threshold_bytes or 1)
        if kind is PushKind.MIXED
        else None,
    )
    more = _PUSH_ORDER.index(kind) > _PUSH_ORDER.index(ctx.caps.push)
    found = [_compare(ctx, "push", kind.value, measured_caps, more=more, note=note)]
    if claimed is None:
        found.append(
            Measurement(
                "pushed_messages_claimed",
                ctx.caps.pushed_messages_claimed,
                None,
                Verdict.NOT_MEASURED,
                note="no whole message was pushed",
            )
        )
    else:
        claimed_caps = dataclasses.replace(measured_caps, pushed_messages_claimed=claimed)
        more = claimed and not ctx.caps.pushed_messages_claimed
        found.append(
            _compare(
                ctx,
                "pushed_messages_claimed",
                claimed,
                claimed_caps,
                more=more,
                note="a pushed Message says whether it is claimed",
            )
        )
    return found


# -- receive counts --------------------------------------------------------------------


async def _receive_one(
    ctx: CaseContext, service: MessagingService, q: str, vt: float
) -> QueuedMessage:
    async def one() -> list[QueuedMessage]:
        return await service.receive_messages(q, 1, vt)

    # Within the bound of a message that is visible now or whose short claim is expiring.
    within = ctx.timing.unit + ctx.caps.visibility_precision_seconds + ctx.timing.slack
    [got] = await ctx.eventually(one, within, f"a message on {q}")
    return got


async def _measure_receive_count(ctx: CaseContext) -> Measurement:
    """Counts over nacks and an expiry, alternating with a second service where the
    harness can open one (counts kept per process would look exact in one process)."""
    q = await ctx.queue()
    await ctx.service.send_message(q, body(2, "cap"))
    try:
        other: MessagingService = await ctx.other_consumer(q)
        how = "two services alternating"
    except HookUnavailable:
        other, how = ctx.service, "one service (the harness opens no second on the backend)"
    counts = []
    for service, vt in (
        (ctx.service, ctx.timing.long),
        (other, ctx.timing.long),
        (ctx.service, ctx.timing.unit),
        (other, ctx.timing.long),
    ):
        got = await _receive_one(ctx, service, q, vt)
        counts.append(got.receive_count)
        assert got.claim is not None
        if len(counts) == 4:
            await service.ack_claim(q, got.claim)
        elif vt == ctx.timing.long:
            await service.nack_claim(q, got.claim)
        # else: the short claim is left to expire
    exact = counts == [1, 2, 3, 4]
    measured_caps = dataclasses.replace(ctx.caps, exact_receive_count=exact)
    note = f"counts {counts} over nack, nack, expiry ({how})"
    more = exact and not ctx.caps.exact_receive_count
    return _compare(ctx, "exact_receive_count", exact, measured_caps, more=more, note=note)


# -- requeue position ------------------------------------------------------------------


async def _measure_requeue_position(ctx: CaseContext) -> Measurement:
    declared = ctx.caps.requeue_position.value
    if not ctx.caps.fifo:
        note = "fifo is not declared: positions mean nothing"
        return Measurement("requeue_position", declared, None, Verdict.NOT_MEASURED, note=note)
    q = await ctx.queue()
    ids = await ctx.service.send_batch(q, [body(i, "cap") for i in range(3)])
    first = await _receive_one(ctx, ctx.service, q, ctx.timing.long)
    assert first.claim is not None
    await ctx.service.nack_claim(q, first.claim)
    got = [m.msg_id for m in await ctx.receive_exactly(q, 3)]
    positions = {
        RequeuePosition.ORIGINAL.value: list(ids),
        RequeuePosition.BACK.value: [*ids[1:], ids[0]],
    }
    measured = next((p for p, order in positions.items() if order == got), None)
    note = f"sent {list(ids)}, nacked {first.msg_id}, then received {got}"
    if measured is None:
        return Measurement("requeue_position", declared, None, Verdict.NOT_MEASURED, note=note)
    # Neither position promises more: the ORD rules check the declared one.
    verdict = Verdict.AGREES if measured == declared else Verdict.DIFFERS
    return Measurement("requeue_position", declared, measured, verdict, note=note)


@rule(
    "CAP-1",
    "A provider declares at least what it measurably does: its push kind, whether pushed "
    "messages are claimed, whether receive counts are exact and whether its services "
    "share the backend are probed whatever it declares, and a declaration below the "
    "measurement, which skips the rules that would check the rest, fails; the requeue "
    "position is measured and reported.",
    why="Rules are chosen by the declaration: a provider that declares no push, or "
    "inexact counts, is never checked on them, and its users are told less than it does.",
    provisional=True,
)
async def declares_what_it_does(ctx: CaseContext) -> None:
    ctx.measured.extend(await _measure_push(ctx))
    ctx.measured.append(await _measure_receive_count(ctx))
    ctx.measured.append(await _measure_requeue_position(ctx))
    ctx.measured.append(await _measure_shared_backend(ctx))
    _fail_under_declared(ctx, "skipped")


async def _measure_shared_backend(ctx: CaseContext) -> Measurement:
    """Whether a second service opened the same way sees a queue made through this one."""
    q = await ctx.queue()
    other = await ctx.harness.open(ctx.clock)
    ctx.others.append(other)
    measured = await other.queue_exists(q)
    declared = ctx.caps.shared_backend
    note = "a queue made through one service, looked up through a second opened the same way"
    verdict = Verdict.AGREES
    rules: tuple[str, ...] = ()
    if measured and not declared:
        verdict, rules = Verdict.UNDER_DECLARED, ("LIFE-12", "CLAIM-3")
    elif declared and not measured:
        verdict = Verdict.OVER_DECLARED  # LIFE-12 fails it
    return Measurement("shared_backend", declared, measured, verdict, rules, note)


# -- visibility precision --------------------------------------------------------------


def _lateness_allowance(ctx: CaseContext) -> float:
    """The allowance past the declared precision: more on a slower timing profile, but
    never a second rounded up (0.4 s late at the least) for a scale past 2."""
    return _LATENESS_ALLOWANCE * min(max(ctx.timing.scale, 1.0), 2.0)


@dataclass(frozen=True, slots=True)
class _Lateness:
    """When a held message was receivable again, against its timeout's end (seconds;
    negative: early). ``observed`` is from the nearest ends (the receive's start, the
    finding poll's start): the figure reported. ``certain`` is what no timing of the
    calls can explain away: the last empty poll began that long after the latest
    instant the timeout can have ended (the claim made as the receive returned)."""

    observed: float
    certain: float


class _LoopLag:
    """How late this event loop ran a callback due ``delay`` seconds from now."""

    def __init__(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._due = loop.time() + max(delay, 0.0)
        self._late: float | None = None
        self._handle = loop.call_at(self._due, self._fired)

    def _fired(self) -> None:
        self._late = asyncio.get_running_loop().time() - self._due

    def seconds(self) -> float:
        """The lag (0 if it has not fired yet; then it is cancelled)."""
        self._handle.cancel()
        return max(self._late or 0.0, 0.0)


async def _lateness(ctx: CaseContext, q: str, vt: float) -> _Lateness:
    """How late a message received with ``vt`` was receivable again, observed in fine
    polling steps around the deadline."""
    await ctx.service.send_message(q, body(3, "cap"))
    before = ctx.now()
    held = await _receive_one(ctx, ctx.service, q, vt)
    latest_end = ctx.now() + vt
    deadline = before + vt
    lag = _LoopLag(latest_end - ctx.now()) if ctx.clock is None else None
    fine = ctx.timing.step / 10
    await ctx.wait_past(deadline - min(vt / 2, ctx.timing.step * 4))
    bound = deadline + ctx.caps.visibility_precision_seconds + ctx.timing.slack
    empty_since = -math.inf
    while True:
        polled = ctx.now()
        back = await ctx.service.receive_messages(q, 1, ctx.timing.long)
        if back:
            ctx.check(back[0].msg_id == held.msg_id, f"received {back[0].msg_id} instead")
            assert back[0].claim is not None
            await ctx.service.ack_claim(q, back[0].claim)
            # A timer of this process (a holder's) is late by this loop's lag, not the
            # provider's: what the loop owed at the deadline does not count against it.
            owed = lag.seconds() if lag is not None else 0.0
            return _Lateness(polled - deadline, empty_since - latest_end - owed)
        empty_since = polled
        if ctx.now() > bound:
            ctx.fail(f"a message held for {vt:g} s was not back within {bound - before:g} s")
        await ctx.pause(fine)


@rule(
    "CAP-2",
    "The declared visibility precision is neither much coarser nor finer than measured: a "
    "message held for a sub-second timeout comes back; a declaration past four times the "
    "measured lateness and past 0.25 s fails, and so does a message still not receivable "
    "once its timeout has surely been over for longer than the declared precision and "
    "0.1 s.",
    why="The precision is the tolerance of every timing rule: a provider that declares "
    "whole seconds is never caught expiring a sub-second timeout early or late.",
    provisional=True,
)
async def precision_as_measured(ctx: CaseContext) -> None:
    q = await ctx.queue()
    # Late is what every timeout showed: a timeout the test's own process ended late (a
    # holder's timer, starved on a loaded machine) is late once, a provider that ends
    # them late (rounding up, a coarse timer) every time.
    worst, late, late_vt = 0.0, math.inf, 0.0
    for vt in (ctx.timing.unit / 2, ctx.timing.unit):
        found = await _lateness(ctx, q, vt)
        worst = max(worst, abs(found.observed))
        if found.certain < late:
            late, late_vt = found.certain, vt
    measured = round(worst, 3)
    ctx.metrics["visibility_lateness_s"] = measured
    if math.isfinite(late):  # else a first look found it back: nothing was surely late
        ctx.metrics["visibility_surely_late_s"] = round(late, 3)
    declared = ctx.caps.visibility_precision_seconds
    note = (
        f"worst lateness of timeouts {ctx.timing.unit / 2:g} s and {ctx.timing.unit:g} s, "
        f"polled every {ctx.timing.step / 10:g} s"
    )
    rules: tuple[str, ...] = ()
    verdict = Verdict.AGREES
    if declared > max(_PRECISION_HEADROOM * measured, _PRECISION_FLOOR):
        verdict, rules = Verdict.UNDER_DECLARED, PRECISION_READERS
    elif late > declared + _lateness_allowance(ctx):
        verdict = Verdict.OVER_DECLARED
    ctx.measured.append(
        Measurement("visibility_precision_seconds", declared, measured, verdict, rules, note)
    )
    _fail_under_declared(ctx, f"checked only to within {declared:g} s")
    ctx.check(
        verdict is not Verdict.OVER_DECLARED,
        f"over-declared: messages held for {ctx.timing.unit / 2:g} s and {ctx.timing.unit:g} s "
        f"were each still not receivable at least {late:.3f} s (held {late_vt:g} s) after "
        "their timeouts had surely ended, past the declared precision "
        f"visibility_precision_seconds={declared:g} (and "
        f"{_lateness_allowance(ctx):g} s of allowance): timeouts end late, "
        "so every timing rule's tolerance is too tight a promise",
    )
