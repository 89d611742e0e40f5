"""DLY: delayed sends."""

from __future__ import annotations

import asyncio
import contextlib
import math

from mqcontract.capabilities import PushKind
from mqcontract.clock import VirtualClock
from mqcontract.errors import InvalidArgument, MessagingError, UnsupportedOperation
from mqcontract.messages import Message, MessageNotification
from mqcontract.service import Subscription
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._horizons import BESIDE, HORIZONS, advance_to, received_early
from mqcontract_conformance.cases._kin import first_receive
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext, notification_id
from mqcontract_conformance.registry import rule

#: Notifications DLY-1 takes for its one delayed message before it stops listening.
_FLOOD = 1000


@rule(
    "DLY-1",
    "A delayed message is not receivable before its delay has passed, nor pushed as a "
    "claimed Message to a subscription open when it was sent (where push is supported; "
    "an Available signal or an unclaimed copy may come early, but fetching the message "
    "by id, where supported, gets nothing then either). Where the case's clock is "
    "virtual, delays of 1.75, 61.5, 90.75 and 3599.5 s (those up to max_delay_seconds) "
    "are each checked just before their end less the declared precision "
    "(visibility_precision_seconds): not receivable, and just after it plus the "
    "precision: receivable.",
    why="Back-off retries must actually wait, whether the consumer polls or listens; a "
    "fast path that hands a new message to a waiting subscriber, or a coarser store for "
    "long delays, lets them through early.",
    applies_when=Applies.flag("delay"),
)
async def not_before_delay(ctx: CaseContext) -> None:
    q = await ctx.queue()
    delay = ctx.timing.unit * 3
    sub = await ctx.subscribe(q) if ctx.caps.push is not PushKind.NONE else None
    start = ctx.now()
    sent = await ctx.service.send_message_with_delay(q, body(1), delay)
    # A notification observed before this instant came before the delay passed.
    due = start + delay - ctx.caps.visibility_precision_seconds - 0.05
    notes: list[MessageNotification] = []
    ended: list[MessagingError] = []

    async def listen(sub: Subscription) -> None:
        try:
            async for note in sub:
                notes.append(note)
                if len(notes) > _FLOOD:  # one delayed message, pushed over and over
                    return
        except MessagingError as exc:  # reported below, as this rule's failure
            ended.append(exc)

    async def early() -> list[str]:
        seen = [f"received {m.msg_id}" for m in await ctx.receive(q)]
        while notes and ctx.now() < due:
            note = notes.pop(0)
            if isinstance(note, Message) and note.claimed:
                seen.append(f"pushed {note.message.msg_id} as a claimed Message")
            elif ctx.caps.fetch_by_id and notification_id(note) in (sent, None):
                # An early signal is a hint; claiming what it announces must still fail.
                got = await ctx.service.fetch_message(q, sent, ctx.timing.long)
                if got is not None:
                    seen.append(f"fetched {got.msg_id} after {type(note).__name__} {note!r}")
        return seen

    listener = asyncio.ensure_future(listen(sub)) if sub is not None else None
    try:
        await ctx.never(early, delay * 0.6, f"message {sent} delayed by {delay:g} s, early")
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await listener
        if sub is not None:
            await sub.aclose()  # nothing is read from it any more: nothing may pile up
    ctx.check(not ended, f"the subscription to {q} ended during the delay: {ended!r}")
    ctx.check(
        len(notes) <= _FLOOD,
        f"more than {_FLOOD} notifications on {q} for one delayed message ({sent})",
    )
    if ctx.clock is not None:
        await _long_delays_kept(ctx, ctx.clock)


async def _long_delays_kept(ctx: CaseContext, clock: VirtualClock) -> None:
    """Each of :data:`HORIZONS` (up to the maximum) ends when it should, not a precision
    sooner nor later: time jumps to just either side of every end."""
    q = await ctx.queue()
    precision = ctx.caps.visibility_precision_seconds
    delays = [d for d in HORIZONS if d <= ctx.caps.max_delay_seconds]
    start = ctx.now()
    sent = {
        d: await ctx.service.send_message_with_delay(q, body(i), d) for i, d in enumerate(delays)
    }
    ended = ctx.now()
    for d in delays:
        early = await received_early(ctx, clock, q, start + d - precision - BESIDE)
        ctx.check(
            not early,
            f"{ctx.now() - start:g} s after the sends (before the {d:g} s delay ended, "
            f"less the {precision:g} s precision), message(s) {early} received; delays "
            f"were {sent} (id by delay)",
        )
        await advance_to(ctx, clock, ended + d + precision + BESIDE)
        got = await first_receive(ctx, q, f"delayed by {d:g} s, it was not receivable after it")
        ctx.check(
            [m.msg_id for m in got] == [sent[d]],
            f"{ctx.now() - start:g} s after the sends received {[m.msg_id for m in got]}, "
            f"expected only {sent[d]} (delayed by {d:g} s); delays were {sent} (id by delay)",
        )
        await ctx.service.ack_claim(q, got[0])


