"""Every error path of the foundation names its queue and limit, and redacts secrets; every
argument is checked before the backend is touched, in the documented order."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

import mqcontract
from mqcontract import errors
from mqcontract._redact import redact
from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.config import load_config
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.service import BaseMessagingService, MessagingService
from mqcontract.testing import Harness, HarnessSettings
from mqcontract.translation import ErrorTable, Failure
from mqcontract.validation import (
    check_delay,
    check_limit,
    check_payload,
    check_queue_name,
    check_visibility_timeout,
)
from mqcontract_fixtures.memory import memory_harness
from mqcontract_fixtures.pgmq import pgmq_harness
from mqcontract_fixtures.rabbitmq import rabbitmq_harness, rabbitmq_quorum_harness

CAPS = Capabilities(push=PushKind.FULL, max_message_size_bytes=10, max_receive_limit=5)


def test_every_error_is_a_messaging_error() -> None:
    for name in errors.__all__:
        value = getattr(errors, name)
        if issubclass(value, enum.Enum):  # StaleReason: what a StaleClaim carries
            continue
        assert issubclass(value, errors.MessagingError)


def test_public_names_are_exported_and_exist() -> None:
    for name in mqcontract.__all__:
        assert hasattr(mqcontract, name), name


@pytest.mark.parametrize("name", ["", "A", "a-b", "a" * 48, "x;y", "caf\u00e9", 42, "1a"])
def test_invalid_queue_names_are_rejected(name: object) -> None:
    with pytest.raises(errors.InvalidQueueName) as info:
        check_queue_name(name)
    assert str(name) in str(info.value) or name == ""


def test_a_47_character_name_is_valid() -> None:
    assert check_queue_name("a" * 47) == "a" * 47


def test_message_too_large_names_queue_size_and_limit() -> None:
    with pytest.raises(errors.MessageTooLarge) as info:
        check_payload("jobs", b"x" * 11, CAPS)
    assert (info.value.queue, info.value.size, info.value.limit) == ("jobs", 11, 10)
    assert "jobs" in str(info.value)
    assert "10" in str(info.value)
    assert check_payload("jobs", b"x" * 10, CAPS) == b"x" * 10


def test_payload_must_be_bytes() -> None:
    with pytest.raises(errors.InvalidArgument, match="payload"):
        check_payload("jobs", "text", CAPS)


@pytest.mark.parametrize("limit", [0, -1, 6, 1.0, True, None])
def test_bad_limits(limit: object) -> None:
    with pytest.raises(errors.InvalidArgument, match="limit"):
        check_limit("jobs", limit, CAPS)


@pytest.mark.parametrize("vt", [0, -1, math.nan, math.inf, 10**9, "1", None])
def test_bad_visibility_timeouts(vt: object) -> None:
    with pytest.raises(errors.InvalidArgument, match="visibility_timeout"):
        check_visibility_timeout("jobs", vt, CAPS)


@pytest.mark.parametrize("delay", [-0.1, math.nan, -math.inf, math.inf, 10**9])
def test_bad_delays(delay: float) -> None:
    with pytest.raises(errors.InvalidArgument, match="delay_seconds") as info:
        check_delay("jobs", delay, CAPS)
    assert "jobs" in str(info.value)


def test_sub_second_values_are_allowed() -> None:
    assert check_visibility_timeout("q", 0.25, CAPS) == 0.25
    assert check_delay("q", 0, CAPS) == 0.0


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("amqp://guest:s3cret@host:5672/%2F", "s3cret"),
        ("postgresql://user:pa55@db/test", "pa55"),
        ("dsn host=db password=hunter2 user=x", "hunter2"),
    ],
)
def test_credentials_are_redacted(text: str, secret: str) -> None:
    assert secret not in redact(text)
    err = errors.BackendUnavailable("pgmq", text, f"could not connect to {text}")
    assert secret not in str(err)
    assert secret not in err.target


def test_structured_attributes() -> None:
    assert errors.QueueNotFound("q").queue == "q"
    assert errors.MessageNotFound("q", 7).msg_id == 7
    assert errors.UnsupportedOperation("memory", "fetch").operation == "fetch"
    assert "3 s" in str(errors.OperationTimeout("receive", 3, "q"))
    assert isinstance(errors.ProviderClosed("memory"), errors.BackendUnavailable)


# -- the base class: checks first, then the provider's operation -----------------------


class _Driver:
    """A pretend backend that records every call and fails when told to."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: BaseException | None = None

    def touch(self, what: str) -> None:
        self.calls.append(what)
        if self.fail is not None:
            raise self.fail


