"""The harness hooks act on the broker: a take-over really cuts the connection."""

from __future__ import annotations

import pytest
from mqcontract.config import MessagingConfig
from mqcontract.testing import HarnessSettings, HookUnavailable

from mqcontract_mqtt import MqttMessagingService
from mqcontract_mqtt.harness import KNOWN_BROKEN, MqttHarness, mqtt_harness, take_over
from support import eventually, mqtt_settings


async def test_take_over_cuts_the_connection_and_the_session_resends(
    service: MqttMessagingService, queue: str
) -> None:
    await service.send_message(queue, b"held")
    [before] = await service.receive_messages(queue, 1, 30)
    generation = service.link.generation
    await take_over(service, mqtt_settings())
    await eventually(lambda: service.link.connected and service.link.generation > generation)
    [again] = await service.receive_messages(queue, 1, 30)
    assert (again.msg_id, again.receive_count) == (before.msg_id, 2)  # sent again, dup
    await service.ack_claim(queue, again)


async def test_the_harness_gives_each_run_its_own_prefix() -> None:
    harness = mqtt_harness(HarnessSettings(config=MessagingConfig(), run_id="AbC1w0"))
    assert isinstance(harness, MqttHarness)
    assert harness.config.topic_prefix.endswith("_abc1w0")


async def test_hooks_mqtt_cannot_offer_say_why(service: MqttMessagingService) -> None:
    harness = mqtt_harness(HarnessSettings(config=MessagingConfig(), run_id="hooks0"))
    with pytest.raises(HookUnavailable, match="subscribing"):
        await harness.stored_ids(service, "q")
    with pytest.raises(HookUnavailable, match="subscription"):
        await harness.kill_listener(service)


def test_every_known_broken_rule_says_why_in_words() -> None:
    assert KNOWN_BROKEN
    assert all(len(reason) > 60 for reason in KNOWN_BROKEN.values())
