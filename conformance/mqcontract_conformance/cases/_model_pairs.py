"""Programs derived from the operations themselves: every ordered pair, every run.

Random programs find a bug in one operation only when chance puts the right operation
after the right state. These programs do not depend on any seed: for every ordered pair
``(a, b)`` of the operation kinds the model drives, one segment runs ``a`` then ``b`` on a
queue of its own, ``b`` aimed at what ``a`` touched (the segment's *subject*): an ack of a
claim that just lapsed, a send right after the newest message was acked, a receive right
after a nack, a fetch of a message just delayed. Each segment starts from the same small
state: two messages sent and both claimed (the newest one is the subject; the oldest was
released and claimed again, so one of our claims is superseded), plus two more left
visible when ``a`` receives or fetches.

Passing time is shared by every queue, so the segments of a pair with ``expire`` wait
together: ``(expire, b)`` segments are all set up, time passes once, then each runs
``b``; ``(a, expire)`` segments each run ``a``, then time passes once. On its own queue
each pair is still consecutive. Programs without ``expire`` hold claims long enough that
nothing lapses by accident.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from mqcontract.capabilities import Capabilities
from mqcontract_conformance.cases._model_driver import Driver

__all__ = [
    "SAMPLE_PAYLOADS",
    "Kind",
    "PairProgram",
    "PairRunner",
    "kinds_for",
    "pair_programs",
]

#: Payloads worth a second look under every fidelity (JSON key order, text, odd bytes).
SAMPLE_PAYLOADS: tuple[bytes, ...] = (
    b"",
    b'{"b": [true, null], "a": 1}',
    b'"text"',
    b"17",
    "h\u00e9llo \u2713 \U0001f389".encode(),
    b"\xff\xfe\x00\xc3(",
)

#: Pairs per program without ``expire`` (each pair has its own queue).
PAIRS_PER_PROGRAM = 30


class Kind(enum.StrEnum):
    """An operation kind the model drives."""

    SEND = "send"
    SEND_BATCH = "send_batch"
    SEND_DELAYED = "send_with_delay"
    RECEIVE = "receive"
    FETCH = "fetch"
    ACK_ID = "ack"
    NACK_ID = "nack"
    ACK_CLAIM = "ack_claim"
    NACK_CLAIM = "nack_claim"
    ACK_CLAIMS = "ack_claims"
    EXPIRE = "expire"


def kinds_for(caps: Capabilities) -> tuple[Kind, ...]:
    """The kinds a provider with ``caps`` offers (delays and fetch are optional)."""
    return tuple(
        k
        for k in Kind
        if (k is not Kind.SEND_DELAYED or caps.delay) and (k is not Kind.FETCH or caps.fetch_by_id)
    )


class Layout(enum.StrEnum):
    """How a program's segments are interleaved (see the module docstring)."""

    SEQUENTIAL = "sequential"
    EXPIRE_FIRST = "expire-first"
    EXPIRE_SECOND = "expire-second"


Pair = tuple[Kind, Kind]


@dataclass(frozen=True)
class PairProgram:
    """Segments, one per pair, and how they are interleaved."""

    pairs: tuple[Pair, ...]
    layout: Layout

    def describe(self) -> str:
        return ", ".join(f"{a}->{b}" for a, b in self.pairs)

    def only(self, pairs: Sequence[Pair]) -> PairProgram:
        """The same program reduced to ``pairs`` (for shrinking)."""
        return PairProgram(tuple(pairs), self.layout)

    @property
    def steps(self) -> int:
        """About how many operations it runs (for its time budget)."""
        return 10 * len(self.pairs) + 2


def pair_programs(kinds: Sequence[Kind]) -> list[PairProgram]:
    """Programs covering every ordered pair of ``kinds`` (the same list every run)."""
    plain = [(a, b) for a in kinds for b in kinds if Kind.EXPIRE not in (a, b)]
    programs = [
        PairProgram(tuple(plain[i : i + PAIRS_PER_PROGRAM]), Layout.SEQUENTIAL)
        for i in range(0, len(plain), PAIRS_PER_PROGRAM)
    ]
    if Kind.EXPIRE in kinds:
        others = [k for k in kinds if k is not Kind.EXPIRE]
        programs.append(PairProgram(tuple((Kind.EXPIRE, b) for b in others), Layout.EXPIRE_FIRST))
        expiring = (*((a, Kind.EXPIRE) for a in others), (Kind.EXPIRE, Kind.EXPIRE))
        programs.append(PairProgram(expiring, Layout.EXPIRE_SECOND))
    return programs


@dataclass
class _Segment:
    queue: str
    #: The message the next operation aims at.
    subject: int