class _DriverDown(Exception):
    """What the pretend driver raises when its connection is gone."""


class _Minimal(BaseMessagingService):
    """Only the required protected operations: what a provider gets by subclassing."""

    provider_name = "minimal"
    error_table = ErrorTable({_DriverDown: errors.ConnectionLost})

    def __init__(self) -> None:
        self.driver = _Driver()
        self.queues: dict[str, list[bytes]] = {}
        self._target = "minimal://user:s3cret@host"

    @property
    def capabilities(self) -> Capabilities:
        return CAPS

    async def _create_queue(self, name: str) -> None:
        self.driver.touch("create")
        self.queues.setdefault(name, [])

    async def _delete_queue(self, name: str) -> None:
        self.driver.touch("delete")
        self.queues.pop(name, None)

    async def _queue_exists(self, name: str) -> bool:
        self.driver.touch("exists")
        return name in self.queues

    async def _list_queues(self) -> list[str]:
        self.driver.touch("list")
        return sorted(self.queues)

    async def _send(self, queue: str, payload: bytes) -> int:
        self.driver.touch("send")
        if queue not in self.queues:
            raise errors.QueueNotFound(queue)
        self.queues[queue].append(payload)
        return len(self.queues[queue])

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        self.driver.touch("receive")
        return []

    async def _ack(self, queue: str, claim: Claim) -> None:
        self.driver.touch("ack")
        raise errors.MessageNotFound(queue, claim.msg_id)

    async def _nack(self, queue: str, claim: Claim) -> None:
        self.driver.touch("nack")
        raise errors.MessageNotFound(queue, claim.msg_id)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.send_batch("Bad!", [object()]),  # the name before the payloads
        lambda s: s.send_batch(["jobs"], []),
        lambda s: s.send_message({"a": 1}, "not bytes"),
        lambda s: s.receive_messages({"q"}, 0, math.nan),
        lambda s: s.queue_exists({"jobs": 1}),
        lambda s: s.ack_message(["jobs"], 1),
        lambda s: s.ack_claim(["jobs"], Claim("jobs", 1, 1, 1.0)),
        lambda s: s.ack_claims("Bad!", "not claims"),
    ],
)
async def test_the_base_class_checks_the_name_first_and_never_touches_the_backend(
    call: Callable[[_Minimal], Awaitable[object]],
) -> None:
    service = _Minimal()
    with pytest.raises(errors.InvalidQueueName):
        await call(service)
    assert service.driver.calls == []


async def test_the_base_class_send_batch_needs_the_queue_even_when_empty() -> None:
    service = _Minimal()
    with pytest.raises(errors.QueueNotFound):
        await service.send_batch("jobs", [])
    await service.create_queue("jobs")
    assert await service.send_batch("jobs", []) == []
    assert await service.send_batch("jobs", [b"a", b"b"]) == [1, 2]
    with pytest.raises(errors.MessageTooLarge):  # every payload before any is sent
        await service.send_batch("jobs", [b"c", b"x" * 11])
    assert service.queues["jobs"] == [b"a", b"b"]


async def test_the_base_class_guards_the_closed_state_first() -> None:
    service = _Minimal()
    await service.close()
    for call in (service.create_queue("Bad!"), service.list_queues(), service.send_batch("q", [])):
        with pytest.raises(errors.ProviderClosed):
            await call
    assert service.driver.calls == []


