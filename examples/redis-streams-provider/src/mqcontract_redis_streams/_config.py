"""The provider's settings: ``[providers.redis-streams]`` in mqcontract's TOML, then env."""

from __future__ import annotations

from dataclasses import dataclass

from mqcontract.config import MessagingConfig, provider_settings
from mqcontract.errors import ConfigurationError

__all__ = ["DEFAULT_REDIS_URL", "ENV_KEYS", "PROVIDER_NAME", "RedisStreamsConfig", "load_settings"]

PROVIDER_NAME = "redis-streams"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Environment variable -> setting; the environment wins over the TOML file.
ENV_KEYS = {
    "REDIS_URL": "url",
    "REDIS_STREAMS_KEY_PREFIX": "key_prefix",
}


@dataclass(frozen=True, kw_only=True)
class RedisStreamsConfig:
    """``[providers.redis-streams]``."""

    url: str = DEFAULT_REDIS_URL
    #: Every key this provider writes starts with ``<key_prefix>:``.
    key_prefix: str = "mqc"
    max_message_size_bytes: int = 1_048_576
    #: How long a pushed message stays held for its subscriber before it comes back.
    push_visibility_timeout_seconds: float = 60.0
    #: Messages one subscription may hold (pushed, not yet acked or nacked).
    prefetch_count: int = 100
    #: Longest a subscription waits before looking for expired, released or due messages;
    #: new messages wake it at once.
    push_poll_interval_seconds: float = 0.5
    #: Bound on connecting; every other operation uses ``operation_timeout_seconds``.
    connect_timeout_seconds: float = 5.0
    #: Connections one client opens at most; a call beyond them waits for one to be free.
    max_connections: int = 50


def load_settings(config: MessagingConfig) -> RedisStreamsConfig:
    """Settings for ``config``, checked; ``ConfigurationError`` names a bad key."""
    settings = provider_settings(config, PROVIDER_NAME, RedisStreamsConfig, env_keys=ENV_KEYS)
    checks = {
        "key_prefix": bool(settings.key_prefix) and ":" not in settings.key_prefix,
        "prefetch_count": settings.prefetch_count >= 1,
        "max_message_size_bytes": settings.max_message_size_bytes >= 1,
        "push_visibility_timeout_seconds": settings.push_visibility_timeout_seconds > 0,
        "push_poll_interval_seconds": settings.push_poll_interval_seconds > 0,
        "connect_timeout_seconds": settings.connect_timeout_seconds > 0,
        "max_connections": settings.max_connections >= 1,
    }
    for key, ok in checks.items():
        if not ok:
            value = getattr(settings, key)
            raise ConfigurationError(f"providers.{PROVIDER_NAME}.{key}", value, "out of range")
    return settings
