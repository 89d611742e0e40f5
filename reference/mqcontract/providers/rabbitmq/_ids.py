"""Message ids for RabbitMQ, which has none of its own.

An id is a 63-bit integer laid out like a Snowflake id::

    | 41 bits: milliseconds since 2024-01-01 UTC | 8 bits: sequence | 14 bits: node |

* **Increasing for one producer** (one service). A generator never goes backwards:
  within one millisecond the sequence counts up; when it overflows (256 ids in one
  millisecond, as a big ``send_batch`` does), or when the wall clock steps back, the
  generator borrows the next millisecond instead of repeating one. The node sits below
  the time and sequence, so changing it (a new lease) keeps the order.
* **Unique per queue across producers.** Two ids can only be equal if their node bits
  are, and the node bits are not drawn at random but leased from the broker
  (:mod:`._lease`): every live producer on a virtual host holds a different node, so
  while fewer than 16,384 producers are connected to one virtual host their ids never
  collide. A node changes hands only after its holder's connection closed; a collision
  then needs the new holder to draw that very node among the free ones (about 1 in
  16,384 per hand-over) *and* to generate the same millisecond and sequence the old
  holder did before its connection died, i.e. a wall clock behind by more than the
  hand-over took. Only if no lease can be had (say, permissions forbid declaring the
  lease queue) is the node random; ``n`` such producers on one virtual host then share
  a node with probability about n(n-1)/32,768 (50: 7 %), and that is logged as a
  warning. The old layout (12 random node bits) gave 26 % for 50 producers.
* **Collisions are harmless for settlement.** Acks and nacks name a claim (one
  delivery), never an id alone, so two messages that do share an id are two independent
  holds; only ``ack_message(queue, id)`` has to pick, and it settles the newest claim
  this service holds for that id.
* Fits a signed 64-bit integer (PostgreSQL ``bigint``, JSON numbers in most decoders)
  until 2093: every id is in ``1..MAX_ID``. A wider id (a UUID) would make random node
  bits safe without a lease, but every provider's ids are 64-bit integers that
  applications store in ``bigint`` columns; it would cost that, and the time order.
* **Read back strictly** (:func:`parse_id`): a ``message_id`` names an id only when it is
  the canonical decimal form of one in that range (ASCII digits, no sign, space,
  underscore or leading zero), so each id has exactly one ``message_id`` and a foreign
  ``" 12 "``, ``"1_000"``, ``"١٢٣"``, ``"-5"``, ``"0"`` or ``str(2**70)`` names none.
* **Messages without one** (a foreign publisher's, or one whose ``message_id`` names no
  id) get :func:`content_id`: a hash of what the publisher wrote, which the broker keeps
  unchanged on every redelivery, so such a message keeps its id (across processes too).
  Messages alike in body and properties share it, as two messages a foreign publisher
  gave one ``message_id`` do; settlement by claim keeps them apart.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time

__all__ = [
    "EPOCH_MS",
    "MAX_ID",
    "NODES",
    "NODE_BITS",
    "MessageIdGenerator",
    "content_id",
    "id_time",
    "parse_id",
    "random_node",
]

EPOCH_MS = 1_704_067_200_000  #: 2024-01-01T00:00:00Z
_SEQ_BITS = 8
NODE_BITS = 14
NODES = 1 << NODE_BITS  #: how many producers can hold a node at once
_SEQ_MAX = (1 << _SEQ_BITS) - 1
#: The largest id (a signed 64-bit integer); the smallest is 1.
MAX_ID = (1 << 63) - 1
#: A canonical decimal of at most 19 digits; ``[0-9]`` is ASCII only (``\d`` is not).
_CANONICAL = re.compile(r"[1-9][0-9]{0,18}")


def random_node() -> int:
    """A node drawn from the operating system's randomness."""
    return random.SystemRandom().randrange(NODES)


class MessageIdGenerator:
    """Thread-safe generator of strictly increasing ids (see the module docstring)."""

    def __init__(self, node: int | None = None) -> None:
        self._node = random_node() if node is None else node % NODES
        self._lock = threading.Lock()
        self._ms = -1
        self._seq = 0

    @property
    def node(self) -> int:
        """The node bits every id carries (set when a lease is taken)."""
        return self._node

    @node.setter
    def node(self, value: int) -> None:
        with self._lock:
            self._node = value % NODES

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
            return (self._ms << (_SEQ_BITS + NODE_BITS)) | (self._seq << NODE_BITS) | self._node


def id_time(msg_id: int) -> float:
    """The wall-clock second (since the epoch) embedded in ``msg_id``."""
    return ((msg_id >> (_SEQ_BITS + NODE_BITS)) + EPOCH_MS) / 1000.0


def parse_id(message_id: object) -> int | None:
    """The id ``message_id`` names, if it is one's canonical decimal form; else None."""
    if not isinstance(message_id, str) or _CANONICAL.fullmatch(message_id) is None:
        return None
    value = int(message_id)
    return value if value <= MAX_ID else None


def content_id(identity: bytes, body: bytes) -> int:
    """The id of a message without one: a 63-bit hash of its ``identity`` (what its
    publisher set, encoded by the caller) and ``body``, in ``1..MAX_ID``."""
    digest = hashlib.blake2b(digest_size=8, person=b"mqcontract-rmq")
    digest.update(len(identity).to_bytes(8, "big"))
    digest.update(identity)
    digest.update(body)
    return (int.from_bytes(digest.digest(), "big") & MAX_ID) or 1
