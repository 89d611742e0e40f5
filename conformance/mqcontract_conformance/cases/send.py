"""SEND: ids, payload fidelity, sizes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

from mqcontract.capabilities import PayloadFidelity
from mqcontract.errors import MessageTooLarge
from mqcontract.service import MessagingService
from mqcontract.testing import HookUnavailable
from mqcontract_conformance.cases._payloads import (
    SNIFFABLE,
    WHITESPACE,
    body,
    fitting,
    same_payload,
)
from mqcontract_conformance.context import CaseContext, ContractViolation
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
#: SEND-1: rounds of concurrent sends (each starts its sends in another order).
RACE_ROUNDS = 3


@rule(
    "SEND-1",
    "Ids returned by send are unique within the queue, whichever producer sent: two "
    "services taking turns on one queue (single sends and batches) never get the same id, "
    "nor do send_message, send_batch and send_message_with_delay running at once on one "
    "queue, from one service and from two; every message is received once, under its "
    "id, with its payload (the second producer where services share a backend). For one "
    "producer taking turns ids are strictly increasing.",
    why="Ids are how consumers ack and how order is diagnosed. Ids counted per connection "
    "look unique to a lone producer and collide as soon as a second one sends; a batch "
    "that reads the id sequence and writes its rows in a second round trip collides with "
    "a send in between; a backend keyed by id then overwrites one message with the other.",
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

    def record(how: str, ids: object, payloads: list[bytes]) -> list[int]:
        ctx.check(
            isinstance(ids, list)
            and len(ids) == len(payloads)
            and all(type(i) is int for i in ids),
            f"{how} on {q} returned {ids!r} for {len(payloads)} payloads",
        )
        assert isinstance(ids, list)
        for msg_id, payload in zip(ids, payloads, strict=True):
            if msg_id in sent:
                ctx.fail(
                    f"{how} on {q} returned id {msg_id}, which {sent[msg_id][0]} "
                    f"returned before; ids per producer so far: {issued}"
                )
            sent[msg_id] = (how, payload)
        return ids

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
            issued[p] += record(how, ids, payloads)
    for p, ids in enumerate(issued):
        ctx.check(
            ids == sorted(set(ids)),
            f"producer {p + 1}'s ids on {q} are not strictly increasing: {ids}",
        )
    within = await _race_sends(ctx, q, producers, sent, record)
    got = await ctx.receive_exactly(q, len(sent), within=within)
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


async def _race_sends(
    ctx: CaseContext,
    q: str,
    producers: list[MessagingService],
    sent: dict[int, tuple[str, bytes]],
    record: Callable[[str, object, list[bytes]], list[int]],
) -> float | None:
    """SEND-1's rounds of concurrent sends: every producer's send_batch, send_message
    (twice) and, where delays are supported, send_message_with_delay, started at once,
    in a different order each round. Returns how long their messages may take to be
    receivable (None: the delivery bound)."""
    delay = ctx.timing.step if ctx.caps.delay else None
    for turn in range(RACE_ROUNDS):
        calls: list[tuple[str, Awaitable[object], list[bytes]]] = []
        for p, producer in enumerate(producers):
            tag = f"race{turn + 1}p{p + 1}"
            batch = [body(i, f"{tag}b") for i in range(ID_BATCH)]
            calls.append((f"producer {p + 1}'s send_batch", producer.send_batch(q, batch), batch))
            for k in range(2):
                one = [body(k, f"{tag}s")]
                calls.append(
                    (f"producer {p + 1}'s send_message", producer.send_message(q, one[0]), one)
                )
            if delay is not None:
                late = [body(0, f"{tag}d")]
                calls.append(
                    (
                        f"producer {p + 1}'s send_message_with_delay",
                        producer.send_message_with_delay(q, late[0], delay),
                        late,
                    )
                )
        shift = turn * len(calls) // RACE_ROUNDS
        calls = calls[shift:] + calls[:shift]
        results = await asyncio.gather(*(call for _, call, _ in calls))
        for (how, _, payloads), result in zip(calls, results, strict=True):
            ids = result if isinstance(result, list) else [result]
            record(f"{how} (concurrent round {turn + 1})", ids, payloads)
    return None if delay is None else delay + ctx.timing.delivery


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
#: SEND-4: of the look-alike payloads, every this many is also sent delayed (a round trip
#: each), so each kind (compressed, byte order mark, encoded, enveloped) is.
DELAYED_EVERY = 3


@rule(
    "SEND-4",
    "Arbitrary binary payloads (all 256 byte values, invalid UTF-8, NUL) and payloads "
    "that look compressed, encoded or enveloped (valid zlib, gzip, zstd, lz4, bzip2 and xz "
    "streams, byte order marks, JSON and base64 text, envelope markers) round-trip "
    "exactly (per the declared fidelity), whichever way they are sent: send_message, "
    "send_batch and, where delays are supported, send_message_with_delay; and whichever "
    "way they are read: receive, fetch by id where supported, and receive again after a "
    "nack.",
    why="Payloads are bytes in the protocol; a text-only backend must envelope them, on "
    "every path that stores them (a bulk insert, a scheduler holding delayed messages), "
    "not only the one written first. A provider that compresses or envelopes payloads and "
    "decodes on read what looks compressed or enveloped, instead of what it marked so, "
    "inflates or unwraps a producer's own compressed or encoded payload.",
)
async def binary_payload(ctx: CaseContext) -> None:
    await _round_trip(ctx, BINARY, "binary payload")
    fidelity = ctx.caps.payload_fidelity
    corpus = [
        ("binary payload", BINARY),
        ("reversed binary payload", BINARY[::-1]),
        *fitting(SNIFFABLE, ctx.caps.max_message_size_bytes),
    ]
    q = await ctx.queue()
    sent: dict[int, tuple[bytes, str]] = {}
    problems: list[str] = []

    def compare(msg_id: int, back: bytes, path: str) -> None:
        payload, what = sent[msg_id]
        if not same_payload(fidelity, payload, back):
            problems.append(
                f"{what} (message {msg_id}), {path}: sent {payload[:24]!r}… "
                f"({len(payload)} B), got {back[:24]!r}… ({len(back)} B)"
            )

    singles: list[int] = []
    for what, payload in corpus:
        msg_id = await ctx.accepts(ctx.service.send_message(q, payload), f"send_message of {what}")
        sent[msg_id] = (payload, f"{what} sent by send_message")
        singles.append(msg_id)
    ids = await ctx.accepts(
        ctx.service.send_batch(q, [p for _, p in corpus]), "send_batch of binary payloads"
    )
    ctx.check(len(ids) == len(corpus), f"send_batch of {len(corpus)} payloads returned {ids}")
    for msg_id, (what, payload) in zip(ids, corpus, strict=True):
        sent[msg_id] = (payload, f"{what} sent by send_batch")
    within = None
    if ctx.caps.delay:
        delay = ctx.timing.unit
        within = delay + ctx.timing.slack
        for what, payload in corpus[:2] + corpus[2::DELAYED_EVERY]:
            how = f"send_message_with_delay ({delay:g} s)"
            msg_id = await ctx.accepts(
                ctx.service.send_message_with_delay(q, payload, delay), f"{how} of {what}"
            )
            sent[msg_id] = (payload, f"{what} sent by {how}")
    fetched: set[int] = set()
    if ctx.caps.fetch_by_id:
        for msg_id in ids:  # the batch's, fresh: never claimed before
            got = await ctx.service.fetch_message(q, msg_id, ctx.timing.long)
            ctx.check(
                got is not None and got.msg_id == msg_id,
                f"fetch of message {msg_id} on {q} returned {got!r}",
            )
            assert got is not None
            compare(msg_id, got.payload, "fetched by id")
            fetched.add(msg_id)
    rest = await ctx.receive_exactly(q, len(sent) - len(fetched), within=within)
    got_ids = sorted(m.msg_id for m in rest)
    ctx.check(
        got_ids == sorted(set(sent) - fetched),
        f"sent {sorted(sent)} to {q}, fetched {sorted(fetched)}, received {got_ids}",
    )
    held = {m.msg_id: m for m in rest}
    for m in rest:
        compare(m.msg_id, m.payload, "received")
    for msg_id in singles:
        await ctx.accepts(ctx.service.nack_claim(q, held[msg_id]), f"nack of {msg_id}")
    # What comes back is compared; one that does not is ACK-2's to report, not this
    # rule's (a provider without redelivery declares ACK-2 broken).
    again: dict[int, bytes] = {}
    strays: list[int] = []

    async def redelivered() -> bool:
        for m in await ctx.receive(q, min(100, ctx.caps.max_receive_limit)):
            if m.msg_id in singles:
                again[m.msg_id] = m.payload
            else:
                strays.append(m.msg_id)
        return again.keys() >= set(singles)

    with contextlib.suppress(ContractViolation):  # only the wait: strays are checked below
        await ctx.eventually(redelivered, ctx.timing.delivery, "nacked messages again")
    ctx.check(not strays, f"nacked {singles} on {q}, received {strays} as well")
    for msg_id, back in again.items():
        compare(msg_id, back, "received again after a nack")
    ctx.check(
        not problems,
        f"{len(problems)} payloads changed ({fidelity.value} fidelity): " + "; ".join(problems[:6]),
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
LOOKALIKES: tuple[bytes, ...] = WHITESPACE


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
    "send_batch after an ack by claim; so it does after the queue is declared again "
    "(create_queue of the existing queue, as at a restart, from this service and, where "
    "services share a backend, from another), whether an older message is still stored "
    "or the queue is empty.",
    why="A provider that derives the next id from what is stored reuses ids once the queue "
    "is empty, and an old claim or log line then names new work. A batch insert that "
    "numbers its rows itself does so where single sends do not, and a re-declare that "
    "'repairs' the id sequence from the highest stored id does so at every restart.",
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
    issued += batch
    # Declared again with the newest acked and an older one still stored (and held).
    older, newest = sorted(back, key=lambda m: m.msg_id)
    await ctx.service.ack_claim(q, newest)
    await ctx.service.create_queue(q)
    after = await ctx.service.send_message(q, body(12))
    ctx.check(
        after > max(issued),
        f"after acking {newest.msg_id} (of {issued}, {older.msg_id} still stored) and "
        f"declaring {q} again, the next send got id {after}, not above {max(issued)}",
    )
    issued.append(after)
    (fresh,) = await ctx.receive_exactly(q, 1)
    ctx.check(fresh.msg_id == after, f"received {fresh.msg_id}, sent {after}")
    await ctx.service.ack_claim(q, older)
    await ctx.service.ack_claim(q, fresh)
    # Declared again, empty, by another service where one shares the backend.
    declarer: MessagingService = ctx.service
    unavailable: HookUnavailable | None = None
    if ctx.caps.shared_backend:
        try:
            declarer = await ctx.other_consumer(q)
        except HookUnavailable as exc:
            unavailable = exc  # declared again by this service, then the rule says so
    await declarer.create_queue(q)
    who = "another service" if declarer is not ctx.service else "this service"
    last = await ctx.service.send_batch(q, [body(13), body(14)])
    ctx.check(
        len(last) == 2 and min(last) > max(issued),
        f"after acking every message and {who} declaring {q} again, the next send_batch got "
        f"ids {last}, not above {max(issued)} (ids issued: {issued})",
    )
    one = await declarer.send_message(q, body(15))
    if declarer is not ctx.service and ctx.caps.producer_assigned_ids:
        # Ids increase per producer only (SEND-1): another producer's may sort below.
        ctx.check(
            one not in issued + last,
            f"after {who} declared {q} again, its send got id {one}, an id already issued "
            f"(ids issued: {issued + last})",
        )
    else:
        ctx.check(
            one > max(issued + last),
            f"after {who} declared {q} again, its send got id {one}, not above "
            f"{max(issued + last)} (ids issued: {issued + last})",
        )
    # Received by either service: a broker may hand a message to the one that declared.
    final: list[int] = []

    async def all_back() -> bool:
        for receiver in dict.fromkeys([ctx.service, declarer]):
            final.extend(m.msg_id for m in await receiver.receive_messages(q, 10, ctx.timing.long))
        return len(final) >= 3

    with contextlib.suppress(ContractViolation):
        await ctx.eventually(all_back, ctx.timing.delivery, "3 messages")
    ctx.check(
        sorted(final) == sorted([*last, one]),
        f"received {sorted(final)} from {q}, sent {[*last, one]}",
    )
    if unavailable is not None:
        raise unavailable
