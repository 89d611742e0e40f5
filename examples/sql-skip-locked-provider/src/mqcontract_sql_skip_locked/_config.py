"""Settings of both providers: ``[providers.sql-postgres]`` / ``[providers.sql-mariadb]``
in mqcontract's TOML, then the environment."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mqcontract.config import MessagingConfig, provider_settings
from mqcontract.errors import ConfigurationError

__all__ = [
    "MARIADB",
    "POSTGRES",
    "SqlQueueConfig",
    "load_settings",
]

POSTGRES = "sql-postgres"
MARIADB = "sql-mariadb"

#: Provider name -> (default URL, environment variable for the URL).
_DEFAULT_URLS = {
    POSTGRES: ("postgresql://127.0.0.1:5432/test", "SQL_POSTGRES_URL"),
    MARIADB: ("mysql://root@127.0.0.1:3306/test", "SQL_MARIADB_URL"),
}


@dataclass(frozen=True, kw_only=True)
class SqlQueueConfig:
    """``[providers.sql-postgres]`` or ``[providers.sql-mariadb]`` (same keys)."""

    #: ``postgresql://user:password@host:port/database`` or ``mysql://...`` (MariaDB).
    url: str = ""
    #: Every table this provider uses starts with this (``<prefix>_queues``,
    #: ``<prefix>_messages``), so several installations can share one database.
    table_prefix: str = "mqc"
    max_message_size_bytes: int = 1_048_576
    #: The interval consumers poll at: neither provider pushes (see the README).
    poll_interval_seconds: float = 0.5
    #: Connections one service keeps open at most.
    pool_size: int = 10
    #: Bound on opening a connection; every other call uses ``operation_timeout_seconds``.
    connect_timeout_seconds: float = 5.0


def load_settings(config: MessagingConfig, provider: str) -> SqlQueueConfig:
    """Settings of ``provider`` (``sql-postgres`` or ``sql-mariadb``), checked;
    ``ConfigurationError`` names a bad key."""
    default_url, url_variable = _DEFAULT_URLS[provider]
    settings = provider_settings(config, provider, SqlQueueConfig, env_keys={url_variable: "url"})
    if not settings.url:
        settings = dataclasses.replace(settings, url=default_url)
    checks = {
        "table_prefix": settings.table_prefix.isidentifier()
        and settings.table_prefix.isascii()
        and settings.table_prefix.islower()
        and len(settings.table_prefix) <= 30,
        "max_message_size_bytes": 1 <= settings.max_message_size_bytes <= 16 * 1_048_576 - 4096,
        "poll_interval_seconds": settings.poll_interval_seconds > 0,
        "pool_size": settings.pool_size >= 1,
        "connect_timeout_seconds": settings.connect_timeout_seconds > 0,
    }
    for key, ok in checks.items():
        if not ok:
            value = getattr(settings, key)
            raise ConfigurationError(f"providers.{provider}.{key}", value, "out of range")
    return settings
