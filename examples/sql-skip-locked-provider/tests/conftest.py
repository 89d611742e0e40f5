"""Fixtures (defined in ``support``, importable by the tests as plain helpers)."""

from __future__ import annotations

from support import harness, harnesses, queue, service

__all__ = ["harness", "harnesses", "queue", "service"]
