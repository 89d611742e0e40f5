"""The provider's settings: ``[providers.nats-jetstream]`` in mqcontract's TOML, then env."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mqcontract.config import MessagingConfig, provider_settings
from mqcontract.errors import ConfigurationError

__all__ = [
    "DEFAULT_NATS_URL",
    "ENV_KEYS",
    "MAX_REPLICAS",
    "PROVIDER_NAME",
    "NatsJetStreamConfig",
    "load_settings",
]

PROVIDER_NAME = "nats-jetstream"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
#: Environment variable -> setting; the environment wins over the TOML file.
ENV_KEYS = {
    "NATS_URL": "url",
    "NATS_JETSTREAM_PREFIX": "prefix",
    "NATS_JETSTREAM_REPLICAS": "replicas",
}
#: JetStream's own limit on a stream's replicas.
MAX_REPLICAS = 5
_PREFIX = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, kw_only=True)
class NatsJetStreamConfig:
    """``[providers.nats-jetstream]``."""

    #: One server, or several separated by commas (the nodes of one cluster): nats-py
    #: connects to one of them and fails over to the others.
    url: str = DEFAULT_NATS_URL
    #: Every stream this provider makes is named ``<prefix>_...`` and every subject starts
    #: with ``<prefix>.``: one prefix is one namespace of queues.
    prefix: str = "mqc"
    #: Replicas of every stream a queue is made of (its consumer inherits them): at most
    #: the nodes of the cluster, 1 on a server without one. Queues made before a change
    #: keep theirs.
    replicas: int = 1
    max_message_size_bytes: int = 1_048_576
    #: The consumer's ack wait: how long a message a receiver fetched stays invisible if
    #: that receiver dies before it sets the message's own timeout (a few milliseconds
    #: later, normally). Every claim then runs on its own timeout.
    fetch_grace_seconds: float = 10.0
    #: How long a pushed message stays held for its subscriber before it comes back.
    push_visibility_timeout_seconds: float = 60.0
    #: Messages one subscription may hold (pushed, not yet acked or nacked).
    prefetch_count: int = 100
    #: How long one waiting pull request of a subscription lasts; also the longest a
    #: closing subscription waits for the request it left open.
    push_poll_interval_seconds: float = 0.5
    #: Bound on connecting; every other operation uses ``operation_timeout_seconds``.
    connect_timeout_seconds: float = 5.0
    #: How long an acked message's claims ledger records stay before the stream is asked
    #: whether the message is gone and they are purged: longer than a node cut off from
    #: its majority keeps leading (nats-server: a few seconds), so the answer comes from
    #: a leader that has its majority. Until then a redelivery of an ack that did not
    #: land is finished, not handed out (see ``_forgetting``).
    ledger_retention_seconds: float = 30.0

    @property
    def servers(self) -> list[str]:
        """The server URLs in ``url``, in order (blanks around commas dropped)."""
        return [part.strip() for part in self.url.split(",") if part.strip()]


def load_settings(config: MessagingConfig) -> NatsJetStreamConfig:
    """Settings for ``config``, checked; ``ConfigurationError`` names a bad key."""
    settings = provider_settings(config, PROVIDER_NAME, NatsJetStreamConfig, env_keys=ENV_KEYS)
    checks = {
        "url": bool(settings.servers) and all(" " not in s for s in settings.servers),
        "prefix": _PREFIX.fullmatch(settings.prefix) is not None and len(settings.prefix) <= 40,
        "replicas": 1 <= settings.replicas <= MAX_REPLICAS,
        "max_message_size_bytes": settings.max_message_size_bytes >= 1,
        "fetch_grace_seconds": settings.fetch_grace_seconds >= 1,
        "push_visibility_timeout_seconds": settings.push_visibility_timeout_seconds > 0,
        "prefetch_count": settings.prefetch_count >= 1,
        "push_poll_interval_seconds": settings.push_poll_interval_seconds >= 0.05,
        "connect_timeout_seconds": settings.connect_timeout_seconds > 0,
        "ledger_retention_seconds": settings.ledger_retention_seconds >= 0,
    }
    for key, ok in checks.items():
        if not ok:
            value = getattr(settings, key)
            raise ConfigurationError(f"providers.{PROVIDER_NAME}.{key}", value, "out of range")
    return settings
