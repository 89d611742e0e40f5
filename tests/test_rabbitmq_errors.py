"""The RabbitMQ error table: every aiormq failure becomes a MessagingError (no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import (
    AMQPConnectionError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)
from pamqp import commands as spec
from pamqp.header import ContentHeader

from mqcontract.errors import (
    ConnectionLost,
    MessagingError,
    OperationTimeout,
    ProviderClosed,
    QueueError,
    QueueNotFound,
)
from mqcontract.providers.rabbitmq import RabbitMqMessagingService
from mqcontract.providers.rabbitmq._errors import ERRORS
from mqcontract.translation import Failure, await_translated

URL = "amqp://user:s3cret@broker:5672/%2F"


def _failure(operation: str = "send", queue: str = "", closed: bool = False) -> Failure:
    return Failure("rabbitmq", URL, operation, queue, timeout=5, closed=closed)


async def _raise_inside(exc: BaseException, **kwargs: Any) -> MessagingError:
    async def call() -> None:
        raise exc

    with pytest.raises(MessagingError) as info:
        await await_translated(call(), ERRORS, lambda: _failure(**kwargs))
    assert info.value.__cause__ is exc
    assert "s3cret" not in str(info.value)
    return info.value


def test_the_provider_translates_with_this_table() -> None:
    assert RabbitMqMessagingService.error_table is ERRORS


def _returned(routing_key: str) -> PublishError:
    frame = spec.Basic.Return(
        reply_code=312, reply_text="NO_ROUTE", exchange="", routing_key=routing_key
    )
    message = DeliveredMessage(delivery=frame, header=ContentHeader(), body=b"", channel=None)  # type: ignore[arg-type]
    return PublishError(message, frame)


async def test_a_returned_mandatory_publish_is_queue_not_found() -> None:
    err = await _raise_inside(_returned("orders"), queue="orders")
    assert isinstance(err, QueueNotFound)
    assert err.queue == "orders"


async def test_a_404_is_queue_not_found() -> None:
    err = await _raise_inside(ChannelNotFoundEntity("NOT_FOUND - no queue"), queue="orders")
    assert isinstance(err, QueueNotFound)


@pytest.mark.parametrize(
    "exc",
    [
        AMQPConnectionError("Server connection unexpectedly closed"),
        ChannelInvalidStateError("closed"),
        ConnectionResetError(),
        Exception(),  # what aiormq sets on pending writes when its writer dies
    ],
)
async def test_connection_failures_and_bare_driver_exceptions_are_connection_lost(
    exc: BaseException,
) -> None:
    assert isinstance(await _raise_inside(exc), ConnectionLost)


async def test_failures_after_close_are_provider_closed() -> None:
    err = await _raise_inside(AMQPConnectionError("gone"), closed=True)
    assert isinstance(err, ProviderClosed)


async def test_a_driver_cancellation_is_connection_lost_but_a_real_one_propagates() -> None:
    assert isinstance(await _raise_inside(asyncio.CancelledError()), ConnectionLost)

    async def body() -> None:
        await await_translated(asyncio.sleep(10), ERRORS, _failure)

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_bound_expiring_is_operation_timeout() -> None:
    async def bounded() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)

    with pytest.raises(OperationTimeout) as info:
        await await_translated(bounded(), ERRORS, lambda: _failure("receive", "q"))
    assert info.value.queue == "q"
    assert "receive on queue 'q'" in str(info.value)


async def test_a_404_naming_no_queue_is_connection_lost() -> None:
    assert isinstance(await _raise_inside(ChannelNotFoundEntity("NOT_FOUND")), ConnectionLost)


async def test_a_broker_nack_is_a_queue_error_naming_the_queue() -> None:
    frame = spec.Basic.Nack(delivery_tag=1)
    message = DeliveredMessage(delivery=frame, header=ContentHeader(), body=b"", channel=None)  # type: ignore[arg-type]
    err = await _raise_inside(DeliveryError(message, frame), queue="orders")
    assert isinstance(err, QueueError)
    assert err.queue == "orders"
    assert not isinstance(err, QueueNotFound)