async def test_operations_a_provider_does_not_offer_are_unsupported_whatever_the_arguments() -> (
    None
):
    service = _Minimal()
    await service.close()
    for call in (
        service.send_message_with_delay("Bad!", b"x", -1),
        service.fetch_message("Bad!", 1, -1),
        service.subscribe("Bad!"),
    ):
        with pytest.raises(errors.UnsupportedOperation):
            await call


async def test_an_operation_claimed_but_not_implemented_says_which_to_change() -> None:
    """Capabilities say ``delay=True`` unless told otherwise: a provider without
    ``_send_delayed`` that kept the default failed every delay rule with "does not
    support", which did not say the declaration was the thing to change."""

    class ClaimsAll(_Minimal):
        @property
        def capabilities(self) -> Capabilities:
            return dataclasses.replace(CAPS, delay=True, fetch_by_id=True, push=PushKind.FULL)

    service = ClaimsAll()
    for call, expected in (
        (
            service.send_message_with_delay("q", b"x", 1),
            "declare delay=True, but it implements no"
            " _send_delayed: implement it, or declare delay=False",
        ),
        (service.fetch_message("q", 1, 1), "declare fetch_by_id=True, but it implements no _fetch"),
        (
            service.subscribe("q"),
            "declare push=PushKind.FULL, but it implements no _subscribe: implement"
            " it, or declare push=PushKind.NONE",
        ),
    ):
        with pytest.raises(errors.UnsupportedOperation, match=re.escape(expected)) as refused:
            await call
        # The attribute stays the operation's name; the advice is in the message.
        assert refused.value.operation in {"send_message_with_delay", "fetch_message", "subscribe"}


async def test_a_fetch_by_anything_but_an_int_finds_nothing_before_the_provider_sees_it() -> None:
    seen: list[object] = []

    class Fetches(_Minimal):
        async def _fetch(
            self, queue: str, msg_id: int, visibility_timeout: float
        ) -> QueuedMessage | None:
            seen.append(msg_id)
            return None

    service = Fetches()
    with pytest.raises(errors.QueueNotFound):  # a missing queue is still missing
        await service.fetch_message("q", True, 1)
    await service.create_queue("q")
    for bad in (True, 1.0, "1", None):
        assert await service.fetch_message("q", bad, 1) is None  # type: ignore[arg-type]
    assert seen == []
    assert await service.fetch_message("q", 1, 1) is None
    assert seen == [1]


async def test_driver_exceptions_are_translated_at_the_edge_from_the_original() -> None:
    service = _Minimal()
    await service.create_queue("jobs")
    service.driver.fail = _DriverDown("reset by peer")
    with pytest.raises(errors.ConnectionLost) as info:
        await service.send_message("jobs", b"x")
    assert isinstance(info.value.__cause__, _DriverDown)
    assert "send_message: _DriverDown: reset by peer" in str(info.value)
    assert "s3cret" not in str(info.value)
    service.driver.fail = KeyError("a bug, not the backend")
    with pytest.raises(KeyError):  # nothing in the table: it propagates unchanged
        await service.queue_exists("jobs")


async def test_a_driver_failure_once_closed_is_provider_closed() -> None:
    service = _Minimal()
    await service.create_queue("jobs")

    async def closing_meanwhile() -> None:
        service._closed = True
        raise _DriverDown("closed under it")

    with pytest.raises(errors.ProviderClosed):
        await service._translated("send_message", "jobs", closing_meanwhile())


# -- the error table -------------------------------------------------------------------


class _Base(Exception):
    pass


class _Special(_Base):
    pass


def _failure(**kwargs: object) -> Failure:
    return Failure("p", "p://u:pw@h", "receive_messages", "jobs", 3.0, **kwargs)  # type: ignore[arg-type]


def test_the_most_specific_entry_wins() -> None:
    table = ErrorTable(
        {
            _Base: errors.ConnectionLost,
            _Special: lambda exc, f: errors.QueueNotFound(f.queue),
            TimeoutError: errors.OperationTimeout,
        }
    )
    assert type(table.translate(_Base(), _failure())) is errors.ConnectionLost
    assert type(table.translate(_Special(), _failure())) is errors.QueueNotFound
    timeout = table.translate(TimeoutError(), _failure())
    assert isinstance(timeout, errors.OperationTimeout)
    assert (timeout.operation, timeout.seconds, timeout.queue) == ("receive_messages", 3.0, "jobs")
    assert table.translate(ValueError(), _failure()) is None
    lost = errors.ConnectionLost("p", "t")
    assert table.translate(lost, _failure()) is lost  # already ours


