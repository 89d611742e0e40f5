"""Deployment modes and the rule that adapts a requested mode to a provider.

``effective_for_provider`` is a documented table, not a special case per provider name:

=====================  ===========================  ==========================
requested              provider                     effective
=====================  ===========================  ==========================
any                    no push                      PollingOnly
EventDrivenOnly        requires fallback polling    Hybrid (never without it)
EventDrivenOnly        push, no fallback needed     EventDrivenOnly
Hybrid                 push                         Hybrid
PollingOnly            any                          PollingOnly
=====================  ===========================  ==========================

Unlike the original system, a requested mode is never silently downgraded: a provider
that can miss notifications always gets its fallback poller.
"""

from __future__ import annotations

import enum

from mqcontract.capabilities import Capabilities, PushKind

__all__ = ["DeploymentMode"]


class DeploymentMode(enum.StrEnum):
    """How an event system receives work."""

    EVENT_DRIVEN_ONLY = "EventDrivenOnly"  #: listener only
    HYBRID = "Hybrid"  #: listener plus fallback poller
    POLLING_ONLY = "PollingOnly"  #: poller only

    def effective_for_provider(self, caps: Capabilities) -> DeploymentMode:
        """The mode actually run for a provider with ``caps`` (see the module table)."""
        if caps.push is PushKind.NONE or self is DeploymentMode.POLLING_ONLY:
            return DeploymentMode.POLLING_ONLY
        if self is DeploymentMode.EVENT_DRIVEN_ONLY and caps.requires_fallback_polling:
            return DeploymentMode.HYBRID
        return self

    @property
    def listens(self) -> bool:
        """Whether this mode subscribes."""
        return self is not DeploymentMode.POLLING_ONLY

    @property
    def polls(self) -> bool:
        """Whether this mode runs the fallback poller."""
        return self is not DeploymentMode.EVENT_DRIVEN_ONLY
