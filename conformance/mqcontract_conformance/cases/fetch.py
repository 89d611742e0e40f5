"""FETCH: claiming one message by its id (``fetch_message``), or refusing to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mqcontract.errors import MessageNotFound, UnsupportedOperation
from mqcontract.messages import QueuedMessage
from mqcontract.service import MessagingService
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._conditions import CLAIMED_PUSH
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.cases._redelivery import count_ok
from mqcontract_conformance.cases.visibility import first_take
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule


@rule(
    "FETCH-1",
    "fetch_message claims one specific visible message (invisible to receive afterwards, "
    "until its visibility timeout has nearly passed; received again once it has, within "
    "the slack), a message whose earlier claim expired included (with its receive_count "
    "grown); it returns None for a held, acked, delayed or unknown id.",
    why="Signal-only push names a message; the consumer must claim exactly that one, and "
    "a redelivery is announced like a first delivery. A fetch that hands its backend "
    "the timeout in the wrong unit holds the message a thousandth of the time asked.",
    applies_when=Applies.flag("fetch_by_id"),
)
async def fetch_claims_specific(ctx: CaseContext) -> None:
    q = await ctx.queue()
    a, b = await ctx.service.send_batch(q, [body(1), body(2)])
    got = await ctx.service.fetch_message(q, b, ctx.timing.long)
    ctx.check(
        got is not None and got.msg_id == b and got.receive_count == 1,
        f"fetch {b} returned {got!r}",
    )
    ctx.check(
        await ctx.service.fetch_message(q, b, ctx.timing.long) is None,
        "a held message was fetched again",
    )
    rest = await ctx.receive(q)
    ctx.check([m.msg_id for m in rest] == [a], f"receive after fetch returned {rest}")
    await ctx.service.ack_message(q, b)
    ctx.check(await ctx.service.fetch_message(q, b, ctx.timing.long) is None, "fetched acked")
    ctx.check(
        await ctx.service.fetch_message(q, 10**15, ctx.timing.long) is None,
        "fetch of an unknown id returned a message",
    )
    await _fetch_after_expiry(ctx, q)
    if ctx.caps.delay:
        later = await ctx.service.send_message_with_delay(q, body(4), ctx.timing.long)
        early = await ctx.service.fetch_message(q, later, ctx.timing.long)
        ctx.check(early is None, f"message {later} fetched before its delay passed: {early!r}")
    await _fetched_claim_holds(ctx)


async def _fetch_after_expiry(ctx: CaseContext, q: str) -> None:
    """A message whose claim expired is visible again: fetch claims it, counted."""
    sent = await ctx.service.send_message(q, body(3))
    await ctx.receive_exactly(q, 1, vt=ctx.timing.unit)
    await ctx.wait_past(ctx.now() + ctx.timing.unit + ctx.caps.visibility_precision_seconds)

    async def fetched() -> QueuedMessage | None:
        return await ctx.service.fetch_message(q, sent, ctx.timing.long)

    again = await ctx.eventually(
        fetched, ctx.timing.slack, f"message {sent} fetchable after its claim expired"
    )
    counted = again.receive_count == 2 if ctx.caps.exact_receive_count else again.receive_count >= 2
    ctx.check(counted, f"fetch after expiry returned receive_count {again.receive_count}")


def _short_timeout(ctx: CaseContext) -> float:
    """A visibility timeout a case waits out, long enough to watch at the declared precision."""
    return max(ctx.timing.unit * 3, ctx.caps.visibility_precision_seconds * 4)


async def _fetched_claim_holds(ctx: CaseContext) -> None:
    """A fetched claim holds its message for the timeout asked, as a received one does."""
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(5))
    vt = _short_timeout(ctx)
    start = ctx.now()  # the claim starts no earlier
    got = await ctx.service.fetch_message(q, sent, vt)
    claimed = ctx.now()  # and no later
    ctx.check(got is not None and got.msg_id == sent, f"fetch {sent} on {q} returned {got!r}")
    ends = start + vt - ctx.caps.visibility_precision_seconds

    async def received() -> list[QueuedMessage]:
        return await ctx.receive(q)

    back = await ctx.never(
        received,
        max(ends - ctx.timing.step * 2 - ctx.now(), 0.0),
        f"message {sent} on {q}, fetched for {vt:g} s, received again within them",
        due=ends,
    )
    latest = claimed + vt + ctx.caps.visibility_precision_seconds + ctx.timing.slack
    within = max(latest - ctx.now(), ctx.timing.step)
    if back is None:
        back = await ctx.eventually(
            received, within, f"message {sent} on {q}, fetched for {vt:g} s, back once they passed"
        )
    ctx.check(
        [m.msg_id for m in back] == [sent] and count_ok(ctx, back[0].receive_count, 2),
        f"once the {vt:g} s its fetch asked for passed, received {back} on {q}; expected "
        f"message {sent} with receive_count 2",
    )
    await ctx.service.ack_claim(q, back[0])


@rule(
    "FETCH-2",
    "A provider without fetch-by-id raises UnsupportedOperation from fetch_message.",
    why="Callers branch on supports_fetch_by_message_id; a silent None would lose work.",
    applies_when=~Applies.flag("fetch_by_id"),
)
async def fetch_unsupported(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    await ctx.raises(
        UnsupportedOperation, ctx.service.fetch_message(q, sent, ctx.timing.long), "fetch"
    )


@rule(
    "FETCH-3",
    "fetch_message by another consumer (a second service on the same backend) returns "
    "None for a message this one holds, by receive, by fetch or by claimed push, from "
    "the claim's start until just before its visibility timeout ends; the holder's claim "
    "is untouched, and its ack then succeeds. A received claim is fetched by the other "
    "consumer only once its timeout, less the declared precision "
    "(visibility_precision_seconds), has run from the call that claimed it (watched right "
    "up to that instant), and then within the slack; the former holder's ack then raises "
    "MessageNotFound.",
    why="Signal-only push announces a message to every subscriber, and each fetches it: a "
    "fetch that takes over a held message (XCLAIM with no idle time, or once a claim has "
    'idled a while, or a "clock skew tolerance" that counts a claim as lapsed 50 ms '
    "early) has two consumers process it, and the first one's ack fails as if its claim "
    "had lapsed.",
    applies_when=Applies.flag("fetch_by_id") & Applies.flag("shared_backend"),
    provisional=True,
)
async def fetch_leaves_others_claims(ctx: CaseContext) -> None:
    q = await ctx.queue()
    other = await ctx.other_consumer(q)

    async def by_receive(sent: int) -> QueuedMessage:
        (held,) = await ctx.receive_exactly(q, 1)
        return held

    async def by_fetch(sent: int) -> QueuedMessage:
        return await ctx.eventually(
            lambda: ctx.service.fetch_message(q, sent, ctx.timing.long),
            ctx.timing.delivery,
            f"message {sent} on {q} fetched",
        )

    holds: list[tuple[str, Callable[[int], Awaitable[QueuedMessage]]]] = [
        ("received", by_receive),
        ("fetched", by_fetch),
    ]
    for n, (how, hold) in enumerate(holds, 1):
        sent = await ctx.service.send_message(q, body(n))
        await _held_from_other(ctx, other, q, await hold(sent), how)
    if CLAIMED_PUSH.applies(ctx.caps):
        pushed_q = await ctx.queue()
        sub = await ctx.subscribe(pushed_q)
        await ctx.service.send_message(pushed_q, body(3))
        note = await ctx.next_claimed(sub)
        await _held_from_other(ctx, other, pushed_q, note.message, "pushed (claimed)")
    await _held_to_the_end(ctx, other, q)


async def _fetch_by(
    ctx: CaseContext, other: MessagingService, q: str, msg_id: int
) -> QueuedMessage | None:
    """What the other consumer's fetch of ``msg_id`` took (None: nothing)."""
    return await other.fetch_message(q, msg_id, ctx.timing.long)


