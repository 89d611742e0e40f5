"""Stream, consumer and subject names: every one embeds the prefix and the queue name.

``<prefix>-<queue>``          work-queue stream: the queue's messages, one subject
``<prefix>.q.<queue>``        that subject (sends publish here)
``<prefix>-<queue>-c``        the claims ledger: the records of messages being claimed
``<prefix>.c.<queue>.<seq>.<key>``  one record of message ``<seq>`` (one per subject)
``mqcontract``                the one durable pull consumer of every queue stream

Queue names are already checked (``[a-z_][a-z0-9_]*``) and the prefix is
``[a-z][a-z0-9_]*``: neither contains ``.``, ``*``, ``>`` or ``-``, so ``-`` separates them
in stream names and ``.`` in subjects, and no (prefix, queue) pair can spell another's
stream, ledger or subject.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONSUMER", "QueueNames"]

#: The durable consumer of every queue stream. A work-queue stream admits one consumer per
#: subject, so every receiver and subscription of every process pulls through this one.
CONSUMER = "mqcontract"


@dataclass(frozen=True, slots=True)
class QueueNames:
    """The names of one queue."""

    prefix: str
    queue: str

    @property
    def stream(self) -> str:
        return f"{self.prefix}-{self.queue}"

    @property
    def subject(self) -> str:
        return f"{self.prefix}.q.{self.queue}"

    @property
    def ledger(self) -> str:
        return f"{self.prefix}-{self.queue}-c"

    def record(self, seq: int, key: str) -> str:
        """The subject of the record ``key`` of message ``seq`` (see :mod:`._ledger`)."""
        return f"{self.prefix}.c.{self.queue}.{seq}.{key}"

    @property
    def records(self) -> str:
        return f"{self.prefix}.c.{self.queue}.*.*"

    def ack_subject(self, delivered: int, seq: int, delivery_seq: int) -> str:
        """The reply subject of a delivery, as the server parses it (``$JS.ACK``)."""
        return f"$JS.ACK.{self.stream}.{CONSUMER}.{delivered}.{seq}.{delivery_seq}.0.0"
