"""``MessageClient``: the domain facade, and the ``QueueClassifier`` that names queues."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mqcontract.config import QueueNamingConfig
from mqcontract.provider import MessagingProvider
from mqcontract.tasker.steps import SimpleStepMessage, StepExecutionResult, encode_model
from mqcontract.validation import check_queue_name

__all__ = ["MessageClient", "QueueClassifier", "QueueKind"]


class QueueKind(enum.Enum):
    """What a queue is for."""

    NAMESPACE_STEPS = "namespace_steps"
    STEP_RESULTS = "step_results"
    TASK_REQUESTS = "task_requests"
    TASK_FINALIZATIONS = "task_finalizations"
    OTHER = "other"


@dataclass(frozen=True)
class QueueClassifier:
    """Maps namespaces to step queues and names the orchestration queues (configurable)."""

    naming: QueueNamingConfig = field(default_factory=QueueNamingConfig)

    def step_queue_for_namespace(self, namespace: str) -> str:
        """``<namespace><suffix>``, e.g. ``payments_queue``; invalid results are rejected."""
        return check_queue_name(f"{namespace}{self.naming.namespace_suffix}")

    def orchestration_results_queue(self) -> str:
        return self.naming.step_results

    def orchestration_requests_queue(self) -> str:
        return self.naming.task_requests

    def orchestration_finalization_queue(self) -> str:
        return self.naming.task_finalizations

    def orchestration_queues(self) -> list[str]:
        """The queues orchestration listens on."""
        return [
            self.orchestration_results_queue(),
            self.orchestration_requests_queue(),
            self.orchestration_finalization_queue(),
        ]

    def classify(self, queue: str) -> QueueKind:
        """Which kind of queue ``queue`` is."""
        fixed = {
            self.naming.step_results: QueueKind.STEP_RESULTS,
            self.naming.task_requests: QueueKind.TASK_REQUESTS,
            self.naming.task_finalizations: QueueKind.TASK_FINALIZATIONS,
        }
        if queue in fixed:
            return fixed[queue]
        if queue.startswith(self.naming.orchestration_prefix):
            return QueueKind.OTHER
        if queue.endswith(self.naming.namespace_suffix) and len(queue) > len(
            self.naming.namespace_suffix
        ):
            return QueueKind.NAMESPACE_STEPS
        return QueueKind.OTHER

    def namespace_of(self, queue: str) -> str | None:
        """The namespace of a step queue, else None."""
        if self.classify(queue) is not QueueKind.NAMESPACE_STEPS:
            return None
        return queue[: -len(self.naming.namespace_suffix)]


class MessageClient:
    """Sends domain messages to the right queue through any provider."""

    def __init__(
        self, provider: MessagingProvider, classifier: QueueClassifier | None = None
    ) -> None:
        self._provider = provider
        self.classifier = classifier or QueueClassifier()

    @property
    def provider(self) -> MessagingProvider:
        """The underlying provider, for advanced operations."""
        return self._provider

    async def send_step_message(self, namespace: str, step: SimpleStepMessage) -> int:
        """Send a step to its namespace queue; returns the message id."""
        queue = self.classifier.step_queue_for_namespace(namespace)
        return await self._provider.send_message(queue, encode_model(queue, step))

    async def send_step_result(self, result: StepExecutionResult) -> int:
        """Send a step result to the orchestration results queue."""
        queue = self.classifier.orchestration_results_queue()
        return await self._provider.send_message(queue, encode_model(queue, result))

    async def ensure_queues(self, namespaces: list[str]) -> list[str]:
        """Create the orchestration queues and the step queues of ``namespaces``."""
        queues = self.classifier.orchestration_queues() + [
            self.classifier.step_queue_for_namespace(ns) for ns in namespaces
        ]
        for queue in queues:
            await self._provider.create_queue(queue)
        return queues
