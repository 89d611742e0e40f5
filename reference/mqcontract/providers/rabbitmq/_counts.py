"""Receive counts: exact on quorum queues, a lower bound on classic ones.

Quorum queues count every delivery (``x-delivery-count``), per message, so the count is
exact whatever ids the messages carry. Classic queues only say whether a delivery is a
redelivery, so this process remembers the count it reported for each message it saw
(bounded, oldest forgotten first): a first delivery is 1, a redelivery one more than
this process saw last time, or at least 2 — never more than the true count.

A message is known by its queue, id and send stamp (the enqueued-at header mqcontract
publishes, in microseconds), or, without that header, by its AMQP timestamp and a CRC-32
of its body, so two messages sharing an id (a foreign publisher, colliding producers)
keep separate counts. Messages alike in all of that cannot be told apart by anyone: once
this process has seen two first deliveries under one key, a redelivery under it reports
2, the bound that holds for each of them. (Had their first deliveries gone to other
processes, that cannot be seen here, and the later one may be reported one too high.)
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any

__all__ = ["SEEN_CAPACITY", "ReceiveCounts"]

#: How many messages' counts a process remembers (classic queues).
SEEN_CAPACITY = 100_000


class ReceiveCounts:
    """The receive count of each delivery; see the module docstring."""

    def __init__(self, *, quorum: bool, capacity: int = SEEN_CAPACITY) -> None:
        self._quorum = quorum
        self._capacity = capacity
        #: Key → (count reported last, first deliveries seen: more than one means two
        #: messages share the key). Tuples of ints: the garbage collector stops tracking
        #: them, and there are up to ``capacity``.
        self._seen: OrderedDict[Hashable, tuple[int, int]] = OrderedDict()

    def count(
        self,
        queue: str,
        msg_id: int,
        *,
        redelivered: bool,
        headers: Mapping[str, Any],
        stamp: object,
        timestamp: object,
        body: bytes,
    ) -> int:
        """The count to report for a delivery of ``msg_id``; ``stamp`` is its enqueued-at
        header (None if absent), ``timestamp`` its AMQP timestamp property."""
        delivery_count = headers.get("x-delivery-count")
        if self._quorum and isinstance(delivery_count, int):
            return delivery_count + 1
        identity = stamp if isinstance(stamp, int) else (timestamp, zlib.crc32(body))
        key = (queue, msg_id, identity)
        count, firsts = self._seen.pop(key, (0, 0))
        if not redelivered:
            count, firsts = 1, firsts + 1
        elif firsts > 1:
            count = 2
        else:
            count = max(2, count + 1)
        self._seen[key] = (count, firsts)
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return count
