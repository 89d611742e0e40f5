"""The claims one service made, so ``ack_message(queue, msg_id)`` settles only its own.

The seed's settlement names a message id. Settling by id is kept, but it must never
settle a claim some other receiver holds now: the base class records every claim this
service hands out (by receive, fetch or push) and ``ack_message`` settles the live one it
holds for that id, through the same claim check as ``ack_claim``. The book is bounded:
settled claims leave it at once, lapsed ones when a sweep finds them past their
deadline, and past a hard cap the oldest are forgotten (their ids then settle nothing,
which is what a claim that old would do anyway).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from mqcontract.messages import Claim

__all__ = ["ClaimBook"]

#: Seconds a claim stays in the book after its visibility timeout, for a slow clock.
_GRACE = 5.0
#: The most claims remembered at once; past it the oldest are forgotten.
HARD_CAP = 200_000


class ClaimBook:
    """Claims by (queue, msg_id), oldest first; see the module docstring."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        #: Insertion-ordered (oldest first), as every dict.
        self._deadlines: dict[Claim, float] = {}
        #: A message's claims: the one claim most messages have, or a list (oldest first).
        self._by_id: dict[tuple[str, int], Claim | list[Claim]] = {}
        self._sweep_at = 1024

    def now(self) -> float:
        """The book's clock."""
        return self._now()

    def __len__(self) -> int:
        return len(self._deadlines)

    def record(self, claim: Claim, now: float | None = None) -> None:
        """Remember a claim this service just made (``now``: the clock read once for a
        batch of claims)."""
        deadlines = self._deadlines
        if claim in deadlines:
            return
        deadlines[claim] = (self._now() if now is None else now) + claim.visibility_timeout + _GRACE
        key = (claim.queue_name, claim.msg_id)
        held = self._by_id.get(key)
        if held is None:
            self._by_id[key] = claim
        elif isinstance(held, list):
            held.append(claim)
        else:
            self._by_id[key] = [held, claim]
        if len(deadlines) >= self._sweep_at:
            self._sweep()

    def find(self, queue: str, msg_id: object) -> Claim | None:
        """The claim to settle for ``msg_id``: the newest one not yet past its deadline,
        else the newest (the provider then says how it went stale); None if none.

        Newest first: a later claim on a message supersedes the earlier ones, so only it
        can be live (two live claims on one id are two messages sharing the id).
        """
        if not isinstance(msg_id, int) or isinstance(msg_id, bool):
            return None  # True == 1 must not find message 1
        held = self._by_id.get((queue, msg_id))
        if held is None:
            return None
        claims = held if isinstance(held, list) else [held]
        now = self._now()
        for claim in reversed(claims):
            if self._deadlines.get(claim, 0.0) > now:
                return claim
        return claims[-1]

    def discard(self, claim: Claim) -> None:
        """Forget a claim (settled, or found stale)."""
        if self._deadlines.pop(claim, None) is None:
            return
        key = (claim.queue_name, claim.msg_id)
        held = self._by_id.get(key)
        if held is None:
            return
        if not isinstance(held, list):
            if held is claim or held == claim:
                del self._by_id[key]
            return
        if claim in held:
            held.remove(claim)
        if len(held) == 1:
            self._by_id[key] = held[0]
        elif not held:
            del self._by_id[key]

    def forget_queue(self, queue: str) -> None:
        """Forget every claim on a deleted queue."""
        for claim in [c for c in self._deadlines if c.queue_name == queue]:
            self.discard(claim)

    def _sweep(self) -> None:
        now = self._now()
        for claim in [c for c, deadline in self._deadlines.items() if deadline <= now]:
            self.discard(claim)
        excess = len(self._deadlines) - HARD_CAP
        if excess > 0:  # one pass: a ``next(iter())`` per claim would rescan the front
            for claim in list(itertools.islice(self._deadlines, excess)):
                self.discard(claim)
        self._sweep_at = max(1024, 2 * len(self._deadlines))
