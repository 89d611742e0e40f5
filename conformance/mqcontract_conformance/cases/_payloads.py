"""Payload helpers shared by the cases."""

from __future__ import annotations

import decimal
import json

from mqcontract.capabilities import PayloadFidelity


def body(i: int, tag: str = "m") -> bytes:
    """A small payload that is not JSON, so every fidelity returns it byte for byte."""
    return f"{tag}-{i}".encode()


def same_payload(fidelity: PayloadFidelity, sent: bytes, received: bytes) -> bool:
    """Whether ``received`` honours the declared fidelity for ``sent``."""
    if sent == received:
        return True
    if fidelity is PayloadFidelity.JSON_VALUE:
        try:
            return same_json(_exact(sent), _exact(received))
        except (ValueError, RecursionError):
            return False
    return False


def _exact(document: bytes) -> object:
    """A JSON document with its numbers as decimals: ``1e23`` and the 24 digits jsonb
    writes for it are one number, which as a float and an int they are not."""
    return json.loads(document, parse_float=decimal.Decimal, parse_int=decimal.Decimal)


def same_json(a: object, b: object) -> bool:
    """Equal JSON values, by JSON's types: ``true`` is not ``1`` and ``[]`` is not ``{}``
    (Python's ``==`` says ``True == 1 == 1.0``); numbers compare by value, exactly, so
    ``1e2`` and ``100`` are one number, as a store that normalizes numbers (jsonb) makes
    them, and a 20-digit integer rounded to a double is another. Iterative: nesting is as
    deep as a hostile payload makes it."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if _kind(x) != _kind(y):
            return False
        if isinstance(x, dict):
            assert isinstance(y, dict)
            if x.keys() != y.keys():
                return False
            pending.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            assert isinstance(y, list)
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


def _kind(value: object) -> str:
    """A JSON value's type; ints and floats are one kind, numbers."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | decimal.Decimal):
        return "number"
    return type(value).__name__


#: Names every provider must reject; SQL and AMQP metacharacters, unicode, length.
INVALID_NAMES: tuple[str, ...] = (
    "",
    "UPPER",
    "MixedCase",
    "has space",
    "semi;colon",
    "q'; DROP TABLE pgmq.meta; --",
    'quote"d',
    "dash-name",
    "dot.name",
    "amq.gen-queue",
    "slash/name",
    "caf\u00e9",
    "\u961f\u5217",
    "1starts_with_digit",
    "a" * 48,
    "tab\tname",
    "nul\x00name",
)
