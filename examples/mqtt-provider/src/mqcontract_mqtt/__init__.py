"""An MQTT (QoS 1) provider for mqcontract: what a pub/sub broker can and cannot promise.

``open_mqtt`` is the factory registered under the ``mqcontract.providers`` entry point as
``mqtt``; the harness for the suite, with the rules MQTT is known to break and why, lives
in :mod:`.harness`.
"""

from __future__ import annotations

from mqcontract_mqtt._config import MqttConfig, load_settings
from mqcontract_mqtt.service import MqttMessagingService, connect_mqtt, open_mqtt

__version__ = "0.1.0"

__all__ = ["MqttConfig", "MqttMessagingService", "connect_mqtt", "load_settings", "open_mqtt"]
