"""Which PGMQ versions the provider runs on, and the upgrade path of a SQL install.

An upgrade runs PGMQ's own upgrade scripts (``pgmq--<from>--<to>.sql``, as in the
extension's ``sql/`` directory), never a re-run of the full install script (not
idempotent) nor SQL of ours. The scripts come from the ``pgmq`` package's ``sql/``
directory when it ships them, and from directories the caller names (``mqcontract pgmq
install --upgrade-scripts DIR``); the shortest chain from the installed version to the
shipped one is run, in the install's transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from mqcontract.errors import MessagingError

__all__ = [
    "TESTED_PGMQ_VERSIONS",
    "UNKNOWN",
    "UnsupportedPgmqVersion",
    "UpgradeStep",
    "available_steps",
    "is_supported",
    "script_sql",
    "shipped_directories",
    "upgrade_path",
]

#: PGMQ versions the provider's tests ran against. A version not listed is refused:
#: the provider writes PGMQ's tables with its own SQL, so a changed layout would break it.
TESTED_PGMQ_VERSIONS: tuple[str, ...] = ("1.13.0",)

#: ``unknown``: a SQL install by another tool records no version; it is taken as it is.
UNKNOWN = "unknown"

_SCRIPT_NAME = re.compile(r"pgmq--(\d+(?:\.\d+)*)--(\d+(?:\.\d+)*)\.sql")


class UnsupportedPgmqVersion(MessagingError):
    """The database has a PGMQ version this provider was not tested with (and no upgrade
    to a tested one could be run)."""

    def __init__(self, found: str, detail: str = "") -> None:
        self.found = found
        self.supported = TESTED_PGMQ_VERSIONS
        super().__init__(
            f"pgmq: this database has PGMQ {found}; this mqcontract is tested with PGMQ "
            f"{', '.join(TESTED_PGMQ_VERSIONS)} only{'. ' + detail if detail else ''}"
        )


def is_supported(version: str) -> bool:
    """Whether the provider may run against PGMQ ``version`` (``unknown`` is let through)."""
    return version == UNKNOWN or version in TESTED_PGMQ_VERSIONS


@dataclass(frozen=True, slots=True)
class UpgradeStep:
    """One of PGMQ's upgrade scripts."""

    source: str
    target: str
    script: Traversable


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def available_steps(directories: Iterable[Traversable | Path]) -> list[UpgradeStep]:
    """The ``pgmq--A--B.sql`` scripts in ``directories`` (later ones win for the same step)."""
    steps: dict[tuple[str, str], UpgradeStep] = {}
    for directory in directories:
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            match = _SCRIPT_NAME.fullmatch(entry.name)
            if match:
                steps[(match[1], match[2])] = UpgradeStep(match[1], match[2], entry)
    return sorted(steps.values(), key=lambda s: (_key(s.source), _key(s.target)))


def shipped_directories() -> list[Traversable]:
    """Where the ``pgmq`` package keeps its SQL (upgrade scripts, when it ships any)."""
    return [files("pgmq").joinpath("sql")]


def upgrade_path(steps: Sequence[UpgradeStep], source: str, target: str) -> list[UpgradeStep]:
    """The shortest chain of ``steps`` from ``source`` to ``target`` (empty: none, or
    nothing to do), preferring the larger jump where chains are equally short."""
    if source == target:
        return []
    frontier: list[tuple[str, list[UpgradeStep]]] = [(source, [])]
    seen = {source}
    while frontier:
        following: list[tuple[str, list[UpgradeStep]]] = []
        for version, chain in frontier:
            nexts = sorted((s for s in steps if s.source == version), key=lambda s: _key(s.target))
            for step in reversed(nexts):
                if step.target == target:
                    return [*chain, step]
                if step.target not in seen:
                    seen.add(step.target)
                    following.append((step.target, [*chain, step]))
        frontier = following
    return []


def script_sql(step: UpgradeStep) -> str:
    """A script as a SQL-only install runs it: ``@extschema@`` is ``pgmq``, and psql's
    ``\\echo`` guard (against running it outside ALTER EXTENSION) is left out."""
    text = step.script.read_text(encoding="utf-8")
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("\\echo"))
    return "\n".join(lines).replace("@extschema@", "pgmq")
