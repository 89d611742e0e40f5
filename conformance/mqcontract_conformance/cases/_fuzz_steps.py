"""HOST-7's vocabulary: calls of the public API drawn as symbolic steps.

A step names its queues and arguments symbolically (``W1``, ``<claim #2 on W1>``,
``<held id #0 of B> + 2**64``) and makes the concrete value only when it runs, from what
the program has seen so far. So the same seed draws the same program on every provider,
and a program with steps removed (shrinking) still runs.

Queues: ``B`` is the bystander (messages visible and held; only calls that must fail or
change nothing may name it), ``W1`` and ``W2`` are work queues a program creates, fills,
drains and deletes (``W2`` starts missing), ``M`` is never created, and a hostile name
is drawn from the HOST-1 corpus.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from mqcontract.messages import Claim, QueuedMessage
from mqcontract_conformance.cases._fuzz_world import UNKNOWN_ID, World
from mqcontract_conformance.cases._hostile_corpus import (
    HOSTILE_IDS,
    HOSTILE_LIMITS,
    HOSTILE_NAMES,
    hostile_delays,
    hostile_visibility_timeouts,
    shown,
)

__all__ = ["UNKNOWN_ID", "Arg", "Need", "Step", "draw_closed_call", "draw_program", "operations"]


class Need(enum.Enum):
    """What an argument demands of the call it is passed to."""

    VALID = "valid"
    #: The call must raise a documented error.
    FAIL = "must fail"


@dataclass(frozen=True)
class Arg:
    """One argument: how it reads in a reproduction, and how it is made when run."""

    text: str
    make: Callable[[World], object] = field(compare=False, repr=False)
    need: Need = Need.VALID
    #: The queue key (``B``, ``W1``, ``W2``, ``M``) a queue argument names; None when the
    #: argument is a hostile name or not a queue.
    key: str | None = None
    #: How many payloads a batch argument holds (None: not a batch of payloads).
    size: int | None = None
    #: Not a claim of any kind (a batch holding one fails as a whole).
    not_a_claim: bool = False

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Step:
    """One call: the operation and its arguments, queue first (when it takes one)."""

    op: str
    args: tuple[Arg, ...]

    @property
    def queue(self) -> Arg | None:
        """The queue argument of an operation on one queue."""
        return self.args[0] if self.args and self.op not in _NO_QUEUE else None

    def __str__(self) -> str:
        return f"{self.op}({', '.join(a.text for a in self.args)})"


_NO_QUEUE = {"list_queues", "subscribe_many"}

# -- queues -------------------------------------------------------------------------------


def _queue(key: str) -> Arg:
    return Arg(key, lambda w: w.name_of(key), key=key)


def _hostile_name(rng: random.Random) -> Arg:
    value = rng.choice(HOSTILE_NAMES)
    return Arg(shown(value, 50), lambda w: value, Need.FAIL)


#: Operations that may name the bystander: each is drawn so that it must fail or find
#: nothing there.
_ON_BYSTANDER = {
    "create_queue",
    "queue_exists",
    "send_message",
    "send_message_with_delay",
    "send_batch",
    "receive_messages",
    "fetch_message",
    "ack_message",
    "nack_message",
    "ack_claim",
    "nack_claim",
    "ack_claims",
}


def _target(rng: random.Random, op: str) -> Arg:
    roll = rng.random()
    if roll < 0.12:
        return _hostile_name(rng)
    if roll < 0.30 and op in _ON_BYSTANDER:
        return _queue("B")
    if roll < 0.36 and op != "create_queue":
        return _queue("M")
    return _queue("W2" if rng.random() < 0.3 else "W1")


# -- payloads -----------------------------------------------------------------------------

_VALID_PAYLOADS: tuple[tuple[str, Callable[[], object]], ...] = (
    ("b'fuzz'", lambda: b"fuzz"),
    ("b''", lambda: b""),
    ("b'\\x00\\xff\\xc3('", lambda: b"\x00\xff\xc3("),
    ('b\'{"$mqcontract_b64": "!!"}\'', lambda: b'{"$mqcontract_b64": "!!"}'),
    ("bytearray(b'fuzz')", lambda: bytearray(b"fuzz")),
    ("memoryview(b'fuzz')", lambda: memoryview(b"fuzz")),
)


def _released() -> memoryview:
    view = memoryview(b"released")
    view.release()
    return view


_BAD_PAYLOADS: tuple[tuple[str, Callable[[World], object]], ...] = (
    ("b'x' * (max_message_size_bytes + 1)", lambda w: b"x" * (w.caps.max_message_size_bytes + 1)),
    ("'text'", lambda w: "text"),
    ("None", lambda w: None),
    ("5", lambda w: 5),
    ("[b'x']", lambda w: [b"x"]),
    ("released memoryview", lambda w: _released()),
)


def _payload(rng: random.Random, bad: bool) -> Arg:
    if bad:
        text, make = rng.choice(_BAD_PAYLOADS)
        return Arg(text, make, Need.FAIL)
    text, valid = rng.choice(_VALID_PAYLOADS)
    return Arg(text, lambda w: valid())


def _batch(rng: random.Random, bad: bool) -> Arg:
    if bad:
        forms: list[tuple[str, Callable[[World], object]]] = [
            (
                "[b'ok', b'x' * (max + 1)]",
                lambda w: [b"ok", b"x" * (w.caps.max_message_size_bytes + 1)],
            ),
            ("[b'ok', 'text']", lambda w: [b"ok", "text"]),
            ("[b'ok', None]", lambda w: [b"ok", None]),
            ("None", lambda w: None),
            ("5", lambda w: 5),
            ("'abc'", lambda w: "abc"),
            ("b'abc'", lambda w: b"abc"),
        ]
        text, make = rng.choice(forms)
        return Arg(text, make, Need.FAIL)
    count = rng.choice((0, 1, 2, 3))
    items = [rng.choice(_VALID_PAYLOADS) for _ in range(count)]
    text = "[" + ", ".join(t for t, _ in items) + "]"
    if count and rng.random() < 0.3:
        return Arg(f"iter({text})", lambda w: iter([v() for _, v in items]), size=count)
    return Arg(text, lambda w: [v() for _, v in items], size=count)


# -- numbers ------------------------------------------------------------------------------


def _limit(rng: random.Random, bad: bool) -> Arg:
    if bad:
        value = rng.choice((*HOSTILE_LIMITS, 0, -1, 1.5, True))
        return Arg(shown(value), lambda w: value, Need.FAIL)
    if rng.random() < 0.2:
        return Arg("max_receive_limit", lambda w: w.caps.max_receive_limit)
    value = rng.choice((1, 2, 3))
    return Arg(str(value), lambda w: value)


def _hostile_seconds(rng: random.Random, delay: bool) -> Arg:
    """A bad visibility timeout or delay (some are relative to the declared maximum)."""
    hostile = hostile_delays if delay else hostile_visibility_timeouts
    index = rng.randrange(len(hostile(60.0)))
    label = shown(hostile(60.0)[index]).replace("60.001", "maximum + 0.001")

    def make(w: World) -> object:
        caps = w.caps
        maximum = caps.max_delay_seconds if delay else caps.max_visibility_timeout_seconds
        return hostile(maximum)[index]

    return Arg(label, make, Need.FAIL)


def _vt(rng: random.Random, bad: bool) -> Arg:
    if bad:
        return _hostile_seconds(rng, delay=False)
    return Arg("<long>", lambda w: w.long)


def _delay(rng: random.Random, bad: bool) -> Arg:
    if bad:
        return _hostile_seconds(rng, delay=True)
    if rng.random() < 0.5:
        return Arg("0", lambda w: 0)
    return Arg("<long>", lambda w: w.long)


# -- ids and claims -----------------------------------------------------------------------


def _hostile_id(rng: random.Random, key: str) -> Arg:
    """An id that names no message: from the HOST-5 corpus, or a look-alike of a real one."""
    i = rng.randrange(8)
    forms: list[tuple[str, Callable[[World], object]]] = [
        (f"float(<id #{i} of {key}>)", lambda w: float(w.pick_id(key, i))),
        (f"<id #{i} of {key}> + 2**64", lambda w: w.pick_id(key, i) + 2**64),
        (f"<id #{i} of {key}> - 2**64", lambda w: w.pick_id(key, i) - 2**64),
        (f"str(<id #{i} of {key}>)", lambda w: str(w.pick_id(key, i))),
        (
            f"Decimal(<id #{i} of {key}>) + 0.5",
            lambda w: Decimal(w.pick_id(key, i)) + Decimal("0.5"),
        ),
        (f"[<id #{i} of {key}>]", lambda w: [w.pick_id(key, i)]),
    ]
    if rng.random() < 0.5:
        value = rng.choice(HOSTILE_IDS)
        return Arg(shown(value), lambda w: value, Need.FAIL)
    text, make = rng.choice(forms)
    return Arg(text, make, Need.FAIL)


def _known_id(rng: random.Random, key: str) -> Arg:
    i = rng.randrange(8)
    return Arg(f"<id #{i} of {key}>", lambda w: w.pick_id(key, i))


def _own_claim(rng: random.Random, key: str) -> Arg:
    """A claim this service made on ``key`` (live or not: the program decides)."""
    i = rng.randrange(8)
    if rng.random() < 0.2:
        return Arg(
            f"QueuedMessage of <claim #{i} on {key}>",
            lambda w: w.claimed_message(key, i),
        )
    return Arg(f"<claim #{i} on {key}>", lambda w: w.pick_claim(key, i))


def _forged(c: Claim, **changes: object) -> Claim:
    fields = {
        "queue_name": c.queue_name,
        "msg_id": c.msg_id,
        "token": c.token,
        "visibility_timeout": c.visibility_timeout,
    }
    fields.update(changes)
    return Claim(**fields)  # type: ignore[arg-type]


def _other_token(token: int | str) -> int | str:
    return token + 7919 if isinstance(token, int) else f"{token}-forged"


def _retyped(token: int | str) -> object:
    """The token as another type: ``"7"`` for 7 (equal once a driver casts it), bytes for text."""
    return str(token) if isinstance(token, int) else token.encode()


def _forged_claim(rng: random.Random, key: str, source: str) -> Arg:
    """A claim that holds nothing on ``key``, made from a real claim on ``source``.

    Never a real token under another id: a provider may identify a claim by its token
    alone (as SQS does a receipt handle), and then that token still names its message.
    """
    i = rng.randrange(8)
    src = f"<claim #{i} on {source}>"

    def real(w: World) -> Claim:
        return w.pick_claim(source, i)

    forms: list[tuple[str, Callable[[World], object]]] = [
        (
            f"{src} with another token",
            lambda w: _forged(real(w), token=_other_token(real(w).token)),
        ),
        (
            f"{src} with its token retyped",
            lambda w: _forged(real(w), token=_retyped(real(w).token)),
        ),
        (f"{src} with token True", lambda w: _forged(real(w), token=True)),
        (f"{src} with token None", lambda w: _forged(real(w), token=None)),
        (f"{src} with msg_id str", lambda w: _forged(real(w), msg_id=str(real(w).msg_id))),
        (f"{src} with msg_id float", lambda w: _forged(real(w), msg_id=float(real(w).msg_id))),
        (
            f"QueuedMessage of {src} without its claim",
            lambda w: QueuedMessage(real(w).msg_id, w.name_of(key), b"", 1, 0.0),
        ),
    ]
    if source != key:
        forms.append((src, real))  # a claim on another queue
    text, make = rng.choice(forms)
    return Arg(text, make, Need.FAIL)


_NOT_CLAIMS: tuple[object, ...] = (None, 1, "claim", (1,), {"msg_id": 1}, math.nan)


def _claim(rng: random.Random, key: str) -> Arg:
    roll = rng.random()
    if key == "B":
        source = "B" if roll < 0.6 else "W1"
        return _forged_claim(rng, key, source)
    if roll < 0.55:
        return _own_claim(rng, key)
    if roll < 0.9:
        return _forged_claim(rng, key, rng.choice((key, "W1", "W2", "B")))
    value = rng.choice(_NOT_CLAIMS)
    return Arg(shown(value), lambda w: value, Need.FAIL, not_a_claim=True)


def _claims(rng: random.Random, key: str) -> Arg:
    items = [_claim(rng, key) for _ in range(rng.choice((0, 1, 2, 3, 4)))]
    if key == "B" and not items:
        items = [_claim(rng, key)]
    text = "[" + ", ".join(a.text for a in items) + "]"
    # Inside a batch a stale claim is reported, not raised: only a non-claim fails it.
    fails = any(a.not_a_claim for a in items)
    return Arg(text, lambda w: [a.make(w) for a in items], Need.FAIL if fails else Need.VALID)


# -- steps --------------------------------------------------------------------------------

#: Operation -> relative weight in a program.
_WEIGHTS: dict[str, float] = {
    "create_queue": 1.0,
    "delete_queue": 1.0,
    "queue_exists": 0.7,
    "list_queues": 0.3,
    "send_message": 2.0,
    "send_message_with_delay": 1.0,
    "send_batch": 1.5,
    "receive_messages": 3.0,
    "fetch_message": 1.0,
    "ack_message": 1.5,
    "nack_message": 1.5,
    "ack_claim": 2.0,
    "nack_claim": 2.0,
    "ack_claims": 2.0,
    "subscribe": 0.4,
    "subscribe_many": 0.4,
}


def operations(*, delay: bool, fetch: bool, push: bool, listing: bool) -> list[str]:
    """The operations a provider with these capabilities offers."""
    skip = set()
    if not delay:
        skip.add("send_message_with_delay")
    if not fetch:
        skip.add("fetch_message")
    if not push:
        skip |= {"subscribe", "subscribe_many"}
    if not listing:
        skip.add("list_queues")
    return [op for op in _WEIGHTS if op not in skip]


def _queue_list(rng: random.Random) -> Arg:
    if rng.random() < 0.2:
        value = rng.choice(("abc", "", None, 5, b"abc", [None]))
        return Arg(shown(value), lambda w: value, Need.FAIL)
    items = [
        _hostile_name(rng) if rng.random() < 0.2 else _queue(rng.choice(("W1", "W1", "W2", "M")))
        for _ in range(rng.choice((1, 2, 3)))
    ]
    need = Need.FAIL if any(a.need is Need.FAIL for a in items) else Need.VALID
    text = "[" + ", ".join(a.text for a in items) + "]"
    return Arg(
        text, lambda w: [a.make(w) for a in items], need, key=",".join(str(a.key) for a in items)
    )


def _step(rng: random.Random, op: str, target: Arg) -> Step:
    key = target.key or "W1"
    on_b = key == "B"
    bad = rng.random() < 0.25
    args: tuple[Arg, ...]
    if op in {"create_queue", "delete_queue", "queue_exists", "subscribe"}:
        args = ()
    elif op == "send_message":
        args = (_payload(rng, on_b or bad),)
    elif op == "send_message_with_delay":
        which = rng.choice(("payload", "delay")) if on_b else ""
        args = (
            _payload(rng, which == "payload" or rng.random() < 0.15),
            _delay(rng, which == "delay" or rng.random() < 0.15),
        )
    elif op == "send_batch":
        args = (_batch(rng, on_b or bad),)
    elif op == "receive_messages":
        which = rng.choice(("limit", "vt")) if on_b else ""
        args = (
            _limit(rng, which == "limit" or rng.random() < 0.2),
            _vt(rng, which == "vt" or rng.random() < 0.1),
        )
    elif op == "fetch_message":
        if on_b:
            roll = rng.random()
            if roll < 0.4:
                i = rng.randrange(4)
                args = (Arg(f"<held id #{i} of B>", lambda w: w.held_id(i)), _vt(rng, False))
            elif roll < 0.7:
                args = (_hostile_id(rng, "B"), _vt(rng, False))
            else:
                j = rng.randrange(4)
                args = (Arg(f"<visible id #{j} of B>", lambda w: w.visible_id(j)), _vt(rng, True))
        else:
            args = (
                _hostile_id(rng, key) if bad else _known_id(rng, key),
                _vt(rng, rng.random() < 0.1),
            )
    elif op in {"ack_message", "nack_message"}:
        if on_b and rng.random() < 0.4:
            j = rng.randrange(4)
            args = (Arg(f"<visible id #{j} of B>", lambda w: w.visible_id(j)),)
        elif on_b or rng.random() < 0.35:
            args = (_hostile_id(rng, key),)
        else:
            args = (_known_id(rng, key),)
    elif op in {"ack_claim", "nack_claim"}:
        args = (_claim(rng, key),)
    elif op == "ack_claims":
        args = (_claims(rng, key),)
    else:
        raise ValueError(f"no arguments drawn for {op}")
    return Step(op, (target, *args))


def draw_step(rng: random.Random, ops: list[str]) -> Step:
    """One call of one of ``ops``."""
    op = rng.choices(ops, weights=[_WEIGHTS[o] for o in ops])[0]
    if op == "list_queues":
        return Step(op, ())
    if op == "subscribe_many":
        return Step(op, (_queue_list(rng),))
    return _step(rng, op, _target(rng, op))


def _receive(rng: random.Random, key: str) -> Step:
    return Step("receive_messages", (_queue(key), _limit(rng, False), _vt(rng, False)))


def _settle_own(rng: random.Random, key: str) -> Step:
    op = rng.choice(("ack_claim", "nack_claim", "ack_claims"))
    if op == "ack_claims":
        items = [_own_claim(rng, key) for _ in range(rng.choice((1, 2, 3)))]
        text = "[" + ", ".join(a.text for a in items) + "]"
        return Step(op, (_queue(key), Arg(text, lambda w: [a.make(w) for a in items])))
    return Step(op, (_queue(key), _own_claim(rng, key)))


def _motif(rng: random.Random, ops: list[str]) -> list[Step]:
    """A few calls that set up an odd state, then act on it: claims outliving their
    queue, claims settled out of order or after a later claim superseded them."""
    key = rng.choice(("W1", "W1", "W2"))
    head = [Step("create_queue", (_queue(key),))] if key == "W2" else []
    fill = Step("send_batch", (_queue(key), _batch(rng, False)))
    kind = rng.choice(("deleted", "out of order", "superseded"))
    if kind == "deleted":
        middle = [Step("delete_queue", (_queue(key),))]
        if rng.random() < 0.5:
            middle.append(Step("create_queue", (_queue(key),)))
    elif kind == "out of order":
        middle = [_settle_own(rng, key), _settle_own(rng, key)]
    else:
        middle = [_settle_own(rng, key), _receive(rng, key)]
    return [*head, fill, _receive(rng, key), *middle, _settle_own(rng, key)]


def draw_program(rng: random.Random, ops: list[str]) -> list[Step]:
    """A program of 6 to 14 calls: single calls and motifs (:func:`_motif`) mixed."""
    size = rng.randint(6, 14)
    steps: list[Step] = []
    while len(steps) < size:
        if rng.random() < 0.25:
            steps.extend(_motif(rng, ops))
        else:
            steps.append(draw_step(rng, ops))
    return steps[:size]


def draw_closed_call(rng: random.Random, ops: list[str]) -> Step:
    """A call for a closed service: any operation, valid or hostile arguments alike."""
    op = rng.choice(ops)
    if op == "list_queues":
        return Step(op, ())
    if op == "subscribe_many":
        return Step(op, (_queue_list(rng),))
    roll = rng.random()
    target = _hostile_name(rng) if roll < 0.3 else _queue("M" if roll < 0.4 else "W1")
    return _step(rng, op, target)
