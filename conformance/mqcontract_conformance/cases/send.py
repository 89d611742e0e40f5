"""SEND: ids, payload fidelity, sizes."""

from __future__ import annotations

import json

from mqcontract.capabilities import PayloadFidelity
from mqcontract.errors import MessageTooLarge
from mqcontract.testing import HookUnavailable
from mqcontract_conformance.cases._payloads import body, same_payload
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule


async def _round_trip(ctx: CaseContext, payload: bytes, what: str) -> None:
    q = await ctx.queue()
    sent = await ctx.accepts(ctx.service.send_message(q, payload), what)
    got = await ctx.receive_exactly(q, 1)
    ctx.check(got[0].msg_id == sent, f"{what}: received id {got[0].msg_id}, sent {sent}")
    ctx.check(
        same_payload(ctx.caps.payload_fidelity, payload, got[0].payload),
        f"{what}: payload changed ({ctx.caps.payload_fidelity.value} fidelity): "
        f"sent {payload[:80]!r}… ({len(payload)} B), got {got[0].payload[:80]!r}… "
        f"({len(got[0].payload)} B)",
    )


#: SEND-1: rounds in which each producer sends once, alternating single sends and batches.
ID_TURNS = 6
#: SEND-1: payloads per batch.
ID_BATCH = 3


@rule(
    "SEND-1",
    "Ids returned by send are unique within the queue, whichever producer sent: two "
    "services taking turns on one queue (single sends and batches) never get the same id, "
    "and every message is received once, under its id, with its payload (the second "
    "producer where services share a backend). For one producer ids are strictly "
    "increasing.",
    why="Ids are how consumers ack and how order is diagnosed. Ids counted per connection "
    "look unique to a lone producer and collide as soon as a second one sends; a backend "
    "keyed by id then overwrites one message with the other.",
)
async def ids_increase(ctx: CaseContext) -> None:
    q = await ctx.queue()
    producers = [ctx.service]
    unavailable: HookUnavailable | None = None  # a declared second producer not opened
    if ctx.caps.shared_backend:
        try:
            producers.append(await ctx.other_consumer(q))
        except HookUnavailable as exc:
            unavailable = exc  # the lone producer is still checked, then the rule says so
    sent: dict[int, tuple[str, bytes]] = {}  # id -> (which send returned it, payload)
    issued: list[list[int]] = [[] for _ in producers]
    for turn in range(ID_TURNS):
        for p, producer in enumerate(producers):
            batch = (turn + p) % 2 == 1
            payloads = [body(len(sent) + i, f"p{p + 1}") for i in range(ID_BATCH if batch else 1)]
            if batch:
                how = f"producer {p + 1}'s send_batch (turn {turn + 1})"
                ids = await producer.send_batch(q, payloads)
            else:
                how = f"producer {p + 1}'s send_message (turn {turn + 1})"
                ids = [await producer.send_message(q, payloads[0])]
            ctx.check(
                len(ids) == len(payloads) and all(type(i) is int for i in ids),
                f"{how} on {q} returned {ids!r} for {len(payloads)} payloads",
            )
            for msg_id, payload in zip(ids, payloads, strict=True):
                if msg_id in sent:
                    ctx.fail(
                        f"{how} on {q} returned id {msg_id}, which {sent[msg_id][0]} "
                        f"returned before; ids per producer so far: {issued}"
                    )
                sent[msg_id] = (how, payload)
            issued[p] += ids
    for p, ids in enumerate(issued):
        ctx.check(
            ids == sorted(set(ids)),
            f"producer {p + 1}'s ids on {q} are not strictly increasing: {ids}",
        )
    got = await ctx.receive_exactly(q, len(sent))
    by_id = {m.msg_id: m.payload for m in got}
    ctx.check(
        len(by_id) == len(got) and by_id.keys() == sent.keys(),
        f"sent {sorted(sent)} to {q}, received {sorted(m.msg_id for m in got)}",
    )
    for msg_id, (how, payload) in sent.items():
        ctx.check(
            same_payload(ctx.caps.payload_fidelity, payload, by_id[msg_id]),
            f"message {msg_id} on {q} (from {how}) came back as {by_id[msg_id]!r}, "
            f"sent {payload!r}",
        )
    if unavailable is not None:
        raise unavailable


