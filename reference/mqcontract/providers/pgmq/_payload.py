"""How caller bytes map onto PGMQ's ``jsonb`` message column, and back.

A payload that is a JSON text PostgreSQL's ``jsonb`` accepts is stored as that JSON value,
so ``psql`` and every other PGMQ client see the real message. Anything else (binary data,
text that is not JSON, JSON ``jsonb`` rejects such as ``\\u0000`` or ``NaN``) is stored as
the documented envelope ``{"$mqcontract_b64": "<base64 of the bytes>"}``. A JSON payload
that itself looks like an envelope (an object whose only key is ``$mqcontract_b64``) is
enveloped too, so every round trip is exact up to ``jsonb`` normalization (key order,
whitespace): the ``JSON_VALUE`` fidelity.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

__all__ = ["ENVELOPE_KEY", "decode", "encode", "envelope"]

ENVELOPE_KEY = "$mqcontract_b64"
#: How ``jsonb`` prints an envelope; a cheap test before parsing a message.
_ENVELOPE_PREFIX = '{"' + ENVELOPE_KEY + '": '


def encode(data: bytes) -> str:
    """The ``jsonb`` text to store for ``data``."""
    text = native_json(data)
    return text if text is not None else envelope(data)


def envelope(data: bytes) -> str:
    """The envelope carrying ``data`` as base64."""
    return json.dumps({ENVELOPE_KEY: base64.b64encode(data).decode("ascii")})


def native_json(data: bytes) -> str | None:
    """``data`` as JSON text when ``jsonb`` can store it natively and unambiguously, else None."""
    try:
        text = data.decode("utf-8")
        value = _DECODER.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError also covers integers longer than Python's digit limit, NaN,
        # Infinity and floats that overflow (see ``_DECODER``).
        return None
    # Valid UTF-8 JSON holds a NUL or a lone surrogate only as a \u escape: without
    # one, every string is safe and the walk is skipped (it is the costly part).
    if "\\u" in text and not _strings_safe(value):
        return None
    if _looks_like_envelope(value):
        return None
    return text


def decode(text: str | None) -> bytes:
    """The caller's bytes for a stored ``jsonb`` text (SQL NULL reads as ``null``)."""
    if text is None:
        return b"null"
    if text.startswith(_ENVELOPE_PREFIX):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if _looks_like_envelope(value) and isinstance(value[ENVELOPE_KEY], str):
            try:
                return base64.b64decode(value[ENVELOPE_KEY], validate=True)
            except binascii.Error:
                pass  # a foreign message that merely resembles an envelope
    return text.encode("utf-8")


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are Python extensions, not JSON; jsonb refuses them.
    raise ValueError(f"{name} is not JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"{literal[:20]} overflows a float")
    return value


#: One decoder for every call (``json.loads`` with options builds a new one each time).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _looks_like_envelope(value: object) -> bool:
    return isinstance(value, dict) and len(value) == 1 and ENVELOPE_KEY in value


def _strings_safe(value: object) -> bool:
    """False when a string or key holds what jsonb cannot (NUL, a lone surrogate)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not _text_safe(item):
                return False
        elif isinstance(item, dict):
            for key, member in item.items():
                if not _text_safe(key):
                    return False
                stack.append(member)
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _text_safe(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
