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


#: SEND-4: the binary payload (every byte value, invalid UTF-8, NUL).
BINARY = bytes(range(256)) + b"\xff\xfe\x00\xc3("


@rule(
    "SEND-4",
    "Arbitrary binary payloads (all 256 byte values, invalid UTF-8, NUL) round-trip "
    "exactly, whichever way they are sent: send_message, send_batch and, where delays are "
    "supported, send_message_with_delay.",
    why="Payloads are bytes in the protocol; a text-only backend must envelope them, on "
    "every path that stores them (a bulk insert, a scheduler holding delayed messages), "
    "not only the one written first.",
)
async def binary_payload(ctx: CaseContext) -> None:
    await _round_trip(ctx, BINARY, "binary payload")
    q = await ctx.queue()
    sent: dict[int, tuple[bytes, str]] = {}
    batch = [BINARY[::-1], BINARY]
    ids = await ctx.accepts(ctx.service.send_batch(q, batch), "send_batch of binary payloads")
    for k, (msg_id, payload) in enumerate(zip(ids, batch, strict=True)):
        sent[msg_id] = (payload, f"binary payload {k + 1} of send_batch")
    within = None
    if ctx.caps.delay:
        delay = ctx.timing.unit
        within = delay + ctx.timing.slack
        what = f"binary payload of send_message_with_delay ({delay:g} s)"
        msg_id = await ctx.accepts(ctx.service.send_message_with_delay(q, BINARY, delay), what)
        sent[msg_id] = (BINARY, what)
    got = {m.msg_id: m.payload for m in await ctx.receive_exactly(q, len(sent), within=within)}
    ctx.check(got.keys() == sent.keys(), f"sent {sorted(sent)} to {q}, received {sorted(got)}")
    for msg_id, (payload, what) in sent.items():
        ctx.check(
            same_payload(ctx.caps.payload_fidelity, payload, got[msg_id]),
            f"{what} (message {msg_id}) changed: sent {payload[:40]!r}… ({len(payload)} B), "
            f"got {got[msg_id][:40]!r}… ({len(got[msg_id])} B)",
        )


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


