"""The HOST rules have teeth: each catches a provider with one hostile-input defect."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest

from mqcontract.errors import MessageTooLarge
from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.runner import CaseOutcome
from tests.broken_providers import SignalMemory

RunRule = Callable[[type[InMemoryMessagingService], str], CaseOutcome]


class SendSkipsNameCheck(InMemoryMessagingService):
    """Validates names only where the queue is looked up, and sends to unknown ones."""

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        if queue not in self._queues:
            return []
        return await super().send_batch(queue, payloads)


class CoercedIds(InMemoryMessagingService):
    """Turns any id into an int first, as a database driver would."""

    async def ack_message(self, queue: str, msg_id: int) -> None:
        await super().ack_message(queue, int(msg_id))


class CountsCharacters(InMemoryMessagingService):
    """Checks the size limit in characters, not bytes."""

    async def send_message(self, queue: str, payload: bytes) -> int:
        if len(payload.decode("utf-8", "replace")) > self.capabilities.max_message_size_bytes:
            raise MessageTooLarge(queue, len(payload), self.capabilities.max_message_size_bytes)
        return self._enqueue(self._queue(queue), bytes(payload), 0.0)


class FloatTimeouts(InMemoryMessagingService):
    """Converts timeouts with float() before checking them."""

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        seconds = float(visibility_timeout)
        return await super().receive_messages(queue, limit, 1.0 if math.isnan(seconds) else seconds)


class TextPayloads(InMemoryMessagingService):
    """Stores payloads as text, replacing what is not UTF-8."""

    async def send_message(self, queue: str, payload: bytes) -> int:
        text = bytes(payload).decode("utf-8", "replace").encode()
        return await super().send_message(queue, text)


@pytest.mark.parametrize(
    ("broken", "rule_id"),
    [
        (SendSkipsNameCheck, "HOST-1"),
        (TextPayloads, "HOST-2"),
        (CountsCharacters, "HOST-3"),
        (FloatTimeouts, "HOST-4"),
        (CoercedIds, "HOST-5"),
    ],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_each_host_rule_catches_its_defect(
    run_rule: RunRule, broken: type[InMemoryMessagingService], rule_id: str
) -> None:
    with pytest.raises(ContractViolation, match=rf"^\[{rule_id}\]"):
        run_rule(broken, rule_id)


@pytest.mark.parametrize("rule_id", ["HOST-1", "HOST-2", "HOST-3", "HOST-4", "HOST-5"])
def test_correct_providers_pass_every_host_rule(run_rule: RunRule, rule_id: str) -> None:
    for provider in (InMemoryMessagingService, SignalMemory):
        assert run_rule(provider, rule_id).skip_reason is None
