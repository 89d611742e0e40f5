"""Message ids for RabbitMQ, which has none of its own.

An id is a 63-bit integer laid out like a Snowflake id::

    | 41 bits: milliseconds since 2024-01-01 UTC | 10 bits: sequence | 12 bits: node |

* **Increasing for one producer.** A generator never goes backwards: within one
  millisecond the sequence counts up; when it overflows, or when the wall clock steps
  back, the generator borrows the next millisecond instead of repeating one. One
  generator is shared by every provider in a process, so a process is one producer.
* **Unique per queue across processes.** The node bits are random per process (mixed
  with the pid), so two processes collide only if they draw the same node *and* send in
  the same millisecond with the same sequence number (about 1 in 4096 per pair of
  processes sending in the very same millisecond). Roughly time ordered across
  processes, but only as well as their clocks agree.
* Fits a signed 64-bit integer (PostgreSQL ``bigint``, JSON numbers in most decoders)
  until 2093.
"""

from __future__ import annotations

import os
import random
import threading
import time

__all__ = ["EPOCH_MS", "MessageIdGenerator", "default_generator", "id_time"]

EPOCH_MS = 1_704_067_200_000  #: 2024-01-01T00:00:00Z
_SEQ_BITS = 10
_NODE_BITS = 12
_SEQ_MAX = (1 << _SEQ_BITS) - 1
_NODE_MASK = (1 << _NODE_BITS) - 1


class MessageIdGenerator:
    """Thread-safe generator of strictly increasing ids (see the module docstring)."""

    def __init__(self, node: int | None = None) -> None:
        if node is None:
            node = random.SystemRandom().getrandbits(_NODE_BITS) ^ os.getpid()
        self.node = node & _NODE_MASK
        self._lock = threading.Lock()
        self._ms = -1
        self._seq = 0

    def next_id(self) -> int:
        """The next id: greater than every id this generator returned before."""
        now = time.time_ns() // 1_000_000 - EPOCH_MS
        with self._lock:
            if now > self._ms:
                self._ms, self._seq = now, 0
            elif self._seq < _SEQ_MAX:
                self._seq += 1
            else:  # sequence exhausted (or the clock stepped back): borrow a millisecond
                self._ms, self._seq = self._ms + 1, 0
            return (self._ms << (_SEQ_BITS + _NODE_BITS)) | (self._seq << _NODE_BITS) | self.node


def id_time(msg_id: int) -> float:
    """The wall-clock second (since the epoch) embedded in ``msg_id``."""
    return ((msg_id >> (_SEQ_BITS + _NODE_BITS)) + EPOCH_MS) / 1000.0


default_generator = MessageIdGenerator()
