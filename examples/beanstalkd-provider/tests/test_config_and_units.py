"""Settings, addresses, bodies and the renewal schedule (no server needed)."""

from __future__ import annotations

import pytest
from mqcontract.config import MessagingConfig, load_config
from mqcontract.errors import BackendUnavailable, ConfigurationError

from mqcontract_beanstalkd import BeanstalkdConfig, load_settings
from mqcontract_beanstalkd._config import parse_address
from mqcontract_beanstalkd._leases import Leases
from mqcontract_beanstalkd._tubes import HEADER_SIZE, Body
from mqcontract_beanstalkd.service import connect_beanstalkd


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BEANSTALKD_URL", raising=False)
    assert load_settings(MessagingConfig()).url == "127.0.0.1:11300"
    monkeypatch.setenv("BEANSTALKD_URL", "beanstalk://10.0.0.5:11400")
    assert load_settings(load_config(environ={})).url == "beanstalk://10.0.0.5:11400"


@pytest.mark.parametrize(
    ("key", "value"),
    [("tube_prefix", "a.b"), ("lease_seconds", 0), ("url", "http://x:1/y")],
)
def test_a_bad_setting_names_its_key(
    key: str, value: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BEANSTALKD_URL", raising=False)
    config = MessagingConfig(providers={"beanstalkd": {key: value}})
    with pytest.raises(ConfigurationError) as info:
        load_settings(config)
    assert info.value.key == f"providers.beanstalkd.{key}"


def test_addresses_parse() -> None:
    assert parse_address("127.0.0.1:11301") == ("127.0.0.1", 11301)
    assert parse_address("beanstalk://host") == ("host", 11300)
    with pytest.raises(ValueError, match="host:port"):
        parse_address("a:b:c")


def test_a_body_keeps_payload_send_time_and_incarnation() -> None:
    body = Body(b"\x00\xffpayload", 1_700_000_000.123456, 42)
    data = body.encode()
    assert len(data) == HEADER_SIZE + len(body.payload)
    assert Body.decode(data, sent_at=0) == body
    assert Body.decode(b"foreign", sent_at=5.0) == Body(b"foreign", 5.0, None)


def test_renewals_end_exactly_one_lease_before_the_deadline() -> None:
    leases = Leases(1.0)
    leases.add("q", 7, 1, reserved_at=0.0, visibility_timeout=2.3)
    assert leases.next_wake() == 0.5  # half a lease before the first expiry
    leases.touched(7, 0.5)
    assert leases.next_wake() == pytest.approx(1.0)
    leases.touched(7, 1.0)
    assert leases.next_wake() == pytest.approx(1.3)  # the last touch: deadline - lease
    leases.touched(7, 1.3)
    assert leases.due_now(1.31) == ([], [])  # expires at its deadline; nothing to touch
    touch, poke = leases.due_now(2.35)  # past the deadline: poke the connection
    assert touch == []
    assert [p.job_id for p in poke] == [7]


def test_a_short_timeout_lasts_the_lease() -> None:
    leases = Leases(1.0)
    leases.add("q", 8, 1, reserved_at=0.0, visibility_timeout=0.2)
    assert leases.due_now(0.5) == ([], [])
    assert leases.next_wake() == pytest.approx(1.01)


async def test_an_unreachable_server_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable) as info:
        await connect_beanstalkd(BeanstalkdConfig(url="127.0.0.1:1", connect_timeout_seconds=2.0))
    assert "127.0.0.1:1" in str(info.value)
