"""The event system: queue listeners, the fallback poller and deployment modes."""

from __future__ import annotations

from mqcontract.events.commands import (
    Intake,
    ProcessClaimed,
    ProcessFromMessage,
    ProcessFromMessageEvent,
)
from mqcontract.events.consumer import ConsumerSettings, Handler, QueueConsumer
from mqcontract.events.modes import DeploymentMode
from mqcontract.events.stats import ConsumerStats

__all__ = [
    "ConsumerSettings",
    "ConsumerStats",
    "DeploymentMode",
    "Handler",
    "Intake",
    "ProcessClaimed",
    "ProcessFromMessage",
    "ProcessFromMessageEvent",
    "QueueConsumer",
]
