"""A NATS JetStream provider for mqcontract, verified by mqcontract's conformance suite.

``open_nats_jetstream`` is the factory registered under the ``mqcontract.providers``
entry point as ``nats-jetstream``; the harness for the suite lives in :mod:`.harness`.
"""

from __future__ import annotations

from mqcontract_nats_jetstream._config import NatsJetStreamConfig, load_settings
from mqcontract_nats_jetstream.service import (
    NatsJetStreamMessagingService,
    connect_nats_jetstream,
    open_nats_jetstream,
)

__version__ = "0.1.0"

__all__ = [
    "NatsJetStreamConfig",
    "NatsJetStreamMessagingService",
    "connect_nats_jetstream",
    "load_settings",
    "open_nats_jetstream",
]