@rule(
    "DLY-2",
    "A delayed message becomes receivable once its delay has passed (within the bound), "
    "sub-second delays included.",
    why="A delay that never ends is a lost message.",
    applies_when=Applies.flag("delay"),
)
async def after_delay(ctx: CaseContext) -> None:
    q = await ctx.queue()
    delay = ctx.timing.unit
    start = ctx.now()
    sent = await ctx.service.send_message_with_delay(q, body(1), delay)
    (got,) = await ctx.receive_exactly(q, 1, within=delay + ctx.timing.slack)
    took = ctx.now() - start
    ctx.check(got.msg_id == sent, f"got {got.msg_id}, expected {sent}")
    ctx.check(took >= delay - 0.05, f"received after {took:.3f} s, before the {delay:g} s delay")
    ctx.check(got.receive_count == 1, f"delayed message receive_count {got.receive_count}")


@rule(
    "DLY-3",
    "A short delay is not held back by a longer delay sent before it.",
    why="TTL-based delays expire only at the head of a queue; one wait queue for all "
    "delays would stall short ones.",
    applies_when=Applies.flag("delay"),
)
async def short_not_stuck_behind_long(ctx: CaseContext) -> None:
    q = await ctx.queue()
    await ctx.service.send_message_with_delay(q, body(1), ctx.timing.long)
    short = await ctx.service.send_message_with_delay(q, body(2), ctx.timing.unit)
    (got,) = await ctx.receive_exactly(q, 1, within=ctx.timing.unit + ctx.timing.slack)
    ctx.check(got.msg_id == short, f"got {got.msg_id}, expected the short-delay {short}")


@rule(
    "DLY-4",
    "A negative, NaN, infinite or over-maximum delay raises InvalidArgument and enqueues nothing.",
    why="NaN delays silently become 'now' or 'never' depending on the backend.",
    applies_when=Applies.flag("delay"),
)
async def bad_delay_rejected(ctx: CaseContext) -> None:
    q = await ctx.queue()
    for delay in (-1.0, math.nan, math.inf, ctx.caps.max_delay_seconds * 2):
        await ctx.raises(
            InvalidArgument,
            ctx.service.send_message_with_delay(q, body(1), delay),
            f"delay_seconds={delay}",
        )
    ctx.check(await ctx.receive(q) == [], "a rejected delayed send enqueued something")


@rule(
    "DLY-5",
    "A zero delay is the same as an immediate send.",
    why="Callers compute delays; zero must not be special-cased into an error or a wait.",
    applies_when=Applies.flag("delay"),
)
async def zero_delay(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.accepts(
        ctx.service.send_message_with_delay(q, body(1), 0), "a delayed send with delay 0"
    )
    (got,) = await ctx.receive_exactly(q, 1)
    ctx.check(got.msg_id == sent, "zero-delay message not received at once")


@rule(
    "DLY-6",
    "A provider that does not claim delays raises UnsupportedOperation for a delayed send "
    "and enqueues nothing.",
    why="Silently sending at once would break back-off.",
    applies_when=~Applies.flag("delay"),
)
async def delay_unsupported(ctx: CaseContext) -> None:
    q = await ctx.queue()
    await ctx.raises(
        UnsupportedOperation, ctx.service.send_message_with_delay(q, body(1), 1.0), "delay"
    )
    ctx.check(await ctx.receive(q) == [], "an unsupported delayed send enqueued something")


@rule(
    "DLY-7",
    "A delayed message's enqueued_at is when it was sent, not when its delay ended: it "
    "differs from that of an immediate message sent just before it by about the time "
    "between the two sends, never by the delay.",
    why="enqueued_at is how a consumer tells a message's age (timeouts, staleness, "
    "metrics); a provider that stamps a delayed message when it becomes visible (a "
    "scheduler that sends it then) makes every retry look fresh.",
    applies_when=Applies.flag("delay"),
    provisional=True,
)
async def delayed_enqueued_at_is_send_time(ctx: CaseContext) -> None:
    q = await ctx.queue()
    # Long enough that a stamp of whole seconds cannot hide it (compared below with half).
    delay = max(ctx.timing.slack, 3.0)
    before = ctx.now()
    now = await ctx.service.send_message(q, body(0, "immediate"))
    later = await ctx.service.send_message_with_delay(q, body(1, "delayed"), delay)
    between = ctx.now() - before
    got = await ctx.receive_exactly(q, 2, within=delay + ctx.timing.slack)
    stamped = {m.msg_id: m.enqueued_at for m in got}
    ctx.check(set(stamped) == {now, later}, f"sent {now} and {later}, received {sorted(stamped)}")
    gap = stamped[later] - stamped[now]
    ctx.check(
        gap <= between + delay / 2,
        f"the message delayed by {delay:g} s was stamped {gap:.3f} s after the immediate "
        f"one sent just before it ({between:.3f} s between the sends): enqueued_at is "
        "when its delay ended, not when it was sent",
    )
