"""Each case's event loop, whose shutdown is bounded.

``asyncio.run`` cancels the tasks a coroutine left behind and then waits for every one
of them, without a bound: one task of a provider (or of code it drives) that does not
end when cancelled hung the whole run after its case had finished, in the selftest
for more than ten minutes. Here the wait is bounded; what is still pending after it is
named in a warning and abandoned with its loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["SHUTDOWN_BOUND", "StepExpired", "run_bounded", "within"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds the shutdown waits for the tasks left behind once cancelled, then for async
#: generators, then for the default executor's running calls.
SHUTDOWN_BOUND = 10.0


class StepExpired(TimeoutError):
    """A step given to :func:`within` did not end within its bound (not a timeout of
    its own)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not finish within {seconds:g} s")
        self.seconds = seconds


async def within(step: Coroutine[Any, Any, T], seconds: float) -> T:
    """Await ``step`` for at most ``seconds``, then raise :class:`StepExpired`.

    A hard bound, where ``asyncio.timeout`` is not: that cancels once and then waits for
    the step, and a step that swallows the cancellation, or awaits something else
    unbounded in its cleanup, holds its caller for ever. Here the step runs as a task of
    its own, which is cancelled and left when the bound passes (the loop's bounded
    shutdown reaps it or abandons it with a warning).
    """
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise StepExpired(seconds)
    return task.result()


def run_bounded(main: Coroutine[Any, Any, T], *, shutdown: float = SHUTDOWN_BOUND) -> T:
    """Run ``main`` in a new event loop, as ``asyncio.run`` does, with a shutdown that
    waits at most ``shutdown`` seconds at each step."""
    __tracebackhide__ = True  # pytest shows the rule's frames, not the kit's
    loop = asyncio.new_event_loop()
    # The loop's default executor is ours: shut down without waiting on the loop (3.11's
    # shutdown_default_executor joins its threads unbounded, cancelled or not).
    executor = ThreadPoolExecutor(thread_name_prefix="asyncio")
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_left_behind(loop, shutdown)
            loop.run_until_complete(_bounded(loop.shutdown_asyncgens(), shutdown))
            _shut_down(executor, shutdown)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _shut_down(executor: ThreadPoolExecutor, seconds: float) -> None:
    """Cancel the executor's queued calls and wait at most ``seconds`` for the running
    ones (a call stuck in a driver, or a DNS lookup nobody answers, is left to end)."""
    waiter = threading.Thread(
        target=executor.shutdown,
        kwargs={"wait": True, "cancel_futures": True},
        name="mqcontract-executor-shutdown",
        daemon=True,
    )
    waiter.start()
    waiter.join(seconds)
    if waiter.is_alive():
        log.warning("event loop shutdown: executor calls still running after %g s", seconds)


async def _bounded(step: Coroutine[Any, Any, None], seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        log.warning("event loop shutdown: a step took over %g s and was left", seconds)


def _cancel_left_behind(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    _, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=seconds))
    for task in pending:
        log.warning(
            "a task left running did not end within %g s of being cancelled, and was "
            "abandoned with its event loop: %r",
            seconds,
            task,
        )
    for task in tasks - pending:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception in a task left running",
                    "exception": task.exception(),
                    "task": task,
                }
            )
