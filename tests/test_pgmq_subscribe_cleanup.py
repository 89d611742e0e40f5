"""A PGMQ subscribe that does not finish takes its LISTEN registration back.

The trigger check and the LISTEN run together, so a subscribe can end (cancelled, or one
of them failed) with the registration made: left there, the queue would stay LISTENed
and its notifications pile up in a subscription nobody reads. No database is needed: the
check and the LISTEN are stubbed where they reach the server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mqcontract.config import PgmqConfig
from mqcontract.errors import QueueNotFound
from mqcontract.providers.pgmq.service import PgmqMessagingService
from mqcontract.subscription import QueueSubscription


def _service(check: Any) -> PgmqMessagingService:
    service = PgmqMessagingService(
        None,
        config=PgmqConfig(database_url="postgresql://x/y"),
        operation_timeout=5,
        application_name="mqcontract-test",
    )
    listener = service._listener

    async def register(subscription: QueueSubscription) -> None:  # LISTEN, answered at once
        for queue in subscription.queues:
            listener._subs.setdefault(queue, set()).add(subscription)

    service._run = check  # type: ignore[method-assign]
    listener.add = register  # type: ignore[method-assign]
    return service


def _registered(service: PgmqMessagingService) -> dict[str, int]:
    return {q: len(s) for q, s in service._listener._subs.items() if s}


async def test_a_cancelled_subscribe_leaves_no_registration() -> None:
    answered = asyncio.Event()

    async def unanswered(*_: Any, **__: Any) -> list[Any]:
        await answered.wait()  # the trigger check's round trip, never answered
        return []

    service = _service(unanswered)
    subscribing = asyncio.create_task(service.subscribe_many(["jobs"]))
    async with asyncio.timeout(5):
        while not _registered(service):  # noqa: ASYNC110 (the stub has no event)
            await asyncio.sleep(0.01)
    subscribing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await subscribing
    assert _registered(service) == {}
    assert not service._subscriptions


async def test_a_failed_check_leaves_no_registration() -> None:
    async def missing(*_: Any, **__: Any) -> list[Any]:
        await asyncio.sleep(0)
        raise QueueNotFound("jobs")

    service = _service(missing)
    with pytest.raises(QueueNotFound):
        await service.subscribe_many(["jobs"])
    assert _registered(service) == {}
