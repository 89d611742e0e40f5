"""Fuzzing the public API of every reference provider with hostile arguments.

Hypothesis draws one call of :class:`mqcontract.MessagingService` per example (names,
payloads, numbers, ids and sequences of every wrong kind) and makes it against a fresh
service whose bystander queue holds known messages. Two properties hold for each call:

1. a failure is one of the documented :mod:`mqcontract.errors` classes, never a
   ``TypeError``, ``ValueError``, ``KeyError``, ``RecursionError`` or a driver exception
   (and a call naming an invalid queue always fails);
2. a call that failed (or reported doing nothing) changed nothing: the bystander still
   stores exactly its messages (through the harness backdoor ``stored_ids`` where there
   is one) and gives them all back, and no missing queue was created.

Providers come through the kit's provisioning (``provisioned``): a missing backend skips,
or fails under ``MQCONTRACT_REQUIRE_BACKENDS=1``. Real backends run few examples, all
derandomized, so the file stays deterministic and quick.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mqcontract.errors as errors
from mqcontract.errors import MessagingError
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HookUnavailable
from mqcontract.validation import MAX_QUEUE_NAME_LENGTH, QUEUE_NAME_PATTERN

PROVIDERS = ["memory", "pgmq", "rabbitmq", "rabbitmq-quorum"]
#: Examples per provider: the in-memory one is cheap, real backends are not.
EXAMPLES = {"memory": 300, "pgmq": 25, "rabbitmq": 25, "rabbitmq-quorum": 25}
#: Every error class the package documents (``mqcontract.errors.__all__``).
DOCUMENTED: tuple[type[MessagingError], ...] = tuple(
    getattr(errors, name) for name in errors.__all__
)
BYSTANDER_PAYLOADS = [b"keep-0", b"keep-1", b"\xff\x00keep-2"]
#: No hostile call may hang: each is held to this bound.
CALL_BOUND = 30.0
_serial = itertools.count()


@dataclass
class Ctx:
    """What a drawn argument is made from, in the example's own event loop."""

    bystander: str
    missing: str
    ids: list[int]
    max_size: int
    max_limit: int
    max_timeout: float
    max_delay: float


@dataclass(frozen=True)
class Arg:
    """One drawn argument: a readable label (the reproduction) and how to make it."""

    label: str
    make: Callable[[Ctx], object] = field(compare=False)
    #: A queue name the naming rule rejects (or a collection holding one).
    bad_name: bool = False

    def __repr__(self) -> str:
        return self.label