def _lookalikes(size: int) -> list[tuple[bytes, str]]:
    """Payloads of ``size`` bytes, alike in length and in their first half: all ``x``, and
    copies of it differing only in the last byte, only in the byte 1 KiB before the end,
    or only in one byte in the middle."""
    base = b"x" * size
    edits = {size - 1: "the last byte", size - 1025: "a byte 1 KiB before the end"}
    edits.setdefault(size // 2 + 1, "a byte in the middle")
    out = [(base, f"payload of exactly {size} bytes")]
    for at, where in sorted(edits.items(), reverse=True):
        if 0 <= at < size:
            changed = base[:at] + b"y" + base[at + 1 :]
            out.append((changed, f"{size}-byte payload differing in {where}"))
    return out


@rule(
    "SEND-6",
    "A payload of exactly max_message_size_bytes is accepted and round-trips; so do "
    "payloads of that size that differ from it, and from each other, only in their last "
    "byte, only 1 KiB before the end or only in one byte in the middle: each comes back "
    "as itself, under its own id.",
    why="The declared limit is inclusive. A large payload is where a provider offloads or "
    "deduplicates (a blob store, a cache); keyed by its length and a prefix, a hash of "
    "part of it or its first and last bytes, two different payloads become one.",
)
async def max_size_accepted(ctx: CaseContext) -> None:
    size = ctx.caps.max_message_size_bytes
    q = await ctx.queue()
    sent: dict[int, tuple[bytes, str]] = {}
    for payload, what in _lookalikes(size):
        msg_id = await ctx.accepts(ctx.service.send_message(q, payload), what)
        sent[msg_id] = (payload, what)
    got = {m.msg_id: m.payload for m in await ctx.receive_exactly(q, len(sent))}
    ctx.check(
        got.keys() == sent.keys(),
        f"sent {sorted(sent)} to {q}, received {sorted(got)}",
    )
    for msg_id, (payload, what) in sent.items():
        back = got[msg_id]
        if same_payload(ctx.caps.payload_fidelity, payload, back):
            continue
        differs = next(
            (i for i, (a, b) in enumerate(zip(payload, back, strict=False)) if a != b), None
        )
        other = [f"{w} (message {i})" for i, (p, w) in sent.items() if p == back and i != msg_id]
        ctx.fail(
            f"{what} (message {msg_id}) came back changed: {len(back)} B"
            + (f", first difference at byte {differs}" if differs is not None else "")
            + (f"; those are the bytes sent as {other[0]}" if other else "")
        )


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


#: SEND-8: payloads in its batch: a prime past chunk sizes a provider may split a batch
#: into (10, 64, 100, 128, 256), so a chunk enqueued out of turn, or a last one short,
#: shows.
BATCH_LENGTH = 257


@rule(
    "SEND-8",
    "send_batch enqueues every payload in order and returns their ids in that order, "
    "strictly increasing; where the provider is FIFO the batch is received in that order. "
    "Checked with a batch of 257 payloads.",
    why="Batching is where providers win throughput; it must not reorder. A long batch is "
    "split into chunks for the backend, and chunks sent at once land in the order they "
    "complete, which batches of a few never show.",
)
async def batch_in_order(ctx: CaseContext) -> None:
    q = await ctx.queue()
    payloads = [body(i) for i in range(BATCH_LENGTH)]
    ids = await ctx.service.send_batch(q, payloads)
    ctx.check(
        len(ids) == len(payloads),
        f"send_batch of {len(payloads)} payloads to {q} returned {len(ids)} ids",
    )
    backwards = [(k, ids[k], ids[k + 1]) for k in range(len(ids) - 1) if ids[k] >= ids[k + 1]]
    ctx.check(
        not backwards,
        f"send_batch of {len(payloads)} payloads to {q} returned ids not strictly "
        "increasing: " + "; ".join(f"#{k} is {a}, #{k + 1} is {b}" for k, a, b in backwards[:8]),
    )
    got = await ctx.receive_exactly(q, len(payloads))
    by_id = {m.msg_id: m.payload for m in got}
    wrong = [
        f"#{k} (id {i}): {by_id.get(i)!r}"
        for k, (i, payload) in enumerate(zip(ids, payloads, strict=True))
        if by_id.get(i) != payload
    ]
    ctx.check(
        not wrong,
        f"{len(wrong)} batch payloads on {q} do not match their ids: " + "; ".join(wrong[:8]),
    )
    if ctx.caps.fifo:
        ctx.check_order(ids, [m.msg_id for m in got], f"receive order of the batch on {q}")


#: SEND-9: where the oversized payload sits in the long batch: past a first chunk of 100 or
#: 128 payloads, so a provider that checks and sends chunk by chunk shows.
OVERSIZED_AT = 130


@rule(
    "SEND-9",
    "A batch containing one oversized payload is rejected whole: MessageTooLarge, "
    "nothing enqueued; whether it is the second of three payloads or the 131st of 150.",
    why="A half-sent batch cannot be retried safely. A provider that sends a long batch in "
    "chunks, checking each as it goes, has sent the first ones before it meets the "
    "oversized payload.",
)
async def batch_all_or_nothing(ctx: CaseContext) -> None:
    q = await ctx.queue()
    limit = ctx.caps.max_message_size_bytes
    big = b"x" * (limit + 1)
    await ctx.raises(
        MessageTooLarge,
        ctx.service.send_batch(q, [body(1), big, body(2)]),
        "batch with an oversized payload",
    )
    long = [body(i) for i in range(150)]
    long[OVERSIZED_AT] = big
    await ctx.raises(
        MessageTooLarge,
        ctx.service.send_batch(q, long),
        f"batch of {len(long)} with an oversized payload at #{OVERSIZED_AT}",
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
    "id greater than every id the queue has issued: a send_message after acks by id, and a "
    "send_batch after an ack by claim.",
    why="A provider that derives the next id from what is stored reuses ids once the queue "
    "is empty, and an old claim or log line then names new work. A batch insert that "
    "numbers its rows itself does so where single sends do not.",
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
    claim = got.claim
    ctx.check(claim is not None, f"message {later} on {q} carries no claim")
    assert claim is not None
    await ctx.service.ack_claim(q, claim)
    issued.append(later)
    batch = await ctx.service.send_batch(q, [body(10), body(11)])
    ctx.check(
        len(batch) == 2 and min(batch) > max(issued),
        f"after acking {issued} the next send_batch got ids {batch}, not above {max(issued)}",
    )
    back = await ctx.receive_exactly(q, len(batch))
    ctx.check(
        sorted(m.msg_id for m in back) == sorted(batch),
        f"received {sorted(m.msg_id for m in back)}, sent {batch}",
    )
