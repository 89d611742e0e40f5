"""CLAIM: a settlement settles exactly the claim it names, and nothing after it lapsed.

Settling by message id let a consumer whose claim had lapsed ack the work another
consumer was doing; these rules make every delivery a claim value and hold providers to
settling only a live one (SQS receipt handles, Pub/Sub ack ids, Service Bus lock tokens).
"""

from __future__ import annotations

import asyncio

from mqcontract.errors import InvalidArgument, MessageNotFound
from mqcontract.messages import Claim, Message, MessageNotification, QueuedMessage
from mqcontract.service import MessagingService
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._conditions import CLAIMED_PUSH
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext, ContractViolation, notification_id
from mqcontract_conformance.registry import rule

_FOREIGN_ID = 7_000_000_000_000_000_007


def _claim_of(ctx: CaseContext, message: QueuedMessage, how: str) -> Claim:
    claim = message.claim
    ctx.check(claim is not None, f"message {message.msg_id} from {how} carries no claim")
    assert claim is not None
    ctx.check(
        (claim.queue_name, claim.msg_id) == (message.queue_name, message.msg_id),
        f"the claim from {how} names {claim.queue_name}/{claim.msg_id}, "
        f"not {message.queue_name}/{message.msg_id}",
    )
    return claim


async def _receive_claimed(
    ctx: CaseContext, service: MessagingService, q: str, vt: float
) -> tuple[QueuedMessage, float]:
    """One message received by ``service``, and the instant by which its claim lapses."""

    async def one() -> list[QueuedMessage]:
        return await service.receive_messages(q, 1, vt)

    [got] = await ctx.eventually(one, ctx.timing.delivery, "a message to claim")
    return got, ctx.now() + vt + ctx.caps.visibility_precision_seconds


async def _all_stale(
    ctx: CaseContext, service: MessagingService, q: str, claim: Claim, when: str
) -> None:
    """Every way of settling ``claim`` (and its id, on ``service``) raises."""
    await ctx.raises(MessageNotFound, service.ack_claim(q, claim), f"ack_claim {when}")
    await ctx.raises(MessageNotFound, service.nack_claim(q, claim), f"nack_claim {when}")
    await ctx.raises(MessageNotFound, service.ack_message(q, claim.msg_id), f"ack_message {when}")
    await ctx.raises(MessageNotFound, service.nack_message(q, claim.msg_id), f"nack_message {when}")


async def _settles(ctx: CaseContext, q: str, claim: Claim, what: str) -> None:
    """Ack ``claim``, which is live: a refusal fails the rule (it is not a stale claim)."""
    try:
        await ctx.service.ack_claim(q, claim)
    except MessageNotFound as exc:
        ctx.fail(f"the live claim of {what} could not be settled: {exc}")


async def _nothing_left(ctx: CaseContext, q: str, what: str) -> None:
    async def back() -> list[int]:
        return [m.msg_id for m in await ctx.receive(q)]

    await ctx.never(back, ctx.timing.margin, what)