def label(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 64:
        return f"<int of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def const(value: object, *, bad_name: bool = False) -> Arg:
    return Arg(label(value), lambda c: value, bad_name)


def fn(label: str, make: Callable[[Ctx], object], *, bad_name: bool = False) -> Arg:
    return Arg(label, make, bad_name)


def released_view(c: Ctx) -> memoryview:
    view = memoryview(b"released")
    view.release()
    return view


def gen(items: Callable[[Ctx], list[object]]) -> Callable[[Ctx], object]:
    def make(c: Ctx) -> Iterator[object]:
        return (item for item in items(c))

    return make


def is_bad_name(text: str) -> bool:
    return len(text) > MAX_QUEUE_NAME_LENGTH or QUEUE_NAME_PATTERN.fullmatch(text) is None


# -- queue names ---------------------------------------------------------------------------

VALID_NAMES = [fn("<bystander>", lambda c: c.bystander), fn("<missing>", lambda c: c.missing)]
HOSTILE_NAMES = [
    *(
        const(v, bad_name=True)
        for v in [None, 0, -1, 1.5, math.nan, True, b"q", Decimal("1"), "", " ", "Q", "a" * 48]
    ),
    *(
        const(v, bad_name=True)
        for v in [
            "q'); DROP TABLE pgmq.meta; --",
            'q"; select 1; --',
            "q;",
            "amq.direct",
            "amq.gen-x",
            "a.b",
            "a#",
            "a*",
            "a/b",
            "a b",
            "a\x00",
            "a\n",
            "a-b",
            "%s",
            "$1",
            "ä",
            "队列",
            "q\u0301",
            "🙂",
            "ǅ",
            "\uff41",
            "a" * 4096,  # longer runs of letters: see test_long_name_is_rejected_quickly
        ]
    ),
    fn("bytearray(b'q')", lambda c: bytearray(b"q"), bad_name=True),
    fn("[<bystander>]", lambda c: [c.bystander], bad_name=True),
    fn("{<bystander>: 1}", lambda c: {c.bystander: 1}, bad_name=True),
    fn("{<bystander>}", lambda c: {c.bystander}, bad_name=True),
    fn("(<bystander>,)", lambda c: (c.bystander,), bad_name=True),
    fn("<bystander>.upper()", lambda c: c.bystander.upper(), bad_name=True),
    fn("<bystander> + ' '", lambda c: c.bystander + " ", bad_name=True),
    fn("' ' + <bystander>", lambda c: " " + c.bystander, bad_name=True),
    fn("<bystander> + 'é'", lambda c: c.bystander + "é", bad_name=True),
    fn("<bystander> + '*'", lambda c: c.bystander + "*", bad_name=True),
    fn("<bystander> + '; drop'", lambda c: c.bystander + "; drop table x", bad_name=True),
    fn("<bystander> padded to 48", lambda c: c.bystander.ljust(48, "x"), bad_name=True),
    fn("b<bystander>", lambda c: c.bystander.encode(), bad_name=True),
]
names: st.SearchStrategy[Arg] = st.one_of(
    st.sampled_from(VALID_NAMES),
    st.sampled_from(HOSTILE_NAMES),
    st.text(max_size=60).filter(is_bad_name).map(lambda s: const(s, bad_name=True)),
)

# -- payloads ------------------------------------------------------------------------------

PAYLOADS = [
    const(b"fuzz"),
    const(b""),
    const(b"\xff\xfe\x00"),
    const(b'{"n": 1e999999}'),
    const(b'{"$mqcontract_b64": "!!"}'),
    fn("bytearray(b'fuzz')", lambda c: bytearray(b"fuzz")),
    fn("memoryview(b'fuzz')", lambda c: memoryview(b"fuzz")),
    fn("memoryview(b'abcd').cast('B', (2, 2))", lambda c: memoryview(b"abcd").cast("B", (2, 2))),
    fn("memoryview(b'abcdef')[::2]", lambda c: memoryview(b"abcdef")[::2]),
    fn("b'x' * (max_size + 1)", lambda c: b"x" * (c.max_size + 1)),
    fn("bytearray(max_size + 1)", lambda c: bytearray(c.max_size + 1)),
    *(const(v) for v in ["text", "", None, 0, 1.5, True, [b"x"], (b"x",), {b"x": 1}, Decimal("1")]),
]
payloads: st.SearchStrategy[Arg] = st.one_of(
    st.sampled_from(PAYLOADS),
    st.binary(max_size=64).map(const),
    st.text(max_size=16).map(const),
)

# -- numbers -------------------------------------------------------------------------------

NUMBERS = [
    *(
        const(v)
        for v in [
            math.nan,
            math.inf,
            -math.inf,
            -1,
            -0.0,
            0,
            0.0,
            5e-324,
            1e308,
            True,
            False,
            2**63,
            -(2**63) - 1,
            10**400,
            1.5,
            "1",
            "nan",
            None,
            b"1",
            [1],
            Decimal("1"),
            Decimal("NaN"),
            complex(1, 0),
        ]
    ),
]
seconds: st.SearchStrategy[Arg] = st.one_of(
    st.sampled_from(
        [
            *NUMBERS,
            const(0.5),
            const(30),
            fn("max_visibility_timeout + 1", lambda c: c.max_timeout + 1),
            fn("max_visibility_timeout", lambda c: c.max_timeout),
        ]
    ),
    st.floats().map(const),
    st.integers().map(const),
)
delays: st.SearchStrategy[Arg] = st.one_of(
    st.sampled_from(
        [*NUMBERS, const(0), const(0.5), fn("max_delay + 1", lambda c: c.max_delay + 1)]
    ),
    st.floats().map(const),
    st.integers().map(const),
)
limits: st.SearchStrategy[Arg] = st.one_of(
    st.sampled_from(
        [
            *NUMBERS,
            const(1),
            const(1.0),
            const(10),
            fn("max_limit + 1", lambda c: c.max_limit + 1),
            fn("float(max_limit)", lambda c: float(c.max_limit)),
        ]
    ),
    st.integers().map(const),
)

# -- message ids ---------------------------------------------------------------------------

IDS = [
    fn("<id 0>", lambda c: c.ids[0]),
    fn("<id 2>", lambda c: c.ids[2]),
    fn("float(<id 0>)", lambda c: float(c.ids[0])),
    fn("str(<id 0>)", lambda c: str(c.ids[0])),
    fn("[<id 0>]", lambda c: [c.ids[0]]),
    fn("Decimal(<id 0>)", lambda c: Decimal(c.ids[0])),
    fn("<id 0> + 0.5", lambda c: c.ids[0] + 0.5),
    fn("<id 0> + 2**64", lambda c: c.ids[0] + 2**64),
    fn("<id 0> - 2**64", lambda c: c.ids[0] - 2**64),
    fn("10**5000", lambda c: 10**5000),
    *NUMBERS,
]
ids: st.SearchStrategy[Arg] = st.one_of(st.sampled_from(IDS), st.integers().map(const))

# -- claims ---------------------------------------------------------------------------------
# Nothing on the bystander is held, so every claim drawn here is forged or stale: settling
# one must raise (or, in a batch, report False) and change nothing.

TOKENS: list[object] = [1, 0, -1, "1", "x", "", 2**63, 10**400, 1.5, math.nan, None, True]
TOKENS += [b"1", [1]]


def forged(token: object) -> Arg:
    """A claim on the bystander's first message with ``token`` (of any type)."""
    return fn(
        f"Claim(<bystander>, <id 0>, {label(token)})",
        lambda c: Claim(c.bystander, c.ids[0], token, 30.0),  # type: ignore[arg-type]
    )


CLAIMS = [
    *(forged(t) for t in TOKENS),
    fn("Claim(<missing>, <id 0>, 1)", lambda c: Claim(c.missing, c.ids[0], 1, 30.0)),
    fn("Claim(<bystander>, '1', 1)", lambda c: Claim(c.bystander, "1", 1, 30.0)),  # type: ignore[arg-type]
    fn("Claim(<bystander>, 2**64, 1)", lambda c: Claim(c.bystander, 2**64, 1, 30.0)),
    fn(
        "QueuedMessage(<bystander>, <id 0>) without a claim",
        lambda c: QueuedMessage(c.ids[0], c.bystander, b"keep-0", 1, 0.0),
    ),
    fn(
        "QueuedMessage(<bystander>, <id 0>, claim token 1)",
        lambda c: QueuedMessage(
            c.ids[0], c.bystander, b"keep-0", 1, 0.0, Claim(c.bystander, c.ids[0], 1, 30.0)
        ),
    ),
    *IDS[:3],
]
claims: st.SearchStrategy[Arg] = st.sampled_from(CLAIMS)
claim_batches: st.SearchStrategy[Arg] = st.one_of(
    st.sampled_from([const([]), const("abc"), const(None), const(5)]),
    st.lists(claims, max_size=3).map(
        lambda items: fn(repr(items), lambda c: [a.make(c) for a in items])
    ),
)

# -- sequences -----------------------------------------------------------------------------

BATCHES = [
    *(const(v) for v in ["abc", "", b"abc", b"", [], (), [[b"x"]]]),
    const([b"ok", "text"]),
    const([b"ok", None]),
    const({b"a": 1}),
    const(frozenset({b"a"})),
    fn("[b'ok', b'x' * (max_size + 1)]", lambda c: [b"ok", b"x" * (c.max_size + 1)]),
    fn("(b'ok' for _ in range(3))", gen(lambda c: [b"ok"] * 3)),
    fn("(p for p in [b'ok', 'text'])", gen(lambda c: [b"ok", "text"])),
    fn("[bytearray, memoryview]", lambda c: [bytearray(b"a"), memoryview(b"b")]),
    fn("iter([])", lambda c: iter([])),
]
batches: st.SearchStrategy[Arg] = st.one_of(
    st.sampled_from(BATCHES),
    st.lists(payloads, max_size=3).map(
        lambda items: fn(repr(items), lambda c: [a.make(c) for a in items])
    ),
)


def name_list(items: list[Arg]) -> Arg:
    return fn(
        repr(items), lambda c: [a.make(c) for a in items], bad_name=any(a.bad_name for a in items)
    )


NOT_QUEUE_LISTS: list[object] = ["abc", "_", "", b"abc", None, 5, 1.5, True, [5], [[]], [{}]]
QUEUE_LISTS = [
    *(const(v, bad_name=True) for v in NOT_QUEUE_LISTS),
    const([]),
    fn("<bystander> (a str)", lambda c: c.bystander, bad_name=True),
    fn("[<bystander>, 'BAD']", lambda c: [c.bystander, "BAD"], bad_name=True),
    fn("[<bystander>, None]", lambda c: [c.bystander, None], bad_name=True),
    fn("[<bystander>, <bystander>]", lambda c: [c.bystander, c.bystander]),
    fn("[<bystander>, <missing>]", lambda c: [c.bystander, c.missing]),
    fn("(n for n in [<bystander>])", gen(lambda c: [c.bystander])),
    fn("{<bystander>: 1}", lambda c: {c.bystander: 1}),
    fn("{<bystander>}", lambda c: {c.bystander}),
]
queue_lists: st.SearchStrategy[Arg] = st.one_of(
    st.sampled_from(QUEUE_LISTS), st.lists(names, max_size=3).map(name_list)
)


# -- calls ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    args: tuple[Arg, ...]

    def __repr__(self) -> str:
        return f"{self.method}({', '.join(map(repr, self.args))})"


def call(method: str, *parts: st.SearchStrategy[Arg]) -> st.SearchStrategy[Call]:
    return st.tuples(*parts).map(lambda args: Call(method, args))


calls: st.SearchStrategy[Call] = st.one_of(
    call("create_queue", names),
    call("delete_queue", names),
    call("queue_exists", names),
    call("send_message", names, payloads),
    call("send_message_with_delay", names, payloads, delays),
    call("send_batch", names, batches),
    call("receive_messages", names, limits, seconds),
    call("ack_message", names, ids),
    call("nack_message", names, ids),
    call("fetch_message", names, ids, seconds),
    call("ack_claim", names, claims),
    call("nack_claim", names, claims),
    call("ack_claims", names, claim_batches),
    call("subscribe", names),
    call("subscribe_many", queue_lists),
)


def changed_something(method: str, result: object) -> bool:
    """Whether a call that returned ``result`` may have changed a queue."""
    if method in {"create_queue", "queue_exists", "subscribe", "subscribe_many"}:
        return False
    if method in {"receive_messages", "send_batch"}:
        return bool(result)
    if method == "ack_claims":
        return isinstance(result, list) and any(result)
    if method == "fetch_message":
        return result is not None
    return True  # sends, acks, nacks and deletes that succeeded


# -- one example ---------------------------------------------------------------------------


async def stored(harness: Harness, service: MessagingService, queue: str) -> list[int] | None:
    try:
        return sorted(await harness.stored_ids(service, queue))
    except HookUnavailable:
        return None


async def exercise(harness: Harness, drawn: Call) -> None:
    run_id = harness.settings.run_id
    serial = next(_serial)
    bystander = f"fz_{run_id}_b{serial}"
    missing = f"fz_{run_id}_m{serial}"
    service = await harness.open(harness.new_clock())
    try:
        await service.create_queue(bystander)
        sent = [await service.send_message(bystander, p) for p in BYSTANDER_PAYLOADS]
        caps = service.capabilities
        ctx = Ctx(
            bystander,
            missing,
            sent,
            caps.max_message_size_bytes,
            caps.max_receive_limit,
            caps.max_visibility_timeout_seconds,
            caps.max_delay_seconds,
        )
        before = await stored(harness, service, bystander)
        assert before is None or before == sorted(sent)

        args = [arg.make(ctx) for arg in drawn.args]
        method = getattr(service, drawn.method)
        failed: BaseException | None = None
        result: Any = None
        try:
            async with asyncio.timeout(CALL_BOUND):
                result = await method(*args)
        except MessagingError as exc:
            failed = exc
        except Exception as exc:
            raise AssertionError(
                f"{harness.name}: {drawn!r} raised {type(exc).__module__}.{type(exc).__qualname__}"
                f" (not a MessagingError): {str(exc)[:300]}"
            ) from exc

        if failed is not None:
            undocumented = f"{harness.name}: {drawn!r} raised undocumented {type(failed)!r}"
            assert isinstance(failed, DOCUMENTED), undocumented
            assert type(failed).__module__ == errors.__name__, undocumented
        elif drawn.method in {"subscribe", "subscribe_many"}:
            await result.aclose()
        if any(arg.bad_name for arg in drawn.args):
            assert failed is not None, f"{harness.name}: {drawn!r} accepted a bad name"

        if failed is not None or not changed_something(drawn.method, result):
            after = await stored(harness, service, bystander)
            assert after == before, (
                f"{harness.name}: {drawn!r} changed stored ids {before}->{after}"
            )
            got = await service.receive_messages(bystander, 10, 60.0)
            assert sorted(m.payload for m in got) == sorted(BYSTANDER_PAYLOADS), (
                f"{harness.name}: {drawn!r} changed the bystander: {got!r}"
            )
            for message in got:
                await service.ack_message(bystander, message.msg_id)
        if failed is not None or drawn.method != "create_queue":
            assert not await service.queue_exists(missing), (
                f"{harness.name}: {drawn!r} created {missing}"
            )
    finally:
        await harness.cleanup(service, [bystander, missing])
        await service.close()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_hostile_calls_fail_cleanly_and_change_nothing(
    provisioned: Callable[[str], Harness], provider: str
) -> None:
    harness = provisioned(provider)

    @settings(
        max_examples=EXAMPLES[provider],
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(drawn=calls)
    def run(drawn: Call) -> None:
        asyncio.run(exercise(harness, drawn))

    run()


# -- escapes found by fuzzing, each kept as a regression case ----------------------------

FOUND_ESCAPES = [
    pytest.param(
        Call("send_message", (VALID_NAMES[0], fn("released memoryview", released_view))),
        id="send_message-released_memoryview",
    ),
    pytest.param(
        Call(
            "send_message_with_delay",
            (VALID_NAMES[0], fn("released memoryview", released_view), const(0)),
        ),
        id="send_message_with_delay-released_memoryview",
    ),
    pytest.param(
        Call(
            "send_batch",
            (
                VALID_NAMES[0],
                fn("[b'ok', released memoryview]", lambda c: [b"ok", released_view(c)]),
            ),
        ),
        id="send_batch-released_memoryview_item",
    ),
    *(
        pytest.param(
            Call("send_batch", (VALID_NAMES[0], const(value))),
            id=f"send_batch-{type(value).__name__}",
        )
        for value in [None, 5, 1.5, True]
    ),
]


@pytest.mark.parametrize("drawn", FOUND_ESCAPES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_escape_found_by_fuzzing_stays_fixed(
    provisioned: Callable[[str], Harness], provider: str, drawn: Call
) -> None:
    harness = provisioned(provider)
    asyncio.run(exercise(harness, drawn))


#: Long enough that redacting the rejection's message took seconds while it was quadratic.
LONG_NAME = 40_000


def test_long_name_is_rejected_quickly(provisioned: Callable[[str], Harness]) -> None:
    harness = provisioned("memory")

    async def attempt() -> None:
        service = await harness.open(harness.new_clock())
        try:
            with pytest.raises(errors.InvalidQueueName):
                await service.create_queue("a" * LONG_NAME)
        finally:
            await service.close()

    started = time.monotonic()
    asyncio.run(attempt())
    assert time.monotonic() - started < 0.5