async def _held_from_other(
    ctx: CaseContext, other: MessagingService, q: str, held: QueuedMessage, how: str
) -> None:
    """While ``held`` is held by this service, the other consumer's fetch takes nothing,
    and the holder's ack then succeeds."""
    sent = held.msg_id

    async def taken() -> QueuedMessage | None:
        return await _fetch_by(ctx, other, q, sent)

    await ctx.never(
        taken,
        ctx.timing.margin / 2,
        f"message {sent} on {q}, {how} by one consumer, fetched by another",
    )
    try:
        await ctx.service.ack_claim(q, held)
    except MessageNotFound as exc:
        ctx.fail(
            f"message {sent} on {q}, {how} by one consumer, could not be acked by it after "
            f"another consumer tried to fetch it: {exc}"
        )
    gone = await _fetch_by(ctx, other, q, sent)
    ctx.check(gone is None, f"message {sent} on {q}, acked, was fetched by another: {gone!r}")


async def _held_to_the_end(ctx: CaseContext, other: MessagingService, q: str) -> None:
    """A claim about to end is held still: the other consumer's fetch takes it only once
    the timeout, less the declared precision, has run from the receive that claimed it
    (looked at every polling step and just before that instant)."""
    sent = await ctx.service.send_message(q, body(4))
    vt = _short_timeout(ctx)
    start = ctx.now()

    async def claim() -> QueuedMessage | None:
        nonlocal start
        start = ctx.now()  # the receive that claims starts no earlier than this
        got = await ctx.service.receive_messages(q, 1, vt)
        return got[0] if got else None

    held = await ctx.eventually(claim, ctx.timing.delivery, f"message {sent} on {q} received")
    ctx.check(held.msg_id == sent, f"a receive on {q} claimed {held!r}; sent {sent}")

    async def taken() -> QueuedMessage | None:
        return await _fetch_by(ctx, other, q, sent)

    _, theirs = await first_take(
        ctx,
        held,
        start,
        vt,
        [("a fetch of another consumer", taken)],
        f"message {sent} on {q}, received for {vt:g} s by one consumer",
    )
    await ctx.raises(
        MessageNotFound, ctx.service.ack_claim(q, held), f"ack of the lapsed claim on {sent}"
    )
    await other.ack_claim(q, theirs)
