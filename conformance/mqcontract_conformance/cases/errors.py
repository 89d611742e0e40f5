"""ERR: the error hierarchy, bounded operations, closed providers, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mqcontract.capabilities import PushKind
from mqcontract.errors import (
    BackendUnavailable,
    MessageNotFound,
    MessagingError,
    OperationTimeout,
    ProviderClosed,
)
from mqcontract.messages import Claim, Message, QueuedMessage
from mqcontract.service import MessagingService, Subscription
from mqcontract.subscription import QueueSubscription
from mqcontract.testing import HookUnavailable
from mqcontract_conformance.cases._conditions import CLAIMED_PUSH
from mqcontract_conformance.cases._payloads import body, same_payload
from mqcontract_conformance.cases._resources import Footprint, Growth
from mqcontract_conformance.context import CaseContext, ContractViolation, notification_id
from mqcontract_conformance.registry import rule

T = TypeVar("T")


@rule(
    "ERR-1",
    "Every failure of every operation is a MessagingError subclass.",
    why="Callers catch one base class; a raw driver exception escaping is a leak.",
)
async def failures_are_messaging_errors(ctx: CaseContext) -> None:
    q = await ctx.queue()
    missing = ctx.queue_name()
    svc = ctx.service
    big = b"x" * (ctx.caps.max_message_size_bytes + 1)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "send to missing": lambda: svc.send_message(missing, body(1)),
        "receive from missing": lambda: svc.receive_messages(missing, 1, 1.0),
        "oversized": lambda: svc.send_message(q, big),
        "payload not bytes": lambda: svc.send_message(q, "text"),  # type: ignore[arg-type]
        "nan timeout": lambda: svc.receive_messages(q, 1, math.nan),
        "limit 0": lambda: svc.receive_messages(q, 0, 1.0),
        "ack unknown": lambda: svc.ack_message(q, 123456789),
        "bad name": lambda: svc.create_queue("DROP TABLE;"),
        "name not str": lambda: svc.create_queue(42),  # type: ignore[arg-type]
    }
    wrong = []
    for what, call in calls.items():
        try:
            await call()
        except MessagingError:
            continue
        except Exception as exc:
            wrong.append(f"{what}: {type(exc).__module__}.{type(exc).__name__}: {exc}")
            continue
        wrong.append(f"{what}: no error")
    ctx.check(not wrong, "not MessagingError: " + "; ".join(wrong))


@rule(
    "ERR-2",
    "Errors name the queue and the offending value or limit in their message.",
    why="An error that does not say which queue is useless in a log of thousands.",
)
async def errors_are_specific(ctx: CaseContext) -> None:
    q = await ctx.queue()
    missing = ctx.queue_name()
    checks: list[tuple[Callable[[], Awaitable[object]], list[str]]] = [
        (lambda: ctx.service.send_message(missing, body(1)), [missing]),
        (lambda: ctx.service.receive_messages(q, 0, 1.0), [q, "limit", "0"]),
        (lambda: ctx.service.ack_message(q, 424242), [q, "424242"]),
        (lambda: ctx.service.create_queue("Bad;Name"), ["Bad;Name"]),
    ]
    for call, needles in checks:
        try:
            await call()
        except MessagingError as exc:
            text = str(exc)
            absent = [n for n in needles if n not in text]
            ctx.check(not absent, f"{type(exc).__name__} {text!r} does not mention {absent}")
        else:
            ctx.fail(f"expected an error naming {needles}")


@rule(
    "ERR-3",
    "After close, every operation raises ProviderClosed (a MessagingError) instead of "
    "hanging or reconnecting silently, a claim made before can no longer be settled, open "
    "subscriptions end, and close is idempotent.",
    why="Shutdown must be clean and final; an operation that still works after close "
    "means a connection or a consumer outlived the service.",
)
async def closed_provider(ctx: CaseContext) -> None:
    q = await ctx.queue()
    svc, caps = ctx.service, ctx.caps
    sent = await svc.send_message(q, body(1))
    (held,) = await ctx.receive_exactly(q, 1)
    sub = await ctx.subscribe(q) if caps.push is not PushKind.NONE else None
    await svc.close()
    await svc.close()
    claim = Claim(q, sent, 1, ctx.timing.long) if held.claim is None else held.claim
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "create_queue": lambda: svc.create_queue(q),
        "delete_queue": lambda: svc.delete_queue(q),
        "queue_exists": lambda: svc.queue_exists(q),
        "send_message": lambda: svc.send_message(q, body(1)),
        "send_batch": lambda: svc.send_batch(q, [body(1)]),
        "receive_messages": lambda: svc.receive_messages(q, 1, 1.0),
        "ack_message": lambda: svc.ack_message(q, sent),
        "nack_message": lambda: svc.nack_message(q, sent),
        "ack_claim": lambda: svc.ack_claim(q, claim),
        "nack_claim": lambda: svc.nack_claim(q, claim),
        "ack_claims": lambda: svc.ack_claims(q, [claim]),
    }
    if caps.list_queues:
        calls["list_queues"] = svc.list_queues
    if caps.delay:
        calls["send_message_with_delay"] = lambda: svc.send_message_with_delay(q, body(1), 1.0)
    if caps.fetch_by_id:
        calls["fetch_message"] = lambda: svc.fetch_message(q, sent, 1.0)
    if sub is not None:
        calls["subscribe"] = lambda: svc.subscribe(q)
    for what, call in calls.items():
        await ctx.raises(ProviderClosed, call(), f"{what} after close")
    if sub is not None:
        try:
            note = await asyncio.wait_for(sub.__anext__(), ctx.timing.delivery)
        except (StopAsyncIteration, ProviderClosed):
            return
        except TimeoutError:
            ctx.fail(f"a subscription opened before close still waits {ctx.timing.delivery:g} s on")
        ctx.fail(f"a subscription opened before close delivered {note!r} after it")


@rule(
    "ERR-4",
    "Every operation of a normal exchange completes within the operation bound.",
    why="A call that can block forever takes a worker with it.",
)
async def operations_bounded(ctx: CaseContext) -> None:
    slow: list[str] = []

    async def timed(what: str, call: Awaitable[object]) -> object:
        start = ctx.now()
        result = await call
        if ctx.now() - start > ctx.timing.operation:
            slow.append(f"{what} took {ctx.now() - start:.2f} s")
        return result

    q = ctx.queue_name()
    await timed("create_queue", ctx.service.create_queue(q))
    await timed("queue_exists", ctx.service.queue_exists(q))
    sent = await timed("send_message", ctx.service.send_message(q, body(1)))
    await timed("receive_messages", ctx.service.receive_messages(q, 10, ctx.timing.long))
    await timed("ack_message", ctx.service.ack_message(q, sent))  # type: ignore[arg-type]
    await timed("receive (empty)", ctx.service.receive_messages(q, 10, ctx.timing.long))
    await timed("delete_queue", ctx.service.delete_queue(q))
    ctx.check(not slow, "; ".join(slow))


@rule(
    "ERR-5",
    "After its connections are severed the provider recovers by itself: operations work "
    "again within the bound and no stored message is lost.",
    why="Networks drop; asyncpg and AMQP connections do not come back on their own.",
    hooks=("sever_connection",),
)
async def recovers_after_sever(ctx: CaseContext) -> None:
    q = await ctx.queue()
    ids = set(await ctx.service.send_batch(q, [body(i) for i in range(5)]))
    held = await ctx.receive(q, limit=2)
    await ctx.sever_until_usable(q)
    got: list[int] = []

    async def all_back() -> bool:
        try:
            got.extend(m.msg_id for m in await ctx.receive(q, limit=10, vt=ctx.timing.long))
        except MessagingError:
            return False
        return set(got) >= ids - {m.msg_id for m in held}

    await ctx.eventually(all_back, ctx.timing.slack * 3, "messages receivable after sever")
    lost = ids - set(got) - {m.msg_id for m in held}
    ctx.check(not lost, f"lost after sever: {sorted(lost)}")


async def _ack_outcome(ctx: CaseContext, q: str, msg_id: int) -> bool | None:
    """Ack ``msg_id``: True if an ack returned, False if MessageNotFound, None if unknown.

    A connection error or timeout leaves the outcome unknown, so the ack is retried until
    one returns (it is done) or raises MessageNotFound; that last case stays unknown
    (the first attempt may have been applied, or the claim may have died), and is None.
    """
    errors: list[str] = []

    async def attempt() -> str | None:
        try:
            await ctx.service.ack_message(q, msg_id)
        except MessageNotFound:
            return "not found"
        except (BackendUnavailable, OperationTimeout) as exc:
            errors.append(type(exc).__name__)
            return None
        return "acked"

    result = await ctx.eventually(attempt, ctx.timing.slack * 3, f"an answer to ack {msg_id}")
    if errors:
        ctx.metrics["ack_retries"] = len(errors)
        return True if result == "acked" else None
    return result == "acked"


async def _gone_for_good(
    ctx: CaseContext,
    q: str,
    msg_id: int,
    until: float,
    redelivered: Callable[[], Awaitable[object]],
) -> None:
    """An ack returned: the message must not be stored, or (no backdoor) never come back.

    Without the backdoor, ``redelivered`` is watched until ``until`` (a ``now()`` past the
    claim's timeout): an ack that was not applied shows by then.
    """
    try:
        stored = await ctx.harness.stored_ids(ctx.service, q)
    except HookUnavailable:
        await ctx.never(
            redelivered,
            max(until - ctx.now(), ctx.timing.slack),
            f"message {msg_id} redelivered after its ack returned",
        )
        return
    ctx.check(msg_id not in stored, f"message {msg_id} is still stored after its ack returned")


@rule(
    "ERR-6",
    "Acking a received message after a sever either returns, and then the message is never "
    "delivered again (to any provider on the backend), or raises MessageNotFound (the claim "
    "died with the connection), and then it is delivered again; a connection error means "
    "the outcome is unknown and the ack may be retried.",
    why="At-least-once must not become 'acked here, processed again there': a provider "
    "that reports an ack of a claim the broker already requeued as done lets another "
    "consumer run the finished work again.",
    hooks=("sever_connection",),
    provisional=True,
)
async def settling_after_sever(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    vt = ctx.timing.slack * 2
    [held] = await ctx.receive_exactly(q, 1, vt=vt)
    claim_ends = ctx.now() + vt + ctx.timing.slack
    await ctx.sever_until_usable(q)
    acked = await _ack_outcome(ctx, q, held.msg_id)
    # Another process on the same backend, as a competing consumer would be.
    other = await ctx.harness.open(ctx.clock)
    try:

        async def redelivered() -> list[int]:
            return [m.msg_id for m in await other.receive_messages(q, 10, ctx.timing.long)]

        if acked:
            await _gone_for_good(ctx, q, sent, claim_ends, redelivered)
        elif acked is False:
            got = await ctx.eventually(redelivered, vt + ctx.timing.slack * 3, "the message back")
            ctx.check(got == [sent], f"expected message {sent} back, received {got}")
            await other.ack_message(q, sent)
    finally:
        await other.close()


@rule(
    "ERR-7",
    "Acking a pushed claimed message after a sever either returns, and then no subscription "
    "or receive ever delivers it again, or raises MessageNotFound, and then it is delivered "
    "again; a redelivery queued in a subscription is not settled by the old claim's ack.",
    why="After a reconnect the broker may push the same message to the same provider "
    "again; an ack from the claim that died must not settle the copy that is about to be "
    "handed to a worker.",
    applies_when=CLAIMED_PUSH,
    hooks=("sever_connection",),
    provisional=True,
)
async def settling_pushed_after_sever(ctx: CaseContext) -> None:
    q, beacon = await ctx.queue(), await ctx.queue()
    sub = await ctx.subscribe(q)
    beacon_sub = await ctx.subscribe(beacon)
    sent = await ctx.service.send_message(q, body(1))
    await ctx.next_claimed(sub)
    started = ctx.now()
    await ctx.sever_until_usable(q)
    # Push works again once a message sent now arrives on the other subscription; by then
    # a redelivery of `sent` has usually reached `sub` too, where it waits unseen (as it
    # would behind a busy worker) while the old claim is acked.
    marker = await ctx.service.send_message(beacon, body(2))
    await ctx.collect_notifications(beacon_sub, [(beacon, marker)], ctx.timing.slack * 3)
    await _redelivery_queued(ctx, sub, q, sent)
    acked = await _ack_outcome(ctx, q, sent)

    async def delivered_again() -> list[int]:
        try:
            again = await ctx.next_notification(sub, ctx.timing.step)
        except ContractViolation:  # nothing pushed within the step: try a receive
            return [m.msg_id for m in await ctx.receive(q)]
        return [i for i in [notification_id(again)] if i == sent]

    if acked:
        until = started + ctx.timing.delivery + ctx.timing.slack
        await _gone_for_good(ctx, q, sent, until, delivered_again)
    elif acked is False:
        await ctx.eventually(delivered_again, ctx.timing.long, "the message back")
        await ctx.service.ack_message(q, sent)  # held again, by this caller


def _waiting_ids(sub: Subscription, queue: str) -> list[int] | None:
    """Ids of claimed messages of ``queue`` queued in ``sub`` and not handed out yet,
    looked at without handing them out (None: this kind of subscription cannot tell)."""
    if not isinstance(sub, QueueSubscription) or sub.closed:
        return None
    waiting = sub.pending()
    for note in waiting:  # put back in order; nothing ran in between
        sub.put(note)
    return [n.message.msg_id for n in waiting if isinstance(n, Message) and n.queue_name == queue]


async def _redelivery_queued(ctx: CaseContext, sub: Subscription, q: str, msg_id: int) -> None:
    """Wait (bounded) until the redelivery of ``msg_id`` waits in ``sub``, so the old
    claim's ack meets it there instead of racing it. A provider whose claim survived the
    sever pushes nothing again: after the bound the check goes on as it is."""

    async def queued() -> bool:
        ids = _waiting_ids(sub, q)
        return ids is None or msg_id in ids

    with contextlib.suppress(ContractViolation):
        await ctx.eventually(queued, ctx.timing.delivery + ctx.timing.slack, "redelivery")


@rule(
    "ERR-8",
    "Messages held by a consumer process that is killed (SIGKILL) mid-handling come back: "
    "each is delivered again with its id and payload and a higher receive count, no later "
    "than its visibility timeout plus the slack after the kill, and none is lost or "
    "delivered twice.",
    why="Workers die without a goodbye (the OOM killer, a lost node, kill -9); a claim that "
    "outlives its holder is a message nobody will ever process, and nothing on the "
    "producer's side shows it.",
    hooks=("crash_holder",),
    provisional=True,
)
async def claims_of_killed_holder_come_back(ctx: CaseContext) -> None:
    q = await ctx.queue()
    payloads = [body(i, "crash") for i in range(5)]
    sent = dict(zip(await ctx.service.send_batch(q, payloads), payloads, strict=True))
    vt = ctx.timing.slack
    held = await ctx.harness.crash_holder(ctx.service, q, len(sent), vt)
    killed = ctx.now()
    ctx.check(
        sorted(held) == sorted(sent),
        f"the killed holder reported holding {sorted(held)}, expected {sorted(sent)}",
    )
    got: dict[int, QueuedMessage] = {}
    twice: list[int] = []

    async def all_back() -> bool:
        for m in await ctx.receive(q, limit=min(2 * len(sent), ctx.caps.max_receive_limit)):
            if m.msg_id in got:
                twice.append(m.msg_id)
            got[m.msg_id] = m
        return set(got) >= set(sent)

    within = vt + ctx.timing.slack
    try:
        await ctx.eventually(all_back, within, "the killed holder's messages back")
    except ContractViolation:
        ctx.fail(
            f"held by a killed process, not delivered again within {within:g} s of the kill: "
            f"{sorted(set(sent) - set(got))} (received {sorted(got)})"
        )
    ctx.metrics["returned_after_s"] = round(ctx.now() - killed, 3)
    extra = sorted(set(got) - set(sent))
    ctx.check(not extra, f"received messages never sent: {extra}")
    ctx.check(not twice, f"delivered twice while held: {sorted(twice)}")
    wrong = [
        i for i, m in got.items() if not same_payload(ctx.caps.payload_fidelity, sent[i], m.payload)
    ]
    ctx.check(not wrong, f"payload changed on redelivery: {sorted(wrong)}")
    uncounted = {i: m.receive_count for i, m in got.items() if m.receive_count < 2}
    ctx.check(not uncounted, f"receive_count not increased after the crash: {uncounted}")
    for msg_id in sent:
        await ctx.service.ack_message(q, msg_id)
    again = [m.msg_id for m in await ctx.receive(q)]
    ctx.check(not again, f"delivered again after every message was acked: {again}")


#: Messages ERR-9 receives: one left unacked (it must come back: the sever was real),
#: the rest acked one by one and then as one ``ack_claims`` batch.
_ACKED_SINGLY = 4
_ACKED_AS_BATCH = 6


@rule(
    "ERR-9",
    "An ack that returned holds when the connection drops right after it: a message acked "
    "by claim, or in an ack_claims batch, just before a sever is never delivered again, to "
    "this provider or any other on the backend, while a message left unacked comes back.",
    why="An ack that returned is the caller's word that the work is done. A client that "
    "returns once the ack is written, not once the server has it (an AMQP basic.ack, an "
    "MQTT PUBACK, a JetStream ack published without waiting, offsets committed on a "
    "timer), loses the acks of the last moment with the connection, and that work runs "
    "again.",
    hooks=("sever_connection",),
    provisional=True,
)
async def acks_hold_across_a_sever_right_after(ctx: CaseContext) -> None:
    q = await ctx.queue()
    count = 1 + _ACKED_SINGLY + _ACKED_AS_BATCH
    sent = await ctx.service.send_batch(q, [body(i, "acked") for i in range(count)])
    vt = ctx.timing.slack * 2
    order = {msg_id: n for n, msg_id in enumerate(sent)}
    held = sorted(await ctx.receive_exactly(q, count, vt=vt), key=lambda m: order.get(m.msg_id, 0))
    unacked, singly, batch = held[0], held[1 : 1 + _ACKED_SINGLY], held[1 + _ACKED_SINGLY :]
    for message in singly:
        await ctx.service.ack_claim(q, message)
    settled = await ctx.service.ack_claims(q, batch)
    # Nothing in between: the connection drops the moment the last ack returned.
    await ctx.sever_until_usable(q)
    claims_end = ctx.now() + vt + ctx.timing.slack
    if len(settled) != len(batch):
        ctx.fail(f"ack_claims gave {len(settled)} outcomes for {len(batch)} claims")
    ctx.check(all(settled), f"ack_claims of claims just received did not settle: {settled}")
    acked = {m.msg_id for m in singly} | {
        m.msg_id for m, ok in zip(batch, settled, strict=True) if ok
    }
    try:
        stored = set(await ctx.harness.stored_ids(ctx.service, q))
    except HookUnavailable:
        stored = set()
    ctx.check(
        not stored & acked, f"acked just before a sever, still stored: {sorted(stored & acked)}"
    )
    other = await ctx.harness.open(ctx.clock)
    seen: set[int] = set()
    try:

        async def unacked_back_and_claims_over() -> bool:
            # Both: some brokers give a dropped session's messages back only to it.
            limit = min(count, ctx.caps.max_receive_limit)
            for service in (ctx.service, other):
                try:
                    got = await service.receive_messages(q, limit, ctx.timing.long)
                except (BackendUnavailable, OperationTimeout):
                    continue  # still reconnecting
                seen.update(m.msg_id for m in got)
            return unacked.msg_id in seen and ctx.now() >= claims_end

        await ctx.eventually(
            unacked_back_and_claims_over,
            vt + ctx.timing.slack * 3,
            f"message {unacked.msg_id}, received and not acked, back after the sever",
        )
    finally:
        await other.close()
    again = sorted(seen & acked)
    ctx.check(not again, f"acked just before a sever, delivered again: {again}")


@rule(
    "ERR-10",
    "A send that returned holds when the connection drops right after it: every message "
    "sent by send_message and send_batch just before a sever is received, once, with the "
    "id the send returned and its payload.",
    why="A send that returned is a promise: the producer drops its copy. A client that "
    "returns once the message is written, not once the server has it (AMQP without "
    "publisher confirms, a core NATS publish, an MQTT QoS 0 publish, a producer that "
    "batches in the background), loses the sends of the last moment with the connection, "
    "and nothing tells the producer.",
    hooks=("sever_connection",),
    provisional=True,
)
async def sends_hold_across_a_sever_right_after(ctx: CaseContext) -> None:
    q = await ctx.queue()
    payloads = [body(i, "sent") for i in range(6)]
    ids = [await ctx.service.send_message(q, p) for p in payloads[:3]]
    ids += await ctx.service.send_batch(q, payloads[3:])
    # Nothing in between: the connection drops the moment the last send returned.
    await ctx.sever_until_usable(q)
    sent = dict(zip(ids, payloads, strict=True))
    got: list[QueuedMessage] = []
    other = await ctx.harness.open(ctx.clock)
    try:

        async def all_received() -> bool:
            # Both: a broker may route a dropped session's messages back only to it.
            limit = min(len(sent), ctx.caps.max_receive_limit)
            for service in (ctx.service, other):
                with contextlib.suppress(BackendUnavailable, OperationTimeout):  # reconnecting
                    got.extend(await service.receive_messages(q, limit, ctx.timing.long))
            return {m.msg_id for m in got} >= set(sent)

        with contextlib.suppress(ContractViolation):  # as ERR-5 bounds it
            await ctx.eventually(all_received, ctx.timing.slack * 3, "sends")
    finally:
        await other.close()
    ids_got = [m.msg_id for m in got]
    lost = sorted(set(sent) - set(ids_got))
    ctx.check(not lost, f"sent just before a sever, never received: {lost} (sent {ids})")
    twice = sorted({i for i in ids_got if ids_got.count(i) > 1})
    ctx.check(not twice, f"sent once before a sever, received twice: {twice}")
    unknown = sorted(set(ids_got) - set(sent))
    ctx.check(not unknown, f"received ids never sent: {unknown} (sent {ids})")
    fidelity = ctx.caps.payload_fidelity
    changed = [
        m.msg_id
        for m in got
        if m.msg_id in sent and not same_payload(fidelity, sent[m.msg_id], m.payload)
    ]
    ctx.check(not changed, f"payload changed across the sever: {changed}")


#: ERR-11: calls made at once, more than a client's connection pool is usually sized for
#: (redis-py 8's default pool holds 100, asyncpg's 10, aiomysql's 10); fewer, down to
#: the floor, where one round trip is so slow that a provider running calls one after
#: another could not finish the burst within a quarter of the operation bound.
_BURST, _BURST_FLOOR = 256, 128


@rule(
    "ERR-11",
    f"A burst of {_BURST} calls at once (sends, then receives, then acks; {_BURST_FLOOR} "
    "where one round trip takes over a 1000th of the operation bound) all complete: a "
    "call beyond the provider's connections waits for one, within its operation bound; "
    "none fails as an outage, every message is received once and every ack takes.",
    why="A producer that fans out, or a consumer acking a batch one claim at a time, makes "
    "such bursts as a matter of course. A client pool that raises when it is exhausted "
    "(redis-py's default pool: 'Too many connections') turns the burst into a spurious "
    "outage, and the caller retries a send that may or may not have happened.",
    provisional=True,
)
async def a_burst_of_calls_waits_for_connections(ctx: CaseContext) -> None:
    q = await ctx.queue()
    took = await _round_trip(ctx, lambda: ctx.receive(q, 1))
    size = max(_BURST_FLOOR, min(_BURST, int(ctx.timing.operation / (4 * max(took, 1e-6)))))
    slow = (
        f"one receive took {took * 1000:.1f} ms: a provider running the {size} calls one "
        f"after another needs about {size * took:.1f} s for them"
    )
    sent = await _burst(
        ctx, "send_message", [ctx.service.send_message(q, body(i)) for i in range(size)], slow
    )
    ctx.check(len(set(sent)) == size, f"{size} sends at once returned repeated ids")
    limit = min(4, ctx.caps.max_receive_limit)
    batches = await _burst(
        ctx,
        "receive_messages",
        [ctx.receive(q, limit) for _ in range(-(-size // limit))],
        slow,
    )
    got = [m for batch in batches for m in batch]
    if len(got) < size:  # a receive may return fewer than were there; the rest follow
        got += await ctx.receive_exactly(q, size - len(got))
    ids = [m.msg_id for m in got]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    ctx.check(not twice, f"received twice within one burst of receives: {twice}")
    ctx.check(
        sorted(ids) == sorted(sent),
        f"sent {len(sent)} at once, received {len(ids)} of them; "
        f"missing {sorted(set(sent) - set(ids))[:10]}, unknown {sorted(set(ids) - set(sent))[:10]}",
    )
    claims = []
    for message in got:
        ctx.check(message.claim is not None, f"message {message.msg_id} carries no claim")
        assert message.claim is not None
        claims.append(message.claim)
    await _burst(ctx, "ack_claim", [ctx.service.ack_claim(q, claim) for claim in claims], slow)

    async def back() -> list[int]:
        return [m.msg_id for m in await ctx.receive(q)]

    await ctx.never(back, ctx.timing.margin, "a message acked within a burst of acks came back")


async def _burst(ctx: CaseContext, what: str, calls: list[Awaitable[T]], slow: str) -> list[T]:
    """Run ``calls`` at once; fail naming the first that raised and how many did (and
    ``slow``, the round trip measured, when they ran out of time)."""
    bound = ctx.timing.operation * 4 + ctx.timing.slack
    try:
        async with asyncio.timeout(bound):
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
    except TimeoutError:
        ctx.fail(
            f"{len(calls)} {what} calls made at once were not all done within {bound:g} s ({slow})"
        )
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if failed:
        first = failed[0]
        late = f" ({slow})" if isinstance(first, OperationTimeout) else ""
        ctx.fail(
            f"{len(failed)} of {len(calls)} {what} calls made at once raised; the first: "
            f"{type(first).__name__}: {first}{late}"
        )
    return [o for o in outcomes if not isinstance(o, BaseException)]


#: ERR-12: calls cancelled, each at another point of its round trip.
_CANCELLED = 48


@rule(
    "ERR-12",
    "A call its caller cancels (as asyncio.timeout or a stopping consumer does) leaves "
    "nothing behind: the calls after it get their own answers, never the cancelled "
    "call's reply, and the messages a cancelled receive claimed come back once the "
    "visibility timeout it asked for has passed.",
    why="A client that leaves a cancelled request's reply unread on a pooled connection "
    "hands it to the next request on that connection (redis-py before 4.5.3, "
    "CVE-2023-28858: one user's data in another's reply). A provider that drops what a "
    "cancelled receive claimed, with no timer of its own behind it, strands the "
    "messages for good.",
    provisional=True,
)
async def a_cancelled_call_leaves_nothing_behind(ctx: CaseContext) -> None:
    cancelled_on, asked = await ctx.queue(), await ctx.queue()
    missing = ctx.queue_name()  # never created
    mine = {p: i for i, p in enumerate(body(i, "cancelled") for i in range(_CANCELLED))}
    theirs = [body(i, "asked") for i in range(_CANCELLED)]
    sent = await ctx.service.send_batch(cancelled_on, list(mine))
    await ctx.service.send_batch(asked, theirs)
    vt = ctx.timing.unit
    limit = min(2, ctx.caps.max_receive_limit)
    empty = await ctx.queue()
    took = await _round_trip(ctx, lambda: ctx.service.receive_messages(empty, limit, vt))
    for n in range(_CANCELLED):
        call: asyncio.Future[object]
        if n % 3 == 2:
            call = asyncio.ensure_future(ctx.service.queue_exists(cancelled_on))
        else:
            call = asyncio.ensure_future(ctx.service.receive_messages(cancelled_on, limit, vt))
        if n % 2 == 0:  # after some passes of the event loop
            for _ in range(n // 2 % 12):
                await asyncio.sleep(0)
        else:  # at a point of one receive's round trip, and a little after it
            await asyncio.sleep(took * 1.5 * ((n // 2) % 8 + 0.5) / 8)
        call.cancel()
        try:
            await call
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            ctx.fail(
                f"call {n + 1}, cancelled, raised {type(exc).__name__}: {exc} instead of "
                "CancelledError (or its result): a cancellation turned into an error "
                "breaks asyncio.timeout and every caller that cancels"
            )
        where = f"right after call {n + 1} was cancelled"
        exists = await ctx.service.queue_exists(missing)
        ctx.check(exists is False, f"queue_exists of a missing queue returned {exists!r} {where}")
        got = await ctx.service.receive_messages(asked, 1, ctx.timing.long)
        for message in got:
            ctx.check(
                message.queue_name == asked and message.payload in theirs,
                f"receive_messages({asked!r}) returned {message.payload!r} from "
                f"{message.queue_name!r} {where}: the cancelled call's reply?",
            )
            ctx.check(message.claim is not None, f"message {message.msg_id} carries no claim")
            assert message.claim is not None
            await ctx.service.ack_claim(asked, message.claim)
    back: dict[int, bytes] = {}
    foreign: list[bytes] = []

    async def all_back() -> bool:
        for message in await ctx.receive(cancelled_on, min(10, ctx.caps.max_receive_limit)):
            if message.payload in mine:
                back[message.msg_id] = message.payload
            else:
                foreign.append(message.payload)
        return bool(foreign) or len(back) >= len(sent)

    try:
        await ctx.eventually(all_back, vt + ctx.timing.slack, "messages of cancelled receives")
    except ContractViolation:
        lost = sorted(set(sent) - set(back))
        ctx.fail(
            f"{len(lost)} of {len(sent)} messages were not back {vt + ctx.timing.slack:g} s "
            f"after receives that claimed them with a {vt:g} s timeout were cancelled: {lost}"
        )
    ctx.check(not foreign, f"{cancelled_on!r} returned {foreign[:3]!r}, never sent to it")


async def _round_trip(ctx: CaseContext, call: Callable[[], Awaitable[object]]) -> float:
    """The shortest of three ``call()``, in real seconds."""
    took = []
    for _ in range(3):
        start = time.perf_counter()
        await call()
        took.append(time.perf_counter() - start)
    return min(took)


#: ERR-13: services opened, used and closed; subscriptions opened, used and closed on one
#: service (each cycle twice: the first brings what grows to a bound, a pool, to it); and
#: how many more fds, threads or tasks than before may remain once they are closed (less
#: than either count, so one kept per service or subscription fails).
_RELEASED_SERVICES = 4
_RELEASED_SUBSCRIPTIONS = 4
_RELEASE_TOLERANCE = 1


@rule(
    "ERR-13",
    "A closed service gives back what it took while open, and so does a closed "
    "subscription: after several were opened, used (a message sent, received or "
    "pushed, and settled) and closed, the process holds no more file descriptors, "
    "threads or event-loop tasks than after as many did so before (give or take "
    f"{_RELEASE_TOLERANCE}), once what ends asynchronously had the slack to end. The "
    "threads of the event loop's default executor, a bounded pool, are not counted.",
    why="Long-running processes open and close services and subscriptions over and over "
    "(per tenant, per reconnect, per consumer restart). A close that leaves a worker "
    "thread, a connection or a listener task behind leaks one per use until the process "
    "runs out of file descriptors or threads, and every operation raising ProviderClosed "
    "after close (ERR-3) does not show it.",
    provisional=True,
)
async def closing_gives_back_what_was_taken(ctx: CaseContext) -> None:
    push = ctx.caps.push is not PushKind.NONE
    # Warm up with a whole cycle: what a first use makes once per process (a driver's
    # shared executor, caches) or per service (a push pump started by the first
    # subscribe), and what grows to a bound (a pool), exists before the baseline; the
    # case's own service stays open throughout.
    q = await ctx.queue()
    await _exchange(ctx, ctx.service, q)
    kept: list[object] = []  # what was closed, so no leak hides behind garbage collection
    for measured in (False, True):
        before = await _steady(ctx)
        if push:
            for _ in range(_RELEASED_SUBSCRIPTIONS):
                await _subscribe_use_close(ctx, ctx.service, q, kept)
            if measured:
                await _released(
                    ctx,
                    before,
                    f"after {_RELEASED_SUBSCRIPTIONS} subscriptions were opened, used and "
                    "closed on one open service",
                    "subscriptions",
                )
        for _ in range(_RELEASED_SERVICES):
            await _open_use_close(ctx, kept)
        if measured:
            await _released(
                ctx,
                before,
                f"after {_RELEASED_SERVICES} services were opened, used and closed",
                "services",
            )


async def _subscribe_use_close(
    ctx: CaseContext, service: MessagingService, q: str, kept: list[object]
) -> None:
    """A subscription to ``q`` opened, a message sent and heard on it (settled: acked
    where the push claimed it, else received and acked), and the subscription closed."""
    sub = await service.subscribe(q)
    kept.append(sub)
    try:
        sent = await service.send_message(q, body(2, "pushed"))
        note = await ctx.next_notification(sub)
        if isinstance(note, Message) and note.claimed and note.message.claim is not None:
            await service.ack_claim(q, note.message.claim)
    finally:
        await sub.aclose()
    if not (isinstance(note, Message) and note.claimed):
        await _take(ctx, service, q, sent)


async def _exchange(ctx: CaseContext, service: MessagingService, q: str) -> None:
    """A send, a receive and an ack on ``service`` (its own queue, so a harness whose
    services do not share a backend does too)."""
    await _take(ctx, service, q, await service.send_message(q, body(1, "released")))


async def _take(ctx: CaseContext, service: MessagingService, q: str, sent: int) -> None:
    """Receive ``sent`` from ``q`` (within the delivery bound) and ack it."""
    got: list[QueuedMessage] = []

    async def received() -> bool:
        got.extend(await service.receive_messages(q, 1, ctx.timing.long))
        return bool(got)

    await ctx.eventually(received, ctx.timing.delivery, f"message {sent} received on {q}")
    await service.ack_claim(q, got[0])


async def _open_use_close(ctx: CaseContext, kept: list[object]) -> None:
    """A service opened as another process would open it, used (and a subscription
    opened and closed on it, where there is push), and closed; both kept in ``kept``."""
    service = await ctx.harness.open(ctx.clock)
    kept.append(service)
    ctx.others.append(service)  # closed after the case, should the check fail midway
    q = ctx.queue_name()
    await service.create_queue(q)
    await _exchange(ctx, service, q)
    if service.capabilities.push is not PushKind.NONE:
        await _subscribe_use_close(ctx, service, q, kept)
    await service.delete_queue(q)
    await service.close()


async def _steady(ctx: CaseContext) -> Footprint:
    """The footprint once it holds still for a step (what the warm-up's close ends
    asynchronously, ended; a few steps at most): the baseline."""
    now = Footprint.now()
    for _ in range(5):
        await ctx.pause(ctx.timing.step)
        then, now = now, Footprint.now()
        if not any(now.growth(then).counts().values()):
            break
    return now


async def _released(ctx: CaseContext, before: Footprint, after: str, what: str) -> None:
    """Wait, bounded by the slack, until no more is held than ``before`` (within the
    tolerance); fail naming what grew and by how much."""
    grown: list[Growth] = []

    async def given_back() -> bool:
        grown[:] = [Footprint.now().growth(before)]
        if grown[0].within(_RELEASE_TOLERANCE):
            return True
        if ctx.clock is not None:  # threads and sockets end in real time, not virtual
            await asyncio.sleep(ctx.timing.step)
        return False

    try:
        await ctx.eventually(given_back, ctx.timing.slack, f"resources given back {after}")
    except ContractViolation:
        names = grown[0].names(_RELEASE_TOLERANCE)
        ctx.fail(
            f"{after}, {grown[0].describe(_RELEASE_TOLERANCE)} are held than before, "
            f"still {ctx.timing.slack:g} s later" + (f" ({names})" if names else "")
        )
    finally:
        for kind, count in grown[0].counts().items() if grown else ():
            ctx.metrics[f"{what}_closed_{kind}_kept"] = count
