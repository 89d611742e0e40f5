"""``my_package.harness:make_harness``: a harness factory ``(HarnessSettings) -> Harness``."""

from __future__ import annotations

from mqcontract_fixtures.memory import memory_harness as make_harness

__all__ = ["make_harness"]
