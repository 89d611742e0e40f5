"""What one HOST-7 program knows about its queues: what it must find there, and its claims.

The program tracks only what follows from its own calls: which work queues exist, the ids
stored on each (sent and not acked), and which claims it holds live (every visibility
timeout is long, so nothing lapses during a program). The bystander's messages are fixed
at the start: some visible, some held by claims made then.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mqcontract.capabilities import Capabilities
from mqcontract.messages import Claim, QueuedMessage

#: An id no provider hands out in a case (above every real id, below 2**63).
UNKNOWN_ID = 9_000_000_000_000_000_001

__all__ = ["UNKNOWN_ID", "Tracked", "World", "same_claim"]


def same_claim(a: object, b: object) -> bool:
    """Equal as claims *and* of the same types: ``Claim(q, 1.0, True)`` equals
    ``Claim(q, 1, 1)`` as a dataclass, but holds nothing."""
    if not (isinstance(a, Claim) and isinstance(b, Claim)):
        return False
    return (
        a == b
        and type(a.msg_id) is type(b.msg_id)
        and type(a.token) is type(b.token)
        and type(a.queue_name) is type(b.queue_name)
    )


@dataclass
class Tracked:
    """One queue of the program, as far as its own calls tell."""

    key: str
    name: str
    #: None once a call that could have created or deleted it failed.
    exists: bool | None
    #: Ids stored now: sent and not acked.
    stored: set[int] = field(default_factory=set)
    #: Our live claim per message id.
    live: dict[int, Claim] = field(default_factory=dict)
    #: Every claim made on the queue, in order (live or not).
    claims: list[Claim] = field(default_factory=list)
    #: Every id seen on the queue, in order.
    ids: list[int] = field(default_factory=list)
    payloads: dict[int, bytes] = field(default_factory=dict)

    def live_claim(self, claim: object) -> bool:
        """Whether ``claim`` is one we hold live on this queue (exactly, types included)."""
        if isinstance(claim, QueuedMessage):
            claim = claim.claim
        if not isinstance(claim, Claim) or claim.queue_name != self.name:
            return False
        held = self.live.get(claim.msg_id) if type(claim.msg_id) is int else None
        return same_claim(held, claim)

    def holds_id(self, msg_id: object) -> bool:
        """Whether we hold ``msg_id`` live (an ``int``: ``True`` and ``1.0`` name nothing)."""
        return type(msg_id) is int and msg_id in self.live

    def claimed(self, message: QueuedMessage) -> None:
        """A receive or fetch claimed ``message``."""
        self.ids.append(message.msg_id)
        if message.claim is not None:
            self.live[message.msg_id] = message.claim
            self.claims.append(message.claim)

    def sent(self, msg_id: int) -> None:
        self.stored.add(msg_id)
        self.ids.append(msg_id)

    def settled(self, msg_id: int, *, ack: bool) -> None:
        self.live.pop(msg_id, None)
        if ack:
            self.stored.discard(msg_id)

    def gone(self) -> None:
        """Deleted: nothing stored, nothing held."""
        self.exists = False
        self.stored.clear()
        self.live.clear()


@dataclass
class World:
    """The queues of one program and what the drawn arguments are made from."""

    caps: Capabilities
    #: A visibility timeout that does not lapse during a program.
    long: float
    queues: dict[str, Tracked]
    #: Bystander ids left visible at the start, in order.
    visible: list[int] = field(default_factory=list)

    def name_of(self, key: str) -> str:
        return self.queues[key].name

    def pick_id(self, key: str, index: int) -> int:
        ids = self.queues[key].ids if key in self.queues else []
        return ids[index % len(ids)] if ids else UNKNOWN_ID

    def held_id(self, index: int) -> int:
        held = sorted(self.queues["B"].live)
        return held[index % len(held)] if held else UNKNOWN_ID

    def visible_id(self, index: int) -> int:
        return self.visible[index % len(self.visible)] if self.visible else UNKNOWN_ID

    def pick_claim(self, key: str, index: int) -> Claim:
        """Claim number ``index`` made on ``key`` (any state); a never-issued one if none."""
        tracked = self.queues.get(key)
        claims = tracked.claims if tracked is not None else []
        if claims:
            return claims[index % len(claims)]
        name = tracked.name if tracked is not None else "m"
        return Claim(name, UNKNOWN_ID, "never-issued", self.long)

    def claimed_message(self, key: str, index: int) -> QueuedMessage:
        """A message as a receive returned it, carrying claim number ``index``."""
        claim = self.pick_claim(key, index)
        payload = self.queues[key].payloads.get(claim.msg_id, b"")
        return QueuedMessage(claim.msg_id, claim.queue_name, payload, 1, 0.0, claim)

    def missing(self, key: str | None) -> bool:
        """Whether the queue ``key`` names is known not to exist."""
        tracked = self.queues.get(key) if key is not None else None
        return tracked is not None and tracked.exists is False
