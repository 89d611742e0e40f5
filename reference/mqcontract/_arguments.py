"""Argument types and checks the kit's commands share, so a mistake fails before any work.

The types reject what argparse's ``int`` and ``float`` accept but no run can honour
(``nan``, ``inf``, a negative count, a share of 2); argparse then names the flag. The
output checks fail on a path a run could not write at its end, as one line naming the
flag (``ERROR: --json PATH: ...``), the way ``mqcontract verify`` reports its mistakes.
It lives in the abstraction's package (imports nothing of the kit's), so the kit's commands
and ``mqcontract demo`` share it, and ``verify`` may use it before pytest starts.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

__all__ = [
    "check_directory",
    "check_file",
    "count",
    "output_problem",
    "positive_int",
    "positive_number",
    "share",
    "usage_error",
]

#: The exit status of a command-line mistake (argparse's).
USAGE = 2


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def count(text: str) -> int:
    """A whole number of at least 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def positive_number(text: str) -> float:
    """A finite number greater than 0 (seconds, a factor)."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


def share(text: str) -> float:
    """A finite number from 0 up to (not including) 1."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and less than 1, not {text}")
    return value


def check_file(path: str | Path) -> None:
    """Raise ``OSError`` now if a file could not be written to ``path`` later.

    Creates the parent directories (as writing would) and opens the file for appending,
    removing it again if it did not exist, so nothing is left behind by a check.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    with target.open("a", encoding="utf-8"):
        pass
    if not existed:
        target.unlink()


def check_directory(path: str | Path) -> None:
    """Raise ``OSError`` now if files could not be written into the directory ``path``.

    Directories the check had to make are removed again.
    """
    target = Path(path)
    made: list[Path] = []
    probe = target
    while not probe.exists() and probe.parent != probe:
        made.append(probe)
        probe = probe.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):
            pass
    finally:
        for directory in made:  # deepest first
            if directory.is_dir():
                directory.rmdir()


def output_problem(flag: str, path: str | Path | None, *, directory: bool = False) -> str | None:
    """What is wrong with the output ``path`` given to ``flag`` (None: nothing, or not given)."""
    if path is None:
        return None
    if not str(path).strip():
        return f"{flag} names no {'directory' if directory else 'file'} (it is empty)"
    try:
        (check_directory if directory else check_file)(path)
    except OSError as exc:
        return f"{flag} {path}: cannot write there ({exc.strerror or exc})"
    return None


def usage_error(problem: str) -> int:
    """Report a command-line mistake as one line on stderr; the exit status to return."""
    print(f"ERROR: {problem}", file=sys.stderr)
    return USAGE
