"""RECV: limits, empty queues, bad arguments, message fields."""

from __future__ import annotations

import math
import time

from mqcontract.errors import InvalidArgument
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule

#: The most messages RECV-6 puts on a queue to take at once (a provider declaring a higher
#: ``max_receive_limit`` is checked up to here).
FULL_RECEIVE_CAP = 2000

#: The limits RECV-1 asks for (those up to ``max_receive_limit``, which is asked too):
#: 1 and primes, so that for every page size from 2 to 100 one of them is larger than
#: the page and no multiple of it. A provider that reads in pages and drops or rounds up the
#: remainder of a limit returns the wrong count for that one.
ODD_LIMITS = (1, 7, 13, 37, 101)
#: RECV-1 also asks for the largest prime up to this share of ``max_receive_limit`` (of at
#: most :data:`FULL_RECEIVE_CAP`), when above 101: no multiple of any page size below it,
#: while RECV-6's limit covers the pages above half of it that do not divide it. Pages of
#: 125, 200, 250 or 500 thus drop a remainder of 691 that 1000 never has.
LARGE_LIMIT_SHARE = 0.7
#: How many messages RECV-1 leaves visible for a receive with a larger limit (more than
#: one small page, and no round number).
FEWER_VISIBLE = 23


def _largest_prime(most: int) -> int:
    """The largest prime not above ``most`` (at least 2)."""
    for n in range(most, 2, -1):
        if all(n % d for d in range(2, math.isqrt(n) + 1)):
            return n
    return 2


def _odd_limits(most: int) -> list[int]:
    """The limits to ask for, ascending, none above ``most`` (which is asked when below
    101), and the large prime limit where ``most`` leaves room for one above 101."""
    limits = {limit for limit in ODD_LIMITS if limit <= most} | {min(most, ODD_LIMITS[-1])}
    large = _largest_prime(int(min(most, FULL_RECEIVE_CAP) * LARGE_LIMIT_SHARE))
    if large > ODD_LIMITS[-1]:
        limits.add(large)
    return sorted(limits)


@rule(
    "RECV-1",
    "receive_messages returns exactly min(limit, visible) messages: never more than "
    "`limit`, and never fewer while that many are visible; the rest stay receivable. "
    "This holds for any limit up to max_receive_limit, round or not: checked with 1, 7, "
    "13, 37, 101 and the largest prime up to 7/10 of max_receive_limit (of at most 2000; "
    "691 for 1000), "
    "each with more messages visible than it asks for, then the largest with fewer.",
    why="Consumers size their work by the limit; a provider that returns one message per "
    "call whatever the limit passes 'at most' and starves batch consumers. A backend read "
    "in pages tempts a provider to drop (or round up) the remainder of a limit that is not "
    "a multiple of the page, which round limits never show.",
)
async def limit_honoured(ctx: CaseContext) -> None:
    q = await ctx.queue()
    limits = _odd_limits(ctx.caps.max_receive_limit)
    fewer = min(FEWER_VISIBLE, limits[-1] - 1)
    payloads = [body(i) for i in range(sum(limits) + fewer)]
    sent: list[int] = []
    for start in range(0, len(payloads), 100):
        sent += await ctx.service.send_batch(q, payloads[start : start + 100])
    received: list[int] = []
    # Ascending, each with more visible than its limit; then one with fewer visible.
    for limit in [*limits, limits[-1]]:
        visible = len(sent) - len(received)
        expected = min(limit, visible)
        got = [m.msg_id for m in await ctx.receive(q, limit=limit)]
        ctx.check(
            len(got) == expected,
            f"receive with limit {limit} on {q} with {visible} visible returned "
            f"{len(got)} messages, expected {expected}",
        )
        again = sorted({i for i in got if i in received or got.count(i) > 1})
        ctx.check(not again, f"limit {limit} on {q} returned held messages again: {again}")
        received += got
    ctx.check(
        sorted(received) == sorted(sent),
        f"sent {len(sent)} messages to {q}, received {len(received)}; never received: "
        f"{sorted(set(sent) - set(received))[:20]}, not sent: "
        f"{sorted(set(received) - set(sent))[:20]}",
    )


@rule(
    "RECV-2",
    "receive_messages on an empty queue returns an empty list promptly.",
    why="Pollers call it in a loop; it must not block.",
)
async def empty_returns_promptly(ctx: CaseContext) -> None:
    q = await ctx.queue()
    start = ctx.now()
    got = await ctx.receive(q)
    took = ctx.now() - start
    ctx.check(got == [], f"empty queue returned {got}")
    ctx.check(took <= ctx.timing.operation, f"empty receive took {took:.2f} s")


