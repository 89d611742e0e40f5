"""Input checks every provider applies before touching its backend.

Doing them here, once, is what makes "bad input never reaches SQL or AMQP and never
changes a queue" the same promise for every provider.
"""

from __future__ import annotations

import math
import re

from mqcontract.capabilities import Capabilities
from mqcontract.errors import (
    InvalidArgument,
    InvalidQueueName,
    MessageTooLarge,
    StaleClaim,
    StaleReason,
)
from mqcontract.messages import Claim, QueuedMessage

__all__ = [
    "MAX_QUEUE_NAME_LENGTH",
    "QUEUE_NAME_PATTERN",
    "check_claim",
    "check_delay",
    "check_limit",
    "check_payload",
    "check_queue_name",
    "check_visibility_timeout",
    "is_message_id",
]

#: PGMQ prefixes tables with ``q_``/``a_`` and PostgreSQL truncates identifiers at 63
#: bytes; 47 keeps every derived name (including our trigger names) intact.
MAX_QUEUE_NAME_LENGTH = 47
#: Lower case only: PGMQ lower-cases table names but not ``pgmq.meta``, and its notify
#: support skips mixed-case names, so mixed case would behave differently per provider.
QUEUE_NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]*")


def check_queue_name(name: object) -> str:
    """Return ``name`` if it is a valid queue name, else raise :class:`InvalidQueueName`."""
    if not isinstance(name, str):
        raise InvalidQueueName(repr(name), "must be a string")
    if not name:
        raise InvalidQueueName(name, "must not be empty")
    if len(name) > MAX_QUEUE_NAME_LENGTH:
        raise InvalidQueueName(
            name, f"{len(name)} characters exceeds the limit of {MAX_QUEUE_NAME_LENGTH}"
        )
    if QUEUE_NAME_PATTERN.fullmatch(name) is None:
        raise InvalidQueueName(
            name, f"must match {QUEUE_NAME_PATTERN.pattern} (lower-case ASCII, digits, '_')"
        )
    return name


def check_payload(queue: str, payload: object, caps: Capabilities) -> bytes:
    """Return the payload as bytes or raise; the size limit counts bytes, inclusive."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise InvalidArgument("payload", type(payload).__name__, "bytes", queue)
    try:
        data = bytes(payload)
    except ValueError:  # a released memoryview
        raise InvalidArgument("payload", "a released memoryview", "readable bytes", queue) from None
    if len(data) > caps.max_message_size_bytes:
        raise MessageTooLarge(queue, len(data), caps.max_message_size_bytes)
    return data


def _finite_seconds(name: str, value: object, queue: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(name, value, "a number of seconds", queue)
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond a float's range
        raise InvalidArgument(name, value, "a finite number of seconds", queue) from None
    if math.isnan(seconds) or math.isinf(seconds):
        raise InvalidArgument(name, value, "a finite number of seconds", queue)
    return seconds


#: Exact field types whose values always hash (the fast path of :func:`check_claim`).
_TOKEN_TYPES = (int, str)
_SECONDS_TYPES = (float, int)


def check_claim(queue: str, claim: object) -> Claim:
    """The claim ``claim`` names (a :class:`Claim`, or a claimed message carrying one).

    A message without a claim (an unclaimed pushed copy), a claim on another queue, or a
    ``Claim`` no provider could have made (an id that is not an int, a token that is not
    an int or str, an unhashable field) raises ``StaleClaim``: it holds nothing on
    ``queue``. Anything that is not a claim at all is ``InvalidArgument``.
    """
    if type(claim) is QueuedMessage and claim.claim is not None:
        claim = claim.claim
    if (  # the common case, checked cheaply: a claim as providers make them
        type(claim) is Claim
        and claim.queue_name == queue
        and type(claim.msg_id) is int
        and type(claim.token) in _TOKEN_TYPES
        and type(claim.visibility_timeout) in _SECONDS_TYPES
    ):
        return claim
    if isinstance(claim, QueuedMessage):
        if claim.claim is None:
            raise StaleClaim(queue, claim.msg_id, StaleReason.NOT_HELD)
        claim = claim.claim
    if not isinstance(claim, Claim):
        raise InvalidArgument("claim", claim, "a Claim or a claimed QueuedMessage", queue)
    if claim.queue_name != queue:
        raise StaleClaim(queue, claim.msg_id, StaleReason.OTHER_QUEUE)
    token = claim.token
    if not is_message_id(claim.msg_id) or isinstance(token, bool) or not _hashable(claim):
        raise StaleClaim(queue, claim.msg_id, StaleReason.NOT_HELD)
    if not isinstance(token, int | str):
        raise StaleClaim(queue, claim.msg_id, StaleReason.NOT_HELD)
    return claim


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def is_message_id(value: object) -> bool:
    """Whether ``value`` can name a message: an ``int`` that is not a ``bool``.

    Anything else names no message (``MessageNotFound``, or ``None`` from a fetch), so
    ``True``, ``1.0`` or ``1.5`` can never act on message 1 through equality or a
    driver's silent conversion.
    """
    return isinstance(value, int) and not isinstance(value, bool)


def check_limit(queue: str, limit: object, caps: Capabilities) -> int:
    """A receive limit is an int in ``1..caps.max_receive_limit``."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidArgument("limit", limit, "an integer", queue)
    if not 1 <= limit <= caps.max_receive_limit:
        raise InvalidArgument("limit", limit, f"between 1 and {caps.max_receive_limit}", queue)
    return limit


def check_visibility_timeout(queue: str, seconds: object, caps: Capabilities) -> float:
    """A visibility timeout is finite, > 0 and at most the declared maximum."""
    value = _finite_seconds("visibility_timeout", seconds, queue)
    if not 0 < value <= caps.max_visibility_timeout_seconds:
        raise InvalidArgument(
            "visibility_timeout",
            seconds,
            f"> 0 and <= {caps.max_visibility_timeout_seconds:g} seconds",
            queue,
        )
    return value


def check_delay(queue: str, seconds: object, caps: Capabilities) -> float:
    """A delay is finite, >= 0 and at most the declared maximum."""
    value = _finite_seconds("delay_seconds", seconds, queue)
    if not 0 <= value <= caps.max_delay_seconds:
        raise InvalidArgument(
            "delay_seconds", seconds, f">= 0 and <= {caps.max_delay_seconds:g} seconds", queue
        )
    return value
