"""The line of a rule's check a failure came from, for failure messages.

A message from a generic helper ("expected 1 message on q, received 0") says little
about what the rule was waiting for; the line of the rule's check that called it does,
and it is in the JSON and the report too, where no traceback is.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

__all__ = ["in_rule_stack", "in_rule_traceback"]

_CASES = f"{os.sep}mqcontract_conformance{os.sep}cases{os.sep}"


def _first_in_cases(frames: Iterable[traceback.FrameSummary]) -> str:
    for frame in frames:
        if _CASES in frame.filename:
            call = (frame.line or "").strip()
            return f"{Path(frame.filename).name}:{frame.lineno} `{call}`"
    return ""


def in_rule_traceback(tb: TracebackType | None) -> str:
    """``file:line `code``` of the innermost frame of a rule's check in ``tb``, or ""."""
    return _first_in_cases(reversed(traceback.extract_tb(tb)))


def in_rule_stack() -> str:
    """``file:line `code``` of the innermost frame of a rule's check calling this, or ""."""
    return _first_in_cases(reversed(traceback.extract_stack()))