class PairRunner:
    """Runs pair programs through a driver (which compares every step with the model)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        params = driver.params
        #: Claims that must lapse at the next ``expire``, and ones that must not lapse.
        self.short_vt = params.vts[0]
        self.hold_vt = params.vts[-1]
        self.delay = max(params.delays)
        #: Long enough for every short claim and delay of the program to be surely over.
        self.expire_wait = max(self.short_vt, self.delay) + 2 * params.tolerance + 0.05
        self._payloads = 0

    def waiting(self, program: PairProgram) -> float:
        """Seconds of waiting ``program`` plans (its ``expire`` and the final drain)."""
        expires = sum(k is Kind.EXPIRE for pair in program.pairs for k in pair)
        return (min(expires, 2) + 1) * self.expire_wait

    def run(self, program: PairProgram) -> None:
        """Run ``program``; a mismatch raises :class:`~._queue_model.ModelMismatch`."""
        vt = self.hold_vt if program.layout is Layout.SEQUENTIAL else self.short_vt
        if program.layout is Layout.EXPIRE_FIRST:
            segments = [self._setup(a, vt) for a, _ in program.pairs]
            self._step(Kind.EXPIRE, segments[0], vt)
            for (_, b), segment in zip(program.pairs, segments, strict=True):
                self._step(b, segment, vt)
        elif program.layout is Layout.EXPIRE_SECOND:
            segment = None
            for a, _ in program.pairs:
                segment = self._setup(a, vt)
                self._step(a, segment, vt)
            if segment is not None:
                self._step(Kind.EXPIRE, segment, vt)
        else:
            for a, b in program.pairs:
                segment = self._setup(a, vt)
                self._step(a, segment, vt)
                self._step(b, segment, vt)
        self.driver.drain()

    def _payload(self) -> bytes:
        self._payloads += 1
        return SAMPLE_PAYLOADS[self._payloads % len(SAMPLE_PAYLOADS)]

    def _setup(self, first: Kind, vt: float) -> _Segment:
        """A queue with two messages claimed, the newest (the subject) once, the oldest
        twice (released by a nack in between, so its first claim is superseded); and two
        more left visible when ``first`` receives or fetches (the newest is its subject)."""
        d = self.driver
        queue = d.create_queue()
        d.send(queue, self._payload(), None)
        d.send(queue, self._payload(), None)
        got = d.receive(queue, 2, vt)
        segment = _Segment(queue, got[-1].msg_id if got else 0)
        if got:
            d.settle_id(queue, got[0].msg_id, ack=False)
            d.receive(queue, 1, vt)
        if first in (Kind.RECEIVE, Kind.FETCH):
            d.send(queue, self._payload(), None)
            newest = d.send(queue, self._payload(), None)
            if first is Kind.FETCH and newest is not None:
                segment.subject = newest
        return segment

    def _claim(self, segment: _Segment, *, other: bool = False) -> tuple[int, int] | None:
        """Our latest claim on the subject (else on the newest claimed message); with
        ``other``, our first claim on another message (superseded, in the setup)."""
        mine = {
            msg_id: len(claims)
            for (queue, msg_id), claims in self.driver.claims.items()
            if queue == segment.queue and claims
        }
        if other:
            rest = [i for i in mine if i != segment.subject]
            return (min(rest), 1) if rest else None
        if segment.subject in mine:
            return segment.subject, mine[segment.subject]
        return (max(mine), mine[max(mine)]) if mine else None

    def _step(self, kind: Kind, segment: _Segment, vt: float) -> None:
        d, q = self.driver, segment.queue
        if kind is Kind.SEND:
            sent = d.send(q, self._payload(), None)
            segment.subject = segment.subject if sent is None else sent
        elif kind is Kind.SEND_BATCH:
            ids = d.send_batch(q, [self._payload(), self._payload()])
            segment.subject = ids[-1] if ids else segment.subject
        elif kind is Kind.SEND_DELAYED:
            sent = d.send(q, self._payload(), self.delay)
            segment.subject = segment.subject if sent is None else sent
        elif kind is Kind.RECEIVE:
            got = d.receive(q, 1, vt)
            segment.subject = got[-1].msg_id if got else segment.subject
        elif kind is Kind.FETCH:
            d.fetch(q, segment.subject, vt)
        elif kind in (Kind.ACK_ID, Kind.NACK_ID):
            d.settle_id(q, segment.subject, ack=kind is Kind.ACK_ID)
        elif kind in (Kind.ACK_CLAIM, Kind.NACK_CLAIM):
            claim = self._claim(segment)
            if claim is not None:
                d.settle_claim(q, *claim, ack=kind is Kind.ACK_CLAIM)
        elif kind is Kind.ACK_CLAIMS:
            picks = [c for c in (self._claim(segment), self._claim(segment, other=True)) if c]
            d.ack_claims(q, picks)
        else:
            d.pass_time(self.expire_wait)
