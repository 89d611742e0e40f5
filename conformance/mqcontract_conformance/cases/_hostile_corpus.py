"""The hostile-input corpus of the HOST rules: names, payloads, numbers and ids.

It extends ``INVALID_NAMES`` (which LIFE-7/LIFE-8 use) instead of repeating it: the HOST
rules run the union through every operation.
"""

from __future__ import annotations

import math

from mqcontract_conformance.cases._payloads import INVALID_NAMES

__all__ = [
    "HOSTILE_IDS",
    "HOSTILE_LIMITS",
    "HOSTILE_NAMES",
    "HOSTILE_PAYLOADS",
    "hostile_delays",
    "hostile_visibility_timeouts",
    "shown",
]

#: Names no provider may accept, beyond INVALID_NAMES: SQL and AMQP metacharacters,
#: identifiers that mean something to a backend, look-alikes, control characters, lengths.
_MORE_NAMES: tuple[object, ...] = (
    "q'); DELETE FROM pgmq.meta; --",
    'q" OR "1"="1',
    "q$1",
    "q::regclass",
    "pgmq.meta",
    "pg_catalog.pg_class",
    "q/*comment*/",
    "q--",
    "amq.direct",
    "amq.rabbitmq.reply-to",
    "mqcontract.delay.q.1000",
    "q#",
    "q*",
    "%2F",
    "q\nnewline",
    "valid_name\n",
    "valid_name ",
    " valid_name",
    "q\r",
    "\u0430bc",  # Cyrillic a: looks like "abc"
    "\uff51ueue",  # full-width q
    "q\u200bq",  # zero-width space
    "q\u202eeman",  # right-to-left override
    "\u0130stanbul",  # dotted capital I (lower-cases to two code points)
    "stra\u00dfe",
    "\U0001f4e8_queue",
    "a" * 63,
    "a" * 64,
    "a" * 255,
    "a" * 10_000,
    "_" * 48,
    b"bytes_name",
    None,
    42,
)

HOSTILE_NAMES: tuple[object, ...] = (*INVALID_NAMES, *_MORE_NAMES)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


#: Payloads every provider must store and return as declared (label, payload).
HOSTILE_PAYLOADS: tuple[tuple[str, bytes | bytearray | memoryview], ...] = (
    ("empty", b""),
    ("NUL", b"\x00"),
    ("invalid UTF-8", b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc"),
    ("UTF-16 with BOM", "\ufeffqueue".encode("utf-16")),
    ("UTF-8 BOM before JSON", b'\xef\xbb\xbf{"a": 1}'),
    ("JSON string with \\u0000", b'"a\\u0000b"'),
    ("JSON lone surrogate", b'"\\ud800"'),
    ("JSON NaN", b'{"x": NaN}'),
    ("JSON number overflow", b"1e999999"),
    ("JSON 5000-digit integer", b"9" * 5000),
    ("JSON nested 20000 deep", _nested(20_000)),
    ("JSON null", b"null"),
    ("JSON duplicate keys", b'{"a": 1, "a": 2}'),
    ("JSON booleans beside numbers", b'{"t": true, "1": 1, "f": false, "0": 0, "e": [], "o": {}}'),
    ("JSON 20-digit integer", b"12345678901234567890"),
    ("decomposed text", "e\u0301 \u1100\u1161 \u212b \ufb01".encode()),
    ("JSON of decomposed text", '{"t": "e\u0301 \u212b \ufb01"}'.encode()),
    ("envelope look-alike", b'{"$mqcontract_b64": "AAEC"}'),
    ("broken envelope", b'{"$mqcontract_b64": "not base64!"}'),
    ("SQL text", b"'); DROP TABLE pgmq.meta; --"),
    ("format directives", b"%s%s%n%x {0} ${x} $1"),
    ("AMQP frame end", b"\xce" * 64),
    ("all byte values", bytes(range(256)) * 4),
    ("bytearray", bytearray(b"a bytearray")),
    ("memoryview", memoryview(b"a memoryview")),
)

#: Receive limits that must raise InvalidArgument (beyond RECV-3's 0, -1, max+1, 1.5, True).
HOSTILE_LIMITS: tuple[object, ...] = (
    -(2**63),
    10**30,
    10**5000,  # beyond Python's int-to-text limit
    2.0,
    math.nan,
    math.inf,
    "5",
    None,
    False,
    b"\x05",
)


def _seconds(maximum: float) -> tuple[object, ...]:
    return (
        -1e-300,
        -math.inf,
        math.nan,
        -math.nan,
        math.inf,
        maximum + 1e-3,
        1e308,
        10**400,  # too large for a float
        -(10**400),
        10**5000,  # beyond Python's int-to-text limit
        "1",
        None,
        True,
        [1],
    )


def hostile_visibility_timeouts(maximum: float) -> tuple[object, ...]:
    """Visibility timeouts that must raise InvalidArgument (0 and -0.0 included)."""
    return (0, 0.0, -0.0, *_seconds(maximum))


def hostile_delays(maximum: float) -> tuple[object, ...]:
    """Delays that must raise InvalidArgument."""
    return _seconds(maximum)


#: Message ids that never name a held message: ack/nack raise MessageNotFound, fetch
#: returns None. ``True`` and ``1.0`` compare equal to 1, and asyncpg would truncate
#: ``1.5`` to 1: none of them may act on message 1.
HOSTILE_IDS: tuple[object, ...] = (
    0,
    -1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64,
    10**30,
    10**5000,
    True,
    1.0,
    1.5,
    "1",
    b"1",
    None,
)


def shown(value: object, limit: int = 40) -> str:
    """A short label for a corpus value (``repr`` refuses integers over 4300 digits)."""
    try:
        text = repr(value)
    except ValueError:
        return f"<int of {value.bit_length()} bits>" if isinstance(value, int) else "<?>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
