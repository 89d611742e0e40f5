"""PUSH: what a subscription may touch.

Only the queues it lists; a claimed message, only while no other subscription holds it;
nothing once its service has closed; never another subscription on the same queues. The
rules in :mod:`.push` look at one subscription on one queue, where none of these can go
wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from mqcontract.errors import QueueNotFound
from mqcontract.messages import Message, MessageNotification, QueuedMessage
from mqcontract.service import MessagingService, Subscription
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._conditions import ANY_PUSH, CLAIMED_PUSH
from mqcontract_conformance.cases._kin import first_receive, kin_queues
from mqcontract_conformance.cases._payloads import body, same_payload
from mqcontract_conformance.context import CaseContext, ContractViolation, notification_id
from mqcontract_conformance.registry import rule

SHARED = Applies.flag("shared_backend")


async def _notes_until(
    ctx: CaseContext, sub: Subscription, wanted: set[tuple[str, int]]
) -> list[MessageNotification]:
    """Every notification up to the one completing ``wanted`` (catch-up signals too)."""
    notes: list[MessageNotification] = []
    missing = set(wanted)
    deadline = ctx.now() + ctx.timing.delivery
    while missing:
        try:
            note = await ctx.next_notification(sub, max(deadline - ctx.now(), ctx.timing.step))
        except ContractViolation:
            ctx.fail(
                f"not notified within {ctx.timing.delivery:g} s: {sorted(missing)}; "
                f"notified: {[_shown(n) for n in notes]}"
            )
        notes.append(note)
        msg_id = notification_id(note)
        if msg_id is not None:
            missing.discard((note.queue_name, msg_id))
    return notes


async def _notes_during(
    ctx: CaseContext, sub: Subscription, during: float
) -> list[MessageNotification]:
    """Whatever ``sub`` yields in the next ``during`` seconds."""
    notes: list[MessageNotification] = []
    end = ctx.now() + during
    while ctx.now() < end:
        try:
            notes.append(await ctx.next_notification(sub, max(end - ctx.now(), ctx.timing.step)))
        except ContractViolation:
            break
    return notes


def _shown(note: MessageNotification) -> str:
    return f"{type(note).__name__}({note.queue_name}, {notification_id(note)})"


async def _settle(ctx: CaseContext, service: MessagingService, note: MessageNotification) -> None:
    """Ack what a claimed push handed over, so nothing is left held."""
    if isinstance(note, Message) and note.claimed and note.message.claim is not None:
        with contextlib.suppress(Exception):
            await service.ack_claim(note.queue_name, note.message.claim)


@rule(
    "PUSH-15",
    "A subscription announces only the queues it lists: messages sent to queues whose "
    "names extend a listed one or that it extends, and to a longest-length name differing "
    "from a listed one only in its last character, are never announced to it nor held by "
    "it, and stay receivable from their own queues.",
    why="A pattern subscription (PSUBSCRIBE name*, a wildcard routing key) or a truncated "
    "key hands a worker another queue's work (a dead-letter queue's poison messages, "
    "another tenant's jobs) and, where push claims, hides it from that queue's consumers.",
    applies_when=ANY_PUSH,
    provisional=True,
)
async def subscription_stays_on_its_queues(ctx: CaseContext) -> None:
    kin = await kin_queues(ctx)
    listed = (kin.base, kin.longest[0])
    others = [q for q in kin.all if q not in listed]
    sub = await ctx.subscribe(*listed)
    strays = {q: await ctx.service.send_message(q, kin.tag(q)) for q in others}
    wanted = {q: await ctx.service.send_message(q, kin.tag(q)) for q in listed}
    notes = await _notes_until(ctx, sub, set(wanted.items()))
    notes += await _notes_during(ctx, sub, ctx.timing.margin)
    foreign = [_shown(n) for n in notes if n.queue_name not in listed]
    ctx.check(not foreign, f"subscribed to {list(listed)}, notified of {foreign}")
    mislabelled = [
        f"{n.queue_name}: {n.message.payload!r}"
        for n in notes
        if isinstance(n, Message)
        and not same_payload(ctx.caps.payload_fidelity, kin.tag(n.queue_name), n.message.payload)
    ]
    ctx.check(not mislabelled, f"notifications carry another queue's message: {mislabelled}")
    for note in notes:
        await _settle(ctx, ctx.service, note)
    for q in others:
        what = f"held by the subscription to {list(listed)}?"
        got = await first_receive(ctx, q, what)
        ctx.check(
            [m.msg_id for m in got] == [strays[q]],
            f"{q}: received {[m.msg_id for m in got]}, sent {strays[q]}",
        )


@dataclass(frozen=True)
class _Handed:
    """One claimed push: who got it, when, and the claim."""

    who: int
    at: float
    message: QueuedMessage


@rule(
    "PUSH-16",
    "A claimed pushed message is handed to one subscription at a time: of two services "
    "subscribed to one queue, never both are handed a message while the first claim of it "
    "holds, and together they are handed every message sent.",
    why="Competing workers subscribe rather than poll; a provider that fans a claimed push "
    "out to every subscription (a broadcast exchange, a pub/sub topic) runs each job once "
    "per worker, and VT-3 only looks at receive.",
    applies_when=CLAIMED_PUSH & SHARED,
    provisional=True,
)
async def claimed_push_goes_to_one(ctx: CaseContext) -> None:
    q = await ctx.queue()
    services = [ctx.service, await ctx.other_consumer(q)]
    subs = [await service.subscribe(q) for service in services]
    ctx.subscriptions.extend(subs)
    handed: list[_Handed] = []

    async def pump(who: int) -> None:
        async for note in subs[who]:
            if isinstance(note, Message) and note.claimed:
                handed.append(_Handed(who, ctx.now(), note.message))

    pumps = [asyncio.ensure_future(pump(who)) for who in range(len(subs))]
    try:
        ids = [await ctx.service.send_message(q, body(i)) for i in range(8)]

        async def covered() -> bool:
            return {h.message.msg_id for h in handed} >= set(ids)

        try:
            await ctx.eventually(covered, ctx.timing.delivery, "every message handed out")
        except ContractViolation:
            ctx.fail(
                f"sent {ids}, handed to the two subscriptions within "
                f"{ctx.timing.delivery:g} s: {sorted({h.message.msg_id for h in handed})}"
            )

        async def twice() -> list[int]:
            return _handed_twice(ctx, handed)

        await ctx.never(twice, ctx.timing.margin, "handed to both subscriptions at once")
    finally:
        for task in pumps:
            task.cancel()
        for task in pumps:
            with contextlib.suppress(BaseException):
                await task
    for h in handed:
        if h.message.claim is not None:
            with contextlib.suppress(Exception):
                await services[h.who].ack_claim(q, h.message.claim)


def _handed_twice(ctx: CaseContext, handed: list[_Handed]) -> list[int]:
    """Ids handed out again while an earlier claim of them still held."""
    # A hand-out is timed when the pump saw it, a little after the claim began.
    precision = ctx.caps.visibility_precision_seconds + ctx.timing.step
    last: dict[int, _Handed] = {}
    twice: list[int] = []
    for h in sorted(handed, key=lambda h: h.at):
        before = last.get(h.message.msg_id)
        held = before.message.claim.visibility_timeout if before and before.message.claim else 0.0
        if before is not None and h.at < before.at + held - precision:
            twice.append(h.message.msg_id)
        last[h.message.msg_id] = h
    return twice


#: PUSH-17's closing service subscribes to this many queues, and each is sent this many.
RELEASE_QUEUES = 2
RELEASE_EACH = 3


@rule(
    "PUSH-17",
    "Closing a service releases what its open subscriptions took but never handed out: "
    "with no subscription closed first, every message a subscription had not yielded, on "
    "every queue it lists, is receivable by another service within the delivery bound. "
    f"Checked on a subscription to {RELEASE_QUEUES} queues.",
    why="A worker process stops by closing its service; a provider whose close ends the "
    "subscriptions but keeps what they prefetched strands that work for a whole push "
    "timeout (or keeps only the first queue's), and PUSH-6 only closes a subscription.",
    applies_when=ANY_PUSH & SHARED,
    provisional=True,
)
async def service_close_releases(ctx: CaseContext) -> None:
    queues = [await ctx.queue() for _ in range(RELEASE_QUEUES)]
    closing = await ctx.other_consumer(queues[0])
    sub = await closing.subscribe_many(queues)
    ids = {
        (q, await ctx.service.send_message(q, body(i, q)))
        for i in range(RELEASE_EACH)
        for q in queues
    }
    first = await ctx.next_notification(sub)
    await closing.close()
    handed_out = (
        (first.queue_name, first.message.msg_id)
        if isinstance(first, Message) and first.claimed
        else None
    )
    expected = ids - {handed_out}
    got: list[QueuedMessage] = []

    async def released() -> bool:
        for q in queues:
            got.extend(await ctx.receive(q))
        return {(m.queue_name, m.msg_id) for m in got} >= expected

    try:
        await ctx.eventually(released, ctx.timing.delivery, "released")
    except ContractViolation:
        ctx.fail(
            f"after closing the service whose subscription to {queues} had yielded only "
            f"{_shown(first)}, receivable within {ctx.timing.delivery:g} s: "
            f"{sorted((m.queue_name, m.msg_id) for m in got)}, expected {sorted(expected)}"
        )
    for m in got:
        await ctx.service.ack_claim(m.queue_name, m)


@rule(
    "PUSH-18",
    "A subscription outlives the deletion of a queue it lists: once the queue is deleted "
    "and created again (by the subscription's own service, and also by another service "
    "where services share a backend), a message "
    "sent to it is announced to the open subscription (or a catch-up signal for the queue "
    "is, and the message is receivable) within the recovery bound (three times the "
    "slack), and so is one sent then to each other queue it lists, unless the "
    "subscription ended by raising QueueNotFound naming the queue; it never goes silent. "
    "Checked on a subscription to the queue alone and on one listing it after another.",
    why="A broker cancels the consumers of a deleted queue; a provider that does not "
    "notice keeps an open subscription that never yields again, and a push-only worker "
    "waits forever while the re-created queue fills; one that files a subscription's "
    "bookkeeping under its first queue loses the others; one that ends its own "
    "subscriptions to a queue it deletes leaves its own worker waiting on nothing.",
    applies_when=ANY_PUSH,
    provisional=True,
)
async def subscription_outlives_its_queue(ctx: CaseContext) -> None:
    for by_other in (False, True) if ctx.caps.shared_backend else (False,):
        q = await ctx.queue()
        await _outlives_round(ctx, [q], q, by_other)
        kept, deleted = await ctx.queue(), await ctx.queue()
        await _outlives_round(ctx, [kept, deleted], deleted, by_other)


async def _outlives_round(ctx: CaseContext, listed: list[str], q: str, by_other: bool) -> None:
    """Subscribe to ``listed``, delete and re-create ``q`` (through another service, or
    the subscription's own), and wait until a message sent then to each listed queue is
    announced (or the subscription ends naming ``q``)."""
    sub = await ctx.subscribe(*listed)
    before = {p: await ctx.service.send_message(p, body(0, f"before-{p}")) for p in listed}
    for note in await _notes_until(ctx, sub, set(before.items())):
        await _settle(ctx, ctx.service, note)
    deleter = await ctx.other_consumer(q) if by_other else ctx.service
    await deleter.delete_queue(q)
    await deleter.create_queue(q)
    payloads = {p: body(1, f"after-{p}") for p in listed}
    after = {p: await deleter.send_message(p, payloads[p]) for p in listed}
    whose = "another service" if by_other else "the subscription's own service"
    where = f"subscription to {listed}, {q} deleted and created again by {whose}"
    bound = ctx.timing.slack * 3
    deadline = ctx.now() + bound
    while after:
        try:
            note = await ctx.next_notification(sub, max(deadline - ctx.now(), ctx.timing.step))
        except QueueNotFound as exc:
            ctx.check(exc.queue == q, f"{where}: it ended with QueueNotFound naming {exc.queue!r}")
            return
        except ContractViolation:
            ctx.fail(
                f"{where}: messages {sorted(after.items())} sent then were not announced to "
                f"the open subscription within {bound:g} s, which neither ended nor raised"
            )
        except StopAsyncIteration:
            ctx.fail(f"{where}: the subscription ended silently")
        await _settle(ctx, ctx.service, note)
        p = note.queue_name
        if p not in after:
            continue
        if isinstance(note, Message):  # ids may restart: the payload tells it is the new one
            if note.message.msg_id == after[p] and same_payload(
                ctx.caps.payload_fidelity, payloads[p], note.message.payload
            ):
                del after[p]
        elif note.msg_id in (after[p], None) and await _announced_is_there(ctx, p, after[p]):
            del after[p]  # a signal (a catch-up after the re-creation included) and the message


async def _announced_is_there(ctx: CaseContext, q: str, msg_id: int) -> bool:
    """Whether the message a signal stands for is receivable (taken, then acked)."""
    got = await ctx.receive(q)
    for m in got:
        await ctx.service.ack_claim(q, m)
    return msg_id in {m.msg_id for m in got}


@dataclass(frozen=True)
class _Siblings:
    """Two subscriptions on the same queues: the queues each lists (indexes into the
    round's queues), whether the second is another service's, and whether the second is
    ended by closing that service (then only the second is closed: the first's service
    sends)."""

    what: str
    first: tuple[int, ...]
    second: tuple[int, ...]
    across: bool = False
    service_closed: bool = False


#: PUSH-19's pairs; each is checked twice, closing the first, then the second (only the
#: second where its service is closed).
SIBLINGS = (
    _Siblings("one service, one queue", (0,), (0,)),
    _Siblings("one service, two queues listed in opposite orders", (0, 1), (1, 0)),
    _Siblings("two services, one queue", (0,), (0,), across=True),
    _Siblings(
        "two services, two queues listed in opposite orders, the second service closed",
        (0, 1),
        (1, 0),
        across=True,
        service_closed=True,
    ),
)
#: Messages sent to each queue of the subscription left open.
SIBLING_SENDS = 3


@rule(
    "PUSH-19",
    "Closing a subscription, or another service, leaves every other subscription open: of "
    "two subscriptions to the same queues (one service's, listing them in the same or "
    "another order, and two services' where services share a backend), whichever is "
    "closed, and when the second's service is closed, the other is still notified of "
    "every message sent to its queues afterwards, within the delivery bound.",
    why="A provider that finds a subscription's consumer by its queue names (a consumer "
    "tag or registry entry per name or per list of names, one LISTEN per queue dropped by "
    "the first to leave, a durable consumer named after the queue) tears down the wrong "
    "one: the worker that stays silently stops receiving, and PUSH-6 closes the only "
    "subscription there is; a service whose close ends the subscriptions it finds on its "
    "queues ends other services' too.",
    applies_when=ANY_PUSH,
    provisional=True,
)
async def closing_spares_siblings(ctx: CaseContext) -> None:
    for pair in SIBLINGS:
        if pair.across and not ctx.caps.shared_backend:
            continue  # each service has a backend of its own
        for closed in (1,) if pair.service_closed else (0, 1):
            queues = [await ctx.queue() for _ in set(pair.first) | set(pair.second)]
            second = await ctx.other_consumer(queues[0]) if pair.across else ctx.service
            await _sibling_round(ctx, pair, closed, queues, (ctx.service, second))


async def _sibling_round(
    ctx: CaseContext,
    pair: _Siblings,
    closed: int,
    queues: list[str],
    owners: tuple[MessagingService, MessagingService],
) -> None:
    """Open both subscriptions, close one, and check the other gets every later send."""
    subs = [
        await owner.subscribe_many([queues[i] for i in listed])
        for owner, listed in zip(owners, (pair.first, pair.second), strict=True)
    ]
    ctx.subscriptions.extend(subs)
    if pair.service_closed:
        await owners[closed].close()
    else:
        await subs[closed].aclose()
    survivor, owner = subs[1 - closed], owners[1 - closed]
    sent = {
        (q, await ctx.service.send_message(q, body(i, q)))
        for q in survivor.queues
        for i in range(SIBLING_SENDS)
    }
    notes, ended = await _notes_within(ctx, survivor, sent, owner)
    seen = {(n.queue_name, notification_id(n)) for n in notes}
    missing = sorted(sent - seen)
    which = ("first", "second")
    where = (
        f"{pair.what}: subscriptions to {[queues[i] for i in pair.first]} and "
        f"{[queues[i] for i in pair.second]}, the {which[closed]}"
        + ("'s service closed" if pair.service_closed else " closed")
    )
    ctx.check(not ended, f"{where}: the {which[1 - closed]} ended too")
    ctx.check(
        not missing,
        f"{where}: the {which[1 - closed]} was not notified within "
        f"{ctx.timing.delivery:g} s of {missing} sent afterwards (notified of "
        f"{[_shown(n) for n in notes]})",
    )


async def _notes_within(
    ctx: CaseContext, sub: Subscription, wanted: set[tuple[str, int]], owner: MessagingService
) -> tuple[list[MessageNotification], bool]:
    """What ``sub`` yields until ``wanted`` were all announced or the delivery bound
    passed, and whether it ended meanwhile; each is settled through ``owner`` as it comes
    (a claimed push may stop at the configured prefetch while its claims are held)."""
    notes: list[MessageNotification] = []
    missing = set(wanted)
    deadline = ctx.now() + ctx.timing.delivery
    while missing and ctx.now() < deadline:
        try:
            note = await ctx.next_notification(sub, max(deadline - ctx.now(), ctx.timing.step))
        except ContractViolation:
            break
        except StopAsyncIteration:
            return notes, True
        notes.append(note)
        await _settle(ctx, owner, note)
        msg_id = notification_id(note)
        if msg_id is not None:
            missing.discard((note.queue_name, msg_id))
    return notes, False


@rule(
    "PUSH-20",
    "A subscription outlives the loss of its provider's push connection: messages sent "
    "while the connection is down or coming back are announced to the open subscription "
    "once it is back (each, or a catch-up signal for their queue, and they are "
    "receivable), within the recovery bound (three times the slack), with no poller "
    "running; and so is a message sent after.",
    why="A notification sent while a listener is disconnected is gone for good (PostgreSQL "
    "NOTIFY, Redis pub/sub): a provider must say so on reconnect. The event system's "
    "fallback poller hides one that does not, but a worker that only subscribes waits "
    "for ever on messages that sit in its queue.",
    applies_when=ANY_PUSH,
    hooks=("kill_listener",),
    provisional=True,
)
async def subscription_outlives_lost_push(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sub = await ctx.subscribe(q)
    first = await ctx.service.send_message(q, body(0, "before"))
    for note in await _notes_until(ctx, sub, {(q, first)}):
        await _settle(ctx, ctx.service, note)
    await ctx.harness.kill_listener(ctx.service)
    gap = await ctx.service.send_batch(q, [body(i, "gap") for i in range(1, 4)])
    await _all_announced(ctx, sub, q, set(gap), "sent while the push connection was down")
    later = await ctx.service.send_message(q, body(9, "after"))
    await _all_announced(ctx, sub, q, {later}, "sent after it came back")


async def _all_announced(
    ctx: CaseContext, sub: Subscription, q: str, ids: set[int], what: str
) -> None:
    """Wait until each of ``ids`` was announced: pushed (a claimed push is acked), named
    by a signal and receivable, or receivable at a catch-up signal for ``q``. A signal
    naming one message stands for that one only, even where a receive at it took others
    (taken and acked: their own signals find them taken)."""
    missing = set(ids)
    taken: set[int] = set()
    bound = ctx.timing.slack * 3
    deadline = ctx.now() + bound
    while missing:
        try:
            note = await ctx.next_notification(sub, max(deadline - ctx.now(), ctx.timing.step))
        except ContractViolation:
            ctx.fail(
                f"messages {sorted(missing)} {what} were neither announced nor signalled "
                f"(a catch-up for {q!r}) to the open subscription within {bound:g} s"
            )
        except StopAsyncIteration:
            ctx.fail(f"the subscription ended after the push connection was lost ({what})")
        await _settle(ctx, ctx.service, note)
        if isinstance(note, Message):
            missing.discard(note.message.msg_id)
            continue
        msg_id = notification_id(note)
        if msg_id is None or msg_id not in taken:
            got = await ctx.receive(q)
            for m in got:
                await ctx.service.ack_claim(q, m)
            taken |= {m.msg_id for m in got}
        if msg_id is None:
            missing -= taken  # a catch-up covers whatever was there when it came
        elif msg_id in taken:
            missing.discard(msg_id)
