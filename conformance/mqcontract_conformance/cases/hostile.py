"""HOST: hostile input gets its documented error and leaves every queue as it was.

HOST-1 to HOST-6 make one kind of hostile call at a time; HOST-7 (:mod:`._fuzz`) runs
derandomized programs mixing them with valid calls, and then calls a closed service.

Each rule keeps a queue of bystander messages. After hostile calls, the backdoor
(``harness.stored_ids``, when the harness has one) must still list exactly them, and at
the end they must all be receivable, unclaimed (``receive_count`` 1) and unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from mqcontract.capabilities import PushKind
from mqcontract.errors import InvalidArgument, InvalidQueueName, MessageNotFound, MessageTooLarge
from mqcontract.messages import Message
from mqcontract.testing import HookUnavailable
from mqcontract_conformance.cases._conditions import MIXED_PUSH
from mqcontract_conformance.cases._fuzz import fuzz_public_api
from mqcontract_conformance.cases._hostile_corpus import (
    HOSTILE_IDS,
    HOSTILE_LIMITS,
    HOSTILE_NAMES,
    HOSTILE_PAYLOADS,
    hostile_delays,
    hostile_visibility_timeouts,
    shown,
)
from mqcontract_conformance.cases._payloads import same_payload
from mqcontract_conformance.context import CaseContext, notification_id
from mqcontract_conformance.registry import rule

Call = Callable[[], Awaitable[object]]


class Bystanders:
    """A queue with a few messages that hostile input must not touch."""

    def __init__(self, ctx: CaseContext, queue: str, sent: dict[int, bytes]) -> None:
        self.ctx, self.queue, self.sent = ctx, queue, sent
        self.backdoor = True

    @classmethod
    async def seed(cls, ctx: CaseContext, count: int = 3) -> Bystanders:
        queue = await ctx.queue()
        payloads = [f"bystander-{i}".encode() for i in range(count)]
        ids = await ctx.service.send_batch(queue, payloads)
        return cls(ctx, queue, dict(zip(ids, payloads, strict=True)))

    async def check(self, after: str) -> None:
        """Backdoor check: exactly the bystanders are stored."""
        if not self.backdoor:
            return
        try:
            stored = await self.ctx.harness.stored_ids(self.ctx.service, self.queue)
        except HookUnavailable:
            self.backdoor = False
            return
        self.ctx.check(
            sorted(stored) == sorted(self.sent),
            f"after {after}: {self.queue} stores {sorted(stored)}, expected {sorted(self.sent)}",
        )

    async def final(self) -> None:
        """Every bystander is receivable, unclaimed until now and unchanged."""
        got = await self.ctx.receive_exactly(self.queue, len(self.sent))
        for m in got:
            self.ctx.check(
                m.msg_id in self.sent and m.receive_count == 1 and m.payload == self.sent[m.msg_id],
                f"bystander {m.msg_id} changed: receive_count {m.receive_count}, "
                f"payload {m.payload[:40]!r}",
            )


def _name_calls(ctx: CaseContext, name: object, good: str) -> dict[str, Call]:
    svc, bad, caps = ctx.service, name, ctx.caps
    calls: dict[str, Call] = {
        "create_queue": lambda: svc.create_queue(bad),  # type: ignore[arg-type]
        "delete_queue": lambda: svc.delete_queue(bad),  # type: ignore[arg-type]
        "queue_exists": lambda: svc.queue_exists(bad),  # type: ignore[arg-type]
        "send_message": lambda: svc.send_message(bad, b"x"),  # type: ignore[arg-type]
        "send_batch": lambda: svc.send_batch(bad, [b"x"]),  # type: ignore[arg-type]
        "receive_messages": lambda: svc.receive_messages(bad, 1, 1.0),  # type: ignore[arg-type]
        "ack_message": lambda: svc.ack_message(bad, 1),  # type: ignore[arg-type]
        "nack_message": lambda: svc.nack_message(bad, 1),  # type: ignore[arg-type]
    }
    if caps.delay:
        calls["send_message_with_delay"] = lambda: svc.send_message_with_delay(
            bad,  # type: ignore[arg-type]
            b"x",
            1.0,
        )
    if caps.fetch_by_id:
        calls["fetch_message"] = lambda: svc.fetch_message(bad, 1, 1.0)  # type: ignore[arg-type]
    if caps.push is not PushKind.NONE:
        calls["subscribe"] = lambda: svc.subscribe(bad)  # type: ignore[arg-type]
        calls["subscribe_many"] = lambda: svc.subscribe_many([good, bad])  # type: ignore[list-item]
    return calls


async def _closing(call: Call) -> object:
    """Run ``call``; a subscription it wrongly returns is closed, not leaked."""
    result = await call()
    aclose = getattr(result, "aclose", None)
    if aclose is not None:
        await aclose()
    return result


@rule(
    "HOST-1",
    "Every operation given a hostile queue name (SQL and AMQP metacharacters, backend "
    "identifiers, look-alike unicode, control characters, 48 to 10,000 characters, "
    "non-strings) raises InvalidQueueName, creates nothing and touches no queue.",
    why="Names reach SQL identifiers, NOTIFY channels and AMQP routing keys; one "
    "unchecked path is an injection.",
    provisional=True,
)
async def hostile_names(ctx: CaseContext) -> None:
    by = await Bystanders.seed(ctx)
    before = set(await ctx.service.list_queues()) if ctx.caps.list_queues else set()
    for name in HOSTILE_NAMES:
        for op, call in _name_calls(ctx, name, by.queue).items():
            await ctx.raises(InvalidQueueName, _closing(call), f"{op}({shown(name, 60)})")
        await by.check(f"operations on {shown(name, 60)}")
    if ctx.caps.list_queues:
        created = set(await ctx.service.list_queues()) - before
        ctx.check(not created, f"hostile names created queues: {sorted(created)[:10]}")
    await by.final()


@rule(
    "HOST-2",
    "Hostile payloads (empty, NUL, invalid UTF-8, UTF-16, JSON a database refuses, "
    "5,000-digit numbers, 20,000-deep nesting, JSON booleans beside numbers, decomposed "
    "text, envelope look-alikes, SQL text, bytearray, memoryview) are stored under their "
    "own ids and come back as declared.",
    why="Text-first backends (jsonb, NOTIFY) mangle what they cannot represent unless "
    "the provider envelopes it; a payload must never be parsed into something else.",
    provisional=True,
)
async def hostile_payloads(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent: dict[int, tuple[str, bytes]] = {}
    # bytearray and memoryview are sent as they are: providers accept any bytes-like.
    for label, payload in HOSTILE_PAYLOADS:
        msg_id = await ctx.service.send_message(q, payload)  # type: ignore[arg-type]
        sent[msg_id] = (label, bytes(payload))
    batch = [p for _, p in HOSTILE_PAYLOADS]
    ids = await ctx.service.send_batch(q, batch)  # type: ignore[arg-type]
    for (label, payload), msg_id in zip(HOSTILE_PAYLOADS, ids, strict=True):
        sent[msg_id] = (f"{label} (batch)", bytes(payload))
    got = await ctx.receive_exactly(q, len(sent), within=ctx.timing.delivery * 2)
    for m in got:
        label, payload = sent[m.msg_id]
        ctx.check(
            same_payload(ctx.caps.payload_fidelity, payload, m.payload),
            f"{label}: sent {payload[:40]!r} ({len(payload)} B), got {m.payload[:40]!r} "
            f"({len(m.payload)} B) under {ctx.caps.payload_fidelity.value} fidelity",
        )


def _at_size(size: int) -> dict[str, bytes]:
    """Payloads of exactly ``size`` bytes: multibyte text, a JSON string, binary."""
    text = ("\u00e9" * (size // 2) + "a" * (size % 2)).encode()
    inner = size - 2
    json_text = ('"' + "\u00e9" * (inner // 2) + "a" * (inner % 2) + '"').encode()
    binary = (bytes(range(256)) * (size // 256 + 1))[:size]
    return {"multibyte text": text, "JSON string": json_text, "binary": binary}


@rule(
    "HOST-3",
    "Multibyte text, a JSON string and binary data of exactly max_message_size_bytes are "
    "accepted and round-trip; one byte more (a split emoji included) raises "
    "MessageTooLarge from send, delayed send and batch send, and enqueues nothing.",
    why="Limits are bytes, not characters; an envelope or a normalization must not push "
    "a legal payload over a backend limit.",
    provisional=True,
)
async def size_limit_bytes(ctx: CaseContext) -> None:
    limit = ctx.caps.max_message_size_bytes
    by = await Bystanders.seed(ctx)
    q, svc = by.queue, ctx.service
    over = {f"{label} + 1 byte": payload + b"a" for label, payload in _at_size(limit).items()} | {
        "split emoji": b"a" * (limit - 3) + "\U0001f389".encode()
    }
    for label, payload in over.items():
        calls: dict[str, Call] = {
            "send": lambda p=payload: svc.send_message(q, p),  # type: ignore[misc]
            "send_batch": lambda p=payload: svc.send_batch(q, [b"ok", p]),  # type: ignore[misc]
        }
        if ctx.caps.delay:
            calls["send_with_delay"] = lambda p=payload: svc.send_message_with_delay(  # type: ignore[misc]
                q, p, 0.0
            )
        for op, call in calls.items():
            exc = await ctx.raises(MessageTooLarge, call(), f"{op} of {label}")
            ctx.check(
                (exc.size, exc.limit) == (limit + 1, limit),
                f"{op} of {label}: MessageTooLarge size={exc.size} limit={exc.limit}",
            )
    await by.check("oversized sends")
    await by.final()
    exact = _at_size(limit)
    ids = {
        await ctx.accepts(svc.send_message(q, payload), f"{label} of exactly {limit} bytes"): label
        for label, payload in exact.items()
    }
    got = await ctx.receive_exactly(q, len(ids))
    for m in got:
        label = ids[m.msg_id]
        ctx.check(
            same_payload(ctx.caps.payload_fidelity, exact[label], m.payload),
            f"{label} of exactly {limit} bytes came back as {len(m.payload)} bytes",
        )


@rule(
    "HOST-4",
    "Hostile limits, visibility timeouts and delays (negative zero, subnormal, -inf, NaN, "
    "1e308, integers too large for a float, strings, None, booleans) raise "
    "InvalidArgument and claim or enqueue nothing; the inclusive maxima are accepted.",
    why="A number that overflows, or a bool that is an int in Python, must not reach a "
    "backend as 'forever', 'now' or a crash.",
    provisional=True,
)
async def hostile_numbers(ctx: CaseContext) -> None:
    caps, svc = ctx.caps, ctx.service
    by = await Bystanders.seed(ctx)
    q, some_id = by.queue, next(iter(by.sent))
    for limit in HOSTILE_LIMITS:
        call = svc.receive_messages(q, limit, ctx.timing.long)  # type: ignore[arg-type]
        await ctx.raises(InvalidArgument, call, f"receive with limit={shown(limit)}")
    for vt in hostile_visibility_timeouts(caps.max_visibility_timeout_seconds):
        what = f"visibility_timeout={shown(vt)}"
        await ctx.raises(
            InvalidArgument,
            svc.receive_messages(q, 1, vt),  # type: ignore[arg-type]
            f"receive with {what}",
        )
        if caps.fetch_by_id:
            await ctx.raises(
                InvalidArgument,
                svc.fetch_message(q, some_id, vt),  # type: ignore[arg-type]
                f"fetch with {what}",
            )
    if caps.delay:
        for delay in hostile_delays(caps.max_delay_seconds):
            await ctx.raises(
                InvalidArgument,
                svc.send_message_with_delay(q, b"x", delay),  # type: ignore[arg-type]
                f"send with delay_seconds={shown(delay)}",
            )
    await by.check("hostile numbers")
    await by.final()
    edge = await ctx.queue()
    ids = await svc.send_batch(edge, [b"a", b"b"])
    got = await svc.receive_messages(
        edge, caps.max_receive_limit, caps.max_visibility_timeout_seconds
    )
    ctx.check(
        sorted(m.msg_id for m in got) == sorted(ids),
        f"receive at the maximum limit and timeout returned {[m.msg_id for m in got]}",
    )
    if caps.delay:
        late = await svc.send_message_with_delay(edge, b"c", caps.max_delay_seconds)
        early = await ctx.receive(edge)
        ctx.check(early == [], f"message {late} delayed by the maximum was visible at once")


@rule(
    "HOST-5",
    "Message ids that name no held message — unknown, negative, beyond 64 bits, booleans, "
    "floats (1.0 and 1.5 included), strings, None — make ack and nack raise "
    "MessageNotFound and fetch return None, and never act on another message.",
    why="True == 1 in Python and drivers truncate 1.5 to 1: a stray value must not ack, "
    "release or claim message 1.",
    provisional=True,
)
async def hostile_ids(ctx: CaseContext) -> None:
    svc = ctx.service
    held_q = await ctx.queue()
    held_ids = await svc.send_batch(held_q, [b"h1", b"h2", b"h3"])
    await ctx.receive_exactly(held_q, 3)
    for msg_id in HOSTILE_IDS:
        for op, call in (("ack", svc.ack_message), ("nack", svc.nack_message)):
            await ctx.raises(
                MessageNotFound,
                call(held_q, msg_id),  # type: ignore[arg-type]
                f"{op}({shown(msg_id)})",
            )
    for msg_id in held_ids:  # still held by us: no hostile id released or acked them
        await svc.ack_message(held_q, msg_id)
    if not ctx.caps.fetch_by_id:
        return
    by = await Bystanders.seed(ctx)
    for msg_id in HOSTILE_IDS:
        try:
            got = await svc.fetch_message(by.queue, msg_id, ctx.timing.long)  # type: ignore[arg-type]
        except Exception as exc:
            ctx.fail(f"fetch({shown(msg_id)}) raised {type(exc).__name__}: {exc}")
        ctx.check(got is None, f"fetch({shown(msg_id)}) returned {got!r}")
    await by.check("hostile fetches")
    await by.final()


def _band_payloads(threshold: int) -> dict[str, bytes]:
    payloads: dict[str, bytes] = {}
    for size in (threshold - 1, threshold, threshold + 1):
        inner = size - 2
        payloads[f"ASCII JSON of {size} B"] = b'"' + b"a" * inner + b'"'
        multibyte = '"' + "\u00e9" * (inner // 2) + "a" * (inner % 2) + '"'
        payloads[f"multibyte JSON of {size} B"] = multibyte.encode()
        payloads[f"binary of {size} B"] = b"\xff" * size
    for size in (7999, 8000, 8001):  # PostgreSQL's NOTIFY payload limit is 8000 bytes
        payloads[f"JSON of {size} B"] = json.dumps({"s": "a" * (size - 9)}).encode()
    return payloads


@rule(
    "HOST-6",
    "Mixed push around its byte threshold (threshold - 1, threshold, threshold + 1 bytes "
    "of ASCII, multibyte and binary payload, and around NOTIFY's 8,000-byte limit): every "
    "send succeeds and is announced with its id, a pushed Message carries the exact "
    "payload and is never larger than the threshold, and every message is stored intact.",
    why="The original counted characters, not bytes, so multibyte payloads near the "
    "threshold broke NOTIFY and with it the send.",
    applies_when=MIXED_PUSH,
    provisional=True,
)
async def mixed_threshold_band(ctx: CaseContext) -> None:
    threshold = ctx.caps.push_payload_threshold_bytes
    assert threshold is not None
    q = await ctx.queue()
    sub = await ctx.subscribe(q)
    sent: dict[int, tuple[str, bytes]] = {}
    for label, payload in _band_payloads(threshold).items():
        sent[await ctx.service.send_message(q, payload)] = (label, payload)
    notes = await ctx.collect_notifications(sub, [(q, i) for i in sent])
    for (_, msg_id), note in notes.items():
        label, payload = sent[msg_id]
        ctx.check(notification_id(note) == msg_id, f"{label}: announced {note!r}")
        if isinstance(note, Message):
            ctx.check(
                len(payload) <= threshold,
                f"{label} came as a Message over the {threshold}-byte threshold",
            )
            ctx.check(
                same_payload(ctx.caps.payload_fidelity, payload, note.message.payload),
                f"{label}: pushed payload differs ({len(note.message.payload)} B)",
            )
            if note.claimed:
                await ctx.service.nack_message(q, msg_id)
    got = await ctx.receive_exactly(q, len(sent))
    for m in got:
        label, payload = sent[m.msg_id]
        ctx.check(same_payload(ctx.caps.payload_fidelity, payload, m.payload), f"{label} changed")


@rule(
    "HOST-7",
    "Derandomized programs of 6 to 14 public calls (hostile names, payloads, numbers, ids "
    "and forged or stale claims mixed with valid calls; claims settled in odd orders; "
    "queues deleted and created again between calls) get only documented MessagingError "
    "conditions (InvalidQueueName for a hostile name), never a hang; what must be refused "
    "is refused, a live claim settles, nothing succeeds on a deleted queue, and a call that "
    "fails, or names the bystander, changes no queue. After close, every call with any "
    "arguments raises ProviderClosed at once.",
    why="Single hostile calls on a fresh service miss errors that depend on what came "
    "before (a claim outliving its deleted queue, a channel reset by a refused call that "
    "drops every held message) and closed services that validate before they notice.",
    provisional=True,
)
async def hostile_programs(ctx: CaseContext) -> None:
    await fuzz_public_api(ctx)
