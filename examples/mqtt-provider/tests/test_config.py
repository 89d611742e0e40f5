"""Settings are checked, and the provider is found by name."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from mqcontract.config import MessagingConfig
from mqcontract.errors import ConfigurationError

from mqcontract_mqtt import load_settings


def test_the_entry_points_name_the_factory_and_the_harness() -> None:
    providers = {e.name: e.value for e in entry_points(group="mqcontract.providers")}
    harnesses = {e.name: e.value for e in entry_points(group="mqcontract.harnesses")}
    assert providers["mqtt"] == "mqcontract_mqtt:open_mqtt"
    assert harnesses["mqtt"] == "mqcontract_mqtt.harness:mqtt_harness"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("topic_prefix", "a/b"),
        ("topic_prefix", "$sys"),
        ("url", "http://x"),
        ("keepalive_seconds", 0),
    ],
)
def test_a_bad_setting_names_its_key(key: str, value: object) -> None:
    config = MessagingConfig(providers={"mqtt": {key: value}})
    with pytest.raises(ConfigurationError, match=key):
        load_settings(config)