@rule(
    "CLAIM-1",
    "Every claimed message carries a claim naming its queue and id, a new one on every "
    "delivery (receive, fetch, claimed push); acking the latest claim removes the message.",
    why="Settling names the claim; a delivery without one, or one that repeats an earlier "
    "delivery's claim, cannot be told apart from the work another consumer is doing.",
    provisional=True,
)
async def every_delivery_is_a_claim(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    (first,) = await ctx.receive_exactly(q, 1)
    claims = [_claim_of(ctx, first, "receive_messages")]
    await ctx.service.nack_claim(q, claims[0])
    if ctx.caps.fetch_by_id:
        fetched = await ctx.eventually(
            lambda: ctx.service.fetch_message(q, sent, ctx.timing.long),
            ctx.timing.delivery,
            f"message {sent} fetchable after nack",
        )
        claims.append(_claim_of(ctx, fetched, "fetch_message"))
        await ctx.service.nack_claim(q, claims[-1])
    (again,) = await ctx.receive_exactly(q, 1)
    claims.append(_claim_of(ctx, again, "receive_messages after nack"))
    ctx.check(
        len(set(claims)) == len(claims),
        f"deliveries of message {sent} repeat a claim: {claims}",
    )
    await ctx.service.ack_claim(q, claims[-1])
    await _nothing_left(ctx, q, f"message {sent}, acked by its latest claim, came back")


@rule(
    "CLAIM-2",
    "Ack or nack of a lapsed claim (nobody received the message since), by claim or by "
    "id, raises MessageNotFound and changes nothing; the message comes back with "
    "receive_count + 1 and its new claim settles it.",
    why="A handler that overran its visibility timeout no longer owns the work; an ack "
    "that still succeeds hides a redelivery the provider already promised to make.",
    provisional=True,
)
async def lapsed_claim_is_stale(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    held, lapses = await _receive_claimed(ctx, ctx.service, q, ctx.timing.unit)
    claim = _claim_of(ctx, held, "receive_messages")
    await ctx.wait_past(lapses)
    await _all_stale(ctx, ctx.service, q, claim, "after the claim lapsed")
    (back,) = await ctx.receive_exactly(q, 1, within=ctx.timing.slack)
    ctx.check(back.msg_id == sent, f"expected message {sent} back, got {back.msg_id}")
    count_ok = back.receive_count == 2 if ctx.caps.exact_receive_count else back.receive_count > 1
    ctx.check(count_ok, f"receive_count after a lapsed claim is {back.receive_count}")
    await ctx.service.ack_claim(q, _claim_of(ctx, back, "receive_messages after the lapse"))
    await _nothing_left(ctx, q, f"message {sent} came back after its new claim was acked")


@rule(
    "CLAIM-3",
    "When consumer A's claim lapsed and consumer B (another service on the same backend) "
    "received the message, A's ack and nack, by claim or by id, raise MessageNotFound and "
    "leave B's claim intact; B's ack then succeeds.",
    why="Otherwise a slow consumer settles someone else's work: its ack deletes a message B "
    "is still processing (lost if B fails), its nack hands B's message to a third consumer.",
    applies_when=Applies.flag("shared_backend"),
    provisional=True,
)
async def superseded_claim_is_stale(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    other = await ctx.other_consumer(q)
    held, lapses = await _receive_claimed(ctx, ctx.service, q, ctx.timing.unit)
    mine = _claim_of(ctx, held, "receive_messages")
    await ctx.wait_past(lapses)
    theirs_msg, _ = await _receive_claimed(ctx, other, q, ctx.timing.long)
    theirs = _claim_of(ctx, theirs_msg, "the other consumer's receive")
    ctx.check(theirs.msg_id == sent, f"the other consumer got {theirs.msg_id}, not {sent}")
    await _all_stale(ctx, ctx.service, q, mine, "by A after B claimed the message")

    async def released() -> list[int]:
        return [m.msg_id for m in await ctx.receive(q)]

    await ctx.never(released, ctx.timing.margin, f"B's claim on {sent} was released by A")
    await other.ack_claim(q, theirs)
    await _nothing_left(ctx, q, f"message {sent} came back after B acked it")


@rule(
    "CLAIM-4",
    "Settling a claim again (ack or nack after an ack or a nack), or naming another "
    "queue, raises MessageNotFound and changes nothing.",
    why="A retried settlement or a claim passed to the wrong queue must not settle a later "
    "delivery, or another queue's message that happens to share the id.",
    provisional=True,
)
async def settled_claim_is_stale(ctx: CaseContext) -> None:
    q, elsewhere = await ctx.queue(), await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    await ctx.service.send_message(elsewhere, body(2))
    (held,) = await ctx.receive_exactly(q, 1)
    (theirs,) = await ctx.receive_exactly(elsewhere, 1)
    claim = _claim_of(ctx, held, "receive_messages")
    for op, call in (("ack", ctx.service.ack_claim), ("nack", ctx.service.nack_claim)):
        await ctx.raises(MessageNotFound, call(elsewhere, claim), f"{op} on another queue")
    await ctx.check_still_held(elsewhere, theirs, "after a claim of another queue was settled")
    await ctx.service.nack_claim(q, claim)
    await ctx.raises(MessageNotFound, ctx.service.ack_claim(q, claim), "ack after nack")
    await ctx.raises(MessageNotFound, ctx.service.nack_claim(q, claim), "nack after nack")
    (again,) = await ctx.receive_exactly(q, 1)
    ctx.check(again.msg_id == sent, f"message {sent} lost after settling a released claim")
    latest = _claim_of(ctx, again, "receive_messages after nack")
    await ctx.raises(MessageNotFound, ctx.service.ack_claim(q, claim), "ack of the old claim")
    await ctx.check_still_held(q, again, "after the released claim was acked")
    await ctx.service.ack_claim(q, latest)
    await ctx.raises(MessageNotFound, ctx.service.ack_claim(q, latest), "second ack")
    await ctx.raises(MessageNotFound, ctx.service.nack_claim(q, latest), "nack after ack")
    await _nothing_left(ctx, q, f"message {sent} came back after its claim was acked")
    await ctx.service.ack_claim(elsewhere, _claim_of(ctx, theirs, "receive_messages"))


@rule(
    "CLAIM-5",
    "ack_claims settles several claims at once and reports each: True for a live claim "
    "(now acked), False for a stale one (released, settled, repeated, of another queue, "
    "superseded by a live claim in the same batch), which it leaves alone; an empty batch "
    "settles nothing.",
    why="Batch settlement is how consumers keep up; one stale claim in a batch must neither "
    "fail the others nor be acked on their coattails.",
    provisional=True,
)
async def batch_settlement(ctx: CaseContext) -> None:
    q, elsewhere = await ctx.queue(), await ctx.queue()
    ids = await ctx.service.send_batch(q, [body(i) for i in range(5)])
    got = await ctx.receive_exactly(q, 5)
    claims = {m.msg_id: _claim_of(ctx, m, "receive_messages") for m in got}
    # One message under a live claim and its superseded one, both in the batch.
    superseded = claims[ids[4]]
    await ctx.service.nack_claim(q, superseded)
    (again,) = await ctx.receive_exactly(q, 1)
    ctx.check(again.msg_id == ids[4], f"received {again.msg_id} again, not {ids[4]}")
    live = _claim_of(ctx, again, "receive_messages")
    await ctx.service.send_message(elsewhere, body(9))
    (foreign,) = await ctx.receive_exactly(elsewhere, 1)
    released, settled = claims[ids[1]], claims[ids[2]]
    await ctx.service.nack_claim(q, released)
    await ctx.service.ack_claim(q, settled)
    batch: list[Claim | QueuedMessage] = [
        claims[ids[0]],
        released,
        settled,
        claims[ids[3]],
        claims[ids[0]],
        _claim_of(ctx, foreign, "receive_messages"),
        live,
        superseded,
    ]
    outcome = await ctx.service.ack_claims(q, batch)
    expected = [True, False, False, True, False, False, True, False]
    ctx.check(outcome == expected, f"ack_claims reported {outcome}, expected {expected}")
    (back,) = await ctx.receive_exactly(q, 1)
    ctx.check(back.msg_id == ids[1], f"after the batch, received {back.msg_id}, not {ids[1]}")
    ctx.check(await ctx.service.ack_claims(q, []) == [], "ack_claims([]) did not return []")
    await ctx.check_still_held(elsewhere, foreign, "after its claim was in another queue's batch")
    await ctx.service.ack_claim(q, back)
    await _nothing_left(ctx, q, "a message acked in the batch came back")


@rule(
    "CLAIM-6",
    "A pushed claim is a claim: after it is nacked, acking or nacking it raises "
    "MessageNotFound and the message is pushed again with a new claim, which settles it "
    "once.",
    why="Push hands out claims too; an old pushed claim must not settle the copy pushed "
    "next, which a worker is about to process.",
    applies_when=CLAIMED_PUSH,
    provisional=True,
)
async def pushed_claims(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sub = await ctx.subscribe(q)
    sent = await ctx.service.send_message(q, body(1))
    note = await ctx.next_claimed(sub)
    first = _claim_of(ctx, note.message, "push")
    await ctx.service.nack_claim(q, first)
    await ctx.raises(MessageNotFound, ctx.service.ack_claim(q, first), "ack of a nacked push")
    await ctx.raises(MessageNotFound, ctx.service.nack_claim(q, first), "nack of a nacked push")
    again = await ctx.next_notification(sub)
    ctx.check(notification_id(again) == sent, f"expected message {sent} again: {again!r}")
    assert isinstance(again, Message)
    second = _claim_of(ctx, again.message, "the second push")
    ctx.check(second != first, f"the second push repeats the first claim: {first}")
    await ctx.service.ack_claim(q, second)
    await ctx.raises(MessageNotFound, ctx.service.ack_claim(q, second), "second ack of a push")
    await _nothing_left(ctx, q, f"pushed message {sent} came back after it was acked")


@rule(
    "CLAIM-7",
    "Two messages a foreign producer published with the same id are two claims: both "
    "are delivered (by receive and by push), each settles on its own, and neither "
    "settlement disturbs the other; push does not loop on them.",
    why="Where producers choose ids (RabbitMQ), a duplicate is one bad publisher away; "
    "keyed by id, the provider returned one message twice, acked one of them only, and "
    "under subscribe re-pushed them to each other thousands of times a second.",
    applies_when=Applies.flag("producer_assigned_ids"),
    hooks=("publish_foreign",),
    provisional=True,
)
async def duplicate_ids_are_two_claims(ctx: CaseContext) -> None:
    q = await ctx.queue()
    for tag in ("a", "b"):
        await ctx.harness.publish_foreign(ctx.service, q, _FOREIGN_ID, body(1, tag))
    got = await ctx.receive_exactly(q, 2)
    ctx.check(
        sorted(m.payload for m in got) == [body(1, "a"), body(1, "b")],
        f"the two messages with id {_FOREIGN_ID} came back as {[m.payload for m in got]}",
    )
    first, second = (_claim_of(ctx, m, "receive_messages") for m in got)
    ctx.check(first != second, f"two messages share one claim: {first}")
    await _settles(ctx, q, first, "the first message with a shared id")
    await ctx.check_still_held(q, got[1], "after the other message with its id was acked")
    await _settles(ctx, q, second, "the second message with a shared id")
    await _nothing_left(ctx, q, f"a message with id {_FOREIGN_ID} came back after both acks")
    if CLAIMED_PUSH.applies(ctx.caps):
        await _duplicate_ids_pushed(ctx)


async def _duplicate_ids_pushed(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sub = await ctx.subscribe(q)
    for tag in ("c", "d"):
        await ctx.harness.publish_foreign(ctx.service, q, _FOREIGN_ID, body(2, tag))
    notes = [await ctx.next_notification(sub) for _ in range(2)]
    pushed = [n.message for n in notes if isinstance(n, Message)]
    ctx.check(
        sorted(m.payload for m in pushed) == [body(2, "c"), body(2, "d")],
        f"expected both messages with id {_FOREIGN_ID} pushed once: {notes!r}",
    )

    async def more() -> MessageNotification | None:
        try:
            return await ctx.next_notification(sub, ctx.timing.step)
        except ContractViolation:
            return None

    await ctx.never(more, ctx.timing.margin, "a held message with a shared id pushed again")
    for message in pushed:
        await _settles(ctx, q, _claim_of(ctx, message, "push"), "a pushed message with a shared id")
    await _nothing_left(ctx, q, f"a pushed message with id {_FOREIGN_ID} came back")


@rule(
    "CLAIM-8",
    "A value that is not a claim raises InvalidArgument; a forged claim (the right queue "
    "and id, a token the provider never issued) raises MessageNotFound; neither settles "
    "the held message.",
    why="The token is what makes a claim: a provider that checks only the id settles "
    "whatever is held under it.",
    provisional=True,
)
async def forged_claims(ctx: CaseContext) -> None:
    q = await ctx.queue()
    await ctx.service.send_message(q, body(1))
    (held,) = await ctx.receive_exactly(q, 1)
    real = _claim_of(ctx, held, "receive_messages")
    not_claims: tuple[object, ...] = (held.msg_id, "claim", None, (q, held.msg_id))
    for value in not_claims:
        bad = ctx.service.ack_claim(q, value)  # type: ignore[arg-type]
        await ctx.raises(InvalidArgument, bad, f"ack_claim({value!r})")
    forged = [
        Claim(q, held.msg_id, token, real.visibility_timeout)
        for token in ("forged", -1, 0, 2**70)
        if token != real.token
    ]
    for claim in forged:
        for op, call in (("ack", ctx.service.ack_claim), ("nack", ctx.service.nack_claim)):
            await ctx.raises(
                MessageNotFound, call(q, claim), f"{op} of a forged token {claim.token!r}"
            )
    await ctx.check_still_held(q, held, "after forged claims were settled")
    await ctx.service.ack_claim(q, real)


#: CLAIM-9: settlements sent at once per claim, the claims raced at once, and the rounds.
#: A race lost only when one statement overtakes another between starting and taking
#: its lock is rare per claim: 4 x 32 claims caught such a provider in nearly every run,
#: one round of 4 in none of twelve.
_RACERS, _RACED, _ROUNDS = 6, 32, 4


@rule(
    "CLAIM-9",
    "Settlements of one claim that overlap (acks and nacks of it sent at once) take "
    "effect once: exactly one returns and every other raises MessageNotFound; a message "
    "whose ack won is gone, one whose nack won comes back once.",
    why="A provider that reads a claim and then settles it, with nothing tying the write "
    "to what it read, lets overlapping settlements all win: a message acked twice, or "
    "acked and handed out again. So does one whose check reads a clock frozen before it "
    "waited for a lock (a nack committed meanwhile still looks held). A replicated "
    "backend whose compare-and-set is checked by its leader alone, before the write is "
    "replicated, does the same.",
    provisional=True,
)
async def overlapping_settlements_take_effect_once(ctx: CaseContext) -> None:
    queues = [await ctx.queue() for _ in range(_ROUNDS)]
    for round_no, q in enumerate(queues, 1):
        await _race_settlements(ctx, q, f"round {round_no} of {_ROUNDS}")

    async def back() -> list[tuple[str, int]]:
        return [(q, m.msg_id) for q in queues for m in await ctx.receive(q)]

    await ctx.never(
        back, ctx.timing.margin, "a message whose ack won (or that was acked since) came back"
    )


async def _race_settlements(ctx: CaseContext, q: str, which: str) -> None:
    """One round of CLAIM-9 on a fresh queue; the messages whose nack won are acked."""
    await ctx.service.send_batch(q, [body(i) for i in range(_RACED)])
    got = await ctx.receive_exactly(q, _RACED, ctx.timing.long)
    plan = [
        (_claim_of(ctx, message, "receive_messages"), ("ack", "nack")[(k + i) % 2])
        for k, message in enumerate(got)
        for i in range(_RACERS)
    ]

    async def settle(claim: Claim, how: str) -> str | None:
        call = ctx.service.ack_claim if how == "ack" else ctx.service.nack_claim
        try:
            await call(q, claim)
        except MessageNotFound:
            return None
        return how

    outcomes = await asyncio.gather(*(settle(c, how) for c, how in plan), return_exceptions=True)
    won: dict[int, list[str]] = {message.msg_id: [] for message in got}
    for (claim, how), outcome in zip(plan, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            ctx.fail(
                f"{which}: an overlapping {how} of the claim on {claim.msg_id} raised "
                f"{type(outcome).__name__}: {outcome} (expected it to return or raise "
                "MessageNotFound)"
            )
        if outcome is not None:
            won[claim.msg_id].append(outcome)
    wrong = {msg_id: took for msg_id, took in won.items() if len(took) != 1}
    ctx.check(
        not wrong,
        f"{which}: of {_RACERS} overlapping settlements of one claim, exactly one must take "
        "effect: " + "; ".join(f"message {m}: {len(t)} did {t}" for m, t in wrong.items()),
    )
    released = sorted(msg_id for msg_id, took in won.items() if took == ["nack"])
    back = await ctx.receive_exactly(q, len(released)) if released else []
    ctx.check(
        sorted(m.msg_id for m in back) == released,
        f"{which}: the messages whose nack won were {released}; "
        f"back came {[m.msg_id for m in back]}",
    )
    for message in back:
        await _settles(ctx, q, _claim_of(ctx, message, "receive_messages"), "a released message")


#: CLAIM-10: messages sent to the queue once it is created again (where ids restart, the
#: first of them has the old claim's id).
_AGAIN = 3


@rule(
    "CLAIM-10",
    "A claim made before its queue was deleted settles nothing in a queue created again "
    "under that name: ack_claim and nack_claim of it raise MessageNotFound, ack_claims "
    "reports False, and the new queue's messages stay held by their own claims, which "
    "settle them.",
    why="Ids may restart when a queue is created again (PGMQ's do), and a token that "
    "counts deliveries repeats too: the old claim then names the new queue's first "
    "message on its first delivery, and acking it deleted work another consumer held.",
    provisional=True,
)
async def claim_from_a_deleted_queue_is_stale(ctx: CaseContext) -> None:
    q = await ctx.queue()
    await ctx.service.send_message(q, body(1, "before"))
    (held,) = await ctx.receive_exactly(q, 1)
    old = _claim_of(ctx, held, "receive_messages")
    await ctx.service.delete_queue(q)
    await ctx.service.create_queue(q)
    sent = await ctx.service.send_batch(q, [body(i, "again") for i in range(_AGAIN)])
    other = await ctx.other_consumer(q) if ctx.caps.shared_backend else ctx.service
    got: list[QueuedMessage] = []

    async def all_of_them() -> bool:
        got.extend(await other.receive_messages(q, 10, ctx.timing.long))
        return len(got) >= len(sent)

    await ctx.eventually(all_of_them, ctx.timing.delivery, f"{len(sent)} messages to claim")
    ctx.check(
        sorted(m.msg_id for m in got) == sorted(sent),
        f"sent {sorted(sent)} to the queue created again, received {[m.msg_id for m in got]}",
    )
    theirs = [_claim_of(ctx, m, "receive_messages") for m in got]
    twin = [c for c in theirs if c.msg_id == old.msg_id]
    stale = f"a claim made before {q} was deleted ({old}), once the queue was created again " + (
        f"and its own message {old.msg_id} is held by {twin[0]}"
        if twin
        else f"(which reused none of its ids: {sorted(sent)})"
    )
    await ctx.raises(
        MessageNotFound, ctx.service.ack_claim(q, old), f"ack_claim of {stale}, must settle nothing"
    )
    await ctx.raises(
        MessageNotFound,
        ctx.service.nack_claim(q, old),
        f"nack_claim of {stale}, must settle nothing",
    )
    outcome = await ctx.service.ack_claims(q, [old])
    ctx.check(outcome == [False], f"ack_claims of {stale} reported {outcome}, expected [False]")

    async def released() -> list[int]:
        return [m.msg_id for m in await ctx.receive(q)]

    await ctx.never(
        released,
        ctx.timing.margin / 2,
        "messages of the queue created again, held by their own claims, were released by "
        "settling a claim made before it was deleted",
    )
    for claim in theirs:
        try:
            await other.ack_claim(q, claim)
        except MessageNotFound as exc:
            ctx.fail(
                f"the live claim {claim} on the queue created again could not be settled "
                f"after a claim made before its deletion was acked and nacked: {exc}"
            )
    await _nothing_left(ctx, q, "a message of the queue created again came back after its ack")
