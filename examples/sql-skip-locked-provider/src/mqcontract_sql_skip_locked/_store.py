"""What the queue logic needs from a dialect: the table queue's operations, one call each.

A *store* is one dialect's SQL on one driver (:mod:`._postgres`, :mod:`._mariadb`). Both
keep the same two tables, ``<prefix>_queues`` and ``<prefix>_messages``:

* a message is **visible** when ``vt <= now`` (the server's clock); receiving picks the
  visible rows of a queue in id order with ``FOR UPDATE SKIP LOCKED``, so concurrent
  receivers never wait for each other and never pick the same row, and sets
  ``vt = now + visibility timeout`` and ``receive_count = receive_count + 1``;
* a **delayed** message is stored with ``vt`` in the future and ``receive_count = 0``;
* a **claim's token** is ``receive_count`` as that claim set it: every claim adds one and
  nothing else changes it, so a token names one delivery. A claim holds its row while
  ``receive_count = token AND vt > now``; ack deletes and nack sets ``vt = now`` with
  exactly that condition in the statement's ``WHERE``, so the check and the change are
  one step;
* ids come from an identity / ``AUTO_INCREMENT`` column shared by every queue, so they
  increase in send order and are never reused, not even after a queue is re-created.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["MAX_ID", "MAX_TOKEN", "ClaimKey", "NoSuchQueue", "Outcome", "Row", "Store"]

#: Largest id a ``BIGINT`` column holds; larger values name no row.
MAX_ID = 2**63 - 1
#: Largest ``receive_count`` an ``INTEGER`` column holds; larger tokens name no claim.
MAX_TOKEN = 2**31 - 1


class NoSuchQueue(Exception):
    """The named queue has no row in ``<prefix>_queues``."""

    def __init__(self, queue: str) -> None:
        super().__init__(f"no queue {queue!r}")
        self.queue = queue


@dataclass(frozen=True, slots=True)
class Row:
    """A message as a claim returns it (``receive_count`` already counts this claim)."""

    id: int
    body: bytes
    receive_count: int
    #: Seconds since the epoch, from the server's clock.
    enqueued_at: float


#: A claim as the SQL sees it: ``(msg_id, token)``, both within their columns' range.
ClaimKey = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one settle statement did to one claim's row."""

    settled: bool
    #: The row's ``receive_count`` as the statement found it; ``None``: no such row.
    receive_count: int | None


class Store(Protocol):
    """One dialect's SQL. Every call is one statement or one short transaction, and
    raises :class:`NoSuchQueue` for a queue without a row."""

    #: ``PostgreSQL 15.8`` or ``MariaDB 10.11.19``, for reports.
    server: str

    async def install(self) -> None:
        """Create the tables and the index if they are missing (safe to run concurrently)."""

    async def create_queue(self, queue: str) -> None: ...

    async def drop_queue(self, queue: str) -> None:
        """Delete the queue's row; its messages go with it (``ON DELETE CASCADE``)."""

    async def queue_exists(self, queue: str) -> bool: ...

    async def queue_names(self) -> list[str]: ...

    async def insert(self, queue: str, bodies: Sequence[bytes], delay: float) -> list[int]:
        """Store ``bodies`` in order, visible after ``delay`` s; their ids, increasing."""

    async def claim(
        self, queue: str, limit: int, visibility_timeout: float, msg_id: int | None = None
    ) -> list[Row]:
        """Claim up to ``limit`` visible messages (only ``msg_id``, if given), oldest first."""

    async def settle(self, queue: str, keys: Sequence[ClaimKey], *, remove: bool) -> list[Outcome]:
        """Delete (``remove``) or make visible now each row its claim still holds, in one
        statement (or one transaction); one :class:`Outcome` per key, in order."""

    async def stored_ids(self, queue: str) -> list[int]:
        """Every id stored on ``queue``, in any state, without changing a row (``[]`` for
        a missing queue)."""

    async def close(self) -> None: ...