def test_closed_and_connecting_apply_to_every_table() -> None:
    table = ErrorTable({_Base: errors.ConnectionLost})
    assert type(table.translate(_Base(), _failure(closed=True))) is errors.ProviderClosed
    assert type(table.translate(_Base(), _failure(connecting=True))) is errors.BackendUnavailable


def test_a_table_names_only_errors_it_can_build() -> None:
    with pytest.raises(TypeError, match="MessageNotFound"):
        ErrorTable({_Base: errors.MessageNotFound})


# -- validation order on every reference provider --------------------------------------

_HARNESSES: dict[str, Callable[[HarnessSettings], Harness]] = {
    "memory": memory_harness,
    "pgmq": pgmq_harness,
    "rabbitmq": rabbitmq_harness,
    "rabbitmq-quorum": rabbitmq_quorum_harness,
}


@pytest.fixture(scope="module", params=sorted(_HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    name: str = request.param
    settings = HarnessSettings(
        config=load_config(validate_backend=False).with_backend(name),
        run_id=f"v{uuid.uuid4().hex[:6]}",
    )
    harness = _HARNESSES[name](settings)
    try:
        asyncio.run(harness.setup())
    except errors.BackendUnavailable as exc:
        pytest.skip(f"{name}: {exc}")
    yield harness
    asyncio.run(harness.teardown())


@pytest.fixture
async def service(harness: Harness) -> AsyncIterator[MessagingService]:
    svc = await harness.open()
    yield svc
    await svc.close()


def _missing() -> str:
    return f"missing_{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s, q: s.send_message(q, "not bytes"), errors.InvalidArgument),
        (lambda s, q: s.send_message(q, b"x" * (2**21)), errors.MessageTooLarge),
        (lambda s, q: s.send_message_with_delay(q, b"x", -1), errors.InvalidArgument),
        (lambda s, q: s.send_batch(q, [b"ok", 42]), errors.InvalidArgument),
        (lambda s, q: s.receive_messages(q, 0, 1.0), errors.InvalidArgument),
        (lambda s, q: s.receive_messages(q, 1, math.inf), errors.InvalidArgument),
        (lambda s, q: s.subscribe_many([q, "Bad!"]), errors.InvalidQueueName),
        (lambda s, q: s.subscribe_many([q, ["unhashable"]]), errors.InvalidQueueName),
        (lambda s, q: s.send_batch(q, []), errors.QueueNotFound),
        (lambda s, q: s.ack_claims(q, []), errors.QueueNotFound),
        (lambda s, q: s.ack_claims(q, [Claim("other", 1, 1, 1.0)]), errors.QueueNotFound),
        (lambda s, q: s.subscribe_many(q), errors.InvalidArgument),
        (lambda s, q: s.subscribe_many(42), errors.InvalidArgument),
    ],
    ids=[
        "payload-type",
        "payload-size",
        "delay",
        "batch-payload",
        "limit",
        "visibility",
        "second-name",
        "unhashable-second-name",
        "empty-batch",
        "empty-ack-batch",
        "ack-batch-of-another-queues-claim",
        "names-as-one-string",
        "names-not-a-sequence",
    ],
)
async def test_arguments_are_checked_before_the_queue_is_looked_up(
    service: MessagingService,
    call: Callable[[MessagingService, str], Awaitable[object]],
    error: type[errors.MessagingError],
) -> None:
    with pytest.raises(error):
        await call(service, _missing())


async def test_fetch_checks_its_timeout_before_the_queue(
    service: MessagingService,
) -> None:
    if not service.supports_fetch_by_message_id:
        pytest.skip("no fetch by id")
    with pytest.raises(errors.InvalidArgument):
        await service.fetch_message(_missing(), 1, -1.0)
