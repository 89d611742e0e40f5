"""``mqcontract bench --json`` results, read for the report's throughput column.

A bench run times the same work through the provider and through the raw driver, in one
process and interleaved; the report shows, per provider, the provider / raw ratios of
that run. Only a run's own JSON is read (its Markdown is made from it), and by default
only ``bench/results.json`` beside the results directory: a bench directory may also
hold experiments (a provider with a guarantee patched out) that are not its headline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqcontract_conformance.report.documents import ReportError

__all__ = [
    "BENCH_FILE",
    "BENCH_FILES",
    "BENCH_TOOL",
    "RAW_SIDE",
    "BenchRun",
    "default_bench_paths",
    "load_bench",
]

#: What ``mqcontract bench --json`` puts in its ``tool`` field.
BENCH_TOOL = "mqcontract bench"
#: The headline run's file name in a bench directory.
BENCH_FILE = "results.json"
#: The published bench runs read by default: the reference providers' run and the example
#: providers' run (experiments beside them, e.g. ``pgmq-before-fixes.json``, are not read).
BENCH_FILES = (BENCH_FILE, "examples.json")
#: The side a provider is compared with ("against the raw driver").
RAW_SIDE = "raw"


@dataclass(frozen=True)
class BenchRun:
    """One provider's part of a bench run: its provider / raw ratio per workload."""

    source: str
    provider: str
    started_at: str
    command: str
    #: What the raw side is (``asyncpg 0.32.0``); empty when the run had no raw side.
    raw_client: str = ""
    #: Workload title -> median of the per-round provider / raw throughput ratios.
    ratios: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "started_at": self.started_at,
            "command": self.command,
            "raw_client": self.raw_client,
            "provider_per_raw": self.ratios,
        }


def default_bench_paths(results: list[Path]) -> list[Path]:
    """``bench/results.json`` and ``bench/examples.json`` beside each results directory (or a
    results file's directory).

    ``reports/results`` gives ``reports/bench/results.json``: the published layout, wherever
    the report is written.
    """
    found = []
    for path in results:
        directory = path if path.is_dir() else path.parent
        for name in BENCH_FILES:
            candidate = directory.parent / "bench" / name
            if candidate.is_file():
                found.append(candidate)
    return sorted(set(found))


def _runs(source: str, doc: dict[str, Any]) -> list[BenchRun]:
    providers = doc.get("providers")
    if doc.get("tool") != BENCH_TOOL or not isinstance(providers, dict):
        raise ReportError(f"{source}: not an mqcontract bench result (tool)")
    runs = []
    for name, result in providers.items():
        sides = dict(result.get("sides") or {})
        ratios = {}
        for entry in result.get("throughput") or []:
            median = dict(entry.get("ratios") or {}).get(f"provider/{RAW_SIDE}", {}).get("median")
            if isinstance(median, int | float) and not isinstance(median, bool):
                ratios[str(entry.get("title") or entry.get("workload"))] = float(median)
        runs.append(
            BenchRun(
                source=source,
                provider=str(name),
                started_at=str(doc.get("started_at", "")),
                command=str(doc.get("command", "")),
                raw_client=str(sides.get(RAW_SIDE, "")).split(":", 1)[0].strip(),
                ratios=ratios,
            )
        )
    return runs


def load_bench(paths: list[Path]) -> list[BenchRun]:
    """Every provider's run in ``paths``; a directory gives its ``results.json``.

    A provider in more than one file is taken from the run that started last. A named
    file that is missing or is not a bench result is an error, so nothing is silently
    left out.
    """
    newest: dict[str, BenchRun] = {}
    for path in paths:
        file = path / BENCH_FILE if path.is_dir() else path
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReportError(f"{file}: {exc}") from None
        if not isinstance(doc, dict):
            raise ReportError(f"{file}: not an mqcontract bench result")
        for run in _runs(file.name, doc):
            held = newest.get(run.provider)
            if held is None or run.started_at >= held.started_at:
                newest[run.provider] = run
    return [newest[name] for name in sorted(newest)]
