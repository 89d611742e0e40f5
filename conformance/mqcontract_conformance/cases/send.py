"""SEND: ids, payload fidelity, sizes."""

from __future__ import annotations

import json

from mqcontract.capabilities import PayloadFidelity
from mqcontract.errors import MessageTooLarge
from mqcontract_conformance.cases._payloads import body, same_payload
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule


async def _round_trip(ctx: CaseContext, payload: bytes, what: str) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, payload)
    got = await ctx.receive_exactly(q, 1)
    ctx.check(got[0].msg_id == sent, f"{what}: received id {got[0].msg_id}, sent {sent}")
    ctx.check(
        same_payload(ctx.caps.payload_fidelity, payload, got[0].payload),
        f"{what}: payload changed ({ctx.caps.payload_fidelity.value} fidelity): "
        f"sent {payload[:80]!r}… ({len(payload)} B), got {got[0].payload[:80]!r}… "
        f"({len(got[0].payload)} B)",
    )


@rule(
    "SEND-1",
    "Ids returned by send are unique within the queue and strictly increasing for one producer.",
    why="Ids are how consumers ack and how order is diagnosed.",
)
async def ids_increase(ctx: CaseContext) -> None:
    q = await ctx.queue()
    ids = [await ctx.service.send_message(q, body(i)) for i in range(20)]
    ctx.check(all(isinstance(i, int) for i in ids), f"ids are not ints: {ids}")
    ctx.check(len(set(ids)) == len(ids), f"duplicate ids: {ids}")
    ctx.check(ids == sorted(ids), f"ids not increasing: {ids}")


@rule(
    "SEND-2",
    "A JSON payload comes back as declared: the same bytes (bytes fidelity) or an equal "
    "JSON value (json-value fidelity, which may normalize key order and whitespace).",
    why="PGMQ stores jsonb, which normalizes JSON text; that must be a declared "
    "capability, never an accident.",
)
async def json_fidelity(ctx: CaseContext) -> None:
    payload = b'{"z": 1,   "a": [1, 2.5, "x"], "n": null, "s": "\xc3\xa9\\u00e9"}'
    q = await ctx.queue()
    await ctx.service.send_message(q, payload)
    got = (await ctx.receive_exactly(q, 1))[0].payload
    if ctx.caps.payload_fidelity is PayloadFidelity.BYTES:
        ctx.check(got == payload, f"bytes fidelity: sent {payload!r}, got {got!r}")
    else:
        ctx.check(json.loads(got) == json.loads(payload), f"json value changed: {got!r}")


@rule(
    "SEND-3",
    "An empty payload round-trips.",
    why="Empty bodies are legal signals; they must not be refused or turned into null.",
)
async def empty_payload(ctx: CaseContext) -> None:
    await _round_trip(ctx, b"", "empty payload")


@rule(
    "SEND-4",
    "Arbitrary binary payloads (all 256 byte values, invalid UTF-8, NUL) round-trip exactly.",
    why="Payloads are bytes in the protocol; a text-only backend must envelope them.",
)
async def binary_payload(ctx: CaseContext) -> None:
    await _round_trip(ctx, bytes(range(256)) + b"\xff\xfe\x00\xc3(", "binary payload")


@rule(
    "SEND-5",
    "Multibyte UTF-8 text (accents, CJK, emoji) round-trips exactly.",
    why="Byte/character confusion is where the original's size checks broke.",
)
async def unicode_payload(ctx: CaseContext) -> None:
    await _round_trip(ctx, "h\u00e9llo \u2713 \u65e5\u672c \U0001f389".encode(), "unicode text")


@rule(
    "SEND-6",
    "A payload of exactly max_message_size_bytes is accepted and round-trips.",
    why="The declared limit is inclusive.",
)
async def max_size_accepted(ctx: CaseContext) -> None:
    size = ctx.caps.max_message_size_bytes
    await _round_trip(ctx, b"x" * size, f"payload of exactly {size} bytes")


@rule(
    "SEND-7",
    "A payload one byte over the limit raises MessageTooLarge naming queue, size and "
    "limit, and nothing is enqueued.",
    why="Oversized sends must fail loudly and leave the queue as it was.",
)
async def oversize_rejected(ctx: CaseContext) -> None:
    q = await ctx.queue()
    limit = ctx.caps.max_message_size_bytes
    exc = await ctx.raises(
        MessageTooLarge, ctx.service.send_message(q, b"x" * (limit + 1)), "oversized send"
    )
    ctx.check(
        (exc.queue, exc.size, exc.limit) == (q, limit + 1, limit),
        f"MessageTooLarge carries queue={exc.queue!r} size={exc.size} limit={exc.limit}",
    )
    ctx.check(str(limit) in str(exc), f"message does not name the limit: {exc}")
    ctx.check(await ctx.receive(q) == [], "an oversized message was enqueued")


@rule(
    "SEND-8",
    "send_batch enqueues every payload in order and returns their ids in that order.",
    why="Batching is where providers win throughput; it must not reorder.",
)
async def batch_in_order(ctx: CaseContext) -> None:
    q = await ctx.queue()
    payloads = [body(i) for i in range(10)]
    ids = await ctx.service.send_batch(q, payloads)
    ctx.check(len(ids) == 10 and ids == sorted(ids), f"batch ids not increasing: {ids}")
    got = await ctx.receive_exactly(q, 10)
    by_id = {m.msg_id: m.payload for m in got}
    ctx.check(
        [by_id.get(i) for i in ids] == payloads,
        f"batch payloads do not match their ids: {by_id}",
    )


@rule(
    "SEND-9",
    "A batch containing one oversized payload is rejected whole: MessageTooLarge, "
    "nothing enqueued.",
    why="A half-sent batch cannot be retried safely.",
)
async def batch_all_or_nothing(ctx: CaseContext) -> None:
    q = await ctx.queue()
    limit = ctx.caps.max_message_size_bytes
    await ctx.raises(
        MessageTooLarge,
        ctx.service.send_batch(q, [body(1), b"x" * (limit + 1), body(2)]),
        "batch with an oversized payload",
    )
    ctx.check(await ctx.receive(q) == [], "part of a rejected batch was enqueued")
