"""Progress on stderr: one line per step, rewritten in place on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``step(text)`` announces the next step; ``note(text)`` adds its outcome."""

    def __init__(self, total: int, *, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._quiet = quiet
        self._tty = self._stream.isatty()
        self._start = time.monotonic()
        self._line = ""

    def _write(self, text: str, *, final: bool) -> None:
        if self._quiet:
            return
        if self._tty:
            self._stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        elif final:
            self._stream.write(text + "\n")
        self._stream.flush()

    def step(self, text: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self._start
        self._line = f"[{self.done:>3}/{self.total}] {elapsed:6.1f}s  {text}"
        self._write(self._line + " …", final=False)

    def note(self, outcome: str) -> None:
        self._write(f"{self._line}: {outcome}", final=True)

    def message(self, text: str) -> None:
        self._write(text, final=True)
