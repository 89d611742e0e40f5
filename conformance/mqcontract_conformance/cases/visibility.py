"""VT: visibility timeouts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, overload

from mqcontract.clock import VirtualClock
from mqcontract.errors import MessagingError
from mqcontract.messages import Message, MessageNotification, QueuedMessage
from mqcontract.service import MessagingService, Subscription
from mqcontract.testing import HookUnavailable
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._conditions import CLAIMED_PUSH
from mqcontract_conformance.cases._horizons import BESIDE, HORIZONS, advance_to, received_early
from mqcontract_conformance.cases._kin import first_receive
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.cases._redelivery import check_redelivered, count_ok
from mqcontract_conformance.context import CaseContext, ContractViolation
from mqcontract_conformance.registry import rule

#: Takers look just before a claim's end less the declared precision besides every polling
#: step (seconds before it): half a step before, where a take on real time still returns
#: in time to show it came early, and a hair before, where virtual time is exact.
_HAIR = 0.002

#: One way to take a claimed message from someone else: what it took, or None.
Take = Callable[[], Awaitable[QueuedMessage | None]]


def _next_look(ctx: CaseContext, due: float) -> float:
    """Seconds to the next look: a polling step, or less to land just before ``due``."""
    step = ctx.timing.step
    for before in (step / 2, _HAIR):
        gap = due - before - ctx.now()
        if _HAIR / 4 < gap < step:
            return gap
    return step


@overload
async def first_take(
    ctx: CaseContext,
    held: QueuedMessage,
    begun: float,
    vt: float,
    takers: Sequence[tuple[str, Take]],
    what: str,
    *,
    required: Literal[True] = ...,
) -> tuple[str, QueuedMessage]: ...


@overload
async def first_take(
    ctx: CaseContext,
    held: QueuedMessage,
    begun: float,
    vt: float,
    takers: Sequence[tuple[str, Take]],
    what: str,
    *,
    required: bool,
) -> tuple[str, QueuedMessage] | None: ...


async def first_take(
    ctx: CaseContext,
    held: QueuedMessage,
    begun: float,
    vt: float,
    takers: Sequence[tuple[str, Take]],
    what: str,
    *,
    required: bool = True,
) -> tuple[str, QueuedMessage] | None:
    """Poll ``takers`` (each a way to take ``held``'s message from its holder) in turn,
    every polling step and just before the claim's end, until one takes it; returns how
    and what it took.

    ``begun`` is a ``now()`` read just before the call that made the claim (for ``vt``
    seconds): a correct provider starts the claim after it, so it holds until at least
    ``begun + vt`` less the declared precision, and a take that *returned* before that
    instant surely took it early, on any clock, however loaded the machine (a late look
    only makes a take look later). Fails then, naming ``what`` (the claim) and the taker.
    If nothing took it within the slack after the timeout: fails where it is
    ``required`` to come back, else returns None (it was never taken early)."""
    precision = ctx.caps.visibility_precision_seconds
    due = begun + vt - precision
    latest = ctx.now() + vt + precision + ctx.timing.slack
    while True:
        for how, take in takers:
            got = await take()
            if got is None:
                continue
            at = ctx.now()
            ctx.check(
                at >= due,
                f"{what}: taken by {how} {at - begun:.3f} s after the claim began, before "
                f"its {vt:g} s timeout less the declared {precision:g} s precision had run "
                f"(it holds until {due - begun:.3f} s at the earliest); took {got!r}",
            )
            ctx.check(got.msg_id == held.msg_id, f"{what}: {how} took {got!r}")
            return how, got
        if ctx.now() >= latest:
            if not required:
                return None
            ctx.fail(
                f"{what}: not taken ({', '.join(h for h, _ in takers)}) within "
                f"{ctx.timing.slack:g} s after its {vt:g} s timeout"
            )
        await ctx.pause(_next_look(ctx, due))


@rule(
    "VT-1",
    "A claimed message is taken by nobody else until its visibility timeout has run: no "
    "receive, no fetch_message (where supported) and no claimed push (where pushed "
    "messages are claimed), by another service on the same backend (where services "
    "share one; else by the holder's own), returns it before the timeout less the "
    "declared precision (visibility_precision_seconds) has passed since the call that "
    "claimed it began, watched right up to that instant; claimed by receive and (where "
    "supported) by fetch.",
    why="The timeout is the claim; without it two workers run the same step. A provider "
    'that treats a claim as lapsed a little before its end (a "clock skew tolerance" in '
    "one path's visibility check) hands the message to a second consumer while the first "
    "still holds it, and the holder's ack then fails StaleClaim: a watch that stops a "
    "margin before the end misses it.",
)
async def invisible_while_held(ctx: CaseContext) -> None:
    q = await ctx.queue()
    other, whose = ctx.service, "the holding service"
    if ctx.caps.shared_backend:
        with contextlib.suppress(HookUnavailable):  # then the holder's own service takes
            other, whose = await ctx.other_consumer(q), "another service"
    vt = max(ctx.timing.unit, ctx.caps.visibility_precision_seconds * 4)
    rounds: list[tuple[str, bool]] = [("receive", False)]  # claimed by, push looks too
    if ctx.caps.fetch_by_id:
        rounds.append(("fetch", False))
    if CLAIMED_PUSH.applies(ctx.caps):
        rounds.append(("receive", True))
    for n, (claim_by, push) in enumerate(rounds, 1):
        await _held_until_the_end(ctx, q, other, whose, n, claim_by, vt, push=push)


async def _held_until_the_end(
    ctx: CaseContext,
    q: str,
    other: MessagingService,
    whose: str,
    n: int,
    claim_by: str,
    vt: float,
    *,
    push: bool,
) -> None:
    """One message claimed by ``claim_by`` for ``vt`` seconds is taken by ``other`` only
    once that has run: its receive and fetch look (the path that claimed it first), and
    with ``push`` a subscription of it opened after the claim."""
    svc = ctx.service
    sent = await svc.send_message(q, body(n))
    begun = ctx.now()

    async def claim() -> QueuedMessage | None:
        nonlocal begun
        begun = ctx.now()  # the claim that succeeds starts no earlier than this
        if claim_by == "fetch":
            return await svc.fetch_message(q, sent, vt)
        got = await svc.receive_messages(q, 1, vt)
        return got[0] if got else None

    held = await ctx.eventually(claim, ctx.timing.delivery, f"message {sent} on {q} claimed")
    ctx.check(held.msg_id == sent, f"a {claim_by} on {q} claimed {held!r}; sent {sent}")

    async def received() -> QueuedMessage | None:
        got = await other.receive_messages(q, 1, ctx.timing.long)
        return got[0] if got else None

    async def fetched() -> QueuedMessage | None:
        return await other.fetch_message(q, sent, ctx.timing.long)

    takers: list[tuple[str, Take]] = [(f"a receive of {whose}", received)]
    if ctx.caps.fetch_by_id:
        takers.insert(len(takers) if claim_by == "receive" else 0, (f"a fetch of {whose}", fetched))
    sub: Subscription | None = None
    pending: asyncio.Future[MessageNotification] | None = None
    if push:
        sub = await other.subscribe(q)  # opened after the claim: it may only take it back
        pending = asyncio.ensure_future(anext(sub))

        async def pushed() -> QueuedMessage | None:
            nonlocal pending
            if sub is None or pending is None or not pending.done():
                return None
            note = pending.result()
            pending = asyncio.ensure_future(anext(sub))
            return note.message if isinstance(note, Message) and note.claimed else None

        takers.insert(0, (f"a claimed push to {whose}", pushed))
    what = f"message {sent} on {q}, claimed by {claim_by} for {vt:g} s"
    try:
        # Whether it comes back at all is VT-2's: here only that it was not taken early.
        took = await first_take(ctx, held, begun, vt, takers, what, required=False)
        if took is not None:
            await other.ack_claim(q, took[1])
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        if sub is not None:
            await sub.aclose()


@rule(
    "VT-2",
    "After its visibility timeout a message not acked is received again, not earlier, with "
    "receive_count + 1 (exactly, or at least 2 where exact counts are not declared). Where "
    "the case's clock is virtual, timeouts of 1.75, 61.5, 90.75 and 3599.5 s (those up to "
    "max_visibility_timeout_seconds) are each checked just before their end less the "
    "declared precision (visibility_precision_seconds): not received again, and just "
    "after it plus the precision: received again.",
    why="Expiry is how work held by a crashed consumer is recovered. The original RabbitMQ "
    "provider ignored the timeout entirely; a provider that keeps long timeouts in whole "
    "seconds ends them early.",
)
async def redelivered_after_expiry(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    vt = ctx.timing.unit
    await ctx.receive_exactly(q, 1, vt=vt)
    start = ctx.now()
    (again,) = await ctx.receive_exactly(q, 1, within=vt + ctx.timing.slack)
    took = ctx.now() - start
    ctx.check(again.msg_id == sent, f"redelivered {again.msg_id}, expected {sent}")
    early = vt - ctx.caps.visibility_precision_seconds - 0.05
    ctx.check(took >= early, f"redelivered after {took:.3f} s, before the {vt:g} s timeout")
    ctx.check(count_ok(ctx, again.receive_count, 2), f"receive_count {again.receive_count}")
    if ctx.clock is not None:
        await _long_timeouts_kept(ctx, ctx.clock)


async def _long_timeouts_kept(ctx: CaseContext, clock: VirtualClock) -> None:
    """Each of :data:`HORIZONS` (up to the maximum) ends when it should, not a precision
    sooner nor later: one message claimed for each, then time jumps to just either side
    of every end."""
    q = await ctx.queue()
    precision = ctx.caps.visibility_precision_seconds
    timeouts = [t for t in HORIZONS if t <= ctx.caps.max_visibility_timeout_seconds]
    await ctx.service.send_batch(q, [body(i) for i in range(len(timeouts))])
    start = ctx.now()
    held: dict[float, tuple[int, float, float]] = {}  # timeout: id, claim begun, ended
    for t in timeouts:
        begun = ctx.now()
        got = await ctx.service.receive_messages(q, 1, t)
        ctx.check(len(got) == 1, f"a receive of 1 for {t:g} s from {q} returned {got}")
        held[t] = (got[0].msg_id, begun, ctx.now())
    ids = {t: h[0] for t, h in held.items()}
    for t, (msg_id, begun, ended) in sorted(held.items(), key=lambda h: h[1][1] + h[0]):
        early = await received_early(ctx, clock, q, begun + t - precision - BESIDE)
        ctx.check(
            not early,
            f"{ctx.now() - start:g} s after the claims (before the {t:g} s claim "
            f"ended, less the {precision:g} s precision), message(s) {early} received "
            f"again; claims were {ids} (id by timeout)",
        )
        await advance_to(ctx, clock, ended + t + precision + BESIDE)
        got = await first_receive(ctx, q, f"claimed for {t:g} s, it did not come back after")
        ctx.check(
            [m.msg_id for m in got] == [msg_id] and count_ok(ctx, got[0].receive_count, 2),
            f"{ctx.now() - start:g} s after the claims received "
            f"{[(m.msg_id, m.receive_count) for m in got]}, expected only {msg_id} (claimed "
            f"for {t:g} s) with receive_count 2; claims were {ids} (id by timeout)",
        )
        await ctx.service.ack_claim(q, got[0])


@rule(
    "VT-3",
    "Concurrent receivers never hold the same message at the same time: concurrent "
    "receives, and (where fetch by id is supported) fetch_message of a visible message "
    "racing a receive and another fetch of it, through two services on the same backend "
    "(where services share one).",
    why="Competing consumers are the point of a work queue; a fetch that checks a message "
    "is free, then claims it without checking again, hands it to a receive that ran in "
    "between too.",
)
async def concurrent_receivers_disjoint(ctx: CaseContext) -> None:
    q = await ctx.queue()
    ids = set(await ctx.service.send_batch(q, [body(i) for i in range(30)]))
    held: list[int] = []
    for _ in range(10):
        rounds = await asyncio.gather(*(ctx.receive(q, limit=7) for _ in range(5)))
        held.extend(m.msg_id for batch in rounds for m in batch)
        if len(held) >= len(ids):
            break
    dupes = sorted({i for i in held if held.count(i) > 1})
    ctx.check(not dupes, f"messages held twice at once: {dupes}")
    ctx.check(set(held) == ids, f"missing {sorted(ids - set(held))}")
    if ctx.caps.fetch_by_id:
        await _fetch_races(ctx)


async def _fetch_races(ctx: CaseContext) -> None:
    """Each round, one service fetches the oldest message still free while the other
    receives one and fetches the same id: at most one of them may get it."""
    q = await ctx.queue()
    one = ctx.service
    other = one
    if ctx.caps.shared_backend:
        with contextlib.suppress(HookUnavailable):  # then one service races itself
            other = await ctx.other_consumer(q)
    free = await one.send_batch(q, [body(i) for i in range(12)])
    holders: dict[int, list[str]] = {}
    rounds = 0
    while free and rounds < 12:
        rounds += 1
        a, b = (one, other) if rounds % 2 else (other, one)
        target = free[0]
        fetched_a, received_b, fetched_b = await asyncio.gather(
            a.fetch_message(q, target, ctx.timing.long),
            b.receive_messages(q, 1, ctx.timing.long),
            b.fetch_message(q, target, ctx.timing.long),
        )
        took = [("fetch", fetched_a), ("fetch", fetched_b)] + [("receive", m) for m in received_b]
        for how, m in took:
            if m is not None:
                holders.setdefault(m.msg_id, []).append(f"{how} in round {rounds}")
                if m.msg_id in free:
                    free.remove(m.msg_id)
    twice = {i: hows for i, hows in holders.items() if len(hows) > 1}
    ctx.check(
        not twice,
        f"messages held twice at once (fetch racing receive and fetch, two services): {twice}",
    )


@rule(
    "VT-4",
    "Each receive's timeout is independent: a short timeout expires while a long one holds.",
    why="Consumers pick timeouts per message type.",
)
async def timeouts_independent(ctx: CaseContext) -> None:
    q = await ctx.queue()
    short_id, long_id = await ctx.service.send_batch(q, [body(1), body(2)])
    (a,) = await ctx.service.receive_messages(q, 1, ctx.timing.unit)
    (b,) = await ctx.service.receive_messages(q, 1, ctx.timing.long)
    ctx.check(
        (a.msg_id, b.msg_id) == (short_id, long_id) or ctx.caps.fifo is False,
        f"unexpected order {a.msg_id}, {b.msg_id}",
    )
    (again,) = await ctx.receive_exactly(q, 1, within=ctx.timing.unit + ctx.timing.slack)
    ctx.check(again.msg_id == a.msg_id, f"{again.msg_id} came back instead of {a.msg_id}")


#: VT-5: the deliveries one message is taken through, nack after nack and the last by
#: expiry: past where a count kept in a signed or unsigned byte saturates or wraps (127,
#: 255, 256). A few round trips each. Not past 16 bits: 65,537 deliveries cost a second
#: of CPU even in process, and the selftest runs every specimen against every rule.
_DELIVERIES = 257


@rule(
    "VT-5",
    "receive_count grows by one on every redelivery (nack or expiry).",
    why="Poison-message handling counts deliveries. A count kept in a narrow column (a "
    "byte) saturates or wraps after a few hundred redeliveries, exactly when a poison "
    "message is to be told from the rest: checked past 256 deliveries, the last by expiry.",
    applies_when=Applies.flag("exact_receive_count"),
)
async def receive_count_grows(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    counts = []
    for _ in range(3):
        (m,) = await ctx.receive_exactly(q, 1)
        counts.append(m.receive_count)
        await ctx.service.nack_message(q, sent)
    ctx.check(counts == [1, 2, 3], f"receive counts {counts}, expected [1, 2, 3]")
    last = _DELIVERIES
    for delivery in range(len(counts) + 1, last):
        # The one before the last is claimed briefly: the last comes by expiry.
        vt = ctx.timing.unit if delivery == last - 1 else ctx.timing.long
        got = await ctx.service.receive_messages(q, 1, vt)
        if not got:  # (one receive is enough nearly always: no wait unless it is not)
            got = await ctx.eventually(
                lambda: ctx.service.receive_messages(q, 1, vt),  # noqa: B023
                ctx.timing.delivery,
                f"message {sent} on {q} delivered for the {delivery}th time, after a nack"
                " (the contract has no delivery limit: a nacked message comes back)",
            )
        (m,) = got
        _count_is(ctx, m, sent, delivery, "nack")
        if delivery < last - 1:
            await ctx.service.nack_claim(q, m)
    (m,) = await ctx.receive_exactly(q, 1, within=ctx.timing.unit + ctx.timing.slack)
    _count_is(ctx, m, sent, last, "expiry")
    await ctx.service.ack_claim(q, m)


def _count_is(ctx: CaseContext, m: QueuedMessage, sent: int, delivery: int, after: str) -> None:
    """``m`` is message ``sent``, delivered for the ``delivery``-th time (after ``after``)."""
    ctx.check(m.msg_id == sent, f"received {m.msg_id}, the only message sent was {sent}")
    ctx.check(
        m.receive_count == delivery,
        f"delivery {delivery} of message {sent} (redelivered after {after}, every earlier "
        f"one counted right) reports receive_count {m.receive_count}, expected {delivery}",
    )


@rule(
    "VT-6",
    "The visibility timeout runs from the claim, not from the send: a message that sat "
    "visible for longer than the timeout stays invisible for the whole timeout once "
    "received.",
    why="Rules that receive straight after sending cannot tell a deadline counted from the "
    "send from one counted from the claim; a backlog can.",
    provisional=True,
)
async def deadline_from_claim(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    vt = ctx.timing.unit * 2
    await ctx.wait_past(ctx.now() + vt * 1.5)  # it waits, visible, longer than vt
    claimed_from = ctx.now()
    (held,) = await ctx.receive_exactly(q, 1, vt=vt)
    claimed = ctx.now()
    ctx.check(held.msg_id == sent, f"received {held.msg_id}, sent {sent}")

    async def leaked() -> list[int]:
        return [m.msg_id for m in await ctx.receive(q)]

    hold = vt - ctx.caps.visibility_precision_seconds - ctx.timing.step * 2
    await ctx.never(
        leaked,
        max(hold - (ctx.now() - claimed), 0.0),
        f"message {sent} leaked",
        due=claimed_from + vt - ctx.caps.visibility_precision_seconds,
    )


@rule(
    "VT-7",
    "A message keeps its id, queue name, payload and enqueued_at, as receive reports them, "
    "on every delivery: by receive and (where fetch by id is supported) by fetch_message, "
    "first and again after expiry and after nack; its receive_count is 1 on the first "
    "delivery and grows by exactly one each time (at least, where exact counts are not "
    "declared).",
    why="Invariants checked only on first delivery by receive let a provider rewrite a "
    "message when it puts it back (a fresh enqueued_at, a re-encoded payload), or build "
    "what fetch returns from another query than receive's (now() for enqueued_at, the time "
    "it last became visible, the payload read as text).",
    provisional=True,
)
async def redelivery_keeps_the_message(ctx: CaseContext) -> None:
    q = await ctx.queue()
    fetch = ctx.caps.fetch_by_id
    tags = ("a", "b", "c") if fetch else ("a",)
    payloads = {tag: body(7, f"keep\r\n{tag} ") for tag in tags}
    ids = {tag: await ctx.service.send_message(q, payloads[tag]) for tag in tags}
    seen: dict[str, list[tuple[str, QueuedMessage]]] = {tag: [] for tag in tags}

    async def by_fetch(tag: str, path: str, within: float) -> QueuedMessage:
        sent = ids[tag]
        got = await ctx.eventually(
            lambda: ctx.service.fetch_message(q, sent, ctx.timing.long),
            within,
            f"message {sent} on {q} fetched ({path})",
        )
        seen[tag].append((path, got))
        return got

    async def by_receive(tag: str, path: str, **kw: float) -> QueuedMessage:
        (got,) = await ctx.receive_exactly(q, 1, **kw)
        seen[tag].append((path, got))
        return got

    if fetch:  # c: fetched first, then received after a nack
        await by_fetch("c", "first delivery, by fetch", ctx.timing.delivery)
    received = [tag for tag in tags if not seen[tag]]  # a and b: claimed briefly
    firsts = {m.msg_id: m for m in await ctx.receive_exactly(q, len(received), ctx.timing.unit)}
    for tag in received:
        ctx.check(ids[tag] in firsts, f"sent {ids} to {q}, received {sorted(firsts)}")
        seen[tag].append(("first delivery, by receive", firsts[ids[tag]]))
    within = ctx.timing.unit + ctx.timing.slack
    if fetch:  # b: fetched once its claim expired, a: received
        b = await by_fetch("b", "after expiry, by fetch", within)
    a = await by_receive("a", "after expiry, by receive", within=within, vt=ctx.timing.long)
    if fetch:
        await ctx.service.nack_claim(q, seen["c"][0][1])
        c = await by_receive("c", "after nack, by receive")
        await ctx.service.nack_claim(q, a)
        a = await by_fetch("a", "after nack, by fetch", ctx.timing.delivery)
        await ctx.service.nack_claim(q, b)
        b = await by_receive("b", "after nack, by receive")
        await ctx.service.ack_claims(q, [a, b, c])
    else:
        await ctx.service.nack_claim(q, a)
        a = await by_receive("a", "after nack, by receive")
        await ctx.service.ack_claim(q, a)
    for tag in tags:
        _kept(ctx, q, ids[tag], payloads[tag], seen[tag])


def _kept(
    ctx: CaseContext,
    queue: str,
    sent: int,
    payload: bytes,
    seen: list[tuple[str, QueuedMessage]],
) -> None:
    """Every delivery in ``seen`` (in order) is message ``sent`` on ``queue`` with
    ``payload`` and the enqueued_at its first delivery by receive reported, its count one
    more each time."""
    stamp = next(m.enqueued_at for path, m in seen if path.endswith("by receive"))
    for n, (path, message) in enumerate(seen, 1):
        where = f"message {sent}, delivery {n} ({path})"
        ctx.check(
            (message.msg_id, message.queue_name) == (sent, queue),
            f"{where}: id {message.msg_id} on {message.queue_name!r}, sent to {queue!r}",
        )
        ctx.check(
            message.payload == payload, f"{where}: payload {message.payload!r}, sent {payload!r}"
        )
        ctx.check(
            message.enqueued_at == stamp,
            f"{where}: enqueued_at {message.enqueued_at!r}, receive reports {stamp!r}",
        )
        ctx.check(
            count_ok(ctx, message.receive_count, n) if n > 1 else message.receive_count == 1,
            f"{where}: receive_count {message.receive_count}, expected {n}",
        )


@rule(
    "VT-8",
    "A message held when the provider's connections are severed comes back (at once, or "
    "once its claim's timeout has passed, and no later than that plus the slack) with its "
    "id, payload and enqueued_at, and receive_count one higher (at least 2, where exact "
    "counts are not declared): held by receive, and held by a claimed push.",
    why="A reconnect is a redelivery path of its own: a provider that re-publishes what "
    "the dropped connection held, or rebuilds it from a local record, passes the expiry "
    "and nack checks and still renews enqueued_at, restarts the count or loses the message.",
    hooks=("sever_connection",),
    provisional=True,
)
async def sever_keeps_the_message(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(8, "sever\r\n"))
    (held,) = await ctx.receive_exactly(q, 1, vt=ctx.timing.unit)
    ends = ctx.now() + ctx.timing.unit
    await ctx.wait_past(ctx.now() + ctx.timing.unit / 4)  # time passes: a new enqueued_at shows
    await ctx.sever_until_usable(q)

    async def received() -> list[QueuedMessage]:
        try:
            return await ctx.receive(q)
        except MessagingError:
            return []  # still reconnecting

    within = max(ends - ctx.now(), 0.0) + ctx.timing.slack
    back = await ctx.eventually(received, within, f"message {sent} back after the sever")
    ctx.check([m.msg_id for m in back] == [sent], f"after the sever received {back}")
    check_redelivered(ctx, "received, then severed", held, back[0], deliveries=2)
    await ctx.service.ack_claim(q, back[0])
    if not CLAIMED_PUSH.applies(ctx.caps):
        return
    sub = await ctx.subscribe(q)
    pushed = await ctx.service.send_message(q, body(9, "sever\r\n"))
    note = await ctx.next_claimed(sub)
    ctx.check(note.message.msg_id == pushed, f"pushed {note.message.msg_id}, sent {pushed}")
    claim = note.message.claim
    timeout = claim.visibility_timeout if claim is not None else ctx.timing.long
    ends = ctx.now() + timeout
    await ctx.wait_past(ctx.now() + ctx.timing.unit / 4)
    await ctx.sever_until_usable(q)

    async def delivered() -> list[QueuedMessage]:
        try:
            again = await ctx.next_notification(sub, ctx.timing.step)
        except ContractViolation:  # nothing pushed within the step: try a receive
            return await received()
        return [again.message] if isinstance(again, Message) and again.claimed else []

    within = max(ends - ctx.now(), 0.0) + ctx.timing.slack
    again = await ctx.eventually(delivered, within, f"pushed message {pushed} back after sever")
    ctx.check([m.msg_id for m in again] == [pushed], f"after the sever delivered {again}")
    check_redelivered(ctx, "pushed, then severed", note.message, again[0], deliveries=2)
    await ctx.service.ack_claim(q, again[0])
