"""A virtual host's policies and delayed sends: refused by name, never early or lost.

RabbitMQ takes the smaller of a policy's ``message-ttl`` or ``expires`` and a wait
queue's own, and a policy's ``max-length`` bounds it: measured, a 10 s delay came after
2 s, drop-head pushed waiting messages into the target at once, and a short ``expires``
deleted the wait queue with the message in it after the send had returned its id. A
target bounded with ``reject-publish`` drops a delayed message that comes due while it
is full. Where the management API is known, such a delayed send is ``DelayUnsafe``.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mqcontract.errors import QueueError
from mqcontract.messages import QueuedMessage
from mqcontract.providers.rabbitmq import DelayUnsafe, RabbitMqMessagingService
from mqcontract.providers.rabbitmq import _policies as policies_module
from mqcontract.providers.rabbitmq._management import ManagementClient
from mqcontract.providers.rabbitmq._policies import delay_problem
from mqcontract_conformance.timing import TimingProfile
from mqcontract_fixtures.rabbitmq import RabbitMqHarness
from tests import rabbitmq_support

TIMING = TimingProfile.from_scale()
WAIT = "mqcontract.delay.jobs.5000"


def _policy(definition: dict[str, Any], pattern: str = r"^mqcontract\.delay\.", **more: Any) -> Any:
    return {
        "name": "p",
        "pattern": pattern,
        "apply-to": "queues",
        "priority": 0,
        "definition": definition,
        **more,
    }


@pytest.mark.parametrize(
    ("definition", "says"),
    [
        ({"message-ttl": 2000}, "message-ttl 2000 ms, shorter than the delay"),
        ({"expires": 5500}, "expires 5500 ms, not longer than the delay"),
        ({"max-length": 100}, "max-length 100"),
        ({"max-length-bytes": 10**6}, "max-length-bytes"),
    ],
)
def test_a_policy_that_would_break_the_wait_queue_is_named(
    definition: dict[str, Any], says: str
) -> None:
    problem = delay_problem([_policy(definition)], [], {}, "jobs", WAIT, 5000)
    assert problem is not None
    assert "policy 'p'" in problem
    assert says in problem


def test_harmless_or_inapplicable_policies_are_no_problem() -> None:
    harmless = [
        _policy({"message-ttl": 5000, "expires": 6000, "queue-mode": "lazy"}),
        _policy({"message-ttl": 1}, **{"apply-to": "exchanges"}),
        _policy({"message-ttl": 1}, pattern=r"^other\."),
    ]
    assert delay_problem(harmless, [], {}, "jobs", WAIT, 5000) is None


def test_only_the_highest_priority_matching_policy_applies() -> None:
    low = _policy({"message-ttl": 1}, name="low", priority=1)
    high = _policy({"queue-mode": "lazy"}, name="high", priority=5)
    assert delay_problem([low, high], [], {}, "jobs", WAIT, 5000) is None
    assert "'low'" in (delay_problem([low], [], {}, "jobs", WAIT, 5000) or "")


def test_operator_policies_and_a_bounded_target_count() -> None:
    operator = [_policy({"message-ttl": 10})]
    assert "operator policy" in (delay_problem([], operator, {}, "jobs", WAIT, 5000) or "")
    bounded = _policy({"max-length": 5, "overflow": "reject-publish"}, pattern="^jobs$")
    assert "reject-publish" in (delay_problem([bounded], [], {}, "jobs", WAIT, 5000) or "")
    declared = {"x-max-length": 5, "x-overflow": "reject-publish"}
    assert "declare arguments" in (delay_problem([], [], declared, "jobs", WAIT, 5000) or "")
    drop_head = {"x-max-length": 5}  # the oldest are dropped: a send is never refused
    assert delay_problem([], [], drop_head, "jobs", WAIT, 5000) is None


# -- on a broker -----------------------------------------------------------------------

harness = rabbitmq_support.harness
service = rabbitmq_support.service


@pytest.fixture
async def admin(harness: RabbitMqHarness) -> AsyncIterator[tuple[ManagementClient, str]]:
    management = harness.config.rabbitmq.management_url
    if management is None:
        pytest.skip("policies need the management API")
    vhost = urllib.parse.urlsplit(harness.url).path[1:]  # quoted, as the API's paths want
    made: list[str] = []
    client = ManagementClient(management, provider=harness.name, timeout=TIMING.long)
    client.made = made  # type: ignore[attr-defined]
    yield client, vhost
    for name in made:
        await client.call("DELETE", f"/policies/{vhost}/{name}")


async def _set_policy(
    admin: tuple[ManagementClient, str], pattern: str, definition: dict[str, Any]
) -> None:
    client, vhost = admin
    name = f"t_{uuid.uuid4().hex[:10]}"
    client.made.append(name)  # type: ignore[attr-defined]
    body = {"pattern": pattern, "definition": definition, "apply-to": "queues", "priority": 9}
    await client.call("PUT", f"/policies/{vhost}/{name}", body)


async def test_a_delayed_send_a_policy_would_break_is_refused_and_nothing_arrives(
    service: RabbitMqMessagingService,
    admin: tuple[ManagementClient, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(policies_module, "POLICY_RECHECK", 0.0)  # each case reads anew
    queue = f"t_policy_{uuid.uuid4().hex[:10]}"
    await service.create_queue(queue)
    waits = rf"^mqcontract\.delay\.{re.escape(queue)}\."
    try:
        harmless = {"message-ttl": 600_000}
        await _set_policy(admin, waits, harmless)
        sent = await service.send_message_with_delay(queue, b"kept", 0.5)
        deadline = asyncio.get_running_loop().time() + TIMING.slack
        got: list[QueuedMessage] = []
        while not got:
            assert asyncio.get_running_loop().time() < deadline, "the delayed message is lost"
            got = await service.receive_messages(queue, 1, TIMING.long)
            await asyncio.sleep(TIMING.step)
        assert got[0].msg_id == sent
        await service.ack_claim(queue, got[0])
        client, vhost = admin
        await client.call("DELETE", f"/policies/{vhost}/{client.made.pop()}")  # type: ignore[attr-defined]
        for definition, says in [
            ({"message-ttl": 1000}, "message-ttl 1000 ms"),
            ({"expires": 2000}, "expires 2000 ms"),
            ({"max-length": 2}, "max-length 2"),
        ]:
            await _set_policy(admin, waits, definition)
            with pytest.raises(DelayUnsafe) as info:
                await service.send_message_with_delay(queue, b"refused", 5.0)
            assert info.value.queue == queue
            assert says in str(info.value)
            assert isinstance(info.value, QueueError)
            await client.call("DELETE", f"/policies/{vhost}/{client.made.pop()}")  # type: ignore[attr-defined]
        await _set_policy(
            admin, f"^{re.escape(queue)}$", {"max-length": 5, "overflow": "reject-publish"}
        )
        with pytest.raises(DelayUnsafe, match="reject-publish"):
            await service.send_message_with_delay(queue, b"refused", 0.5)
        assert await service.receive_messages(queue, 10, TIMING.long) == []
    finally:
        await service.delete_queue(queue)
