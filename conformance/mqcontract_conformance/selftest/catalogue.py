"""The kit's broken providers, each tied to the rule written to catch its defect.

A specimen is a small subclass of the in-memory provider that breaks one promise a
competent author could plausibly break, with honest capabilities. Its rule must fail
it; the rule must pass ``reference`` (the correct provider it was derived from).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.testing import Harness

__all__ = ["SPECIMEN_MODULES", "Specimen", "all_specimens"]


@dataclass(frozen=True)
class Specimen:
    """One broken provider and the rule that must catch it."""

    cls: type[InMemoryMessagingService]
    #: The rule written for this defect (e.g. ``"ACK-1"``).
    rule: str
    #: The correct provider the rule passes (the broken one's base, before the defect).
    reference: type[InMemoryMessagingService] = InMemoryMessagingService
    #: Builds the harness the specimen runs under (None: the standard specimen harness,
    #: an in-memory store on a virtual clock with the fault hooks it can play).
    harness: Callable[[type[InMemoryMessagingService]], Harness] | None = None

    @property
    def name(self) -> str:
        return self.cls.__name__

    @property
    def defect(self) -> str:
        """The docstring's first paragraph (one sentence, maybe wrapped): what is broken."""
        doc = (self.cls.__doc__ or "").strip()
        return " ".join(doc.split("\n\n")[0].split()) if doc else self.name


#: Modules holding specimens; each defines ``SPECIMENS: tuple[Specimen, ...]``.
SPECIMEN_MODULES: tuple[str, ...] = (
    "mqcontract_conformance.selftest.broken_core",
    "mqcontract_conformance.selftest.broken_groups",
    "mqcontract_conformance.selftest.broken_hostile",
    "mqcontract_conformance.selftest.broken_push",
    "mqcontract_conformance.selftest.broken_redelivery",
    "mqcontract_conformance.selftest.broken_model",
    "mqcontract_conformance.selftest.broken_declared",
    "mqcontract_conformance.selftest.broken_overclaimed",
    "mqcontract_conformance.selftest.broken_holders",
    "mqcontract_conformance.selftest.broken_durability",
    "mqcontract_conformance.selftest.broken_pool",
    "mqcontract_conformance.selftest.broken_cancel",
    "mqcontract_conformance.selftest.broken_incarnation",
    "mqcontract_conformance.selftest.broken_scope",
    "mqcontract_conformance.selftest.broken_fidelity",
    "mqcontract_conformance.selftest.broken_volume",
    "mqcontract_conformance.selftest.broken_sharing",
    "mqcontract_conformance.selftest.broken_claim_paths",
    "mqcontract_conformance.selftest.broken_multiqueue",
    "mqcontract_conformance.selftest.broken_sizes",
    "mqcontract_conformance.selftest.broken_horizons",
    "mqcontract_conformance.selftest.broken_payload_paths",
    "mqcontract_conformance.selftest.broken_recreate",
    "mqcontract_conformance.selftest.broken_counts",
    "mqcontract_conformance.selftest.broken_release",
    "mqcontract_conformance.selftest.broken_early",
)


def all_specimens() -> list[Specimen]:
    """Every specimen, in module order; names are unique."""
    found: list[Specimen] = []
    for name in SPECIMEN_MODULES:
        found.extend(importlib.import_module(name).SPECIMENS)
    names = [s.name for s in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuntimeError(f"specimen names must be unique: {duplicates}")
    return found
