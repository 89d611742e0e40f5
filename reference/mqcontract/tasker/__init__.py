"""The workflow engine's domain on top of the abstraction: step messages and their queues.

``MessageClient`` sends step messages and step results to queues that
``QueueClassifier`` names and classifies (``{namespace}_queue``, the results queue).
Nothing in the provider-agnostic core imports this package; applications of the workflow
engine do.
"""

from __future__ import annotations

from mqcontract.tasker.client import MessageClient, QueueClassifier, QueueKind
from mqcontract.tasker.steps import (
    SimpleStepMessage,
    StepExecutionResult,
    decode_model,
    encode_model,
)

__all__ = [
    "MessageClient",
    "QueueClassifier",
    "QueueKind",
    "SimpleStepMessage",
    "StepExecutionResult",
    "decode_model",
    "encode_model",
]
