"""ACK: ack and nack, including the cases the original disagreed on."""

from __future__ import annotations

import math

from mqcontract.errors import MessageNotFound
from mqcontract.messages import QueuedMessage
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.cases._redelivery import count_ok
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule

_UNKNOWN_ID = 9_000_000_000_000_000_001


async def _still_usable(ctx: CaseContext, q: str) -> None:
    """After a rejected ack/nack the provider works: send, receive and ack succeed."""
    sent = await ctx.service.send_message(q, body(99, "after"))
    got = await ctx.receive_exactly(q, 1)
    ctx.check(got[0].msg_id == sent, f"provider unusable after a rejected ack: got {got}")
    await ctx.service.ack_message(q, sent)


@rule(
    "ACK-1",
    "An acked message is never delivered again, even after its timeout would have expired.",
    why="Ack is the only proof of completion; a no-op ack passes naive tests, not this one.",
)
async def ack_is_permanent(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    await ctx.receive_exactly(q, 1, vt=ctx.timing.unit)
    await ctx.service.ack_message(q, sent)

    async def back() -> list[int]:
        return [m.msg_id for m in await ctx.receive(q)]

    expiry = ctx.timing.unit + ctx.caps.visibility_precision_seconds
    past_expiry = expiry + ctx.timing.margin * 1.5
    await ctx.never(back, past_expiry, f"acked message {sent} came back")
    try:
        stored = await ctx.harness.stored_ids(ctx.service, q)
    except Exception:  # the backdoor is optional
        return
    ctx.check(sent not in stored, f"acked message {sent} is still stored: {stored}")


@rule(
    "ACK-2",
    "nack makes a held message visible at once, every time: after each of two nacks the "
    "next receive gets it with receive_count + 1.",
    why="Decided: nack means 'retry now'. The original PGMQ deleted on nack without "
    "requeue and the in-memory provider removed the message; a provider that requeues "
    "only the first nack loses work on its second failure.",
)
async def nack_requeues_now(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    await ctx.receive_exactly(q, 1)
    got: list[QueuedMessage] = []

    async def back() -> bool:
        got.extend(await ctx.receive(q, 1))
        return bool(got)

    for nacks in (1, 2):
        await ctx.service.nack_message(q, sent)
        got.clear()
        await ctx.eventually(
            back,
            ctx.timing.delivery,
            f"the message receivable again after nack {nacks} (a nack requeues every time)",
        )
        (again,) = got
        ctx.check(again.msg_id == sent, f"got {again.msg_id} after nack {nacks}, expected {sent}")
        count, expected = again.receive_count, nacks + 1
        ctx.check(
            count_ok(ctx, count, expected),
            f"receive_count after nack {nacks} is {count}, expected {expected}",
        )


@rule(
    "ACK-3",
    "A second ack of the same message raises MessageNotFound and the provider stays usable.",
    why="Decided: acking twice is a caller bug worth reporting; on RabbitMQ a repeated "
    "delivery tag would kill the channel, so providers must catch it first.",
)
async def double_ack(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    await ctx.receive_exactly(q, 1)
    await ctx.service.ack_message(q, sent)
    exc = await ctx.raises(MessageNotFound, ctx.service.ack_message(q, sent), "second ack")
    ctx.check((exc.queue, exc.msg_id) == (q, sent), f"error names {exc.queue}/{exc.msg_id}")
    await _still_usable(ctx, q)


@rule(
    "ACK-4",
    "Ack of an unknown id raises MessageNotFound; messages held at the time can still be "
    "acked afterwards.",
    why="The original PGMQ returned OK, in-memory errored and RabbitMQ closed the channel "
    "(losing every held delivery tag).",
)
async def ack_unknown(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    await ctx.receive_exactly(q, 1, vt=ctx.timing.unit)
    await ctx.raises(MessageNotFound, ctx.service.ack_message(q, _UNKNOWN_ID), "ack unknown id")
    await ctx.service.ack_message(q, sent)

    async def back() -> list[int]:
        return [m.msg_id for m in await ctx.receive(q)]

    past_expiry = ctx.timing.unit + ctx.caps.visibility_precision_seconds + ctx.timing.margin
    await ctx.never(back, past_expiry, f"message {sent} acked after an error came back")
    await _still_usable(ctx, q)


@rule(
    "ACK-5",
    "Ack after nack raises MessageNotFound and the message stays available.",
    why="Nack released the claim; acking a message someone else may now hold is unsafe.",
)
async def ack_after_nack(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    await ctx.receive_exactly(q, 1)
    await ctx.service.nack_message(q, sent)
    await ctx.raises(MessageNotFound, ctx.service.ack_message(q, sent), "ack after nack")
    (again,) = await ctx.receive_exactly(q, 1)
    ctx.check(again.msg_id == sent, f"message {sent} lost after ack-after-nack")


@rule(
    "ACK-6",
    "Nack of an unknown id, or a second nack, raises MessageNotFound and breaks nothing.",
    why="Same reasoning as ACK-3 and ACK-4 for the release path.",
)
async def nack_unknown(ctx: CaseContext) -> None:
    q = await ctx.queue()
    await ctx.raises(MessageNotFound, ctx.service.nack_message(q, _UNKNOWN_ID), "nack unknown")
    sent = await ctx.service.send_message(q, body(1))
    await ctx.receive_exactly(q, 1)
    await ctx.service.nack_message(q, sent)
    await ctx.raises(MessageNotFound, ctx.service.nack_message(q, sent), "second nack")
    (again,) = await ctx.receive_exactly(q, 1)
    ctx.check(again.msg_id == sent, "message lost after a double nack")
    await ctx.service.ack_message(q, sent)


@rule(
    "ACK-7",
    "Ack of a message that was sent but never received raises MessageNotFound and leaves "
    "it receivable.",
    why="Only held messages can be acked; otherwise a stray id deletes someone's work.",
)
async def ack_unreceived(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    await ctx.raises(MessageNotFound, ctx.service.ack_message(q, sent), "ack before receive")
    (got,) = await ctx.receive_exactly(q, 1)
    ctx.check(got.msg_id == sent, "an ack of an unreceived message removed it")


@rule(
    "ACK-8",
    "Acking or nacking one held message affects only that message: the others the consumer "
    "holds, of the same receive or another, are neither settled, released nor renewed. One "
    "left unsettled while the consumer keeps acking (or nacking) others comes back when "
    "its own timeout runs out: not before, and no later than that plus the slack.",
    why="Per-message settlement is what makes batch receive safe. An ack or nack with a "
    "'multiple' flag settles or releases what was delivered before it; one that doubles as "
    "a heartbeat renews every lease the consumer holds, so a message whose handler hung "
    "never lapses while the consumer keeps working, which a settle made at once never shows.",
)
async def settle_is_per_message(ctx: CaseContext) -> None:
    await _others_keep_their_deadline(ctx, "ack")
    await _others_keep_their_deadline(ctx, "nack")


async def _others_keep_their_deadline(ctx: CaseContext, settle: str) -> None:
    """Hold a pair for one short timeout and a pool of others for long; settle the pair's
    second at once, then the pool, one every third of the timeout, until the first is
    back. Only the first may come back (and, when nacking, what was just nacked)."""
    q = await ctx.queue()
    vt, precision = ctx.timing.unit, ctx.caps.visibility_precision_seconds
    interval = vt / 3  # settles come faster than the timeout: a renewal would never lapse
    window = vt + precision + ctx.timing.slack  # the whole watch
    count = math.ceil(window / interval) + 2
    await ctx.service.send_batch(q, [body(i, "pool") for i in range(count)])
    # Held past the whole watch even where claims may end a precision early.
    held_for = min(
        max(ctx.timing.long, window + 2 * precision), ctx.caps.max_visibility_timeout_seconds
    )
    pool = [m.msg_id for m in await ctx.receive_exactly(q, count, vt=held_for)]
    await ctx.service.send_batch(q, [body(0, "kept"), body(1, "settled")])
    claimed_from = ctx.now()
    pair = await ctx.receive_exactly(q, 2, vt=vt)
    claimed = ctx.now()
    kept, first = pair[0].msg_id, pair[1].msg_id
    due = claimed_from + vt - precision  # the pair's claim may have ended from here on
    pending = [first, *pool]
    settled: list[int] = []
    nacked: set[int] = set()  # nacked and not received since: the only ones due back
    next_settle = claimed_from  # the pair's second at once: its claim is short too
    do = ctx.service.ack_message if settle == "ack" else ctx.service.nack_message
    what = (
        f"message {kept} on {q} (held for {vt:g} s by the receive that returned {first}; "
        f"the consumer {settle}ed {first}, then others, one every {interval:g} s)"
    )

    async def settle_next() -> bool:
        """Settle the next held message; False when the pair's claim may have ended
        before the settle reached the backend (a slow call: nothing to judge)."""
        msg_id = pending.pop(0)
        settled.append(msg_id)
        try:
            await do(q, msg_id)
        except MessageNotFound:
            if len(settled) == 1 and ctx.now() >= due:  # the first settle, of ``first``
                return False
            ctx.fail(
                f"{settle} of message {msg_id} on {q}, held since it was received, raised "
                f"MessageNotFound: settling {settled[:-1][-4:]} had settled or released it"
            )
        if settle == "nack":
            nacked.add(msg_id)
        return True

    async def kept_back() -> list[int]:
        nonlocal next_settle
        if pending and ctx.now() >= next_settle:
            if not await settle_next():
                raise _Inconclusive
            next_settle = ctx.now() + interval
        got = [m.msg_id for m in await ctx.receive(q)]
        back = sorted(i for i in got if i != kept and i not in nacked)
        acked_back = [i for i in back if i in settled]
        ctx.check(not acked_back, f"{settle}ed on {q}, then received again: {acked_back}")
        ctx.check(
            not back,
            f"{settle}ing {settled[-4:]} on {q} released {back}, held by the consumer "
            f"and never settled",
        )
        for msg_id in got:
            if msg_id in nacked:  # received again: held again, and nacked again in turn
                nacked.discard(msg_id)
                pending.append(msg_id)
        return [i for i in got if i == kept]

    hold = vt - precision - ctx.timing.step * 2
    early = max(hold - (ctx.now() - claimed), 0.0)
    try:
        if await ctx.never(kept_back, early, f"{what} back before its timeout ran out", due=due):
            return  # a slow receive made the claim late: back after its deadline
        latest = claimed + vt + precision + ctx.timing.slack
        await ctx.eventually(
            kept_back,
            max(latest - ctx.now(), ctx.timing.step),
            f"{what} back by its timeout plus the slack (did another {settle} renew or settle it?)",
        )
    except _Inconclusive:
        ctx.metrics[f"{settle}_inconclusive"] = 1.0  # the settle came after the claim ended
        return


class _Inconclusive(Exception):
    """The first settle reached the backend after the pair's claim may have ended."""
