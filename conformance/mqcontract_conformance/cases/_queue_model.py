"""A pure model of one queue under the contract, with time known only as intervals.

Every operation is observed as the interval ``[t0, t1]`` in which it ran, so an instant
set by the provider (a claim's deadline, a delay's end) is known only within a band. A
message whose deadline lies within ``tolerance`` of an observation may be on either side;
outside the band the model is certain and the provider must agree. Outcomes of operations
that failed with a connection error after a fault are unknown (Jepsen's "indeterminate"):
the model widens its state instead of guessing.

The model raises :class:`ModelMismatch` naming the difference; it never does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from mqcontract.capabilities import Capabilities, RequeuePosition
from mqcontract.messages import QueuedMessage
from mqcontract_conformance.cases._payloads import same_payload

__all__ = ["ModelMessage", "ModelMismatch", "Outcome", "QueueModel"]

Interval = tuple[float, float]


class ModelMismatch(AssertionError):
    """The provider did something the contract (as modelled) forbids."""


class Outcome:
    """How an ack or nack ended."""

    OK = "ok"
    NOT_FOUND = "not-found"
    UNKNOWN = "unknown"  #: a connection error after a fault: it may or may not have happened


@dataclass
class ModelMessage:
    """What the model knows about one stored message."""

    msg_id: int
    payload: bytes
    #: When it became (or becomes) visible; ``timed`` bands come from provider clocks.
    visible: Interval
    timed: bool = False
    #: Position among visible messages (original requeue position); None: not ordered.
    position: Interval | None = None
    #: Claimed by a receive of ours and not released by us (the claim may have lapsed).
    held: bool = False
    #: False after a fault or an unknown outcome: the claim may already be gone.
    claim_certain: bool = True
    #: Receive count so far, as a range (exact once observed on exact providers).
    count: tuple[int, int] = (0, 0)
    #: An ack with an unknown outcome: the message may be gone.
    maybe_gone: bool = False
    #: Released by a fault rather than by nack or expiry: where a backend puts such a
    #: message is not declared (quorum queues return it to the front), so until it is
    #: claimed again it is not ordered.
    unordered: bool = False
    #: How many claims we made on it: a claim is named by (msg_id, generation), and only
    #: the latest generation can still be live.
    claims: int = 0


@dataclass
class QueueModel:
    """The contract's view of one queue."""

    name: str
    caps: Capabilities
    #: Band around provider-set instants (delays, visibility deadlines), in seconds.
    tolerance: float
    messages: dict[int, ModelMessage] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    last_id: int | None = None
    #: Payloads of sends whose outcome is unknown (their ids were never returned).
    maybe_sent: list[bytes] = field(default_factory=list)

    # -- classification --------------------------------------------------------------

    def _band(self, m: ModelMessage) -> float:
        return self.tolerance if m.timed else 0.0

    def surely_visible(self, m: ModelMessage, at: float) -> bool:
        """Visible for certain at ``at``.

        An instant the provider set (``timed``) is known only within its band; one our own
        operation set (a send, a nack) holds from the moment that operation returned, so an
        operation starting then already sees it (a virtual clock may not have moved).
        """
        if m.timed:
            return at > m.visible[1] + self._band(m)
        return at >= m.visible[1]

    def surely_invisible(self, m: ModelMessage, until: float) -> bool:
        """Invisible for certain until ``until``."""
        return until < m.visible[0] - self._band(m)

    def _key(self, m: ModelMessage) -> Interval | None:
        if m.unordered or math.isinf(m.visible[0]):
            return None  # adopted after an unknown send: its position is unknown
        if self.caps.requeue_position is RequeuePosition.BACK:
            # Back-requeueing providers order by when a message (last) became visible.
            return (m.visible[0], m.visible[1] + self._band(m))
        return m.position

    def describe(self, m: ModelMessage) -> str:
        state = "held" if m.held else "released"
        return (
            f"#{m.msg_id}({state}, visible {m.visible[0]:.3f}..{m.visible[1]:.3f}, "
            f"count {m.count[0]}..{m.count[1]})"
        )

    # -- sending ---------------------------------------------------------------------

    def sent(self, t0: float, t1: float, msg_id: int, payload: bytes, delay: float = 0.0) -> None:
        """A send returned ``msg_id``."""
        if not isinstance(msg_id, int):
            raise ModelMismatch(f"send returned a non-integer id {msg_id!r}")
        if msg_id in self.messages or msg_id in self.acked:
            raise ModelMismatch(f"send returned id {msg_id}, already used on {self.name}")
        if self.last_id is not None and msg_id <= self.last_id:
            raise ModelMismatch(f"send returned id {msg_id} after {self.last_id}: not increasing")
        self.last_id = msg_id
        if delay > 0:
            m = ModelMessage(msg_id, payload, (t0 + delay, t1 + delay), timed=True)
        else:
            m = ModelMessage(msg_id, payload, (t0, t1), position=(msg_id, msg_id))
        self.messages[msg_id] = m

    def send_unknown(self, payload: bytes) -> None:
        """A send failed after a fault: the message may exist under an unknown id."""
        self.maybe_sent.append(payload)

    # -- receiving -------------------------------------------------------------------

    def received(
        self, t0: float, t1: float, limit: int, vt: float, got: Sequence[QueuedMessage]
    ) -> None:
        """A receive returned ``got``; check it against the model, then claim them."""
        ids = [g.msg_id for g in got]
        if len(got) > limit:
            raise ModelMismatch(f"receive(limit={limit}) returned {len(got)} messages: {ids}")
        if len(set(ids)) != len(ids):
            raise ModelMismatch(f"one receive returned a message twice: {ids}")
        returned = [self._returned(t1, g) for g in got]
        self._check_complete(t0, limit, returned)
        if self.caps.fifo:
            self._check_order(t0, returned)
        for m, g in zip(returned, got, strict=True):
            self._claimed(m, g, t0, t1, vt)

    def _claimed(self, m: ModelMessage, g: QueuedMessage, t0: float, t1: float, vt: float) -> None:
        m.count = self._count_after(m, g.receive_count)
        m.held, m.claim_certain, m.maybe_gone, m.unordered = True, True, False, False
        m.visible, m.timed = (t0 + vt, t1 + vt), True
        m.claims += 1

    def fetched(
        self, t0: float, t1: float, msg_id: int, vt: float, got: QueuedMessage | None
    ) -> None:
        """``fetch_message(msg_id)`` returned ``got``: visible ones must come, no others."""
        m = self.messages.get(msg_id)
        if got is None:
            if m is not None and not m.maybe_gone and self.surely_visible(m, t0):
                raise ModelMismatch(
                    f"fetch of visible message {msg_id} returned None at {t0:.3f}: "
                    f"{self.describe(m)}"
                )
            return
        if got.msg_id != msg_id:
            raise ModelMismatch(f"fetch of message {msg_id} returned message {got.msg_id}")
        if m is None and msg_id in self.acked:
            raise ModelMismatch(f"fetch of acked message {msg_id} returned it")
        returned = self._returned(t1, got)
        self._claimed(returned, got, t0, t1, vt)

    def receive_unknown(self, t0: float, t1: float, vt: float) -> None:
        """A receive failed after a fault: any visible message may now be claimed."""
        for m in self.messages.values():
            if not self.surely_invisible(m, t0):
                m.visible = (min(m.visible[0], t0), max(m.visible[1], t1 + vt))
                m.timed = True
                m.count = (m.count[0], m.count[1] + 1)
                m.held, m.claim_certain = False, False

    def _returned(self, t1: float, g: QueuedMessage) -> ModelMessage:
        if g.queue_name != self.name:
            raise ModelMismatch(f"message {g.msg_id} from {self.name} names {g.queue_name!r}")
        m = self.messages.get(g.msg_id)
        if m is None:
            m = self._adopt(g)
        elif self.surely_invisible(m, t1) and m.claim_certain:
            why = "held by an earlier receive" if m.held else "delayed"
            raise ModelMismatch(
                f"message {g.msg_id} received while {why} until at least "
                f"{m.visible[0] - self._band(m):.3f} (now {t1:.3f}): {self.describe(m)}"
            )
        if not same_payload(self.caps.payload_fidelity, m.payload, g.payload):
            raise ModelMismatch(
                f"message {g.msg_id} payload changed ({self.caps.payload_fidelity.value} "
                f"fidelity): sent {m.payload[:60]!r}, received {g.payload[:60]!r}"
            )
        return m

    def _adopt(self, g: QueuedMessage) -> ModelMessage:
        """An id the model never saw: only a send with an unknown outcome explains it."""
        for i, payload in enumerate(self.maybe_sent):
            if same_payload(self.caps.payload_fidelity, payload, g.payload):
                del self.maybe_sent[i]
                m = ModelMessage(g.msg_id, payload, (-math.inf, -math.inf), count=(0, 10**6))
                self.messages[g.msg_id] = m
                return m
        if g.msg_id in self.acked:
            raise ModelMismatch(f"acked message {g.msg_id} was received again")
        raise ModelMismatch(f"received message {g.msg_id}, which was never sent to {self.name}")

    def _count_after(self, m: ModelMessage, observed: int) -> tuple[int, int]:
        lo, hi = m.count[0] + 1, m.count[1] + 1
        if self.caps.exact_receive_count:
            if not lo <= observed <= hi:
                raise ModelMismatch(
                    f"message {m.msg_id} has receive_count {observed}, expected "
                    f"{lo if lo == hi else f'{lo}..{hi}'}"
                )
            return (observed, observed)
        # A lower bound: 1 on the first delivery, at least 2 on a redelivery.
        if (hi == 1 and observed != 1) or (lo >= 2 and observed < 2) or observed < 1:
            raise ModelMismatch(
                f"message {m.msg_id} has receive_count {observed} on delivery {lo}..{hi}"
            )
        return (lo, hi)

    def _check_complete(self, t0: float, limit: int, returned: list[ModelMessage]) -> None:
        """Fewer than ``limit`` returned: every surely visible message must be among them."""
        if len(returned) >= limit:
            return
        taken = {m.msg_id for m in returned}
        missed = [
            m
            for m in self.messages.values()
            if m.msg_id not in taken and self.surely_visible(m, t0) and not m.maybe_gone
        ]
        if missed:
            raise ModelMismatch(
                f"receive(limit={limit}) returned {sorted(taken)} but left visible messages "
                f"behind: {[self.describe(m) for m in missed]}"
            )

    def _check_order(self, t0: float, returned: list[ModelMessage]) -> None:
        """Oldest first, and no visible message skipped in favour of a younger one.

        A message that was not surely visible when the receive began (its claim lapsed,
        or its delay ran out, during the call) may come after younger ones: a receive
        that claims one message after another (RabbitMQ's ``basic.get``) may be past its
        position when it appears there.
        """
        keyed = [(m, self._key(m)) for m in returned]
        ordered = [(m, k if self.surely_visible(m, t0) else None) for m, k in keyed]
        for i, (a, ka) in enumerate(keyed):
            for b, kb in ordered[i + 1 :]:
                if ka is not None and kb is not None and ka[0] > kb[1]:
                    raise ModelMismatch(
                        f"out of order: {a.msg_id} returned before {b.msg_id} "
                        f"({self.caps.requeue_position.value} requeue position); "
                        f"returned {[m.msg_id for m in returned]}"
                    )
        taken = {m.msg_id for m in returned}
        for c in self.messages.values():
            kc = self._key(c)
            if c.msg_id in taken or kc is None or c.maybe_gone or not self.surely_visible(c, t0):
                continue
            for m, km in keyed:
                if km is not None and kc[1] < km[0]:
                    raise ModelMismatch(
                        f"skipped older visible message {c.msg_id} and returned {m.msg_id}: "
                        f"returned {[x.msg_id for x in returned]}"
                    )

    # -- settling --------------------------------------------------------------------

    def settled(self, t0: float, t1: float, msg_id: int, outcome: str, *, ack: bool) -> None:
        """An ack (``ack``) or nack of ``msg_id`` ended with ``outcome``."""
        what = "ack" if ack else "nack"
        m = self.messages.get(msg_id)
        if outcome == Outcome.UNKNOWN:
            if m is not None:
                m.visible = (min(m.visible[0], t0), max(m.visible[1], t1))
                m.claim_certain, m.maybe_gone = False, m.maybe_gone or ack
            return
        if outcome == Outcome.OK:
            if m is None or (not m.held and m.claim_certain):
                state = "acked" if msg_id in self.acked else "never received or released"
                if m is None and msg_id not in self.acked:
                    state = "unknown"
                raise ModelMismatch(f"{what} of {state} message {msg_id} succeeded")
            if m.held and m.claim_certain and self.surely_visible(m, t0):
                raise ModelMismatch(
                    f"{what} of {msg_id} succeeded after its visibility timeout had passed "
                    f"(at {t0:.3f}): {self.describe(m)}"
                )
            self._apply(m, t0, t1, ack=ack)
            return
        if m is not None and m.held and m.claim_certain and self.surely_invisible(m, t1):
            raise ModelMismatch(
                f"{what} of held message {msg_id} raised MessageNotFound at {t1:.3f}: "
                f"{self.describe(m)}"
            )
        if m is not None:
            m.held = False  # the claim had lapsed (or was lost in a fault)

    def settled_claim(
        self, t0: float, t1: float, msg_id: int, generation: int, outcome: str, *, ack: bool
    ) -> None:
        """Settling our claim number ``generation`` on ``msg_id`` ended with ``outcome``.

        Only the latest claim of a held message can be live; a superseded, settled or
        released claim must be refused (``StaleClaim``) and change nothing.
        """
        m = self.messages.get(msg_id)
        latest = m is not None and m.held and m.claims == generation
        if not latest or outcome == Outcome.UNKNOWN:
            what = f"{'ack' if ack else 'nack'} of claim {generation} on message {msg_id}"
            if outcome == Outcome.OK and (m is None or m.claim_certain):
                if m is None:
                    why = "acked" if msg_id in self.acked else "unknown"
                elif m.claims != generation:
                    why = f"superseded by claim {m.claims}"
                else:
                    why = "released"
                raise ModelMismatch(f"{what} succeeded, but that claim was {why}")
            if m is not None and outcome != Outcome.NOT_FOUND:
                self.settled(t0, t1, msg_id, outcome, ack=ack)
            return
        self.settled(t0, t1, msg_id, outcome, ack=ack)

    def _apply(self, m: ModelMessage, t0: float, t1: float, *, ack: bool) -> None:
        if ack:
            del self.messages[m.msg_id]
            self.acked.add(m.msg_id)
        else:
            m.held, m.claim_certain = False, True
            m.visible, m.timed = (t0, t1), False

    # -- faults and the backdoor -----------------------------------------------------

    def severed(self, t0: float) -> None:
        """Connections were killed: a held message may be released from now on."""
        for m in self.messages.values():
            if m.held:
                m.claim_certain, m.unordered = False, True
                m.visible = (min(m.visible[0], t0), m.visible[1])

    def stored(self, ids: Sequence[int]) -> None:
        """The backdoor's stored ids: everything live is stored, nothing acked is."""
        stored = set(ids)
        lost = [
            self.describe(m)
            for m in self.messages.values()
            if m.msg_id not in stored and not m.maybe_gone
        ]
        if lost:
            raise ModelMismatch(f"messages missing from storage (lost): {lost}")
        extra = sorted(stored - set(self.messages))
        if len(extra) > len(self.maybe_sent):
            acked = [i for i in extra if i in self.acked]
            raise ModelMismatch(
                f"storage holds messages the model does not: {extra}"
                + (f" (acked: {acked})" if acked else "")
            )
        for i in [i for i in self.messages if i not in stored]:
            del self.messages[i]  # an unknown-outcome ack did happen

    def last_due(self, horizon: float) -> float:
        """The latest instant, not after ``horizon``, at which a message surely shows."""
        ends = [m.visible[1] + self._band(m) for m in self.messages.values()]
        return max((e for e in ends if e <= horizon), default=-math.inf)
