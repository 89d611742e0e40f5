"""A case's event loop shuts down within its bound, whatever its tasks do.

``asyncio.run`` waited for ever for a task left behind that does not end when
cancelled: the selftest hung for over ten minutes after a case had finished.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from mqcontract_conformance.loop import run_bounded


async def _leaves_a_stubborn_task() -> str:
    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # ignores every cancellation

    asyncio.get_running_loop().create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    return "result"


def test_a_task_that_ignores_cancellation_is_abandoned_after_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mqcontract_conformance.loop"):
        assert run_bounded(_leaves_a_stubborn_task(), shutdown=0.3) == "result"
    assert time.monotonic() - started < 5.0
    assert "stubborn" in caplog.text


def test_the_result_and_the_error_of_the_coroutine_come_through() -> None:
    async def fails() -> None:
        raise ValueError("from the case")

    with pytest.raises(ValueError, match="from the case"):
        run_bounded(fails())
    assert run_bounded(asyncio.sleep(0, "ok")) == "ok"


async def _leaves_a_stuck_executor_call() -> None:
    loop = asyncio.get_running_loop()
    loop.run_in_executor(None, time.sleep, 4)
    await asyncio.sleep(0)


def test_an_executor_call_still_running_is_left_after_the_bound() -> None:
    """3.11's shutdown_default_executor joined its threads without a bound."""
    started = time.monotonic()
    run_bounded(_leaves_a_stuck_executor_call(), shutdown=0.3)
    assert time.monotonic() - started < 2.0
