"""What a provider declares about itself; the conformance suite checks every claim."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "Capabilities",
    "PayloadFidelity",
    "PushKind",
    "RequeuePosition",
    "VisibilityEnforcer",
]


class PushKind(enum.StrEnum):
    """What ``subscribe`` delivers."""

    NONE = "none"  #: no push; subscribe raises UnsupportedOperation
    SIGNAL = "signal"  #: always ``Available`` (fetch separately)
    FULL = "full"  #: always ``Message``
    MIXED = "mixed"  #: ``Message`` up to ``push_payload_threshold_bytes``, ``Available`` above


class RequeuePosition(enum.StrEnum):
    """Where a nacked or expired message goes back in its queue."""

    ORIGINAL = "original"  #: at its original position (it is received before later ones)
    BACK = "back"  #: behind every message that is visible now


class PayloadFidelity(enum.StrEnum):
    """What comes back from a round trip."""

    BYTES = "bytes"  #: exactly the bytes sent
    JSON_VALUE = "json-value"  #: valid JSON comes back as an equal JSON value (text may be
    #: normalized: key order, whitespace); any other bytes come back exactly


class VisibilityEnforcer(enum.StrEnum):
    """Who returns a claimed message once its visibility timeout has passed."""

    SERVER = "server"  #: the backend, whatever becomes of the holder (PGMQ's ``vt`` column)
    #: the holder's own process (a client-side timer): a holder that stops running but
    #: keeps its connection keeps its claims until the backend gives the connection up
    #: (``frozen_holder_release_seconds``)
    HOLDER = "holder"


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """A provider's declared behaviour. Rules whose capability is not claimed are skipped."""

    push: PushKind
    push_payload_threshold_bytes: int | None = None
    pushed_messages_claimed: bool = True
    fetch_by_id: bool = False
    requires_fallback_polling: bool = False
    fallback_polling_interval: float | None = None
    delay: bool = True
    max_delay_seconds: float = 7 * 24 * 3600.0
    visibility_precision_seconds: float = 0.001
    requeue_position: RequeuePosition = RequeuePosition.ORIGINAL
    exact_receive_count: bool = True
    fifo: bool = True
    payload_fidelity: PayloadFidelity = PayloadFidelity.BYTES
    max_message_size_bytes: int = 1_048_576
    max_receive_limit: int = 1000
    max_visibility_timeout_seconds: float = 12 * 3600.0
    list_queues: bool = True
    #: Ids are chosen by producers (not by the backend), so a foreign producer can put
    #: two messages with one id on a queue; settlement by claim must keep them apart.
    producer_assigned_ids: bool = False
    visibility_enforced_by: VisibilityEnforcer = VisibilityEnforcer.SERVER
    #: With ``HOLDER``: the longest a holder that stops running without dying (SIGSTOP, a
    #: stalled VM, a debugger) keeps its claims, whatever their timeouts. None: no bound.
    frozen_holder_release_seconds: float | None = None
    #: What a send or ack that returned promises once the backend's server crashes and
    #: starts again on its own storage (configured as a production queue would be): the
    #: message stays (sent) or stays gone (acked), claims keep their deadlines, and open
    #: subscriptions deliver again. False for stores that live in the provider's process.
    survives_restart: bool = True
    #: A new subscription also delivers what was already waiting when it opened (not only
    #: what is sent afterwards). The event system then leaves a Hybrid consumer's backlog
    #: to push: its first fallback poll comes one interval after start.
    push_delivers_backlog: bool = False
    #: Services opened the same way (another connection, another process) share queues.
    #: False: each service is a backend of its own (an in-process store made per service).
    shared_backend: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (enum members become their values)."""
        return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(self).items()}
