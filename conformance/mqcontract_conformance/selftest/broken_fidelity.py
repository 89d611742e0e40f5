"""Broken fidelity: providers that change what they were given on the way through.

Each stores a message the way a plausible backend would (a text column that normalizes
Unicode, SQL values rebuilt into JSON, a scheduler stamping the time it finally sends)
and returns something that looks right to anyone not comparing closely.
"""

from __future__ import annotations

import dataclasses
import json
import unicodedata

from mqcontract.capabilities import Capabilities, PayloadFidelity
from mqcontract.providers.memory import InMemoryMessagingService, _Queue
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "BooleansStoredAsNumbers",
    "DelayedStampedWhenVisible",
    "JsonValueMemory",
    "TextNormalized",
]


class TextNormalized(InMemoryMessagingService):
    """Stores every payload that is valid UTF-8 as text normalized to NFC (a text column
    or driver that normalizes), while declaring bytes fidelity: ``e`` + U+0301 comes back
    as ``é``."""

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            return super()._enqueue(queue, payload, delay)
        return super()._enqueue(queue, unicodedata.normalize("NFC", text).encode(), delay)


class JsonValueMemory(InMemoryMessagingService):
    """The in-memory provider declaring json-value fidelity (it keeps bytes exactly, which
    that fidelity allows): the reference of providers that store JSON as values."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(
            super().capabilities, payload_fidelity=PayloadFidelity.JSON_VALUE
        )


def _as_sql(value: object) -> object:
    """A JSON value as SQLite's ``json_extract`` hands it back: booleans as 1 and 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list):
        return [_as_sql(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_sql(v) for k, v in value.items()}
    return value


class BooleansStoredAsNumbers(JsonValueMemory):
    """Rebuilds JSON payloads from SQL values: ``true`` and ``false`` come back as ``1``
    and ``0``, a value changed where json-value fidelity allows only its writing."""

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        try:
            value = json.loads(payload)
            rebuilt = json.dumps(_as_sql(value), ensure_ascii=False, allow_nan=False).encode()
        except (ValueError, RecursionError):
            rebuilt = payload  # not JSON: kept as it is
        return super()._enqueue(queue, rebuilt, delay)


class DelayedStampedWhenVisible(InMemoryMessagingService):
    """Fills a delayed message's ``enqueued_at`` from the column its delay sets: the
    message looks as if it was sent when it became visible."""

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        msg_id = await super()._send_delayed(queue, payload, delay_seconds)
        self._existing(queue).entries[msg_id].enqueued_at += delay_seconds
        return msg_id


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(TextNormalized, "SEND-5"),
    Specimen(BooleansStoredAsNumbers, "SEND-2", reference=JsonValueMemory),
    Specimen(DelayedStampedWhenVisible, "DLY-7"),
)
