"""The provider's settings: ``[providers.beanstalkd]`` in mqcontract's TOML, then env."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mqcontract.config import MessagingConfig, provider_settings
from mqcontract.errors import ConfigurationError

__all__ = [
    "DEFAULT_URL",
    "ENV_KEYS",
    "PROVIDER_NAME",
    "BeanstalkdConfig",
    "load_settings",
    "parse_address",
]

PROVIDER_NAME = "beanstalkd"
DEFAULT_URL = "127.0.0.1:11300"
#: Environment variable -> setting; the environment wins over the TOML file.
ENV_KEYS = {
    "BEANSTALKD_URL": "url",
    "BEANSTALKD_TUBE_PREFIX": "tube_prefix",
}

_ADDRESS = re.compile(
    r"^(?:beanstalkd?://)?(?P<host>[^:/\s]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d+))?/?$"
)


@dataclass(frozen=True, kw_only=True)
class BeanstalkdConfig:
    """``[providers.beanstalkd]``."""

    #: ``host:port`` or ``beanstalk://host:port``.
    url: str = DEFAULT_URL
    #: Every tube this provider uses starts with ``<tube_prefix>.``.
    tube_prefix: str = "mqc"
    #: Each job's time-to-run: how long a claim lives without being renewed. Visibility
    #: timeouts shorter than this last this long; longer ones are renewed with ``touch``.
    lease_seconds: int = 1
    #: Poll interval suggested to consumers (the provider has no push).
    poll_interval_seconds: float = 0.5
    #: Bound on connecting; every other operation uses ``operation_timeout_seconds``.
    connect_timeout_seconds: float = 5.0


def parse_address(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``url``; ``ValueError`` if it is not one."""
    match = _ADDRESS.match(url.strip())
    if match is None:
        raise ValueError("expected host:port or beanstalk://host:port")
    port = int(match["port"] or 11300)
    if not 0 < port < 65536:
        raise ValueError("port out of range")
    return match["host"].strip("[]"), port


def load_settings(config: MessagingConfig) -> BeanstalkdConfig:
    """Settings for ``config``, checked; ``ConfigurationError`` names a bad key."""
    settings = provider_settings(config, PROVIDER_NAME, BeanstalkdConfig, env_keys=ENV_KEYS)
    try:
        parse_address(settings.url)
        url_ok = True
    except ValueError:
        url_ok = False
    checks = {
        "url": url_ok,
        # Tube names allow letters, digits and - + / ; . $ _ ( ); the prefix must not
        # contain the "." that separates it from the rest, so names parse back.
        "tube_prefix": re.fullmatch(r"[A-Za-z0-9_]{1,100}", settings.tube_prefix) is not None,
        "lease_seconds": 1 <= settings.lease_seconds <= 3600,
        "poll_interval_seconds": settings.poll_interval_seconds > 0,
        "connect_timeout_seconds": settings.connect_timeout_seconds > 0,
    }
    for key, ok in checks.items():
        if not ok:
            value = "(hidden)" if key == "url" else getattr(settings, key)
            raise ConfigurationError(f"providers.{PROVIDER_NAME}.{key}", value, "out of range")
    return settings
