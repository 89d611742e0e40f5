"""Frames whose values pamqp cannot decode: decoded tolerantly instead of killing the connection.

pamqp decodes every frame aiormq reads. A value it cannot decode raises, which ends
aiormq's reader, and with it the connection: every channel, consumer and claim on it.
A message carrying such a value stays in its queue, so every later receive of it ends
the connection again (a poison message), and claims held for unrelated queues on the
same connection are lost each time.

Values that are legal AMQP 0-9-1, that RabbitMQ passes through from any publisher
untouched, and that pamqp 4 raises on (found by publishing raw properties):

* a **timestamp** (the ``timestamp`` property, or a ``T`` header value) beyond what a
  ``datetime`` holds: the field is any unsigned 64-bit number, pamqp reads one above
  2**32 as milliseconds, and from about 2.5e14 on (2**63, 2**64 - 1) there is no such
  year. Such a timestamp decodes as ``None``, as if it were absent.
* a **short string** that is not UTF-8 (``message_id``, ``content_type``, ...
  properties, and a delivery's ``routing_key`` or ``exchange``): decoded with
  ``surrogateescape``, a ``str`` that keeps every byte (pamqp's own long strings come
  back as ``bytes`` in that case).
* a **header table key** that is not UTF-8: kept with ``surrogateescape`` too, so the
  table and every other header in it survive.
* anything else in a content header (a table nested past Python's recursion limit, say): each
  property is then decoded on its own, and one that still fails is left unset, its
  bytes skipped (every property type has a length it can be skipped by); the message is
  delivered with the rest of its properties.

Only values that raised before change: whatever pamqp decoded still decodes the same.
pamqp keeps one decoder table per process, so :func:`install` applies process-wide
(calling it again changes nothing); the provider calls it when it is imported.
"""

from __future__ import annotations

import datetime
import logging
import struct
from collections.abc import Callable
from typing import Any

from pamqp import commands, common, decode, header

__all__ = ["install", "installed"]

log = logging.getLogger(__name__)

_Decoder = Callable[[bytes], tuple[int, Any]]

#: pamqp's own decoders, wrapped below.
_TIMESTAMP: _Decoder = decode.timestamp
_SHORT_STR: _Decoder = decode.short_str
_FIELD_TABLE: _Decoder = decode.field_table
_UNMARSHAL_HEADER = header.ContentHeader.unmarshal


def timestamp(value: bytes) -> tuple[int, datetime.datetime | None]:
    """pamqp's timestamp, or ``None`` for one no ``datetime`` holds (8 bytes consumed)."""
    try:
        return _TIMESTAMP(value)
    except (ValueError, OverflowError, OSError):
        if len(value) < 8:  # truncated: a broken frame, not a value out of range
            raise
        log.debug("AMQP timestamp %d is out of range; decoded as None", _u64(value))
        return 8, None


def short_str(value: bytes) -> tuple[int, str]:
    """pamqp's short string; one that is not UTF-8 keeps its bytes as surrogates."""
    try:
        return _SHORT_STR(value)
    except UnicodeDecodeError:
        length = value[0]
        return length + 1, value[1 : length + 1].decode("utf-8", "surrogateescape")


def field_table(value: bytes) -> tuple[int, Any]:
    """pamqp's field table; one whose keys are not UTF-8 keeps their bytes as surrogates
    (dropping the table would drop every header with it, ``x-delivery-count`` too)."""
    try:
        return _FIELD_TABLE(value)
    except UnicodeDecodeError:
        pass
    length = int(common.Struct.integer.unpack(value[0:4])[0])
    end, offset, table = 4 + length, 4, {}
    if end > len(value):
        raise ValueError("Field table length exceeds available data")
    while offset < end:
        size = value[offset]
        key = value[offset + 1 : offset + 1 + size].decode("utf-8", "surrogateescape")
        offset += 1 + size
        consumed, table[key] = decode.embedded_value(value[offset:])
        offset += consumed
    return end, table


def _u64(value: bytes) -> int:
    return int(common.Struct.timestamp.unpack(value[0:8])[0])


#: How many bytes a value of each property type takes: how one that cannot be decoded
#: is skipped.
_SIZES: dict[str, Callable[[bytes], int]] = {
    "octet": lambda data: 1,
    "shortstr": lambda data: 1 + data[0],
    "timestamp": lambda data: 8,
    "table": lambda data: 4 + int(common.Struct.integer.unpack(data[0:4])[0]),
}


def properties_each(flags: int, data: bytes) -> commands.Basic.Properties:
    """Basic properties decoded one at a time: one that fails is left unset."""
    properties = commands.Basic.Properties()
    for name in properties.__slots__:
        if not flags & properties.flags[name]:
            continue
        kind: str = getattr(commands.Basic.Properties, "_" + name)
        try:
            consumed, value = decode.by_type(data, kind)
        except (ValueError, struct.error, RecursionError) as exc:
            sizer = _SIZES.get(kind)
            if sizer is None:  # no way to find the next property: leave the rest unset
                log.warning("undecodable %s property %r; the rest left unset", kind, name)
                return properties
            consumed, value = sizer(data), None
            log.warning("undecodable message property %r left unset: %s", name, exc)
        setattr(properties, name, value)
        data = data[consumed:]
    return properties


def _unmarshal_header(self: header.ContentHeader, data: bytes) -> None:
    """pamqp's content header; properties it cannot decode as a whole are decoded one by
    one (:func:`properties_each`). A broken frame (too short) still raises."""
    try:
        _UNMARSHAL_HEADER(self, data)
    except (ValueError, RecursionError):  # a table nested past Python's limit, too
        if len(data) < 12:
            raise
        offset, flags = self._get_flags(data[12:])  # truncated flags raise again
        self.properties = properties_each(flags, data[12 + offset :])


def install() -> None:
    """Put the tolerant decoders in pamqp's tables (idempotent; see the module docstring)."""
    decode.METHODS["timestamp"] = timestamp
    decode.TABLE_MAPPING[b"T"] = timestamp
    decode.METHODS["shortstr"] = short_str
    decode.METHODS["table"] = field_table
    decode.TABLE_MAPPING[b"F"] = field_table
    # A method is replaced through setattr: mypy forbids assigning to one.
    setattr(header.ContentHeader, "unmarshal", _unmarshal_header)  # noqa: B010


def installed() -> bool:
    """Whether pamqp decodes through this module now."""
    return (
        decode.METHODS.get("timestamp") is timestamp
        and decode.TABLE_MAPPING.get(b"T") is timestamp
        and decode.METHODS.get("shortstr") is short_str
        and decode.METHODS.get("table") is field_table
        and header.ContentHeader.unmarshal is _unmarshal_header
    )