@rule(
    "SEND-2",
    "A JSON payload comes back as declared: the same bytes (bytes fidelity) or an equal "
    "JSON value (json-value fidelity, which may normalize key order, whitespace and how a "
    "number is written, never a type nor a number's value: true is not 1, [] is not {}, "
    "a 20-digit integer stays exact).",
    why="PGMQ stores jsonb, which normalizes JSON text; that must be a declared "
    "capability, never an accident.",
)
async def json_fidelity(ctx: CaseContext) -> None:
    payload = (
        b'{"z": 1,   "a": [1, 2.5, "x"], "n": null, "s": "\xc3\xa9\\u00e9", "t": true, '
        b'"f": false, "zero": 0, "one": 1, "big": 12345678901234567890, "tenth": 0.1, '
        b'"empty": [], "none": {}, "nested": [[], {}, [true, 1, "1"]]}'
    )
    q = await ctx.queue()
    await ctx.service.send_message(q, payload)
    got = (await ctx.receive_exactly(q, 1))[0].payload
    if ctx.caps.payload_fidelity is PayloadFidelity.BYTES:
        ctx.check(got == payload, f"bytes fidelity: sent {payload!r}, got {got!r}")
    else:
        ctx.check(
            same_payload(ctx.caps.payload_fidelity, payload, got),
            f"json value changed (booleans stay booleans, numbers keep their value): "
            f"sent {payload!r}, got {got!r}",
        )


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
    "Multibyte UTF-8 text (accents, CJK, emoji) round-trips exactly, as text and inside "
    "JSON: never normalized (decomposed accents, compatibility characters), never "
    "stripped of a leading BOM or trailing blanks, line endings as sent.",
    why="Byte/character confusion is where the original's size checks broke.",
)
async def unicode_payload(ctx: CaseContext) -> None:
    await _round_trip(ctx, "h\u00e9llo \u2713 \u65e5\u672c \U0001f389".encode(), "unicode text")
    for text, what in UNNORMALIZED_TEXT:
        await _round_trip(ctx, text.encode(), what)
        as_json = json.dumps({"t": text}, ensure_ascii=False).encode()
        await _round_trip(ctx, as_json, f"JSON of {what}")


#: Text a Unicode normalization (NFC, NFKC), a BOM-stripping decoder or a text-mode
#: newline translation changes; every one is valid UTF-8 and must come back as sent.
UNNORMALIZED_TEXT: tuple[tuple[str, str], ...] = (
    ("e\u0301 A\u030a \u1100\u1161 \u212b \ufb01 x\u00a0y \u2460 \uff21", "decomposed text"),
    ("\ufeffstarts with a byte order mark", "text with a leading BOM"),
    ("line\r\nline\rline\n\t trailing \t", "line endings and trailing blanks"),
)


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


def _de_bruijn_pairs() -> bytes:
    """Every ordered pair of byte values, each once: an Eulerian circuit through the
    complete graph on 256 byte values with loops (65,537 bytes)."""
    tried = [0] * 256  # the next successor to walk from each byte
    stack = [0]
    path: list[int] = []
    while stack:
        v = stack[-1]
        if tried[v] < 256:
            stack.append(tried[v])
            tried[v] += 1
        else:
            path.append(stack.pop())
    return bytes(reversed(path))


#: Payloads that differ from a normalized form only by line endings or whitespace.
LOOKALIKES: tuple[bytes, ...] = (
    b"a\r\nb",
    b"a\nb",
    b"a\rb",
    b"a\n\rb",
    b"line\r\n",
    b"line\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"x  ",
    b"  x",
    b"x\t",
    b"a  \t b",
    b"x\x00",
    b"x\n\n\n",
    b" ",
    b"\t",
    b"x\x0b\x0c",
    b"\xef\xbb\xbfbom",
)


@rule(
    "SEND-10",
    "Payloads that differ only in line endings, whitespace runs or trailing bytes come "
    "back exactly, as does one holding every ordered pair of byte values.",
    why="Normalizing \\r\\n, trimming or collapsing whitespace looks harmless and passes a "
    "corpus of single bytes; a payload with every byte pair catches it.",
    provisional=True,
)
async def lookalike_payloads(ctx: CaseContext) -> None:
    q = await ctx.queue()
    pairs = _de_bruijn_pairs()
    size = ctx.caps.max_message_size_bytes
    # Chunks overlap by one byte, so the pair across a cut is in the next chunk.
    chunks = [pairs[i : i + size] for i in range(0, max(len(pairs) - 1, 1), max(size - 1, 1))]
    payloads = [*LOOKALIKES, *chunks]
    ids = await ctx.service.send_batch(q, payloads)
    got = {m.msg_id: m.payload for m in await ctx.receive_exactly(q, len(ids))}
    for msg_id, sent in zip(ids, payloads, strict=True):
        back = got.get(msg_id)
        ctx.check(
            back == sent,
            f"payload {msg_id} changed: sent {sent[:40]!r} ({len(sent)} B), "
            f"got {(back or b'')[:40]!r} ({len(back or b'')} B)",
        )


@rule(
    "SEND-11",
    "After the newest message was acked and the queue emptied, the next send still gets an "
    "id greater than every id the queue has issued.",
    why="A provider that derives the next id from what is stored reuses ids once the queue "
    "is empty, and an old claim or log line then names new work.",
    provisional=True,
)
async def ids_after_settlement(ctx: CaseContext) -> None:
    q = await ctx.queue()
    issued = await ctx.service.send_batch(q, [body(i) for i in range(3)])
    for message in await ctx.receive_exactly(q, 3):
        await ctx.service.ack_message(q, message.msg_id)
    later = await ctx.service.send_message(q, body(9))
    ctx.check(
        later > max(issued),
        f"after acking {issued} the next send got id {later}, not above {max(issued)}",
    )
    (got,) = await ctx.receive_exactly(q, 1)
    ctx.check(got.msg_id == later, f"received {got.msg_id}, sent {later}")
