"""PGMQ payload mapping and NOTIFY parsing, without a database."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqcontract.messages import Available, Message
from mqcontract.providers.pgmq._listener import MAX_DELAY, parse_notification
from mqcontract.providers.pgmq._payload import ENVELOPE_KEY, decode, encode, native_json


@pytest.mark.parametrize(
    "payload",
    [b'{"a": 1}', b"[1, 2.5, null]", b'"caf\xc3\xa9"', b" 42 ", b"true", b'{"$x": 1}'],
)
def test_json_that_jsonb_accepts_is_stored_as_itself(payload: bytes) -> None:
    assert encode(payload) == payload.decode()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\x01\xff",
        b"not json",
        b"NaN",
        b"[-Infinity]",
        b'"\\u0000"',
        b'{"\\u0000": 1}',
        b'"\\udc00"',
        b"1e400",
        b"[" * 5000 + b"]" * 5000,
        b"\xef\xbb\xbf[]",
        b"\xed\xa0\x80",  # an encoded surrogate is not UTF-8
        json.dumps({ENVELOPE_KEY: "aGk="}).encode(),
        json.dumps({ENVELOPE_KEY: None}).encode(),
    ],
)
def test_everything_else_goes_in_the_envelope_and_comes_back_exactly(payload: bytes) -> None:
    assert native_json(payload) is None
    stored = encode(payload)
    assert json.loads(stored) == {ENVELOPE_KEY: base64.b64encode(payload).decode()}
    # jsonb prints the envelope with a space after the colon; decode must accept both.
    assert decode(stored) == payload
    assert decode(json.dumps(json.loads(stored))) == payload


def test_an_object_with_more_keys_than_the_envelope_is_not_an_envelope() -> None:
    text = json.dumps({ENVELOPE_KEY: "aGk=", "zz_other": 1})
    assert encode(text.encode()) == text
    assert decode(text) == text.encode()


def test_a_foreign_message_that_resembles_an_envelope_but_is_not_base64_reads_as_text() -> None:
    text = '{"' + ENVELOPE_KEY + '": "not base64!"}'
    assert decode(text) == text.encode()


def test_sql_null_reads_as_json_null() -> None:
    assert decode(None) == b"null"


def test_a_full_notification_keeps_the_jsonb_text_byte_for_byte() -> None:
    raw = '{"a": [1, 2.50], "s": "caf\u00e9, \\"message\\":"}'
    payload = (
        '{"queue":"q1","msg_id":7,"read_ct":0,"enqueued_at":1700000000.123456,"message":'
        + raw
        + "}"
    )
    note, delay = parse_notification(payload)
    assert delay == 0
    assert isinstance(note, Message)
    assert note.claimed is False
    assert note.message.payload == raw.encode()
    assert (note.message.msg_id, note.message.queue_name) == (7, "q1")
    assert note.message.receive_count == 1
    assert note.message.enqueued_at == pytest.approx(1700000000.123456)


def test_a_signal_notification_and_a_delayed_one() -> None:
    assert parse_notification('{"queue":"q","msg_id":3}') == (Available("q", 3), 0.0)
    note, delay = parse_notification('{"queue":"q","msg_id":4,"delay":0.250000}')
    assert note == Available("q", 4)
    assert delay == pytest.approx(0.25)


def test_an_enveloped_message_in_a_notification_is_unwrapped() -> None:
    payload = (
        '{"queue":"q","msg_id":1,"read_ct":2,"enqueued_at":1,"message":'
        + json.dumps({ENVELOPE_KEY: base64.b64encode(b"\x00bin").decode()})
        + "}"
    )
    note, _ = parse_notification(payload)
    assert isinstance(note, Message)
    assert note.message.payload == b"\x00bin"
    assert note.message.receive_count == 3


def _reference_parse(payload: str) -> tuple[object, float]:
    """What a notification means, read with ``json`` alone (the fast path must agree)."""
    head, marker, tail = payload.partition(',"message":')
    fields = json.loads(head + "}" if marker else payload)
    delay = min(max(float(fields.get("delay", 0.0)), 0.0), MAX_DELAY)
    if not marker:
        return Available(fields["queue"], int(fields["msg_id"])), delay
    message = (
        int(fields["msg_id"]),
        fields["queue"],
        decode(tail[:-1]),
        int(fields["read_ct"]) + 1,
        float(fields["enqueued_at"]),
    )
    return message, delay


@given(
    queue=st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True),
    msg_id=st.integers(1, 2**63 - 1),
    delay=st.none() | st.decimals(min_value=0, max_value=10**6, places=6),
    read_ct=st.integers(0, 2**31 - 1),
    enqueued_at=st.decimals(min_value=0, max_value=10**10, places=6),
    message=st.none() | st.sampled_from(['{"a": 1}', "[1, 2]", '"x"', "null", '{"m": ","}']),
    reorder=st.booleans(),
)
def test_the_fast_head_reader_agrees_with_json(
    queue: str,
    msg_id: int,
    delay: object,
    read_ct: int,
    enqueued_at: object,
    message: str | None,
    reorder: bool,
) -> None:
    """Heads as the notify function writes them (read by the regular expression) and
    in any other key order (read as JSON) mean the same as a plain JSON reading."""
    fields = [f'"queue":"{queue}"', f'"msg_id":{msg_id}']
    if delay is not None:
        fields.append(f'"delay":{delay}')
    if message is not None:
        fields += [f'"read_ct":{read_ct}', f'"enqueued_at":{enqueued_at}']
    if reorder:
        fields.reverse()
    payload = "{" + ",".join(fields) + (f',"message":{message}}}' if message is not None else "}")
    note, seconds = parse_notification(payload)
    expected, expected_delay = _reference_parse(payload)
    assert seconds == pytest.approx(expected_delay)
    if isinstance(note, Message):
        got = note.message
        assert (got.msg_id, got.queue_name, got.payload, got.receive_count) == expected[:4]  # type: ignore[index]
        assert got.enqueued_at == pytest.approx(expected[4])  # type: ignore[index]
    else:
        assert note == expected


@pytest.mark.parametrize(
    "payload",
    [
        '{"queue":"q","msg_id":51',  # cut short: not message 5
        '{"queue":"q","msg_id":5X}',
        '{"queue":"q","msg_id":007}',
        "not json",
    ],
)
def test_a_malformed_notification_is_refused_not_misread(payload: str) -> None:
    """The fast head reader takes only whole heads: anything else goes to JSON, which
    refuses it (the listener counts it as malformed and goes on)."""
    with pytest.raises((ValueError, KeyError, TypeError)):
        parse_notification(payload)


#: A valid notification's head, and one with a message, with ``{field}`` to replace.
_SIGNAL = '{{"queue":"q","msg_id":{msg_id},"delay":{delay}}}'
_FULL = '{{"queue":"q","msg_id":1,"read_ct":{read_ct},"enqueued_at":{enqueued_at},"message":"x"}}'


@pytest.mark.parametrize(
    "payload",
    [
        # delay: NaN scheduled call_later(nan) and froze the event loop; the infinities
        # (written or overflowing) held a timer for ever; a negative one is not ours.
        *(
            _SIGNAL.format(msg_id=1, delay=d)
            for d in ("NaN", "Infinity", "-Infinity", "1e400", "-1", '"5"', "true", "null")
        ),
        '{"delay":NaN,"queue":"q","msg_id":1}',  # another key order: read as JSON
        # msg_id: a bigint, and not a bool, a float or a string that converts to one.
        *(
            _SIGNAL.format(msg_id=m, delay=0)
            for m in ("true", "1.5", "1.0", '"7"', "null", str(2**63), str(-(2**63) - 1))
        ),
        '{"queue":"q","msg_id":' + "9" * 5000 + "}",
        # queue: a queue name, as a string.
        '{"queue":"Q","msg_id":1}',
        '{"queue":"q-1","msg_id":1}',
        '{"queue":5,"msg_id":1}',
        '{"queue":["q"],"msg_id":1}',
        '{"queue":"' + "q" * 48 + '","msg_id":1}',
        '{"msg_id":1}',
        # read_ct an integer of 0 or more, enqueued_at a finite time.
        *(_FULL.format(read_ct=r, enqueued_at=1) for r in ("-1", str(2**31), "1.5", "true")),
        *(_FULL.format(read_ct=0, enqueued_at=e) for e in ("NaN", "1e400", '"1"', "1e20")),
        '{"queue":"q","msg_id":1,"message":"x"}',  # a message without its count and time
        '{"queue":"q","msg_id":1,"read_ct":0,"enqueued_at":1,"message":"cut',  # cut short
        # not an object at all
        '["q", 1]',
        "[" * 5000 + "]" * 5000,
        "",
    ],
)
def test_a_notification_field_out_of_its_type_or_range_is_refused(payload: str) -> None:
    """Any role may NOTIFY on a queue's channel: every field is checked, whichever way
    the head was read (the regular expression, or JSON for any other key order)."""
    with pytest.raises((ValueError, KeyError, TypeError)):
        parse_notification(payload)


@pytest.mark.parametrize("delay", ["1e300", str(10**12), f"{MAX_DELAY + 1:.6f}"])
def test_a_delay_longer_than_a_send_may_ask_for_is_cut_to_that(delay: str) -> None:
    for payload in (
        _SIGNAL.format(msg_id=1, delay=delay),
        '{"delay":' + delay + ',"msg_id":1,"queue":"q"}',
    ):
        assert parse_notification(payload) == (Available("q", 1), MAX_DELAY)
    assert parse_notification(_SIGNAL.format(msg_id=1, delay=delay), max_delay=60.0)[1] == 60.0


def test_the_limits_of_each_field_are_accepted() -> None:
    for msg_id in (0, 2**63 - 1, -(2**63)):
        assert parse_notification(_SIGNAL.format(msg_id=msg_id, delay=0)) == (
            Available("q", msg_id),
            0.0,
        )
    note, _ = parse_notification(_FULL.format(read_ct=2**31 - 1, enqueued_at=-1.5))
    assert isinstance(note, Message)
    assert (note.message.receive_count, note.message.enqueued_at) == (2**31, -1.5)
    assert parse_notification('{"queue":"' + "q" * 47 + '","msg_id":1,"delay":0}')[1] == 0.0
