"""PUSH: push notifications (``subscribe``), their kinds, and what a pushed claim means."""

from __future__ import annotations

import collections
import json
from collections.abc import Awaitable, Callable, Iterable

from mqcontract.capabilities import PushKind
from mqcontract.errors import (
    InvalidQueueName,
    MessageNotFound,
    QueueNotFound,
    UnsupportedOperation,
)
from mqcontract.messages import Available, Message, MessageNotification, QueuedMessage
from mqcontract.service import MessagingService, Subscription
from mqcontract.testing import HookUnavailable
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._conditions import ANY_PUSH, CLAIMED_PUSH, FULL_PUSH, MIXED_PUSH
from mqcontract_conformance.cases._payloads import (
    SNIFFABLE,
    WHITESPACE,
    body,
    fitting,
    same_payload,
)
from mqcontract_conformance.cases._redelivery import check_redelivered
from mqcontract_conformance.context import CaseContext, ContractViolation, notification_id
from mqcontract_conformance.registry import rule


def _json_payload(size: int) -> bytes:
    """A JSON document of at least ``size`` bytes made of 2-byte characters."""
    text = "\u00e9" * max(1, (size - 8) // 2 + 1)
    return json.dumps({"s": text}, ensure_ascii=False).encode()


async def _settle_held(ctx: CaseContext, q: str, note: Message | Available) -> None:
    """Ack what a claimed push handed us, so nothing is left held."""
    if isinstance(note, Message) and note.claimed:
        await ctx.service.ack_message(q, note.message.msg_id)


def _settled_as_they_come(
    ctx: CaseContext, expected: Iterable[tuple[str, int]]
) -> Callable[[MessageNotification], Awaitable[None]]:
    """For ``collect_notifications(each=...)``: settle each expected message's claimed
    push once, as it comes (a claimed push stops at the configured prefetch, the user's
    choice, while its claims are held); anything else is left for the rule to judge."""
    due = set(expected)

    async def settle(note: MessageNotification) -> None:
        key = (note.queue_name, notification_id(note))
        if key in due:
            due.discard(key)
            await _settle_held(ctx, note.queue_name, note)

    return settle


#: PUSH-1's single sends and batch size in each of its rounds.
NOTIFIED_SINGLES = 10
NOTIFIED_BATCH = 3


@rule(
    "PUSH-1",
    "A subscriber is notified of every message sent after it subscribed, within the "
    "delivery bound, whichever way it was sent: send_message, send_batch and, where "
    "delays are supported and push needs no fallback polling, send_message_with_delay "
    "(once it is due), each to an idle subscription; a notified message can be taken at "
    "once (its pushed claim acked, or fetched by id or received). So is a second "
    "subscription its service opens after closing the first.",
    why="Push is what makes workers react without polling. A provider that notifies a "
    "batch before its rows are committed, or only on single sends, leaves a batch to "
    "whatever wakes the queue next; one whose timer task ends with the service's last "
    "subscription, and is not started again, never pushes a later subscription's "
    "delayed messages.",
    applies_when=ANY_PUSH,
)
async def every_message_notified(ctx: CaseContext) -> None:
    q = await ctx.queue()
    delayed = ctx.caps.delay and not ctx.caps.requires_fallback_polling
    delay = ctx.timing.step * 2
    sub = await ctx.subscribe(q)
    singles = [await ctx.service.send_message(q, body(i)) for i in range(NOTIFIED_SINGLES)]
    await _notified_of(ctx, q, sub, "send_message", singles)
    await _notified_of(ctx, q, sub, "send_batch", await _sent_batch(ctx, q, "first"))
    if delayed:
        late = await ctx.service.send_message_with_delay(q, body(0, "delayed"), delay)
        await _notified_of(ctx, q, sub, "send_message_with_delay", [late], delay)
    await sub.aclose()
    # With no subscription open, something happens that a timer task wakes up for.
    if delayed:
        unheard = await ctx.service.send_message_with_delay(q, body(0, "unheard"), delay)
        within: float | None = delay + ctx.timing.delivery
    else:
        unheard, within = await ctx.service.send_message(q, body(0, "unheard")), None
    (taken,) = await ctx.receive_exactly(q, 1, within=within)
    ctx.check(taken.msg_id == unheard, f"received {taken.msg_id}, sent {unheard} to {q}")
    await _accepted(ctx, ctx.service.ack_claim(q, taken), f"ack of received {unheard}")
    again = await ctx.subscribe(q)
    second = "on a second subscription"
    if delayed:
        late = await ctx.service.send_message_with_delay(q, body(1, "delayed"), delay)
        await _notified_of(ctx, q, again, f"send_message_with_delay {second}", [late], delay)
    one = await ctx.service.send_message(q, body(1, "again"))
    await _notified_of(ctx, q, again, f"send_message {second}", [one])
    await _notified_of(ctx, q, again, f"send_batch {second}", await _sent_batch(ctx, q, "again"))


async def _sent_batch(ctx: CaseContext, q: str, tag: str) -> list[int]:
    return await ctx.service.send_batch(q, [body(i, tag) for i in range(NOTIFIED_BATCH)])


async def _notified_of(
    ctx: CaseContext,
    q: str,
    sub: Subscription,
    how: str,
    ids: list[int],
    delay: float = 0.0,
) -> None:
    """``sub`` is notified of every one of ``ids`` (sent by ``how``) within the delivery
    bound past ``delay``, and each can be taken as it is notified: a claimed push acked,
    anything else fetched by id (or, without fetch by id, received once all came). Every
    claimed push is acked, expected or not, so the prefetch never stops the push."""
    expected = {(q, msg_id) for msg_id in ids}
    taken: set[int] = set()

    async def take(note: MessageNotification) -> None:
        msg_id = notification_id(note)
        ctx.check(note.queue_name == q, f"a notification names {note.queue_name!r}, not {q!r}")
        if isinstance(note, Message) and note.claimed:
            # (pushed again after its ack returned: a loop that never lets a virtual
            # clock move, so it fails here rather than at the case's real-time bound)
            ctx.check(
                note.message.msg_id not in taken,
                f"message {note.message.msg_id} on {q} pushed as a claim again after its"
                " ack returned",
            )
            await _accepted(ctx, ctx.service.ack_claim(q, note.message), f"ack of pushed {msg_id}")
            taken.add(note.message.msg_id)
        elif ctx.caps.fetch_by_id and (q, msg_id) in expected and msg_id not in taken:
            assert msg_id is not None
            # A signal may come as the message is stored, before its delay is over: it
            # is takeable by the end of its delay, within the bound.
            within = delay + ctx.timing.delivery
            got = await ctx.eventually(
                lambda: ctx.service.fetch_message(q, msg_id, ctx.timing.long),
                within,
                f"notified of message {msg_id} on {q} ({note!r}), and fetching it"
                f" within {within:g} s",
            )
            ctx.check(
                got.msg_id == msg_id,
                f"notified of message {msg_id} on {q} ({note!r}), but fetching it returned {got!r}",
            )
            await _accepted(ctx, ctx.service.ack_claim(q, got), f"ack of fetched {msg_id}")
            taken.add(msg_id)

    try:
        await ctx.collect_notifications(
            sub, expected, within=delay + ctx.timing.delivery, each=take
        )
    except ContractViolation as exc:
        said = str(exc).removeprefix(f"[{ctx.rule_id}] ").removesuffix(f" (run id {ctx.run_id})")
        ctx.fail(f"{how}: {said}")
    left = [msg_id for msg_id in ids if msg_id not in taken]
    if left:
        got = await ctx.receive_exactly(q, len(left))
        ctx.check(
            sorted(m.msg_id for m in got) == sorted(left),
            f"{how}: notified of {sorted(left)} on {q}, received {[m.msg_id for m in got]}",
        )
        for m in got:
            await _accepted(ctx, ctx.service.ack_claim(q, m), f"ack of received {m.msg_id}")


#: PUSH-2: the sizes (in bytes) a relay or notification channel may cut a payload at; a
#: payload one byte over each is pushed (those up to the declared maximum).
CUT_AT = (1024, 4096, 8000, 8192, 16384, 65535)


def _pushed_corpus(max_size: int) -> list[tuple[str, bytes]]:
    """PUSH-2's payloads: JSON, binary, look-alikes of compressed or enveloped data,
    trailing blanks and line ends, and payloads just over common channel limits and at
    the declared maximum, each ending in CRLF so a cut or a strip shows."""
    out: list[tuple[str, bytes]] = [
        ("JSON payload", b'{"k": "v", "n": [1, 2]}'),
        ("binary payload", bytes(range(256))),
    ]
    out += fitting(SNIFFABLE, max_size)
    out += [(f"payload {p!r}", p) for p in WHITESPACE]
    pattern = bytes(range(32, 127))
    for size in sorted({*(limit + 1 for limit in CUT_AT), max_size}):
        if size <= max_size:
            data = (pattern * (size // len(pattern) + 1))[: size - 2] + b"\r\n"
            out.append((f"{size}-byte payload", data))
    return out


@rule(
    "PUSH-2",
    "Full-message notifications carry the message exactly: id, queue, payload (per the "
    "declared fidelity) and receive_count; checked with binary payloads, payloads that "
    "look compressed or enveloped, payloads ending in blanks, CR, LF or NUL, payloads "
    "one byte over 1024, 4096, 8000, 8192, 16384 and 65535 bytes and one of "
    "max_message_size_bytes (where mixed push announces one as Available instead, "
    "that one is not compared).",
    why="Consumers process pushed messages without fetching them. The push path is often "
    "not the receive path: a line-framed relay strips a trailing newline, a notification "
    "channel cuts at 8000 bytes, a decoder unwraps what looks compressed.",
    applies_when=FULL_PUSH,
)
async def full_message_exact(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sub = await ctx.subscribe(q)
    sent: dict[int, tuple[str, bytes]] = {}
    for what, payload in _pushed_corpus(ctx.caps.max_message_size_bytes):
        sent[await ctx.service.send_message(q, payload)] = (what, payload)
    problems: list[str] = []

    async def judge(note: MessageNotification) -> None:
        msg_id = notification_id(note)
        if isinstance(note, Available):
            if ctx.caps.push is not PushKind.MIXED and msg_id in sent:
                problems.append(f"{sent[msg_id][0]} (message {msg_id}) announced: {note!r}")
            return
        m = note.message
        if m.msg_id not in sent or m.queue_name != q:
            problems.append(f"pushed {m.msg_id}@{m.queue_name}, never sent there")
        else:
            what, payload = sent[m.msg_id]
            if not same_payload(ctx.caps.payload_fidelity, payload, m.payload):
                problems.append(
                    f"{what} (message {m.msg_id}) pushed as {m.payload[:24]!r}… "
                    f"({len(m.payload)} B), sent {payload[:24]!r}… ({len(payload)} B)"
                )
            # A claim counts as a receive; an unclaimed copy may show 0 or the count a
            # claim would give.
            allowed = (1,) if note.claimed else (0, 1)
            if m.receive_count not in allowed:
                problems.append(f"{what} (message {m.msg_id}) receive_count {m.receive_count}")
        if note.claimed != ctx.caps.pushed_messages_claimed:
            problems.append(
                f"message {m.msg_id} pushed with claimed={note.claimed}, declared "
                f"{ctx.caps.pushed_messages_claimed}"
            )
        await _settle_held(ctx, q, note)

    await ctx.collect_notifications(sub, [(q, i) for i in sent], each=judge)
    ctx.check(
        not problems,
        f"{len(problems)} of {len(sent)} pushed messages not exact: " + "; ".join(problems[:6]),
    )


@rule(
    "PUSH-3",
    "Signal notifications announce the right queue and id, and fetch-by-id returns that message.",
    why="Signal-only push is useless if the signal cannot be turned into the message.",
    applies_when=Applies.push(PushKind.SIGNAL, PushKind.MIXED) & Applies.flag("fetch_by_id"),
)
async def signal_then_fetch(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sub = await ctx.subscribe(q)
    threshold = ctx.caps.push_payload_threshold_bytes or 0
    payload = _json_payload(threshold + 1) if ctx.caps.push is PushKind.MIXED else body(1)
    sent = await ctx.service.send_message(q, payload)
    note = await ctx.next_notification(sub)
    ctx.check(isinstance(note, Available), f"expected Available for {len(payload)} B: {note!r}")
    ctx.check((note.queue_name, notification_id(note)) == (q, sent), f"announced {note!r}")
    fetched = await ctx.service.fetch_message(q, sent, ctx.timing.long)
    ctx.check(fetched is not None and fetched.msg_id == sent, f"fetch returned {fetched!r}")
    assert fetched is not None
    ctx.check(same_payload(ctx.caps.payload_fidelity, payload, fetched.payload), "payload changed")


@rule(
    "PUSH-4",
    "Mixed push switches at the declared threshold counted in bytes: small payloads arrive "
    "as Message, payloads over the threshold as Available — multibyte text included, and "
    "such sends never fail.",
    why="NOTIFY payloads fail at 8000 bytes; the original counted characters, so 7,000 "
    "multibyte characters broke the send.",
    applies_when=MIXED_PUSH,
)
async def mixed_threshold(ctx: CaseContext) -> None:
    threshold = ctx.caps.push_payload_threshold_bytes
    assert threshold is not None
    q = await ctx.queue()
    sub = await ctx.subscribe(q)
    small = _json_payload(threshold // 4)
    over = _json_payload(threshold + 1)
    wide = json.dumps({"s": "\u00e9" * 7000}, ensure_ascii=False).encode()
    kinds = {}
    for name, payload in (("small", small), ("over", over), ("7000 chars", wide)):
        sent = await ctx.service.send_message(q, payload)
        note = await ctx.next_notification(sub)
        ctx.check(notification_id(note) == sent, f"{name}: announced {note!r}, sent {sent}")
        kinds[name] = type(note).__name__
        await _settle_held(ctx, q, note)
    ctx.check(
        kinds == {"small": "Message", "over": "Available", "7000 chars": "Available"},
        f"threshold {threshold} B: got {kinds}",
    )


#: PUSH-5's queues: past the 16 or 32 streams, channels or consumers one blocking read,
#: LISTEN batch or channel may be capped at.
MANY_QUEUES = 33


@rule(
    "PUSH-5",
    "subscribe_many delivers notifications for every listed queue, each naming its queue: "
    f"checked with {MANY_QUEUES} queues, each sent one message.",
    why="Orchestration listens on several queues through one stream; a provider that "
    "reads them in one call capped at 16 or 32 names, and drops the rest, never delivers "
    "their messages, and nothing says so.",
    applies_when=ANY_PUSH,
)
async def subscribe_many_names_queue(ctx: CaseContext) -> None:
    queues = [await ctx.queue() for _ in range(MANY_QUEUES)]
    sub = await ctx.subscribe(*queues)
    payloads = {q: body(i, q) for i, q in enumerate(queues)}
    sent = [(q, await ctx.service.send_message(q, payloads[q])) for q in queues]

    seen = await ctx.collect_notifications(sub, sent, each=_settled_as_they_come(ctx, sent))
    for (queue, msg_id), note in seen.items():
        if isinstance(note, Message) and queue in payloads:  # ids may repeat across queues
            ctx.check(
                same_payload(ctx.caps.payload_fidelity, payloads[queue], note.message.payload),
                f"message {msg_id} announced for {queue} carries {note.message.payload!r}, "
                f"sent to it {payloads[queue]!r}",
            )
    ctx.check(set(seen) == set(sent), f"announced {sorted(seen)}, sent {sorted(sent)}")


#: PUSH-6's rounds, the queues each round's subscription lists, the messages each round
#: receives on every queue before subscribing (and nacks with the subscription open:
#: their first delivery is what they must keep when the close gives them back), and the
#: burst it sends (spread over its queues) just before it closes its subscription: some
#: may be on their way to it as it closes (a delivery a provider drops then, instead of
#: releasing it, is stranded until its claim lapses). How many are depends on timing,
#: hence several rounds.
CLOSE_ROUNDS = 3
CLOSE_QUEUES = 2
CLOSE_EARLY = 2
CLOSE_BURST = 50


@rule(
    "PUSH-6",
    "Closing a subscription ends its iteration and releases what it held on every queue it "
    "lists: messages it never handed out, including those on their way to it as it "
    "closed, and messages sent afterwards, can be received again, each once, with the "
    "payload sent (per the declared fidelity); a message received before it opened and "
    "nacked while it was open (so it may have held it), when received again, keeps its "
    "id, payload and enqueued_at. Checked in "
    f"{CLOSE_ROUNDS} rounds on a subscription to {CLOSE_QUEUES} queues, each round "
    f"closing right after a burst of {CLOSE_BURST} sends.",
    why="A stopped consumer must not strand messages (the original pushed and auto-acked); "
    "deliveries in flight at the close are where providers strand them (a cancel that "
    "forgets its consumer at once, a loop cancelled mid-pull), in some runs only, hence "
    "several rounds; a provider that gives back only its first queue's prefetch strands "
    "the others', and one that gives back by republishing restamps them.",
    applies_when=ANY_PUSH,
)
async def close_releases(ctx: CaseContext) -> None:
    for round_number in range(1, CLOSE_ROUNDS + 1):
        await _close_round(ctx, round_number)


async def _close_round(ctx: CaseContext, round_number: int) -> None:
    queues = [await ctx.queue() for _ in range(CLOSE_QUEUES)]
    sent: dict[tuple[str, int], bytes] = {}

    async def send(q: str, payload: bytes) -> tuple[str, int]:
        key = (q, await ctx.service.send_message(q, payload))
        sent[key] = payload
        return key

    # Claimed by receive before the subscription opens, released while it is open: it
    # may be pushed to the subscription, and its first delivery is what it must keep.
    for q in queues:
        for i in range(CLOSE_EARLY):
            await send(q, body(i, f"early-{q}"))
    early = {
        (m.queue_name, m.msg_id): m
        for q in queues
        for m in await ctx.receive_exactly(q, CLOSE_EARLY)
    }
    sub = await ctx.service.subscribe_many(queues)
    ctx.subscriptions.append(sub)  # closed by the runner if this round fails first
    for (q, _), m in early.items():
        await _accepted(ctx, ctx.service.nack_claim(q, m), f"nack of received {m.msg_id}")
    for i in range(3):
        for q in queues:
            await send(q, body(i, q))
    first = await ctx.next_notification(sub)
    await ctx.wait_past(ctx.now() + ctx.timing.unit / 4)  # time passes: a new enqueued_at shows
    burst: set[tuple[str, int]] = set()
    for q in queues:
        payloads = [body(10 + i, q) for i in range(CLOSE_BURST // len(queues))]
        ids = await ctx.service.send_batch(q, payloads)
        burst.update((q, i) for i in ids)
        sent.update(((q, i), p) for i, p in zip(ids, payloads, strict=True))
    await sub.aclose()
    where = f"round {round_number}"
    try:
        extra = await ctx.next_notification(sub, within=ctx.timing.step)
    except StopAsyncIteration:
        extra = None
    except AssertionError:
        ctx.fail(f"{where}: a closed subscription blocks instead of ending")
    ctx.check(extra is None, f"{where}: a closed subscription still yields {extra!r}")
    for q in queues:
        await send(q, body(9, q))
    held = (
        (first.queue_name, first.message.msg_id)
        if isinstance(first, Message) and first.claimed
        else None
    )
    # What was received before the subscription opened is checked when it comes back:
    # that it does after a nack is other rules' business (ACK-2, PUSH-13).
    expected = set(sent) - {held} - set(early)
    got: dict[str, list[QueuedMessage]] = {q: [] for q in queues}
    limit = min(100, ctx.caps.max_receive_limit)

    def received() -> set[tuple[str, int]]:
        return {(q, m.msg_id) for q in queues for m in got[q]}

    async def probe() -> bool:
        for q in queues:
            while True:  # a full receive may have more behind it: no pause before the next
                batch = await ctx.receive(q, limit)
                got[q].extend(batch)
                if len(batch) < limit or expected <= received():
                    break
        return expected <= received()

    timed_out = False
    try:
        await ctx.eventually(probe, ctx.timing.delivery, "every message")
    except ContractViolation:
        timed_out = True  # reported below, with what is missing
    counts = collections.Counter((q, m.msg_id) for q in queues for m in got[q])
    problems = []
    if timed_out:
        missing = expected - set(counts)
        problems.append(
            f"{len(missing)} of {len(expected)} messages not received within "
            f"{ctx.timing.delivery:g} s (of the burst sent just before the close: "
            f"{sorted(missing & burst)}; others: {sorted(missing - burst)})"
        )
    if held is not None and held in counts:
        problems.append(
            f"the claimed push it handed out ({held}) was received by another consumer after"
            " the close: the close released it, or it was never held"
        )
    extras = sorted(set(counts) - expected - {held} - set(early))
    if extras:
        problems.append(f"received messages never sent to it: {extras}")
    twice = sorted(key for key, n in counts.items() if n > 1)
    if twice:
        problems.append(f"received more than once: {twice}")
    for q in queues:
        for m in got[q]:
            key = (q, m.msg_id)
            if key in early and key != held:
                before = early[key]
                if (m.payload, m.enqueued_at) != (before.payload, before.enqueued_at):
                    problems.append(
                        f"{key}, received before the subscription opened with payload "
                        f"{before.payload!r} and enqueued_at {before.enqueued_at!r}, came "
                        f"back with {m.payload!r} and {m.enqueued_at!r}"
                    )
            elif key in sent and not same_payload(ctx.caps.payload_fidelity, sent[key], m.payload):
                problems.append(f"{key} carries {m.payload!r}, sent {sent[key]!r}")
    ctx.check(not problems, f"{where}, after the subscription closed: " + "; ".join(problems))


@rule(
    "PUSH-7",
    "A pushed message declared claimed is held for the whole push timeout its claim states, "
    "even once its subscription is closed: neither this service nor another consumer "
    "receives it, checked at once and again just before the timeout ends. Not settled, it "
    "comes back after the timeout with its id, payload and enqueued_at and receive_count + "
    "1; acked, it never comes back.",
    why="The original RabbitMQ provider acked on hand-off, so a crash lost the message; a "
    "hold checked only at once passes a provider that keeps a pushed claim for half its "
    "timeout, or for a fixed second.",
    applies_when=CLAIMED_PUSH,
)
async def pushed_claimed_until_ack(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sub = await ctx.subscribe(q)
    receivers = await _receivers(ctx, q)
    start = ctx.now()  # every claim below starts after this instant
    done, kept = [await ctx.service.send_message(q, body(i, "held\r\n")) for i in (1, 2)]
    notes = await ctx.collect_notifications(sub, [(q, done), (q, kept)])
    pushed: dict[int, QueuedMessage] = {}
    for (_, msg_id), note in notes.items():
        ctx.check(isinstance(note, Message) and note.claimed, f"expected a claim: {note!r}")
        assert isinstance(note, Message)
        pushed[msg_id] = note.message
    await _accepted(ctx, ctx.service.ack_claim(q, pushed[done]), f"ack of pushed {done}")
    await sub.aclose()  # the handler still runs: what it holds stays held
    claim = pushed[kept].claim
    ctx.check(claim is not None, f"pushed claim of {kept} carries no Claim")
    assert claim is not None
    timeout = claim.visibility_timeout
    ctx.check(
        0 < timeout <= ctx.timing.long,
        f"push timeout {timeout:g} s: a case can wait out at most {ctx.timing.long:g} s "
        "(configure a shorter push visibility timeout for conformance runs)",
    )

    taken: list[tuple[MessagingService, QueuedMessage]] = []

    async def leaked() -> list[int]:
        """What one receiver got, asking them in turn (the first answer that has
        something is returned at once: its time is the answer's)."""
        for receiver in receivers:
            batch = await receiver.receive_messages(q, 10, ctx.timing.long)
            if batch:
                taken.extend((receiver, m) for m in batch)
                return [m.msg_id for m in batch]
        return []

    # The claim ends no earlier than start + timeout; the last look is just before that.
    last = start + timeout - ctx.caps.visibility_precision_seconds - ctx.timing.step * 4
    for instant in (ctx.now(), start + timeout / 4, start + timeout / 2):
        await ctx.wait_past(instant)
        got = await leaked()
        ctx.check(
            not got,
            f"pushed messages {got} received {ctx.now() - start:.3f} s into "
            f"their {timeout:g} s push timeout",
        )
    await ctx.wait_past(last - min(ctx.timing.unit, timeout / 4))
    taken.clear()
    late = await ctx.never(
        leaked,
        max(last - ctx.now(), 0.0),
        f"a pushed message was received late in its {timeout:g} s push timeout",
        due=start + timeout - ctx.caps.visibility_precision_seconds,
    )
    if late:  # the last look was answered once the push timeout could have ended
        ctx.check(late == [kept], f"expected {kept} back once its push timeout ended, got {late}")
        ((holder, back),) = taken
    else:
        within = max(last - ctx.now(), 0.0) + ctx.timing.slack
        try:
            (back,) = await ctx.receive_exactly(q, 1, within=within)
        except ContractViolation as exc:
            ctx.fail(
                f"pushed message {kept}, never settled, did not come back once its "
                f"{timeout:g} s push timeout ended: {exc}"
            )
        holder = ctx.service
    check_redelivered(ctx, "after the push timeout", pushed[kept], back, deliveries=2)
    await holder.ack_claim(q, back)

    async def any_back() -> list[int]:
        return [m.msg_id for m in await ctx.receive(q)]

    await ctx.never(any_back, ctx.timing.margin, "an acked pushed message came back")


async def _accepted(ctx: CaseContext, settlement: Awaitable[None], what: str) -> None:
    """Settling a claim the case was just handed must work; MessageNotFound is a violation."""
    try:
        await settlement
    except MessageNotFound as exc:
        ctx.fail(f"{what}, a claim handed out just now, raised {type(exc).__name__}: {exc}")


async def _receivers(ctx: CaseContext, q: str) -> list[MessagingService]:
    """This service and, where the harness shares a backend, another consumer of ``q``."""
    try:
        return [ctx.service, await ctx.other_consumer(q)]
    except HookUnavailable:
        return [ctx.service]


@rule(
    "PUSH-8",
    "A pushed unclaimed copy must be claimed by id before processing: the first fetch "
    "claims it, a second returns None.",
    why="The original pushed unclaimed copies, so push and the fallback poller both "
    "processed the same message.",
    applies_when=FULL_PUSH & ~Applies.flag("pushed_messages_claimed"),
)
async def pushed_copy_claimable(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sub = await ctx.subscribe(q)
    sent = await ctx.service.send_message(q, body(1))
    note = await ctx.next_notification(sub)
    ctx.check(isinstance(note, Message) and not note.claimed, f"expected a copy: {note!r}")
    ctx.check(ctx.caps.fetch_by_id, "unclaimed push without fetch_by_id cannot be claimed")
    first = await ctx.service.fetch_message(q, sent, ctx.timing.long)
    second = await ctx.service.fetch_message(q, sent, ctx.timing.long)
    ctx.check(first is not None and first.msg_id == sent, f"claim by id returned {first!r}")
    ctx.check(second is None, f"a claimed message was claimed again: {second!r}")
    await ctx.service.ack_message(q, sent)


@rule(
    "PUSH-9",
    "Subscribing to a missing queue raises QueueNotFound; to an invalid name, "
    "InvalidQueueName; subscribe_many with one queue missing raises QueueNotFound naming "
    "that queue.",
    why="A subscription to nothing would wait forever.",
    applies_when=ANY_PUSH,
)
async def subscribe_bad_queue(ctx: CaseContext) -> None:
    missing = ctx.queue_name()
    await ctx.raises(QueueNotFound, ctx.service.subscribe(missing), "subscribe to missing")
    await ctx.raises(InvalidQueueName, ctx.service.subscribe("Bad;Name"), "subscribe invalid")
    good = await ctx.queue()
    exc = await ctx.raises(
        QueueNotFound,
        ctx.service.subscribe_many([good, missing]),
        "subscribe_many with one missing",
    )
    ctx.check(
        exc.queue == missing and missing in str(exc),
        f"subscribe_many([{good}, {missing}]) raised QueueNotFound naming "
        f"{exc.queue!r} ({exc}), not the missing {missing}",
    )


@rule(
    "PUSH-10",
    "A provider without push raises UnsupportedOperation from subscribe.",
    why="An empty stream that never ends (the original in-memory provider) hides the gap.",
    applies_when=Applies.push(PushKind.NONE),
)
async def no_push_is_explicit(ctx: CaseContext) -> None:
    q = await ctx.queue()
    await ctx.raises(UnsupportedOperation, ctx.service.subscribe(q), "subscribe")


@rule(
    "PUSH-11",
    "The declared properties agree with the capabilities: requires_fallback_polling, "
    "fallback_polling_interval (> 0 when fallback is required), "
    "supports_fetch_by_message_id, and a threshold exactly when push is mixed.",
    why="Event systems choose their deployment mode from these properties.",
)
async def properties_match_capabilities(ctx: CaseContext) -> None:
    caps, svc = ctx.caps, ctx.service
    ctx.check(
        svc.requires_fallback_polling == caps.requires_fallback_polling,
        "requires_fallback_polling disagrees with capabilities",
    )
    ctx.check(
        svc.supports_fetch_by_message_id == caps.fetch_by_id,
        "supports_fetch_by_message_id disagrees with capabilities",
    )
    ctx.check(
        svc.fallback_polling_interval == caps.fallback_polling_interval,
        "fallback_polling_interval disagrees with capabilities",
    )
    if caps.requires_fallback_polling:
        interval = caps.fallback_polling_interval
        ctx.check(interval is not None and interval > 0, f"fallback interval {interval}")
    ctx.check(
        (caps.push is PushKind.MIXED) == (caps.push_payload_threshold_bytes is not None),
        f"push {caps.push} with threshold {caps.push_payload_threshold_bytes}",
    )
    if caps.push is PushKind.NONE:
        ctx.check(
            caps.requires_fallback_polling is False or caps.fallback_polling_interval,
            "no push but no polling interval",
        )


@rule(
    "PUSH-12",
    "With a subscription open, ack after nack of a pushed claimed message, by id or by "
    "its claim, raises MessageNotFound, even once the message has been pushed again; the "
    "new copy is then delivered and can be acked.",
    why="A provider that lets the old holder's ack settle the copy waiting in the "
    "subscription hands out work it reported done.",
    applies_when=CLAIMED_PUSH,
    provisional=True,
)
async def ack_after_nack_of_pushed(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sub = await ctx.subscribe(q)
    sent = await ctx.service.send_message(q, body(1))
    note = await ctx.next_claimed(sub)
    await _accepted(ctx, ctx.service.nack_message(q, sent), f"nack of pushed {sent}")
    await ctx.raises(MessageNotFound, ctx.service.ack_message(q, sent), "ack after nack")
    await ctx.raises(
        MessageNotFound, ctx.service.ack_claim(q, note.message), "ack of the nacked claim"
    )
    again = await ctx.next_notification(sub)
    ctx.check(notification_id(again) == sent, f"expected message {sent} again: {again!r}")
    await ctx.service.ack_message(q, sent)
    ctx.check(await ctx.receive(q) == [], f"acked pushed message {sent} came back")


@rule(
    "PUSH-13",
    "With a subscription open, a message released by nack is delivered to it again within "
    "the delivery bound (pushed again, or announced), whether it was claimed by receive "
    "or through the subscription; the redelivery keeps its id, payload and enqueued_at "
    "and shows receive_count + 1. Checked on a subscription listing the queue after "
    "another.",
    why="Decided: nack means 'retry now', for subscribers too. A provider that announces "
    "only inserts leaves a nacked message to the fallback poller (an interval late) or, "
    "without one, to nobody; PGMQ's nack announces, RabbitMQ's broker redelivers. One "
    "that wakes a subscription through its first queue misses the others' nacks.",
    applies_when=ANY_PUSH,
    provisional=True,
)
async def nacked_delivered_again(ctx: CaseContext) -> None:
    side, q = await ctx.queue(), await ctx.queue()  # the subscription lists q second
    # Claimed by receive before anyone subscribed; over a mixed threshold it is announced.
    mixed = ctx.caps.push_payload_threshold_bytes
    payload = _json_payload(mixed + 1) if mixed is not None else body(1)
    first = await ctx.service.send_message(q, payload)
    (received,) = await ctx.receive_exactly(q, 1)
    ctx.check(received.msg_id == first, f"received {received.msg_id}, sent {first}")
    sub = await ctx.subscribe(side, q)
    # Delivered through the subscription (so it is live), claimed by push or by id.
    second = await ctx.service.send_message(q, body(2))
    note = await ctx.next_notification(sub)
    ctx.check(notification_id(note) == second, f"announced {note!r}, sent {second}")
    pushed = await _claim_notified(ctx, q, note)
    await _accepted(ctx, ctx.service.nack_claim(q, received), f"nack of received {first}")
    await _delivered_again(ctx, q, sub, received, "received, then nacked")
    await _accepted(ctx, ctx.service.nack_claim(q, pushed), f"nack of pushed {second}")
    await _delivered_again(ctx, q, sub, pushed, "pushed, then nacked")


#: PUSH-14's messages waiting on each queue, and the queues of its second subscription:
#: the first listed is empty, so nothing done for it (a claim, its settlement) pushes the
#: others' backlog by the way.
BACKLOG_EACH = 2
BACKLOG_QUEUES = 3


@rule(
    "PUSH-14",
    "A provider that declares push_delivers_backlog delivers, to a new subscription, "
    "every message already waiting on any queue it lists when it opened, within the "
    f"delivery bound: checked on a subscription to one queue holding {BACKLOG_EACH} "
    f"messages, and on one to {BACKLOG_QUEUES} queues, the first empty and the others "
    f"holding {BACKLOG_EACH} each.",
    why="Decided: the event system trusts the declaration. In Hybrid mode a provider "
    "whose subscription delivers the backlog gets its first fallback poll one interval "
    "after start instead of at once, so push and a serial poll do not both claim the "
    "backlog; a provider that declares it and only pushes new sends leaves a backlog "
    "waiting an interval; one that dispatches only its first queue's backlog leaves the "
    "other queues' waiting until something new happens on them.",
    applies_when=FULL_PUSH & Applies.flag("push_delivers_backlog"),
    provisional=True,
)
async def backlog_pushed(ctx: CaseContext) -> None:
    alone = await ctx.queue()
    await _backlog_round(ctx, [alone], [alone])
    queues = [await ctx.queue() for _ in range(BACKLOG_QUEUES)]
    await _backlog_round(ctx, queues, queues[1:])


async def _backlog_round(ctx: CaseContext, listed: list[str], waiting: list[str]) -> None:
    """Send to each of ``waiting``, then subscribe to ``listed``: all must be pushed."""
    ids = [
        (q, await ctx.service.send_message(q, body(i, q)))
        for q in waiting
        for i in range(BACKLOG_EACH)
    ]
    sub = await ctx.subscribe(*listed)
    await ctx.collect_notifications(sub, ids, each=_settled_as_they_come(ctx, ids))


async def _claim_notified(ctx: CaseContext, q: str, note: MessageNotification) -> QueuedMessage:
    """The claim a notification stands for: its own when claimed, else one made by id."""
    if isinstance(note, Message) and note.claimed:
        return note.message
    msg_id = notification_id(note)
    claimed = (
        await ctx.service.fetch_message(q, msg_id, ctx.timing.long) if msg_id is not None else None
    )
    ctx.check(claimed is not None, f"announced message {msg_id} could not be claimed by id")
    assert claimed is not None
    return claimed


async def _delivered_again(
    ctx: CaseContext, q: str, sub: Subscription, nacked: QueuedMessage, path: str
) -> None:
    """``nacked`` reaches ``sub`` again within the delivery bound, unchanged, and is acked."""
    try:
        note = await ctx.next_notification(sub)
    except AssertionError:
        ctx.fail(
            f"{path}: message {nacked.msg_id} not delivered to the open subscription "
            f"within {ctx.timing.delivery:g} s"
        )
    ctx.check(
        notification_id(note) == nacked.msg_id,
        f"{path}: expected message {nacked.msg_id} again, got {note!r}",
    )
    if isinstance(note, Message):
        check_redelivered(
            ctx, f"{path}, pushed", nacked, note.message, deliveries=2, copy=not note.claimed
        )
    again = await _claim_notified(ctx, q, note)
    check_redelivered(ctx, f"{path}, claimed again", nacked, again, deliveries=2)
    await _accepted(ctx, ctx.service.ack_claim(q, again), f"{path}: ack of {again.msg_id}")
