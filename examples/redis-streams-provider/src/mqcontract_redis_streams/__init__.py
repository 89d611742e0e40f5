"""A Redis Streams provider for mqcontract, verified by mqcontract's conformance suite.

``open_redis_streams`` is the factory registered under the ``mqcontract.providers``
entry point as ``redis-streams``; the harness for the suite lives in :mod:`.harness`.
"""

from __future__ import annotations

from mqcontract_redis_streams._config import RedisStreamsConfig, load_settings
from mqcontract_redis_streams.service import (
    RedisStreamsMessagingService,
    connect_redis_streams,
    open_redis_streams,
)

__version__ = "0.1.0"

__all__ = [
    "RedisStreamsConfig",
    "RedisStreamsMessagingService",
    "connect_redis_streams",
    "load_settings",
    "open_redis_streams",
]
