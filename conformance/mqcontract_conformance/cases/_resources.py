"""What this process holds: file descriptors, threads, and the running loop's tasks.

A :class:`Footprint` is taken before and after services (or subscriptions) are opened
and closed; :meth:`Footprint.growth` says what more is held after than before. Counts,
not identities, decide (a pool may replace a thread it ended with a new one); the names
of what is new are kept to say what leaked. Garbage is collected first (what an earlier
case leaked and dropped must not close while this one measures), and the threads of the
loop's default executor are not counted: ``getaddrinfo`` and ``asyncio.to_thread`` grow
that pool up to its bound and it never shrinks, which is no leak.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections import Counter
from dataclasses import dataclass

__all__ = ["FD_DIR", "Footprint", "Growth"]

#: Where Linux lists the process's open file descriptors (absent elsewhere: not counted).
FD_DIR = "/proc/self/fd"


def _open_fds() -> int | None:
    try:
        return len(os.listdir(FD_DIR))
    except OSError:
        return None


def _default_executor_threads() -> set[threading.Thread]:
    """The threads of the running loop's default executor (none before its first use)."""
    executor = getattr(asyncio.get_running_loop(), "_default_executor", None)
    return set(getattr(executor, "_threads", ()))


def _task_name(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    code = getattr(coro, "__qualname__", None) or type(coro).__name__
    return f"{task.get_name()} ({code})"


@dataclass(frozen=True)
class Footprint:
    """What the process holds at one moment (tasks: of the running loop, bar the caller)."""

    fds: int | None
    threads: tuple[threading.Thread, ...]
    tasks: tuple[asyncio.Task[object], ...]

    @classmethod
    def now(cls) -> Footprint:
        """Must be called from a coroutine (the running loop's tasks are counted, except
        the task calling it: it is the one measuring)."""
        gc.collect()
        me = asyncio.current_task()
        tasks = tuple(t for t in asyncio.all_tasks() if t is not me and not t.done())
        pooled = _default_executor_threads()
        threads = tuple(t for t in threading.enumerate() if t not in pooled)
        return cls(_open_fds(), threads, tasks)

    def growth(self, before: Footprint) -> Growth:
        """What this footprint holds beyond ``before``."""
        fds = None if self.fds is None or before.fds is None else self.fds - before.fds
        old_threads = {id(t) for t in before.threads}
        old_tasks = {id(t) for t in before.tasks}
        return Growth(
            fds=fds,
            threads=len(self.threads) - len(before.threads),
            tasks=len(self.tasks) - len(before.tasks),
            new_threads=tuple(t.name for t in self.threads if id(t) not in old_threads),
            new_tasks=tuple(_task_name(t) for t in self.tasks if id(t) not in old_tasks),
        )


@dataclass(frozen=True)
class Growth:
    """How many more file descriptors (None: not countable here), threads and tasks are
    held than before, and the names of the threads and tasks that are new."""

    fds: int | None
    threads: int
    tasks: int
    new_threads: tuple[str, ...]
    new_tasks: tuple[str, ...]

    def within(self, tolerance: int) -> bool:
        """Nothing grew by more than ``tolerance``."""
        return max(self.fds or 0, self.threads, self.tasks) <= tolerance

    def counts(self) -> dict[str, int]:
        """Each kind's growth (fds only where they can be counted)."""
        grown = {"threads": self.threads, "tasks": self.tasks}
        if self.fds is not None:
            grown["fds"] = self.fds
        return grown

    def describe(self, tolerance: int) -> str:
        """What grew by more than ``tolerance``: '8 more file descriptors and 4 more
        threads'."""
        kinds = [
            (self.fds or 0, "file descriptors"),
            (self.threads, "threads"),
            (self.tasks, "asyncio tasks"),
        ]
        grown = [f"{n} more {what}" for n, what in kinds if n > tolerance]
        return " and ".join([", ".join(grown[:-1]), grown[-1]] if len(grown) > 1 else grown)

    def names(self, tolerance: int) -> str:
        """The threads and tasks that are new, of the kinds that grew by more than
        ``tolerance`` ('' when none is named)."""
        named = []
        if self.threads > tolerance and self.new_threads:
            named.append(f"new threads: {_listed(self.new_threads)}")
        if self.tasks > tolerance and self.new_tasks:
            named.append(f"new tasks: {_listed(self.new_tasks)}")
        return "; ".join(named)


def _listed(names: tuple[str, ...], most: int = 6) -> str:
    counted = Counter(names)
    shown = [f"{name} x{n}" if n > 1 else name for name, n in counted.most_common(most)]
    more = len(counted) - most
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
