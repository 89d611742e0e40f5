"""Every error path of the foundation names its queue and limit, and redacts secrets."""

from __future__ import annotations

import math

import pytest

import mqcontract
from mqcontract import errors
from mqcontract._redact import redact
from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.validation import (
    check_delay,
    check_limit,
    check_payload,
    check_queue_name,
    check_visibility_timeout,
)

CAPS = Capabilities(push=PushKind.FULL, max_message_size_bytes=10, max_receive_limit=5)


def test_every_error_is_a_messaging_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.MessagingError)


def test_public_names_are_exported_and_exist() -> None:
    for name in mqcontract.__all__:
        assert hasattr(mqcontract, name), name


@pytest.mark.parametrize("name", ["", "A", "a-b", "a" * 48, "x;y", "caf\u00e9", 42, "1a"])
def test_invalid_queue_names_are_rejected(name: object) -> None:
    with pytest.raises(errors.InvalidQueueName) as info:
        check_queue_name(name)
    assert str(name) in str(info.value) or name == ""


def test_a_47_character_name_is_valid() -> None:
    assert check_queue_name("a" * 47) == "a" * 47


def test_message_too_large_names_queue_size_and_limit() -> None:
    with pytest.raises(errors.MessageTooLarge) as info:
        check_payload("jobs", b"x" * 11, CAPS)
    assert (info.value.queue, info.value.size, info.value.limit) == ("jobs", 11, 10)
    assert "jobs" in str(info.value)
    assert "10" in str(info.value)
    assert check_payload("jobs", b"x" * 10, CAPS) == b"x" * 10


def test_payload_must_be_bytes() -> None:
    with pytest.raises(errors.InvalidArgument, match="payload"):
        check_payload("jobs", "text", CAPS)


@pytest.mark.parametrize("limit", [0, -1, 6, 1.0, True, None])
def test_bad_limits(limit: object) -> None:
    with pytest.raises(errors.InvalidArgument, match="limit"):
        check_limit("jobs", limit, CAPS)


@pytest.mark.parametrize("vt", [0, -1, math.nan, math.inf, 10**9, "1", None])
def test_bad_visibility_timeouts(vt: object) -> None:
    with pytest.raises(errors.InvalidArgument, match="visibility_timeout"):
        check_visibility_timeout("jobs", vt, CAPS)


@pytest.mark.parametrize("delay", [-0.1, math.nan, -math.inf, math.inf, 10**9])
def test_bad_delays(delay: float) -> None:
    with pytest.raises(errors.InvalidArgument, match="delay_seconds") as info:
        check_delay("jobs", delay, CAPS)
    assert "jobs" in str(info.value)


def test_sub_second_values_are_allowed() -> None:
    assert check_visibility_timeout("q", 0.25, CAPS) == 0.25
    assert check_delay("q", 0, CAPS) == 0.0


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("amqp://guest:s3cret@host:5672/%2F", "s3cret"),
        ("postgresql://user:pa55@db/test", "pa55"),
        ("dsn host=db password=hunter2 user=x", "hunter2"),
    ],
)
def test_credentials_are_redacted(text: str, secret: str) -> None:
    assert secret not in redact(text)
    err = errors.BackendUnavailable("pgmq", text, f"could not connect to {text}")
    assert secret not in str(err)
    assert secret not in err.target


def test_structured_attributes() -> None:
    assert errors.QueueNotFound("q").queue == "q"
    assert errors.MessageNotFound("q", 7).msg_id == 7
    assert errors.UnsupportedOperation("memory", "fetch").operation == "fetch"
    assert "3 s" in str(errors.OperationTimeout("receive", 3, "q"))
    assert isinstance(errors.ProviderClosed("memory"), errors.BackendUnavailable)
