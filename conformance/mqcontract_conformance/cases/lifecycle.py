"""LIFE: queue lifecycle."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable

from mqcontract.capabilities import PushKind
from mqcontract.errors import (
    InvalidQueueName,
    MessagingError,
    QueueNotFound,
    UnsupportedOperation,
)
from mqcontract.messages import Claim, Message, QueuedMessage
from mqcontract.service import MessagingService
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._kin import first_receive, kin_queues
from mqcontract_conformance.cases._payloads import INVALID_NAMES, body, same_payload
from mqcontract_conformance.context import CaseContext, ContractViolation, notification_id
from mqcontract_conformance.registry import rule


@rule(
    "LIFE-1",
    "create_queue is idempotent: creating an existing queue keeps it and its messages.",
    why="Services create their queues at start-up; a restart must not wipe pending work.",
)
async def create_is_idempotent(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    await ctx.accepts(ctx.service.create_queue(q), f"a second create of {q}")
    ctx.check(await ctx.service.queue_exists(q), f"{q} missing after a second create")
    got = await ctx.receive(q)
    ctx.check([m.msg_id for m in got] == [sent], f"second create lost message {sent}: got {got}")


@rule(
    "LIFE-2",
    "delete_queue removes the queue and every message in it, whatever its state "
    "(visible, delayed, claimed by receive or fetch, nacked): a queue re-created under "
    "the name is empty and stays empty past every short delay and claim timeout of the "
    "messages deleted (past the long ones too where the clock is virtual), and settling "
    "(ack or nack, by claim or by id) a claim made before "
    "the deletion changes nothing in it.",
    why="A deleted queue must not resurrect old work under the same name: a scheduler, "
    "an in-flight table or a retry area keyed by the queue's name, not purged with it, "
    "fires its rows into the queue created again; ids restart there, so a settlement "
    "of an old claim that is matched by id settles a new message.",
)
async def delete_drops_messages(ctx: CaseContext) -> None:
    svc = ctx.service
    q = await ctx.queue()
    # Where the clock is virtual, a long delay and claim are as cheap as short ones.
    far = min(ctx.timing.long, ctx.caps.max_delay_seconds, ctx.caps.max_visibility_timeout_seconds)
    horizons = (ctx.timing.unit, far) if ctx.clock is not None else (ctx.timing.unit,)
    old = await svc.send_batch(q, [body(i, "old") for i in range(6)])
    held: list[QueuedMessage] = []

    async def one(vt: float) -> QueuedMessage:
        got = await ctx.eventually(
            lambda: ctx.receive(q, 1, vt), ctx.timing.delivery, f"one of the messages on {q}"
        )
        ctx.check(len(got) == 1, f"asked {q} for 1 message, received {len(got)}")
        return got[0]

    for vt in (*horizons, ctx.timing.long):
        held.append(await one(vt))
    nacked = await one(ctx.timing.long)
    await svc.nack_claim(q, nacked)
    if ctx.caps.fetch_by_id:
        fetched = await svc.fetch_message(q, old[-1], ctx.timing.unit)
        held += [fetched] if fetched is not None else []
    if ctx.caps.delay:
        for delay in horizons:
            await svc.send_message_with_delay(q, body(len(old), "old delayed"), delay)
    quiet_until = ctx.now() + max(horizons) + ctx.caps.visibility_precision_seconds
    await svc.delete_queue(q)
    ctx.check(not await svc.queue_exists(q), f"{q} still exists after delete")
    await svc.create_queue(q)
    # As many new messages as old ones: restarted ids meet the old claims' ids.
    payloads = [body(i, "new") for i in range(len(old) + len(horizons))]
    new = dict(zip(await svc.send_batch(q, payloads), payloads, strict=True))
    await _settle_old(ctx, q, held, by_id=True)
    try:
        got = await ctx.receive_exactly(q, len(new))
    except ContractViolation as exc:
        ctx.fail(f"re-created {q}, old claims settled while its new messages waited: {exc}")
    wrong = [(m.msg_id, m.payload) for m in got if new.get(m.msg_id) != m.payload]
    ctx.check(
        not wrong,
        f"re-created {q}: sent {sorted(new.items())} to it, received {wrong} among "
        f"{[m.msg_id for m in got]} (old messages: {old})",
    )
    # By id would rightly settle the new claims this service now holds under those ids.
    await _settle_old(ctx, q, held, by_id=False)
    settled = await ctx.accepts(svc.ack_claims(q, got), f"ack_claims of the new messages on {q}")
    ctx.check(
        all(settled),
        f"re-created {q}: acking the new messages {[m.msg_id for m in got]} gave {settled}: "
        "a settlement of a claim made before the deletion took them",
    )

    async def back() -> list[tuple[int, bytes]]:
        return [(m.msg_id, m.payload) for m in await ctx.receive(q)]

    what = (
        f"re-created {q}, empty after its new messages were acked, received (past the "
        f"delays and claim timeouts {list(horizons)} s of the deleted messages)"
    )
    if ctx.clock is None:
        await ctx.never(back, max(quiet_until - ctx.now(), ctx.timing.step), what)
        return
    for horizon in horizons:  # one look just past each: what fires stays receivable
        await ctx.clock.advance(max(quiet_until - max(horizons) + horizon - ctx.now(), 0.0))
        await ctx.clock.advance(ctx.timing.step)
        seen = await back()
        ctx.check(not seen, f"{what}: {seen}")


async def _settle_old(
    ctx: CaseContext, q: str, claims: list[QueuedMessage], *, by_id: bool
) -> None:
    """Settle every claim made before ``q`` was deleted, by claim and (``by_id``: while
    this service holds no new claim on ``q``) by id; each may raise (it is stale), and
    the caller checks that none changed the new messages."""
    svc = ctx.service
    calls: list[Callable[[], Awaitable[object]]] = [lambda: svc.ack_claims(q, claims)]
    for i, c in enumerate(claims):
        calls += (
            [lambda c=c: svc.ack_claim(q, c), lambda c=c: svc.nack_message(q, c.msg_id)]
            if i % 2 == 0
            else [lambda c=c: svc.nack_claim(q, c), lambda c=c: svc.ack_message(q, c.msg_id)]
        )[: 2 if by_id else 1]
    for call in calls:
        with contextlib.suppress(MessagingError):
            await call()


@rule(
    "LIFE-3",
    "delete_queue of a queue that does not exist is a no-op (no error).",
    why="Decided: deletion is idempotent like creation, so cleanup after a crash is safe "
    "(the original PGMQ returned false, the others differed).",
)
async def delete_missing_is_noop(ctx: CaseContext) -> None:
    q = ctx.queue_name()
    await ctx.accepts(ctx.service.delete_queue(q), f"delete of missing {q}")
    await ctx.accepts(ctx.service.delete_queue(q), f"second delete of missing {q}")
    ctx.check(not await ctx.service.queue_exists(q), f"deleting {q} created it")


@rule(
    "LIFE-4",
    "queue_exists is false before create, true after, false after delete.",
    why="Callers use it to decide whether to provision.",
)
async def exists_tracks_lifecycle(ctx: CaseContext) -> None:
    q = ctx.queue_name()
    ctx.check(not await ctx.service.queue_exists(q), f"{q} exists before create")
    await ctx.service.create_queue(q)
    ctx.check(await ctx.service.queue_exists(q), f"{q} missing after create")
    await ctx.service.delete_queue(q)
    ctx.check(not await ctx.service.queue_exists(q), f"{q} exists after delete")


@rule(
    "LIFE-5",
    "list_queues returns its names sorted, and includes every created queue and no deleted "
    "or never-created one: a queue deleted while one of its messages is held (claimed), "
    "one deleted with messages waiting, and one deleted while a subscription to it is "
    "still open (where push is supported) included: it agrees with queue_exists.",
    why="Operators and the fallback poller enumerate queues; a list built from what is "
    "bound, subscribed or still draining (a broker's bindings, a registry of listeners, "
    "storage kept until in-flight claims end) keeps showing a deleted queue for as long "
    "as anybody listens to it or holds its messages. The order is promised "
    "(MessagingService.list_queues: sorted) and a hash scan's order is not it.",
    applies_when=Applies.flag("list_queues"),
)
async def list_tracks_lifecycle(ctx: CaseContext) -> None:
    # Created neither in sorted order nor in its reverse, so an unsorted list shows.
    stem = ctx.queue_name()
    kept = [f"{stem}_{c}" for c in "bdac"]
    ctx.queues.extend(kept)
    for q in kept:
        await ctx.service.create_queue(q)
    dropped, held, waiting = [await ctx.queue() for _ in range(3)]
    never = ctx.queue_name()
    await ctx.service.send_batch(held, [body(1), body(2)])
    await ctx.eventually(
        lambda: ctx.service.receive_messages(held, 1, ctx.timing.long),
        ctx.timing.delivery,
        f"a message of {held} received",
    )
    await ctx.service.send_batch(waiting, [body(1), body(2)])
    deleted = {
        dropped: "deleted empty",
        held: "deleted while one of its messages was held",
        waiting: "deleted with messages waiting",
    }
    for q in deleted:
        await ctx.service.delete_queue(q)
    listed = await _sorted_list(ctx)
    for q in kept:
        ctx.check(q in listed, f"{q} not listed: {listed}")
    for q, how in deleted.items():
        exists = await ctx.service.queue_exists(q)
        ctx.check(
            not exists and q not in listed,
            f"{q}, {how}: queue_exists says {exists}, list_queues "
            f"{'includes' if q in listed else 'leaves out'} it",
        )
    ctx.check(never not in listed, f"never-created {never} listed")
    if ctx.caps.push is PushKind.NONE:
        return
    watched = await ctx.queue()
    await ctx.subscribe(watched)
    await ctx.subscribe(kept[0], watched)
    await ctx.service.delete_queue(watched)
    listed = await _sorted_list(ctx)
    for q, created in ((kept[0], True), (watched, False)):
        exists = await ctx.service.queue_exists(q)
        ctx.check(
            exists is created and (q in listed) is created,
            f"{q}, {'created' if created else 'deleted'} while subscriptions to it are "
            f"open: queue_exists says {exists}, list_queues "
            f"{'includes' if q in listed else 'leaves out'} it",
        )


async def _sorted_list(ctx: CaseContext) -> list[str]:
    """list_queues, which must be sorted."""
    listed = await ctx.service.list_queues()
    wrong = [(a, b) for a, b in itertools.pairwise(listed) if a >= b]
    ctx.check(
        not wrong,
        f"list_queues is not sorted (strictly, without repeats): {wrong[:5]} are out of order "
        f"among {len(listed)} names",
    )
    return listed


@rule(
    "LIFE-6",
    "Every message operation on a missing queue raises QueueNotFound naming it, "
    "and does not create the queue: an empty batch (send_batch, ack_claims) included, "
    "and ack_claims of claims that are stale or of another queue.",
    why="The original silently dropped RabbitMQ sends to missing queues and raised raw "
    "database errors on PGMQ; a typo must be loud and identical everywhere.",
)
async def missing_queue_raises(ctx: CaseContext) -> None:
    q = ctx.queue_name()
    svc = ctx.service
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "send_message": lambda: svc.send_message(q, body(1)),
        "send_batch": lambda: svc.send_batch(q, [body(1)]),
        "receive_messages": lambda: svc.receive_messages(q, 1, ctx.timing.long),
        "ack_message": lambda: svc.ack_message(q, 1),
        "nack_message": lambda: svc.nack_message(q, 1),
        "ack_claim": lambda: svc.ack_claim(q, Claim(q, 1, 1, ctx.timing.long)),
        "nack_claim": lambda: svc.nack_claim(q, Claim(q, 1, 1, ctx.timing.long)),
        "ack_claims": lambda: svc.ack_claims(q, [Claim(q, 1, 1, ctx.timing.long)]),
        "send_batch of none": lambda: svc.send_batch(q, []),
        "ack_claims of none": lambda: svc.ack_claims(q, []),
        "ack_claims of another queue's claim": lambda: svc.ack_claims(
            q, [Claim(f"{q}_other", 1, 1, ctx.timing.long)]
        ),
    }
    if ctx.caps.delay:
        calls["send_message_with_delay"] = lambda: svc.send_message_with_delay(q, body(1), 1.0)
    if ctx.caps.fetch_by_id:
        calls["fetch_message"] = lambda: svc.fetch_message(q, 1, ctx.timing.long)
    if svc.capabilities.push.value != "none":
        calls["subscribe"] = lambda: svc.subscribe(q)
    for name, call in calls.items():
        exc = await ctx.raises(QueueNotFound, call(), f"{name} on missing {q}")
        ctx.check(exc.queue == q, f"{name}: QueueNotFound names {exc.queue!r}, not {q!r}")
    ctx.check(not await svc.queue_exists(q), f"an operation on missing {q} created it")


@rule(
    "LIFE-7",
    "create_queue rejects invalid names (empty, upper case, punctuation, quotes, "
    "semicolons, unicode, over 47 characters) with InvalidQueueName and creates nothing.",
    why="Names reach SQL identifiers and AMQP; rejecting them up front closes injection "
    "and keeps every provider's accepted names identical.",
)
async def create_rejects_invalid_names(ctx: CaseContext) -> None:
    for name in INVALID_NAMES:
        await ctx.raises(InvalidQueueName, ctx.service.create_queue(name), f"create {name!r}")
    if ctx.caps.list_queues:
        # Only the names themselves are checked: other workers create queues meanwhile.
        listed = set(await ctx.service.list_queues())
        created = sorted(listed & set(INVALID_NAMES))
        ctx.check(not created, f"invalid names created queues: {created}")


@rule(
    "LIFE-8",
    "Every operation given an invalid queue name raises InvalidQueueName before "
    "touching any queue.",
    why="Validation must not depend on which operation is called first.",
)
async def operations_reject_invalid_names(ctx: CaseContext) -> None:
    svc = ctx.service

    def calls_for(name: str) -> dict[str, Callable[[], Awaitable[object]]]:
        return {
            "queue_exists": lambda: svc.queue_exists(name),
            "delete_queue": lambda: svc.delete_queue(name),
            "send_message": lambda: svc.send_message(name, body(1)),
            "receive_messages": lambda: svc.receive_messages(name, 1, 1.0),
            "ack_message": lambda: svc.ack_message(name, 1),
            "nack_message": lambda: svc.nack_message(name, 1),
        }

    for name in ("Bad;Name", "a" * 48, "x' OR '1'='1"):
        for op, call in calls_for(name).items():
            await ctx.raises(InvalidQueueName, call(), f"{op}({name!r})")


#: Suffixes making names that differ only in runs of underscores, or by one trailing
#: or missing one: a backend key that collapses, strips or drops underscores merges them.
#: (Queue names are lower case only, so case cannot make two names alike.)
_UNDERSCORED = ("_a_b", "_a__b", "__a_b", "_a___b", "_a_b_", "_a_b__", "_ab")


async def _underscored_queues(ctx: CaseContext) -> tuple[str, ...]:
    """Create queues whose names differ only in underscores (registered for cleanup)."""
    stem = ctx.queue_name()
    names = tuple(stem + suffix for suffix in _UNDERSCORED)
    ctx.queues.extend(names)
    for name in names:
        await ctx.service.create_queue(name)
    return names


@rule(
    "LIFE-9",
    "Queues are isolated: a message sent to one queue is never received from another, "
    "nor pushed to a subscription to another, whatever the path (send, batch, delayed "
    "send, redelivery after a nack or after its claim timed out), "
    "including queues whose names extend one another (q, q_dlq), two names of the "
    "longest valid length that differ only in their last character, and names that "
    "differ only in runs of underscores or a trailing one (q_a_b, q_a__b, q__a_b, "
    "q_a___b, q_a_b_, q_a_b__, q_ab).",
    why="Namespaces route work to different workers; a provider that matches names by "
    "prefix, keys its storage (or the scheduler, retry queue or notification channel it "
    "derives from the name) on a truncated name, or canonicalizes names into a key (runs "
    "of underscores collapsed, separators stripped) merges queues whose names are close, "
    "which one short name at a time, on one path, never shows.",
)
async def queues_are_isolated(ctx: CaseContext) -> None:
    svc = ctx.service
    kin = await kin_queues(ctx)
    names = (*kin.all, *await _underscored_queues(ctx))
    delay = ctx.timing.unit / 6

    def tag(q: str, path: str) -> bytes:
        return kin.tag(q) + f" by {path}".encode()

    paths = ["send", "batch", "batch again"]
    paths += ["delayed send"] if ctx.caps.delay else []
    for q in names:
        await svc.send_message(q, tag(q, "send"))
        await svc.send_batch(q, [tag(q, "batch"), tag(q, "batch again")])
        if ctx.caps.delay:
            await svc.send_message_with_delay(q, tag(q, "delayed send"), delay)
    mine = {q: {tag(q, p) for p in paths} for q in names}
    # One claim nacked, then all claimed to time out (the retry and expiry paths: where
    # they redeliver, only in their own queue; that they do is for the ACK and VT rules),
    # then the delayed ones, each in its own queue only, and nothing left over.
    for q in names:
        nacked = await _collect(ctx, q, set(), mine[q], vt=ctx.timing.long, limit=1)
        for m in nacked:
            await svc.nack_claim(q, m)
        rest = mine[q] - {tag(q, "delayed send"), *(m.payload for m in nacked)}
        await _collect(ctx, q, rest, mine[q], vt=delay)
    lapsed = ctx.now() + delay + ctx.caps.visibility_precision_seconds
    for q in names:
        want = {tag(q, "delayed send")} if ctx.caps.delay else set()
        await _collect(ctx, q, want, mine[q], vt=ctx.timing.long)
    await ctx.wait_past(lapsed)
    for q in names:
        await _collect(ctx, q, set(), mine[q], vt=ctx.timing.long)
    if ctx.caps.push is PushKind.NONE:
        return
    # Each subscription sees only its queue: the second look at the first one shows
    # what the other's send reached it with.
    pairs = ((kin.longest[0], kin.longest[1]), (kin.base, kin.around[0]))
    subs = {q: await ctx.subscribe(q) for pair in pairs for q in pair}
    for a, b in pairs:
        for q in (a, b, a):
            sent = await svc.send_message(q, tag(q, "pushed send"))
            note = await ctx.next_notification(subs[q])
            msg_id = notification_id(note)
            pushed = note.message.payload if isinstance(note, Message) else None
            ctx.check(
                note.queue_name == q
                and msg_id in (sent, None)
                and (pushed is None or pushed == tag(q, "pushed send")),
                f"the subscription to {q} was pushed {note.queue_name}'s message {msg_id} "
                f"({pushed!r}), not the message {sent} sent to {q}",
            )
            if isinstance(note, Message) and note.claimed:
                await svc.ack_claim(q, note.message)


async def _collect(
    ctx: CaseContext,
    q: str,
    expected: set[bytes],
    mine: set[bytes],
    *,
    vt: float,
    limit: int = 10,
) -> list[QueuedMessage]:
    """Receive from ``q`` until every payload of ``expected`` came (only one receive
    when nothing is expected); fail on a payload not in ``mine`` (those sent to ``q``).
    Returns what was received."""
    got: list[QueuedMessage] = []

    async def probe() -> bool:
        batch = await ctx.receive(q, limit, vt)
        got.extend(batch)
        strays = [m.payload.decode(errors="replace") for m in batch if m.payload not in mine]
        ctx.check(not strays, f"received from {q} what was {strays}")
        return expected <= {m.payload for m in got}

    if not expected:
        await probe()
        return got
    bound = ctx.timing.delivery + ctx.caps.visibility_precision_seconds
    try:
        await ctx.eventually(probe, bound, q)
    except ContractViolation as exc:
        if "not observed" not in str(exc):
            raise
        missing = sorted(p.decode() for p in expected - {m.payload for m in got})
        ctx.fail(f"not received from {q} within {bound:g} s: {missing}")
    return got


@rule(
    "LIFE-10",
    "A valid name of exactly 47 characters works for every operation.",
    why="The limit is inclusive; providers that derive longer identifiers (PGMQ tables, "
    "triggers, wait queues) must still fit.",
)
async def longest_name_works(ctx: CaseContext) -> None:
    base = ctx.queue_name()
    q = (base + "_" * 47)[:47]
    ctx.queues.append(q)
    svc = ctx.service
    await ctx.accepts(svc.create_queue(q), "create_queue of a 47-character name")
    sent = await ctx.accepts(svc.send_message(q, body(1)), "send_message to it")
    got = await ctx.accepts(ctx.receive(q), "receive_messages from it")
    ctx.check([m.msg_id for m in got] == [sent], f"47-character queue lost {sent}")
    await ctx.accepts(svc.ack_message(q, sent), "ack_message on it")
    await ctx.accepts(svc.delete_queue(q), "delete_queue of it")
    ctx.check(not await ctx.service.queue_exists(q), "47-character queue survived delete")


@rule(
    "LIFE-11",
    "A provider that does not claim list_queues raises UnsupportedOperation from it.",
    why="As for delay, fetch and push (DLY-6, FETCH-2, PUSH-10): an unclaimed capability "
    "must be explicit, not an answer nobody checked.",
    applies_when=~Applies.flag("list_queues"),
    provisional=True,
)
async def unclaimed_list_is_explicit(ctx: CaseContext) -> None:
    await ctx.queue()
    await ctx.raises(UnsupportedOperation, ctx.service.list_queues(), "list_queues")


@rule(
    "LIFE-12",
    "Two services opened the same way share the backend: a queue created through one "
    "exists for the other, and a message sent through the second is received through "
    "the first.",
    why="Consumers in other processes (or on other connections) compete for one queue's "
    "work; a provider whose services each see a store of their own shares nothing, and "
    "the rules with a second consumer (CLAIM-3) could only be skipped for it.",
    applies_when=Applies.flag("shared_backend"),
    provisional=True,
)
async def services_share_the_backend(ctx: CaseContext) -> None:
    q = await ctx.queue()
    other = await ctx.harness.open(ctx.clock)
    ctx.others.append(other)
    ctx.check(
        await other.queue_exists(q),
        f"queue {q}, created through one service, does not exist for a second service "
        "opened the same way: the services do not share a backend",
    )
    sent = await other.send_message(q, body(1))
    (got,) = await ctx.receive_exactly(q, 1)
    ctx.check(got.msg_id == sent, f"sent {sent} through the second service, received {got}")


@rule(
    "LIFE-13",
    "delete_queue removes only the queue it names: queues whose names extend it, or that "
    "it extends, a longest-length name differing from another only in its last "
    "character, and names differing from it only in runs of underscores (q_a__b deleted: "
    "q_a_b, q__a_b, q_a_b_ and the like) keep existing with their messages.",
    why="A delete by pattern (a Redis SCAN MATCH name*, a LIKE 'name%'), by a truncated "
    "key or by a canonical key (underscores collapsed) takes the dead-letter queue, or "
    "another team's queue, with it; LIFE-2 only looks at the queue deleted.",
    provisional=True,
)
async def delete_spares_kin(ctx: CaseContext) -> None:
    kin = await kin_queues(ctx)
    underscored = await _underscored_queues(ctx)
    names = (*kin.all, *underscored)
    sent = {q: await ctx.service.send_message(q, kin.tag(q)) for q in names}
    deleted = (kin.base, kin.longest[0], underscored[1])
    for q in deleted:
        await ctx.service.delete_queue(q)
    gone = [q for q in deleted if await ctx.service.queue_exists(q)]
    ctx.check(not gone, f"still exist after delete_queue: {gone}")
    spared = [q for q in names if q not in deleted]
    missing = [q for q in spared if not await ctx.service.queue_exists(q)]
    ctx.check(not missing, f"deleting {list(deleted)} also deleted {missing}")
    for q in spared:
        got = await first_receive(ctx, q, f"its message went with {list(deleted)}")
        ctx.check(
            [(m.msg_id, m.payload) for m in got] == [(sent[q], kin.tag(q))],
            f"{q} after deleting {list(deleted)}: received "
            f"{[(m.msg_id, m.payload) for m in got]}, sent {sent[q]} ({kin.tag(q)!r})",
        )


@rule(
    "LIFE-14",
    "A queue's deletion and re-creation through another service hold at once for this "
    "one: once the other deleted it, this service's queue_exists says False, its send "
    "and receive raise QueueNotFound naming it, and list_queues (where claimed) leaves it "
    "out; once the other created it again, queue_exists says True, it is listed, a "
    "message this service sends is received through the other, and this service "
    "receives the other's send, never a message from before the deletion.",
    why="Another process deletes and re-creates queues (a redeploy, an operator's purge); "
    "a provider that caches queue handles, existence or the list per service, and "
    "forgets them only on its own delete, keeps sending into the deleted queue: send "
    "returns an id and the message is gone.",
    applies_when=Applies.flag("shared_backend"),
    provisional=True,
)
async def deletion_seen_by_every_service(ctx: CaseContext) -> None:
    svc = ctx.service
    q = await ctx.queue()
    other = await ctx.other_consumer(q)
    sizes = _cache_sizes(ctx.caps.max_message_size_bytes)
    # This service uses the queue first, so whatever it caches about it is cached: it
    # sends, receives all and acks only the first (an ack may drop a cached entry).
    await svc.send_batch(q, [_sized(n, "before", size) for n, size in enumerate(sizes)])
    for i, m in enumerate(await ctx.receive_exactly(q, len(sizes))):
        if i == 0:
            await svc.ack_claim(q, m)
    await _seen(ctx, q, exists=True, when="created")
    await other.delete_queue(q)
    await _seen(ctx, q, exists=False, when="deleted through another service")
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "send_message": lambda: svc.send_message(q, body(3, "deleted")),
        "receive_messages": lambda: svc.receive_messages(q, 10, ctx.timing.long),
    }
    for name, call in calls.items():
        what = f"{name} on {q}, deleted through another service"
        exc = await ctx.raises(QueueNotFound, call(), what)
        ctx.check(exc.queue == q, f"{what}: QueueNotFound names {exc.queue!r}")
    await other.create_queue(q)
    await _seen(ctx, q, exists=True, when="created again through another service")
    # The other's sends come first: their ids, restarted, are the ids of the messages
    # this service read before the deletion.
    payloads = [_sized(n, "after", size) for n, size in enumerate(sizes)]
    theirs = await ctx.accepts(other.send_batch(q, payloads), "the other's send")
    await _received_once(ctx, svc, q, dict(zip(theirs, payloads, strict=True)), "the other")
    again = f"on {q}, created again through another service"
    mine = await ctx.accepts(svc.send_message(q, body(4, "after")), f"send_message {again}")
    await _received_once(ctx, other, q, {mine: body(4, "after")}, "this service")


def _cache_sizes(limit: int) -> list[int]:
    """Payload sizes from a few bytes to the declared maximum: where a provider caches
    or offloads payloads (64 KiB and up, or only small ones), one of them lands."""
    return sorted({min(n, limit) for n in (16, 1024, 65536, 262144, limit // 2, limit)})


def _sized(n: int, tag: str, size: int) -> bytes:
    """A payload of ``size`` bytes (not JSON) telling ``tag`` and ``n`` at both ends."""
    head, tail = f"{tag}-{n}:".encode(), f":{tag}-{n}".encode()
    fill = size - len(head) - len(tail)
    if fill < 0:
        return (head + tail)[:size]
    return head + tag[0].encode() * fill + tail


async def _seen(ctx: CaseContext, q: str, *, exists: bool, when: str) -> None:
    """This service's queue_exists and list_queues (where claimed) both tell ``exists``."""
    said = await ctx.service.queue_exists(q)
    ctx.check(said is exists, f"{q} {when}: queue_exists says {said}")
    if ctx.caps.list_queues:
        listed = q in await ctx.service.list_queues()
        ctx.check(listed is exists, f"{q} {when}: list_queues {'has' if listed else 'lacks'} it")


