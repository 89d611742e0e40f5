"""Fixtures (defined in ``support``, importable by the tests as plain helpers)."""

from __future__ import annotations

from support import queue, service

__all__ = ["queue", "service"]
