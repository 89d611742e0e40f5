"""What a foreign message says of itself, checked without a broker.

The decoders :mod:`mqcontract.providers.rabbitmq._decoding` puts into pamqp (a value
pamqp raised on used to end the connection it arrived on), and how the provider reads
ids and send times off a delivery (:mod:`._ids`, :mod:`._holds`). The broker-side
behaviour is in ``test_rabbitmq_foreign.py``.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import AsyncIterator
from typing import cast

import pamqp.frame
import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp import decode
from pamqp.common import FieldTable
from pamqp.exceptions import UnmarshalingException
from pamqp.header import ContentHeader

from mqcontract.providers.rabbitmq import _decoding
from mqcontract.providers.rabbitmq._holds import ENQUEUED_AT_HEADER, Holds, send_stamp
from mqcontract.providers.rabbitmq._ids import MAX_ID, content_id, parse_id
from mqcontract.providers.rabbitmq._settlement import SettlingChannel
from mqcontract.providers.rabbitmq._tasks import Background


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def _short(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


def _header_frame(properties: bytes, body_size: int = 4) -> bytes:
    """A content header frame on channel 1 (class 60) carrying ``properties``."""
    payload = struct.pack(">HHQ", 60, 0, body_size) + properties
    return struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"


def _properties(**fields: bytes) -> bytes:
    flags, parts = 0, []
    for name in spec.Basic.Properties.__slots__:
        if name in fields:
            flags |= spec.Basic.Properties.flags[name]
            parts.append(fields[name])
    return struct.pack(">H", flags) + b"".join(parts)


def test_importing_the_provider_installs_the_tolerant_decoders() -> None:
    assert _decoding.installed()
    _decoding.install()  # again: nothing changes
    assert _decoding.installed()


@pytest.mark.parametrize("value", [2**63, 2**64 - 1, 253_402_300_800_000])
def test_a_timestamp_no_datetime_holds_decodes_as_none(value: int) -> None:
    assert decode.by_type(_u64(value) + b"rest", "timestamp") == (8, None)
    # As a header value too, and the table goes on after it.
    entries = _short(b"t") + b"T" + _u64(value) + _short(b"n") + b"I" + struct.pack(">i", 7)
    table = struct.pack(">I", len(entries)) + entries
    assert decode.by_type(table, "table") == (len(table), {"t": None, "n": 7})


def test_timestamps_pamqp_decodes_are_unchanged_and_a_truncated_one_still_raises() -> None:
    utc = datetime.UTC
    assert decode.by_type(_u64(978_307_200), "timestamp") == (
        8,
        datetime.datetime(2001, 1, 1, tzinfo=utc),
    )
    # pamqp reads a value above 2**32 as milliseconds: still so where it can.
    assert decode.by_type(_u64(978_307_200_000), "timestamp") == (
        8,
        datetime.datetime(2001, 1, 1, tzinfo=utc),
    )
    with pytest.raises(ValueError, match="timestamp"):
        decode.by_type(b"\x00\x01", "timestamp")


def test_a_short_string_that_is_not_utf8_keeps_its_bytes() -> None:
    consumed, value = decode.by_type(_short(b"\xff\xfe12") + b"next", "shortstr")
    assert consumed == 5
    assert isinstance(value, str)
    assert value.encode("utf-8", "surrogateescape") == b"\xff\xfe12"
    assert decode.by_type(_short("été".encode()), "shortstr") == (6, "été")


def test_a_header_key_that_is_not_utf8_keeps_the_table_and_the_other_properties() -> None:
    key = b"k\xff"  # not UTF-8: pamqp's table decoder raises
    entries = _short(key) + b"I" + struct.pack(">i", 5) + _short(b"x-delivery-count")
    entries += b"I" + struct.pack(">i", 2)
    wire = _properties(
        content_type=_short(b"text/plain"),
        headers=struct.pack(">I", len(entries)) + entries,
        message_id=_short(b"4243"),
        timestamp=_u64(2**63),
    )
    _, channel, frame = pamqp.frame.unmarshal(_header_frame(wire, body_size=6))
    assert channel == 1
    assert isinstance(frame, ContentHeader)
    assert frame.body_size == 6
    properties = frame.properties
    # The table survives (dropping it dropped x-delivery-count, and exact counts with it).
    assert properties.headers == {"k\udcff": 5, "x-delivery-count": 2}
    assert (properties.content_type, properties.message_id) == ("text/plain", "4243")
    assert properties.timestamp is None


def test_a_header_table_nested_past_the_recursion_limit_leaves_the_other_properties() -> None:
    table = b""
    for _ in range(5000):  # RabbitMQ passes it on; pamqp recurses once per level
        entries = _short(b"n") + b"F" + struct.pack(">I", len(table)) + table
        table = entries
    wire = _properties(
        content_type=_short(b"text/plain"),
        headers=struct.pack(">I", len(table)) + table,
        message_id=_short(b"4243"),
    )
    _, _, frame = pamqp.frame.unmarshal(_header_frame(wire, body_size=6))
    assert isinstance(frame, ContentHeader)
    assert frame.properties.headers is None
    assert (frame.properties.content_type, frame.properties.message_id) == ("text/plain", "4243")


def test_a_broken_content_header_still_raises() -> None:
    with pytest.raises(UnmarshalingException):
        pamqp.frame.unmarshal(_header_frame(b"\x80"))  # flags cut short


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("4242", 4242),
        (str(MAX_ID), MAX_ID),
        (str(MAX_ID + 1), None),
        (str(2**70), None),
        ("0", None),
        ("-5", None),
        ("+5", None),
        (" 12 ", None),
        ("12\n", None),
        ("1_000", None),
        ("007", None),
        ("1e3", None),
        ("\u0661\u0662\u0663", None),  # Arabic-Indic digits: int() reads 123
        ("\uff11\uff12", None),  # fullwidth digits
        ("", None),
        (None, None),
        (b"12", None),
        (12, None),
    ],
)
def test_a_message_id_names_an_id_only_in_its_canonical_form(
    text: object, expected: int | None
) -> None:
    assert parse_id(text) == expected


def test_content_ids_are_stable_in_range_and_tell_contents_apart() -> None:
    ids = {content_id(identity, body) for identity in (b"", b"a") for body in (b"", b"a")}
    assert len(ids) == 4
    assert all(1 <= i <= MAX_ID for i in ids)
    assert content_id(b"a", b"b") == content_id(b"a", b"b")
    assert content_id(b"ab", b"") != content_id(b"a", b"b")  # the boundary counts


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000_000_000, 1_700_000_000_000_000),
        (1, 1),
        (True, None),
        (False, None),
        (0, None),
        (-1, None),
        (2**62, None),
        (253_402_300_800_000_000, None),  # the year 10000
        (1.5e15, None),
        ("1700000000000000", None),
        (None, None),
    ],
)
def test_a_send_stamp_is_a_time_or_nothing(value: object, expected: int | None) -> None:
    assert send_stamp(value) == expected


class _Channel:
    number = 1
    is_closed = False


def _channel() -> SettlingChannel:
    return cast(SettlingChannel, _Channel())  # nothing is settled here


@pytest.fixture
async def holds() -> AsyncIterator[Holds]:
    tasks = Background()
    yield Holds(quorum=True, tasks=tasks, timeout=5.0)
    await tasks.cancel_all()


def _delivery(
    properties: spec.Basic.Properties, tag: int, body: bytes = b"body"
) -> DeliveredMessage:
    frame = spec.Basic.GetOk(delivery_tag=tag, redelivered=tag > 1, routing_key="q")
    header = ContentHeader(properties=properties)
    return DeliveredMessage(delivery=frame, header=header, body=body, channel=None)  # type: ignore[arg-type]


async def test_a_content_id_ignores_what_the_broker_adds_on_redelivery(holds: Holds) -> None:
    """Quorum queues add ``x-delivery-count``, dead-lettering ``x-death`` headers and
    drops ``expiration``: the id stays; the send time is the first sight's."""
    channel = _channel()
    base: FieldTable = {"app": "theirs"}
    first = holds.hold(
        "q", channel, _delivery(spec.Basic.Properties(headers=base, expiration="60000"), 1), 60
    )
    redelivered = spec.Basic.Properties(
        headers={**base, "x-delivery-count": 1, "x-death": [{"count": 1}]}
    )
    again = holds.hold("q", channel, _delivery(redelivered, 2), 60)
    assert again.msg_id == first.msg_id
    assert again.enqueued_at == first.enqueued_at
    other = holds.hold("q", channel, _delivery(spec.Basic.Properties(headers=base), 3, b"x"), 60)
    assert other.msg_id != first.msg_id


async def test_the_send_time_falls_back_header_timestamp_id_then_first_sight(
    holds: Holds,
) -> None:
    channel = _channel()
    sent_at = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    stamped = spec.Basic.Properties(
        message_id="4242", timestamp=sent_at, headers={ENQUEUED_AT_HEADER: 1_000_000}
    )
    assert holds.hold("q", channel, _delivery(stamped, 1), 60).enqueued_at == 1.0
    bogus = spec.Basic.Properties(
        message_id="4242", timestamp=sent_at, headers={ENQUEUED_AT_HEADER: True}
    )
    assert holds.hold("q", channel, _delivery(bogus, 2), 60).enqueued_at == sent_at.timestamp()
    no_time = spec.Basic.Properties(message_id="4242")
    assert holds.hold("q", channel, _delivery(no_time, 3), 60).enqueued_at == 1704067200.0
