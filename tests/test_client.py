"""The MessageClient facade, the queue classifier and provider dispatch."""

from __future__ import annotations

import asyncio

import pytest

from mqcontract import MessagingConfig, OperationTimeout, open_provider
from mqcontract.errors import ConfigurationError, InvalidQueueName, SerializationError
from mqcontract.provider import MessagingProvider
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.registry import resolve
from mqcontract.tasker import (
    MessageClient,
    QueueClassifier,
    QueueKind,
    SimpleStepMessage,
    StepExecutionResult,
    decode_model,
)


def test_classifier_names_and_classifies_queues() -> None:
    c = QueueClassifier()
    assert c.step_queue_for_namespace("payments") == "payments_queue"
    assert c.classify("payments_queue") is QueueKind.NAMESPACE_STEPS
    assert c.namespace_of("payments_queue") == "payments"
    assert c.classify(c.orchestration_results_queue()) is QueueKind.STEP_RESULTS
    assert c.classify(c.orchestration_requests_queue()) is QueueKind.TASK_REQUESTS
    assert c.classify(c.orchestration_finalization_queue()) is QueueKind.TASK_FINALIZATIONS
    assert c.classify("misc") is QueueKind.OTHER
    with pytest.raises(InvalidQueueName):
        c.step_queue_for_namespace("Bad Namespace")


async def test_client_sends_steps_and_results_as_json() -> None:
    provider = await open_provider(MessagingConfig(backend="memory"))
    async with provider:
        client = MessageClient(provider)
        await client.ensure_queues(["payments"])
        step = SimpleStepMessage(task_uuid="t1", step_uuid="s1", namespace="payments")
        await client.send_step_message("payments", step)
        result = StepExecutionResult(task_uuid="t1", step_uuid="s1", success=True)
        await client.send_step_result(result)
        (got_step,) = await provider.receive_messages("payments_queue", 1, 5)
        (got_result,) = await provider.receive_messages("orchestration_step_results", 1, 5)
        assert decode_model("payments_queue", got_step.payload, SimpleStepMessage) == step
        assert decode_model("r", got_result.payload, StepExecutionResult) == result
        assert client.provider is provider
        assert provider.provider_name == "memory"


def test_decoding_garbage_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="q"):
        decode_model("q", b"[1,2]", SimpleStepMessage)
    with pytest.raises(SerializationError):
        decode_model("q", b"{not json", StepExecutionResult)


async def test_provider_bounds_every_operation() -> None:
    class Wedged(InMemoryMessagingService):
        async def queue_exists(self, name: str) -> bool:
            await asyncio.Event().wait()
            return True

    provider = MessagingProvider(Wedged(), name="wedged", timeout=0.05)
    with pytest.raises(OperationTimeout, match="queue_exists"):
        await provider.queue_exists("q")
    await provider.close()


def test_resolve_by_name_and_by_module_factory() -> None:
    assert resolve("memory") is resolve("mqcontract.providers.memory:open_memory")
    with pytest.raises(ConfigurationError, match="unknown provider"):
        resolve("nope")
    with pytest.raises(ConfigurationError, match="cannot import"):
        resolve("no.such.module:factory")


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_a_deeply_nested_payload_is_a_serialization_error(depth: int) -> None:
    hostile = b"[" * depth + b"]" * depth
    with pytest.raises(SerializationError, match="nested too deeply"):
        decode_model("q", hostile, SimpleStepMessage)
