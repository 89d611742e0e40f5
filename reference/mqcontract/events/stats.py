"""What a consumer did: counts the conformance rules and the load account read.

Per-message records (``invocations``, ``succeeded``, ``failed``, ``receive_counts``) are
kept for the most recent ``tracked`` messages only: a consumer runs for months, and one
record per message it ever handled would grow without bound. The totals
(``processed``, ``handler_runs``, ``handler_failures``) count everything. The oldest
record goes first, in constant time: a plain dict emptied from its front makes each
``next(iter(...))`` step over the slots deleted before it, and a consumer past its
100,000th message spent 36-214 µs per message there (an ``OrderedDict`` pops its oldest
in under 1.2 µs).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

__all__ = ["TRACKED_MESSAGES", "ConsumerStats"]

_MAX_ERRORS = 50
#: Messages whose per-message records a consumer keeps, by default (the newest).
TRACKED_MESSAGES = 100_000

Key = tuple[str, int]


@dataclass
class ConsumerStats:
    """Counters; keys are ``(queue, msg_id)``; see the module docstring.

    Messages that share an id (RabbitMQ: producers choose ids) share their per-message
    records, and ``processed`` counts them once; the handler-run totals count each.
    """

    invocations: Counter[Key] = field(default_factory=Counter)
    succeeded: Counter[Key] = field(default_factory=Counter)
    failed: Counter[Key] = field(default_factory=Counter)
    by_path: Counter[str] = field(default_factory=Counter)
    receive_counts: dict[Key, list[int]] = field(default_factory=dict)
    notifications: int = 0
    catch_ups: int = 0
    polls: int = 0
    polled_messages: int = 0
    already_claimed: int = 0
    #: Unclaimed pushed copies and signals folded into a catch-up already waiting for a
    #: worker.
    coalesced: int = 0
    #: Catch-ups scheduled because a hint's claim failed and no poller runs.
    hint_retries: int = 0
    duplicate_claims: int = 0
    late_acks: int = 0
    #: Acks that failed with a connection error or timeout: their outcome is unknown.
    unsettled_acks: int = 0
    released_on_stop: int = 0
    #: Claims stop left to their visibility timeout instead of giving them back: the
    #: backend stopped answering, or ``stop_grace`` ran out.
    left_on_stop: int = 0
    #: Claimed messages of a batch released unstarted because the claim had aged.
    released_unstarted: int = 0
    errors: list[str] = field(default_factory=list)
    #: How many messages' per-message records are kept (the newest; older ones dropped).
    tracked: int = TRACKED_MESSAGES
    #: Messages whose handler succeeded and whose ack was confirmed, each counted once
    #: while it is tracked.
    processed: int = 0
    #: Handler runs and handler failures, all of them.
    handler_runs: int = 0
    handler_failures: int = 0
    _order: OrderedDict[Key, None] = field(default_factory=OrderedDict, repr=False, init=False)

    def record_error(self, text: str) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(text)

    def started(self, key: Key, path: str, receive_count: int) -> None:
        """A handler run begins for message ``key``, which came by ``path``."""
        self._track(key)
        self.handler_runs += 1
        # ``get`` rather than ``+=``: a Counter's missing key is a Python-level call.
        invocations, by_path = self.invocations, self.by_path
        invocations[key] = invocations.get(key, 0) + 1
        by_path[path] = by_path.get(path, 0) + 1
        counts = self.receive_counts.get(key)
        if counts is None:
            self.receive_counts[key] = [receive_count]
        else:
            counts.append(receive_count)

    def handler_failed(self, key: Key) -> None:
        self._track(key)
        self.handler_failures += 1
        self.failed[key] += 1

    def ack_confirmed(self, key: Key) -> None:
        """The handler succeeded and its ack was confirmed."""
        self._track(key)
        succeeded = self.succeeded
        count = succeeded.get(key, 0)
        if not count:
            self.processed += 1
        succeeded[key] = count + 1

    def _track(self, key: Key) -> None:
        order = self._order
        if key in order:
            return
        order[key] = None
        while len(order) > self.tracked:
            old, _ = order.popitem(last=False)
            for records in (self.invocations, self.succeeded, self.failed):
                records.pop(old, None)
            self.receive_counts.pop(old, None)

    def processed_twice(self) -> list[Key]:
        """Messages whose handler succeeded more than once."""
        return sorted(k for k, n in self.succeeded.items() if n > 1)