@rule(
    "RECV-3",
    "A limit below 1, above max_receive_limit, or not an int raises InvalidArgument and "
    "claims nothing.",
    why="A zero or negative limit silently means 'nothing' or 'everything' elsewhere.",
)
async def bad_limit_rejected(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    for limit in (0, -1, ctx.caps.max_receive_limit + 1, 1.5, True):
        await ctx.raises(
            InvalidArgument,
            ctx.service.receive_messages(q, limit, ctx.timing.long),  # type: ignore[arg-type]
            f"receive with limit={limit!r}",
        )
    got = await ctx.receive(q)
    ctx.check(
        [(m.msg_id, m.receive_count) for m in got] == [(sent, 1)],
        f"rejected receives claimed the message: {got}",
    )


@rule(
    "RECV-4",
    "A visibility timeout that is not a finite number > 0 (0, negative, NaN, infinity) or "
    "exceeds the declared maximum raises InvalidArgument and claims nothing.",
    why="NaN and infinity otherwise become 'forever' or 'never' depending on the backend.",
)
async def bad_visibility_rejected(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    for vt in (0, -1.0, math.nan, math.inf, ctx.caps.max_visibility_timeout_seconds * 2):
        await ctx.raises(
            InvalidArgument, ctx.service.receive_messages(q, 1, vt), f"visibility_timeout={vt}"
        )
    got = await ctx.receive(q)
    ctx.check([m.msg_id for m in got] == [sent], f"rejected receives claimed it: {got}")


#: RECV-5: how far (seconds) enqueued_at may lie outside the wall-clock window of its
#: send (the backend's clock may differ from the suite's a little).
CLOCK_SKEW = 120.0
#: RECV-5: payloads in its batch, each checked.
FIELDS_BATCH = 3


@rule(
    "RECV-5",
    "A received message carries the id send returned, its queue name, receive_count 1 and "
    "a plausible enqueued_at (seconds since the epoch, within two minutes of the wall-clock "
    "window of its send), whichever way it was sent: send_message, each payload of a "
    "send_batch and, where delays are supported, send_message_with_delay.",
    why="Every later rule and every consumer relies on these fields. A batch or delayed "
    "send builds its rows on another path (a bulk API, a scheduler) where a timestamp in "
    "milliseconds or a count carried over slips in unseen by single sends.",
)
async def fields_are_right(ctx: CaseContext) -> None:
    q = await ctx.queue()

    def wall() -> float:
        return ctx.clock.wall() if ctx.clock is not None else time.time()

    windows: dict[int, tuple[str, float, float]] = {}  # id -> (how sent, window)
    start = wall()
    sent = await ctx.service.send_message(q, body(7))
    windows[sent] = ("send_message", start, wall())
    start = wall()
    batch = await ctx.service.send_batch(q, [body(i, "batch") for i in range(FIELDS_BATCH)])
    ctx.check(len(batch) == FIELDS_BATCH, f"send_batch of {FIELDS_BATCH} returned {batch}")
    for k, msg_id in enumerate(batch):
        windows[msg_id] = (f"payload {k + 1} of {FIELDS_BATCH} of send_batch", start, wall())
    within = None
    if ctx.caps.delay:
        delay = ctx.timing.unit
        within = delay + ctx.timing.slack
        start = wall()
        delayed = await ctx.service.send_message_with_delay(q, body(8, "delayed"), delay)
        windows[delayed] = (f"send_message_with_delay ({delay:g} s)", start, wall())
    got = await ctx.receive_exactly(q, len(windows), within=within)
    ctx.check(
        sorted(m.msg_id for m in got) == sorted(windows),
        f"sent {sorted(windows)} to {q}, received {sorted(m.msg_id for m in got)}",
    )
    for msg in got:
        how, sent_from, sent_by = windows[msg.msg_id]
        what = f"message {msg.msg_id} from {how}"
        ctx.check(msg.queue_name == q, f"{what}: queue_name {msg.queue_name!r} != {q!r}")
        ctx.check(
            msg.receive_count == 1,
            f"{what}: first receive has receive_count {msg.receive_count}",
        )
        ctx.check(
            sent_from - CLOCK_SKEW <= msg.enqueued_at <= sent_by + CLOCK_SKEW,
            f"{what}: enqueued_at {msg.enqueued_at!r} is far from the send, made between "
            f"{sent_from:.3f} and {sent_by:.3f} (seconds since the epoch)",
        )


@rule(
    "RECV-6",
    "With at least max_receive_limit messages visible (up to 2000), one receive_messages "
    "with that limit returns that many, all distinct.",
    why="The limits are claims too: a provider that quietly caps a receive below the limit "
    "it declares passes every rule that asks for a few, and its consumers size batches "
    "it never fills.",
    provisional=True,
)
async def declared_limit_filled(ctx: CaseContext) -> None:
    q = await ctx.queue()
    limit = min(ctx.caps.max_receive_limit, FULL_RECEIVE_CAP)
    sent: list[int] = []
    for start in range(0, limit + 1, 100):
        count = min(100, limit + 1 - start)
        sent += await ctx.service.send_batch(q, [body(start + i) for i in range(count)])
    got = await ctx.receive(q, limit=limit)
    ids = [m.msg_id for m in got]
    ctx.check(
        len(got) == limit,
        f"limit {limit} with {limit + 1} visible returned {len(got)} messages",
    )
    ctx.check(len(set(ids)) == len(ids), "one receive returned a message twice")
    ctx.check(set(ids) <= set(sent), "one receive returned messages never sent here")