async def _received_once(
    ctx: CaseContext, receiver: MessagingService, q: str, sent: dict[int, bytes], sender: str
) -> None:
    """``receiver`` gets exactly the messages ``sent`` (id: payload) from ``q`` (one of
    them by fetch, where supported), and acks them."""
    got: list[QueuedMessage] = []
    if ctx.caps.fetch_by_id and len(sent) > 1:
        last = max(sent)
        fetch = receiver.fetch_message(q, last, ctx.timing.long)
        fetched = await ctx.accepts(fetch, f"fetch_message of {last} on {q}, created again")
        got += [fetched] if fetched is not None else []

    async def arrived() -> bool:
        receive = receiver.receive_messages(q, 10, ctx.timing.long)
        got.extend(await ctx.accepts(receive, f"receive_messages on {q}, created again"))
        return len(got) >= len(sent)

    with contextlib.suppress(ContractViolation):  # reported below, with what arrived
        await ctx.eventually(arrived, ctx.timing.delivery, f"sent through {sender}")
    fidelity = ctx.caps.payload_fidelity
    wrong = [
        (m.msg_id, len(m.payload), m.payload[:24])
        for m in got
        if m.msg_id not in sent or not same_payload(fidelity, sent[m.msg_id], m.payload)
    ]
    ctx.check(
        sorted(m.msg_id for m in got) == sorted(sent) and not wrong,
        f"{q}, deleted and created again through another service: messages "
        f"{[(i, len(p), p[:24]) for i, p in sent.items()]} (id, size, start) sent through "
        f"{sender} were received as {[m.msg_id for m in got]} within "
        f"{ctx.timing.delivery:g} s, these not as sent: {wrong}",
    )
    await receiver.ack_claims(q, got)


