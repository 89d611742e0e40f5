"""The provider's settings: ``[providers.mqtt]`` in mqcontract's TOML, then the environment."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from mqcontract.config import MessagingConfig, provider_settings
from mqcontract.errors import ConfigurationError

__all__ = [
    "DEFAULT_MQTT_URL",
    "ENV_KEYS",
    "PROVIDER_NAME",
    "Endpoint",
    "MqttConfig",
    "endpoint",
    "load_settings",
]

PROVIDER_NAME = "mqtt"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
#: Environment variable -> setting; the environment wins over the TOML file.
ENV_KEYS = {
    "MQTT_URL": "url",
    "MQTT_TOPIC_PREFIX": "topic_prefix",
}


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    """``[providers.mqtt]``."""

    #: ``mqtt://[user:password@]host[:port]``.
    url: str = DEFAULT_MQTT_URL
    #: Every topic this provider uses starts with ``<topic_prefix>/``.
    topic_prefix: str = "mqc"
    max_message_size_bytes: int = 1_048_576
    #: How long the broker keeps a service's session (its subscriptions and the messages
    #: it was sent but has not acknowledged) after the connection drops without a goodbye.
    #: Long enough to come back after a network cut; a crashed consumer's session keeps
    #: its share of new messages for this long too, and then the broker drops them.
    session_expiry_seconds: int = 60
    keepalive_seconds: int = 10
    #: The timeout a pushed claim states. MQTT enforces none (see the README): a pushed
    #: message stays with its consumer until acked or the session ends.
    push_visibility_timeout_seconds: float = 60.0
    #: Bound on connecting; every other operation uses ``operation_timeout_seconds``.
    connect_timeout_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the broker is, parsed from ``url``."""

    host: str
    port: int
    username: str | None
    password: str | None


def endpoint(settings: MqttConfig) -> Endpoint:
    """The broker address of ``settings.url``; ``ConfigurationError`` if it is not one."""
    try:
        parts = urlsplit(settings.url)
        port = parts.port or 1883
    except ValueError as exc:
        raise ConfigurationError(f"providers.{PROVIDER_NAME}.url", "(hidden)", str(exc)) from None
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ConfigurationError(
            f"providers.{PROVIDER_NAME}.url", "(hidden)", "expected mqtt://host[:port]"
        )
    return Endpoint(parts.hostname, port, parts.username, parts.password)


def _topic_level_ok(value: str) -> bool:
    """A non-empty topic level with no wildcard, separator or ``$`` start."""
    return bool(value) and not value.startswith("$") and not set(value) & {"/", "+", "#", "\0"}


def load_settings(config: MessagingConfig) -> MqttConfig:
    """Settings for ``config``, checked; ``ConfigurationError`` names a bad key."""
    settings = provider_settings(config, PROVIDER_NAME, MqttConfig, env_keys=ENV_KEYS)
    checks = {
        "topic_prefix": _topic_level_ok(settings.topic_prefix),
        "max_message_size_bytes": 1 <= settings.max_message_size_bytes <= 268_435_000,
        "session_expiry_seconds": 1 <= settings.session_expiry_seconds <= 2**32 - 2,
        "keepalive_seconds": 1 <= settings.keepalive_seconds <= 65_535,
        "push_visibility_timeout_seconds": settings.push_visibility_timeout_seconds > 0,
        "connect_timeout_seconds": settings.connect_timeout_seconds > 0,
    }
    for key, ok in checks.items():
        if not ok:
            value = getattr(settings, key)
            raise ConfigurationError(f"providers.{PROVIDER_NAME}.{key}", value, "out of range")
    endpoint(settings)
    return settings
