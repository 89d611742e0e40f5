"""Reading the JSON documents a report is made from (results, stress accounts)."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

__all__ = ["ReportError", "read_documents"]


class ReportError(Exception):
    """An input file is not a readable mqcontract result."""


def read_documents(
    paths: list[Path], formats: Collection[str], what: str, skip: Collection[str] = ()
) -> list[tuple[str, dict[str, Any]]]:
    """``(file name, document)`` for every JSON file in ``paths`` of one of ``formats``.

    Directories give their ``*.json`` (none if missing); a named file that is missing,
    unreadable or of another format raises :class:`ReportError` naming it as not ``what``.
    Documents of a ``skip`` format are passed over: another input sharing the directory.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.json"))
        elif path.exists() or path.suffix == ".json":
            files.append(path)
    docs = []
    for file in sorted(set(files)):
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReportError(f"{file}: {exc}") from None
        if isinstance(doc, dict) and doc.get("format") in skip:
            continue
        if not isinstance(doc, dict) or doc.get("format") not in formats:
            raise ReportError(f"{file}: not {what} (format)")
        docs.append((file.name, doc))
    return docs
