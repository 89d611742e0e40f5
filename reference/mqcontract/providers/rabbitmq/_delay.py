"""Delayed delivery without the delayed-message plugin: one wait queue per delay value.

A delayed message is published to ``mqcontract.delay.<target>.<ms>``, a classic queue
whose ``x-message-ttl`` is the delay. When the message expires at the head of the wait
queue the broker dead-letters it through the default exchange (``""``) with routing key
``<target>``, so it lands at the back of the target queue with its properties (our id is
``message_id``) intact. TTL expiry only happens at a queue's head, so every delay value
gets its own queue: a 0.5 s message never waits behind a 30 s one.

Wait queues carry ``x-expires``: they vanish once idle for the delay plus a margin. Each
delayed send re-declares its wait queue, which renews that lease (publishing alone does
not). Their names contain dots, which user queue names cannot, so they never collide
with or show up as user queues.

Limits: dead-lettering from a classic queue is at-most-once (a broker crash between
expiry and delivery can lose the message), and a message still waiting when its target
is deleted is dropped (unroutable) unless the target is re-created first. A virtual
host's policy can shorten a wait queue's TTL or expiry or bound its length; where the
management API is known such a delayed send is refused first (:mod:`._policies`).
"""

from __future__ import annotations

import math

from pamqp.common import FieldValue

__all__ = [
    "WAIT_PREFIX",
    "delay_ms",
    "is_wait_queue",
    "wait_queue_arguments",
    "wait_queue_name",
    "wait_queue_prefix",
]

WAIT_PREFIX = "mqcontract.delay."
#: How long an idle wait queue outlives the longest wait it can hold.
EXPIRY_MARGIN_MS = 60_000


def delay_ms(delay_seconds: float) -> int:
    """The delay in whole milliseconds, rounded up so nothing is visible early."""
    return max(1, math.ceil(delay_seconds * 1000 - 1e-6))


def wait_queue_prefix(target: str) -> str:
    """The prefix shared by every wait queue of ``target``."""
    return f"{WAIT_PREFIX}{target}."


def wait_queue_name(target: str, ms: int) -> str:
    """The wait queue holding messages for ``target`` delayed by ``ms`` milliseconds."""
    return f"{wait_queue_prefix(target)}{ms}"


def is_wait_queue(name: str) -> bool:
    """Whether ``name`` is a wait queue."""
    return name.startswith(WAIT_PREFIX)


def wait_queue_arguments(target: str, ms: int) -> dict[str, FieldValue]:
    """Declare arguments of a wait queue (identical on every declare, so re-declaring works)."""
    return {
        "x-queue-type": "classic",
        "x-message-ttl": ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": target,
        "x-expires": ms + EXPIRY_MARGIN_MS,
    }
