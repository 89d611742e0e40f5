"""Stress accounts (``mqcontract stress --json``) as rows of the compatibility report.

The conformance rules say what a provider does once; a stress account says what it did
under load and faults (nothing lost, nothing processed twice). The report shows both, so a
reader sees in one place which providers passed the rules and held up under load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mqcontract._redact import redact
from mqcontract_conformance.report.documents import ReportError, read_documents
from mqcontract_conformance.stress import FAULTS
from mqcontract_conformance.stress.account import STRESS_FORMAT

__all__ = ["COUNTS", "STRESS_INTRO", "StressRun", "load_stress"]

#: What the section says about the accounts (Markdown and HTML alike).
STRESS_INTRO = (
    "Accounts written by `mqcontract stress --json`: producers and event-system consumers "
    "over one queue, with failing and overrunning handlers, optionally under faults. "
    "Clean means nothing lost, nothing left over, nothing foreign, no work confirmed twice "
    "(duplicated, acked twice), and without faults nothing processed twice at all; "
    "reprocessed work under faults is the at-least-once promise."
)

#: Counts copied from an account, in display order.
COUNTS = (
    "sent",
    "processed",
    "lost",
    "duplicated",
    "acked_twice",
    "reprocessed",
    "unexpected",
    "max_redelivery",
)


@dataclass(frozen=True)
class StressRun:
    """One account: which provider and fault, its counts, and whether it was clean."""

    source: str
    provider: str
    fault: str
    counts: dict[str, int]
    faults_injected: int
    acked_per_second: float
    ok: bool
    backend: dict[str, str]
    #: The consumers' deployment mode (accounts from before ``--mode`` ran Hybrid).
    mode: str = "Hybrid"
    #: On a cluster, the nodes the clients were given: ``node0`` or ``all``.
    clients: str = "node0"

    @property
    def sort_key(self) -> tuple[str, int, str, str, str]:
        known = self.fault in FAULTS
        index = FAULTS.index(self.fault) if known else len(FAULTS)
        return (self.provider, index, self.fault, self.mode, self.clients)

    @property
    def label(self) -> str:
        """The fault, and what differs from the defaults: the consumers' mode when not
        Hybrid, clients on every node of a cluster."""
        notes = [self.mode] if self.mode != "Hybrid" else []
        if self.clients == "all":
            notes.append("clients on every node")
        return f"{self.fault} ({', '.join(notes)})" if notes else self.fault

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "provider": self.provider,
            "fault": self.fault,
            "mode": self.mode,
            "clients": self.clients,
            **self.counts,
            "faults_injected": self.faults_injected,
            "acked_per_second": self.acked_per_second,
            "clean": self.ok,
            "backend": self.backend,
        }


def _run(source: str, doc: dict[str, Any]) -> StressRun:
    settings = doc.get("settings")
    if not isinstance(settings, dict) or not all(k in doc for k in (*COUNTS, "ok", "faults")):
        raise ReportError(f"{source}: not an mqcontract stress account")
    return StressRun(
        source=source,
        provider=str(settings.get("provider", "?")),
        fault=str(settings.get("fault", "none")),
        counts={k: int(doc[k]) for k in COUNTS},
        faults_injected=int(doc["faults"].get("injected", 0)),
        acked_per_second=float(doc.get("acked_per_second", 0.0)),
        ok=bool(doc["ok"]),
        backend={str(k): redact(str(v)) for k, v in dict(doc.get("backend") or {}).items()},
        mode=str(settings.get("mode") or "Hybrid"),
        clients=str(settings.get("clients") or "node0"),
    )


def load_stress(paths: list[Path]) -> list[StressRun]:
    """Every account in ``paths`` (files, or directories of ``*.json``), sorted.

    A directory that does not exist holds no accounts; a named file that does not exist,
    or a file that is not an account (by its ``format``), is an error, so nothing is
    silently left out.
    """
    docs = read_documents(paths, {STRESS_FORMAT}, "an mqcontract stress account")
    return sorted((_run(name, doc) for name, doc in docs), key=lambda r: r.sort_key)
