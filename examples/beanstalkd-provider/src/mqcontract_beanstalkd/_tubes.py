"""Tube names and the header every message body starts with.

``<prefix>.q.<queue>``  the queue's registry tube: one marker job, delayed for ever. The
                        queue exists while it is there; its job id is the queue's
                        *incarnation*.
``<prefix>.m.<queue>``  the queue's messages.
``<prefix>.c.<serial>`` one per connection, always watched by it and always empty: the
                        connection never has an empty watch list, and the server's count
                        of its watchers tells whether the connection is still alive.

Queue names are already checked (``[a-z_][a-z0-9_]*``, at most 47 characters), so names
stay far below beanstalkd's 200-byte limit and cannot spell another tube's name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["HEADER_SIZE", "MAGIC", "Body", "Tubes", "link_tube"]

#: Message bodies start with this, then the send time (µs) and the queue's incarnation.
MAGIC = b"mqc1"
_HEADER = struct.Struct(">4sQQ")
HEADER_SIZE = _HEADER.size


@dataclass(frozen=True, slots=True)
class Tubes:
    """The two tubes of one queue."""

    registry: str
    messages: str

    @classmethod
    def of(cls, prefix: str, queue: str) -> Tubes:
        return cls(f"{prefix}.q.{queue}", f"{prefix}.m.{queue}")


def link_tube(prefix: str, serial: str) -> str:
    """The tube a connection watches for as long as it lives."""
    return f"{prefix}.c.{serial}"


@dataclass(frozen=True, slots=True)
class Body:
    """A message as stored in a job: payload, send time and the incarnation sent to."""

    payload: bytes
    enqueued_at: float
    incarnation: int | None

    def encode(self) -> bytes:
        stamp = int(self.enqueued_at * 1_000_000)
        return _HEADER.pack(MAGIC, stamp, self.incarnation or 0) + self.payload

    @classmethod
    def decode(cls, data: bytes, *, sent_at: float) -> Body:
        """A stored job; a body without the header (put by another client) is all payload,
        sent at ``sent_at`` and belonging to whatever incarnation the queue has."""
        if len(data) >= HEADER_SIZE and data[:4] == MAGIC:
            _, stamp, incarnation = _HEADER.unpack_from(data)
            return cls(data[HEADER_SIZE:], stamp / 1_000_000, incarnation or None)
        return cls(data, sent_at, None)
