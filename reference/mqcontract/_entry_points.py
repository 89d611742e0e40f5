"""The entry-point group providers register under, and the names registered there.

A leaf module: configuration checks a backend name against it and the registry loads
from it, without either importing the other.
"""

from __future__ import annotations

from importlib.metadata import entry_points

__all__ = ["ENTRY_POINT_GROUP", "provider_names"]

ENTRY_POINT_GROUP = "mqcontract.providers"


def provider_names() -> set[str]:
    """Names registered under the provider entry-point group."""
    return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
