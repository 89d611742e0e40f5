"""What a consumer did: counts the conformance rules and the load account read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["ConsumerStats"]

_MAX_ERRORS = 50


@dataclass
class ConsumerStats:
    """Counters; keys are ``(queue, msg_id)``."""

    invocations: Counter[tuple[str, int]] = field(default_factory=Counter)
    succeeded: Counter[tuple[str, int]] = field(default_factory=Counter)
    failed: Counter[tuple[str, int]] = field(default_factory=Counter)
    by_path: Counter[str] = field(default_factory=Counter)
    receive_counts: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    notifications: int = 0
    catch_ups: int = 0
    polls: int = 0
    polled_messages: int = 0
    already_claimed: int = 0
    duplicate_claims: int = 0
    late_acks: int = 0
    #: Acks that failed with a connection error or timeout: their outcome is unknown.
    unsettled_acks: int = 0
    released_on_stop: int = 0
    #: Claimed messages of a batch released unstarted because the claim had aged.
    released_unstarted: int = 0
    errors: list[str] = field(default_factory=list)

    def record_error(self, text: str) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(text)

    @property
    def processed(self) -> int:
        """Messages handled successfully (each counted once)."""
        return len(self.succeeded)

    def processed_twice(self) -> list[tuple[str, int]]:
        """Messages whose handler succeeded more than once."""
        return sorted(k for k, n in self.succeeded.items() if n > 1)
