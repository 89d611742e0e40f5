"""Settings of the SQLite provider, read from ``[providers.sqlite]`` and the environment."""

from __future__ import annotations

from dataclasses import dataclass

from mqcontract import MessagingConfig
from mqcontract.config import provider_settings
from mqcontract.errors import ConfigurationError

PROVIDER_NAME = "sqlite"

ENV_KEYS = {
    "MQ_SQLITE_PATH": "path",
    "MQ_SQLITE_POLL_INTERVAL_SECONDS": "poll_interval_seconds",
}


@dataclass(frozen=True, kw_only=True)
class SqliteSettings:
    """Where the database lives and how the provider uses it.

    ``path`` is the database file (created on first use, parent directory included).
    ``poll_interval_seconds`` is the interval suggested to polling consumers.
    ``busy_timeout_seconds`` is how long one statement waits for another connection's
    write lock before giving up.
    """

    path: str = "mq_sqlite.db"
    poll_interval_seconds: float = 0.25
    busy_timeout_seconds: float = 5.0
    max_message_size_bytes: int = 1_048_576
    synchronous: str = "NORMAL"


_SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def load_settings(config: MessagingConfig) -> SqliteSettings:
    """Defaults, then ``[providers.sqlite]`` in the TOML file, then ``MQ_SQLITE_*``."""
    settings = provider_settings(config, PROVIDER_NAME, SqliteSettings, env_keys=ENV_KEYS)
    prefix = f"providers.{PROVIDER_NAME}"
    if not settings.path:
        raise ConfigurationError(f"{prefix}.path", settings.path, "must not be empty")
    if settings.poll_interval_seconds <= 0:
        raise ConfigurationError(
            f"{prefix}.poll_interval_seconds", settings.poll_interval_seconds, "must be > 0"
        )
    if settings.max_message_size_bytes <= 0:
        raise ConfigurationError(
            f"{prefix}.max_message_size_bytes", settings.max_message_size_bytes, "must be > 0"
        )
    if settings.synchronous.upper() not in _SYNCHRONOUS_MODES:
        raise ConfigurationError(
            f"{prefix}.synchronous", settings.synchronous, f"must be one of {_SYNCHRONOUS_MODES}"
        )
    return settings
