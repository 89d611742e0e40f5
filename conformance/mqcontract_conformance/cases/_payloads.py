"""Payload helpers shared by the cases."""

from __future__ import annotations

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
            return bool(json.loads(sent) == json.loads(received))
        except ValueError:
            return False
    return False


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
