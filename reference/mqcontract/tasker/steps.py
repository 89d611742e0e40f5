"""The domain messages the client facade sends, with their JSON encoding."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from mqcontract.errors import SerializationError

M = TypeVar("M", "SimpleStepMessage", "StepExecutionResult")

__all__ = ["SimpleStepMessage", "StepExecutionResult", "decode_model", "encode_model"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimpleStepMessage:
    """A step for a worker: which task and step to run."""

    task_uuid: str
    step_uuid: str
    namespace: str
    step_name: str = ""
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepExecutionResult:
    """A worker's result for one step, sent back to orchestration."""

    task_uuid: str
    step_uuid: str
    success: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def encode_model(queue: str, model: SimpleStepMessage | StepExecutionResult) -> bytes:
    """Compact, key-sorted JSON (stable bytes whatever the provider's JSON fidelity)."""
    try:
        return json.dumps(asdict(model), sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise SerializationError(queue, str(exc)) from exc


def decode_model(queue: str, payload: bytes, cls: type[M]) -> M:
    """Parse a payload produced by :func:`encode_model` (or any equal JSON value)."""
    try:
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise SerializationError(queue, f"not a {cls.__name__}: {exc}") from exc
    except RecursionError:  # a hostile payload nested deeper than the parser recurses
        raise SerializationError(queue, f"not a {cls.__name__}: nested too deeply") from None