@rule(
    "LIFE-15",
    "Closing a service leaves the queues it created, and their messages, to the others: "
    "queues it alone created, empty or not, one another service created too, and (where "
    "push is supported) ones it subscribed to, with the subscription open or closed, still "
    "exist for another service throughout the margin after the close, and what was sent "
    "to them is received there.",
    why="Workers come and go while their queues stay; a provider that declares queues "
    "auto-delete or exclusive (a tutorial's flags), or cleans up the queues it declared, "
    "or the empty ones, on close deletes queues other processes use, with their work.",
    applies_when=Applies.flag("shared_backend"),
    provisional=True,
)
async def close_leaves_queues(ctx: CaseContext) -> None:
    both = await ctx.queue()
    closing = await ctx.other_consumer(both)
    full, empty, listened, left = (ctx.queue_name() for _ in range(4))
    queues = {
        full: "created by it alone, with a message",
        empty: "created by it alone, empty",
        both: "created by it and by another service, with a message",
    }
    push = ctx.caps.push is not PushKind.NONE
    if push:
        queues |= {listened: "subscribed to by it, open", left: "subscribed to by it, closed"}
    for q in queues:
        await closing.create_queue(q)
    sent = {q: await closing.send_message(q, body(1, q)) for q in (full, both)}
    if push:
        await closing.subscribe(listened)  # left open: the close ends it
        await (await closing.subscribe(left)).aclose()
    await closing.close()

    async def gone() -> list[str]:
        return [
            f"{q} ({kind})" for q, kind in queues.items() if not await ctx.service.queue_exists(q)
        ]

    await ctx.never(gone, ctx.timing.margin, "closing a service deleted queues it created")
    for q, msg_id in sent.items():
        (got,) = await ctx.receive_exactly(q, 1)
        ctx.check(
            got.msg_id == msg_id
            and same_payload(ctx.caps.payload_fidelity, body(1, q), got.payload),
            f"{q} ({queues[q]}), after the service that sent {msg_id} to it closed: "
            f"received {got.msg_id} ({got.payload!r})",
        )
