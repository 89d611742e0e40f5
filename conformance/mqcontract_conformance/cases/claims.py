"""CLAIM: a settlement settles exactly the claim it names, and nothing after it lapsed.

Settling by message id let a consumer whose claim had lapsed ack the work another
consumer was doing; these rules make every delivery a claim value and hold providers to
settling only a live one (SQS receipt handles, Pub/Sub ack ids, Service Bus lock tokens).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import dataclass, field

from mqcontract.errors import InvalidArgument, MessageNotFound
from mqcontract.messages import Claim, Message, MessageNotification, QueuedMessage
from mqcontract.service import MessagingService, Subscription
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


async def _nothing_left(
    ctx: CaseContext, q: str, what: str, sub: Subscription | None = None
) -> None:
    """Nothing is received from ``q`` for the margin, nor pushed to ``sub`` when given (a
    message an ack failed to remove would be pushed straight back to it, not received)."""

    async def back() -> list[str]:
        seen = [f"received {m.msg_id}" for m in await ctx.receive(q)]
        if sub is not None:
            try:
                note = await ctx.next_notification(sub, ctx.timing.step)
            except ContractViolation:  # nothing pushed meanwhile
                return seen
            seen.append(f"pushed {note!r}")
        return seen

    await ctx.never(back, ctx.timing.margin, what)


#: CLAIM-1: the timeouts asked for on receive, fetch and the receive after a nack, as shares
#: of the long bound: distinct and not whole seconds, so a claim that states a default,
#: another delivery's timeout or a truncated one shows.
_ASKED_SHARES = (0.9875, 0.975, 0.9625)


def _asked_timeouts(ctx: CaseContext) -> list[float]:
    top = min(ctx.timing.long, ctx.caps.max_visibility_timeout_seconds)
    return [top * share for share in _ASKED_SHARES]


def _claim_for(ctx: CaseContext, message: QueuedMessage, how: str, asked: float) -> Claim:
    """The claim of ``message``, which must state the timeout ``how`` asked for."""
    claim = _claim_of(ctx, message, how)
    stated = claim.visibility_timeout
    precision = ctx.caps.visibility_precision_seconds
    ctx.check(
        _is_seconds(stated) and math.isclose(stated, asked, rel_tol=1e-9, abs_tol=precision),
        f"the claim from {how} on {claim.queue_name}/{claim.msg_id} states a visibility "
        f"timeout of {stated!r} s; {asked:g} s was asked for",
    )
    return claim


def _is_seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@rule(
    "CLAIM-1",
    "Every claimed message carries a claim naming its queue and id, a new one on every "
    "delivery (receive, fetch, claimed push), and stating the seconds it holds the "
    "message: on receive and fetch the visibility timeout asked for (within the declared "
    "visibility precision); on a claimed push, whose timeout is configured and cannot be "
    "compared with anything asked, a finite value above 0 and at most "
    "max_visibility_timeout_seconds, during which the message is not delivered again "
    "(watched for the margin, or the whole of it if shorter; PUSH-7 waits it out). "
    "Acking the latest claim removes the message.",
    why="Settling names the claim; a delivery without one, or one that repeats an earlier "
    "delivery's claim, cannot be told apart from the work another consumer is doing. A "
    "handler plans by the timeout its claim states (whether work is still worth "
    "starting): one stated in milliseconds promises a thousand times the hold it has.",
    provisional=True,
)
async def every_delivery_is_a_claim(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    on_receive, on_fetch, on_receive_again = _asked_timeouts(ctx)
    (first,) = await ctx.receive_exactly(q, 1, vt=on_receive)
    claims = [_claim_for(ctx, first, "receive_messages", on_receive)]
    await ctx.service.nack_claim(q, claims[0])
    if ctx.caps.fetch_by_id:
        fetched = await ctx.eventually(
            lambda: ctx.service.fetch_message(q, sent, on_fetch),
            ctx.timing.delivery,
            f"message {sent} fetchable after nack",
        )
        claims.append(_claim_for(ctx, fetched, "fetch_message", on_fetch))
        await ctx.service.nack_claim(q, claims[-1])
    (again,) = await ctx.receive_exactly(q, 1, vt=on_receive_again)
    claims.append(_claim_for(ctx, again, "receive_messages after nack", on_receive_again))
    tokens = [c.token for c in claims]  # the claims differ anyway, in the timeouts asked
    ctx.check(
        len(set(tokens)) == len(tokens),
        f"deliveries of message {sent} repeat a claim: {claims}",
    )
    await ctx.service.ack_claim(q, claims[-1])
    await _nothing_left(ctx, q, f"message {sent}, acked by its latest claim, came back")
    if CLAIMED_PUSH.applies(ctx.caps):
        await _pushed_claim_states_its_hold(ctx)


async def _pushed_claim_states_its_hold(ctx: CaseContext) -> None:
    """A pushed claim states a push timeout a provider may have, and holds for it."""
    q = await ctx.queue()
    sub = await ctx.subscribe(q)
    pushed_from = ctx.now()  # the claim starts no earlier (maybe before the send returns)
    sent = await ctx.service.send_message(q, body(2))
    note = await ctx.next_claimed(sub)
    claim = _claim_of(ctx, note.message, "a claimed push")
    stated = claim.visibility_timeout
    longest = ctx.caps.max_visibility_timeout_seconds
    ctx.check(
        _is_seconds(stated) and math.isfinite(stated) and 0 < stated <= longest,
        f"the claim of message {sent} pushed on {q} states a visibility timeout of "
        f"{stated!r} s; expected a finite value above 0 and at most the declared "
        f"max_visibility_timeout_seconds ({longest:g} s)",
    )

    async def delivered_again() -> list[str]:
        seen = [f"received {m.msg_id}" for m in await ctx.receive(q)]
        try:
            more = await ctx.next_notification(sub, ctx.timing.step)
        except ContractViolation:
            return seen
        return [*seen, f"pushed {more!r}"]

    ends = pushed_from + stated - ctx.caps.visibility_precision_seconds
    watch = min(ends - ctx.timing.step * 2, ctx.now() + ctx.timing.margin) - ctx.now()
    await ctx.never(
        delivered_again,
        max(watch, 0.0),
        f"message {sent} on {q}, whose pushed claim states {stated:g} s, delivered again "
        "within them",
    )
    await ctx.service.ack_claim(q, claim)
    await _nothing_left(ctx, q, f"pushed message {sent}, acked by its claim, came back", sub)


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


#: CLAIM-5: stale claims sit last and first in a chunk of 10, 16, 32, 64, 100, 128, 256 or
#: 500 claims (backend batch limits a provider may settle a batch in), and last in the
#: batch, so results mapped by their place in a chunk, or a chunk settled short, show. The
#: live claims are no multiple of those sizes, so a last chunk left out shows too.
_CHUNK_EDGES = (9, 10, 15, 16, 31, 32, 63, 64, 99, 100, 127, 128, 255, 256, 499, 500)
#: CLAIM-5: claims in the batch: past every chunk size above and past 512, so a provider
#: that hands the backend one call of them all (with a cap on its arguments) shows; no
#: multiple of any of them.
_BATCH_LENGTH = 521
#: What makes each of them stale, in turn.
_RELEASED, _SETTLED, _REPEATED = "released claim", "settled claim", "repeated claim"
_SUPERSEDED = "claim superseded in the batch"
_OUTDATED = "claim superseded outside the batch"
_STALE_KINDS = (_RELEASED, _SETTLED, _SUPERSEDED, _REPEATED, _OUTDATED)


@dataclass
class _Batch:
    """The claims CLAIM-5 hands ack_claims, what each must report, and what to expect after."""

    claims: list[Claim] = field(default_factory=list)
    expected: list[bool] = field(default_factory=list)
    #: What each entry is (for failure messages).
    roles: list[str] = field(default_factory=list)
    #: Messages whose stale claim in the batch was released: they must be receivable.
    released: list[int] = field(default_factory=list)
    #: Live claims outside the batch, whose stale predecessors are in it: they must still hold.
    kept: list[Claim] = field(default_factory=list)

    @property
    def live_at(self) -> list[int]:
        return [i for i, live in enumerate(self.expected) if live]

    def add(self, claim: Claim, live: bool, role: str) -> None:
        self.claims.append(claim)
        self.expected.append(live)
        self.roles.append(f"{role}, message {claim.msg_id}")


@rule(
    "CLAIM-5",
    "ack_claims settles several claims at once and reports each, in order: True for a "
    "live claim (now acked: it settles nothing when acked again), False for a stale one "
    "(released, settled, repeated, of another queue, superseded by a newer claim in the "
    "same batch or outside it), which it leaves alone (a released message stays "
    "receivable, a newer claim still settles); an empty batch settles nothing. Checked "
    "with 521 claims, received in as many receives as max_receive_limit needs, stale ones "
    "where chunks of 10, 16, 32, 64, 100, 128, 256 and 500 end and start, and last.",
    why="Batch settlement is how consumers keep up; one stale claim in a batch must neither "
    "fail the others nor be acked on their coattails. A provider that settles a long batch "
    "in chunks (a backend's batch limit) and maps each chunk's failures by their place in "
    "the chunk reports a stale claim past the first chunk acked; one that forgets to "
    "chunk fails every batch longer than its backend's cap.",
    provisional=True,
)
async def batch_settlement(ctx: CaseContext) -> None:
    q, elsewhere = await ctx.queue(), await ctx.queue()
    batch = await _stale_and_live(ctx, q, _BATCH_LENGTH)
    await ctx.service.send_message(elsewhere, body(9))
    (foreign,) = await ctx.receive_exactly(elsewhere, 1)
    # Last: the base class sets it aside, so _ack_many sees the chunk edges where they are.
    batch.add(_claim_of(ctx, foreign, "receive_messages"), False, f"a claim on {elsewhere}")
    outcome = await ctx.accepts(
        ctx.service.ack_claims(q, batch.claims), f"ack_claims of {len(batch.claims)} claims"
    )
    mismatched = [
        (i, role, got, want)
        for i, (role, got, want) in enumerate(
            itertools.zip_longest(batch.roles, outcome, batch.expected)
        )
        if got != want
    ]
    mismatched.sort(key=lambda m: m[3] is not False)  # stale claims reported acked first
    wrong = [f"#{i} ({role}): {got}, expected {want}" for i, role, got, want in mismatched]
    ctx.check(
        not wrong,
        f"ack_claims of {len(batch.claims)} claims on {q} reported {len(outcome)} values, "
        f"{len(wrong)} wrong: " + "; ".join(wrong[:12]),
    )
    back = await ctx.receive_exactly(q, len(batch.released))
    ctx.check(
        sorted(m.msg_id for m in back) == sorted(batch.released),
        f"after the batch on {q}, received {sorted(m.msg_id for m in back)}; expected the "
        f"messages whose released claims were in it, {sorted(batch.released)}",
    )
    acked = [c for c, live in zip(batch.claims, batch.expected, strict=True) if live]
    again = await ctx.accepts(
        ctx.service.ack_claims(q, acked), f"ack_claims of the {len(acked)} claims acked again"
    )
    unsettled = [c.msg_id for c, settled in zip(acked, again, strict=False) if settled]
    ctx.check(
        again == [False] * len(acked),
        f"claims ack_claims reported acked on {q} were not: acking them again settled "
        f"messages {unsettled} (reported {len(again)} values for {len(acked)} claims)",
    )
    for claim in batch.kept:
        await _settles(ctx, q, claim, f"message {claim.msg_id}, whose older claim was batched")
    ctx.check(await ctx.service.ack_claims(q, []) == [], "ack_claims([]) did not return []")
    await ctx.check_still_held(elsewhere, foreign, "after its claim was in another queue's batch")
    await ctx.service.ack_claims(q, back)
    await _nothing_left(ctx, q, "a message acked in the batch came back")
    await ctx.service.ack_claim(elsewhere, foreign)


async def _stale_and_live(ctx: CaseContext, q: str, length: int) -> _Batch:
    """``length`` claims on ``q``: stale ones at the chunk edges below ``length`` and last,
    of each kind in turn, live ones everywhere else (a superseded claim's newer one among
    them)."""
    edges = [i for i in _CHUNK_EDGES if i < length - 1] + [length - 1]
    kinds = {edge: _STALE_KINDS[k % len(_STALE_KINDS)] for k, edge in enumerate(edges)}
    stale_kinds = [kind for kind in kinds.values() if kind != _REPEATED]
    fresh = length - len(edges) - stale_kinds.count(_SUPERSEDED)
    ids = await ctx.service.send_batch(q, [body(i) for i in range(fresh + len(stale_kinds))])
    got = await ctx.receive_exactly(q, len(ids), ctx.timing.long)
    first = {m.msg_id: _claim_of(ctx, m, "receive_messages") for m in got}
    stale = list(zip(ids[fresh:], stale_kinds, strict=True))
    renewed = sorted(i for i, kind in stale if kind in (_SUPERSEDED, _OUTDATED))
    for msg_id in renewed:
        await ctx.service.nack_claim(q, first[msg_id])
    again = await ctx.receive_exactly(q, len(renewed))
    newer = {m.msg_id: _claim_of(ctx, m, "receive_messages after nack") for m in again}
    ctx.check(sorted(newer) == renewed, f"received {sorted(newer)} again on {q}, not {renewed}")
    batch = _Batch()
    for msg_id, kind in stale:
        if kind == _RELEASED:
            await ctx.service.nack_claim(q, first[msg_id])
            batch.released.append(msg_id)
        elif kind == _SETTLED:
            await ctx.service.ack_claim(q, first[msg_id])
        elif kind == _OUTDATED:
            batch.kept.append(newer[msg_id])
    live = [first[i] for i in ids[:fresh]]
    live += [newer[i] for i, kind in stale if kind == _SUPERSEDED]
    stale_claims = iter(first[i] for i, _ in stale)
    for position in range(length):
        role = kinds.get(position)
        if role is None:
            batch.add(live.pop(0), True, "live claim")
        elif role == _REPEATED:  # the latest live claim before it, a second time
            batch.add(batch.claims[max(batch.live_at)], False, role)
        else:
            batch.add(next(stale_claims), False, role)
    return batch


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
    await _nothing_left(ctx, q, f"pushed message {sent} came back after it was acked", sub)


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
    await _nothing_left(ctx, q, f"a pushed message with id {_FOREIGN_ID} came back", sub)


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
#: CLAIM-9: ack_claims batches in each round's race, as the slice of the round's claims
#: each names and whether it is sent ahead of the single settlements (else after them):
#: two overlapping batches ahead (a batch read first, then raced by the other batch and
#: by single acks and nacks of its claims), one after, and claims no batch sent ahead
#: names, raced by single settlements first.
_BATCHES = ((0, 16, True), (8, 20, True), (16, 28, False))


@rule(
    "CLAIM-9",
    "Settlements of one claim that overlap (acks and nacks of it, and ack_claims batches "
    "naming it, some naming other claims of the same batch, sent at once) take effect "
    "once: exactly one returns (in a batch: reports True) and every other raises "
    "MessageNotFound (reports False); a message whose ack won is gone, one whose nack won "
    "comes back once.",
    why="A provider that reads a claim and then settles it, with nothing tying the write "
    "to what it read, lets overlapping settlements all win: a message acked twice, or "
    "acked and handed out again. So does one whose check reads a clock frozen before it "
    "waited for a lock (a nack committed meanwhile still looks held). A replicated "
    "backend whose compare-and-set is checked by its leader alone, before the write is "
    "replicated, does the same. A batch ack that checks its claims in one statement and "
    "deletes them in the next reports a claim acked that a nack released in between, and "
    "deletes the released message.",
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


#: What a settlement in CLAIM-9's race took: the messages whose claim it settled, and how.
_Won = list[tuple[int, str]]


async def _race_settlements(ctx: CaseContext, q: str, which: str) -> None:
    """One round of CLAIM-9 on a fresh queue; the messages whose nack won are acked."""
    await ctx.service.send_batch(q, [body(i) for i in range(_RACED)])
    got = await ctx.receive_exactly(q, _RACED, ctx.timing.long)
    claims = [_claim_of(ctx, message, "receive_messages") for message in got]
    plan = [
        (claim, ("ack", "nack")[(k + i) % 2])
        for k, claim in enumerate(claims)
        for i in range(_RACERS)
    ]

    async def settle(claim: Claim, how: str) -> _Won:
        call = ctx.service.ack_claim if how == "ack" else ctx.service.nack_claim
        try:
            await call(q, claim)
        except MessageNotFound:
            return []
        return [(claim.msg_id, how)]

    async def batch(n: int, named: list[Claim]) -> _Won:
        how = f"ack_claims #{n}"
        outcome = await ctx.service.ack_claims(q, named)
        ctx.check(
            len(outcome) == len(named) and all(isinstance(o, bool) for o in outcome),
            f"{which}: {how} of {len(named)} claims reported {outcome!r}",
        )
        return [(c.msg_id, how) for c, settled in zip(named, outcome, strict=True) if settled]

    batches = [(n, claims[a:b], ahead) for n, (a, b, ahead) in enumerate(_BATCHES, 1)]
    racers = [
        *(batch(n, named) for n, named, ahead in batches if ahead),
        *(settle(c, how) for c, how in plan),
        *(batch(n, named) for n, named, ahead in batches if not ahead),
    ]
    what = [f"ack_claims #{n}" for n, _, ahead in batches if ahead]
    what += [f"{how} of the claim on {c.msg_id}" for c, how in plan]
    what += [f"ack_claims #{n}" for n, _, ahead in batches if not ahead]
    outcomes = await asyncio.gather(*racers, return_exceptions=True)
    won: dict[int, list[str]] = {message.msg_id: [] for message in got}
    for did, outcome in zip(what, outcomes, strict=True):
        if isinstance(outcome, ContractViolation):
            raise outcome
        if isinstance(outcome, BaseException):
            ctx.fail(
                f"{which}: an overlapping {did} raised {type(outcome).__name__}: {outcome} "
                "(expected it to return or raise MessageNotFound)"
            )
        for msg_id, how in outcome:
            won[msg_id].append(how)
    wrong = {msg_id: took for msg_id, took in won.items() if len(took) != 1}
    ctx.check(
        not wrong,
        f"{which}: of the overlapping settlements of one claim ({_RACERS} acks and nacks, "
        "and the ack_claims naming it), exactly one must take effect: "
        + "; ".join(f"message {m}: {len(t)} did {t}" for m, t in list(wrong.items())[:12])
        + ("; ..." if len(wrong) > 12 else ""),
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
