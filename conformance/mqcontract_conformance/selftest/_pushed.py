"""A memory provider that knows, while it claims, whether the claim is a push.

Broken providers about pushed claims (what a push holds, whether a push renews a claim)
change only what happens to a claim made by a push; this base marks those claims.
"""

from __future__ import annotations

from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue

__all__ = ["PushedClaims"]


class PushedClaims(InMemoryMessagingService):
    """Routes claims made by a push through ``_claim_pushed`` (correct by default)."""

    _pushing = False

    def _dispatch(self, queue: _Queue) -> None:
        self._pushing = True
        try:
            super()._dispatch(queue)
        finally:
            self._pushing = False

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        if self._pushing:
            return self._claim_pushed(queue, entry, visibility_timeout)
        return super()._claim(queue, entry, visibility_timeout)

    def _claim_pushed(self, queue: _Queue, entry: _Entry, timeout: float) -> QueuedMessage:
        got = super()._claim(queue, entry, timeout)
        self._hold_pushed(queue, entry, timeout)
        return got

    def _hold_pushed(self, queue: _Queue, entry: _Entry, timeout: float) -> None:
        """Correct: the claim already holds for ``timeout``."""
