"""The values that cross the provider boundary: claims, queued messages and push notifications."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Available", "Claim", "ClaimRef", "Message", "MessageNotification", "QueuedMessage"]


@dataclass(frozen=True, slots=True)
class Claim:
    """One receiver's hold on one message: what an ack or nack names.

    Every claim a provider makes (by ``receive_messages``, ``fetch_message`` or a claimed
    push) is a new value, like an SQS receipt handle: settling it settles that claim and
    nothing else. Once it lapsed (``visibility_timeout`` seconds passed), was settled, or
    was superseded by a later claim on the same message, settling it raises
    :class:`~mqcontract.errors.StaleClaim` and changes nothing. ``token`` is the provider's
    own identification of the claim (a read count, a delivery, a counter); callers never
    look inside it.
    """

    queue_name: str
    msg_id: int
    token: int | str
    #: The seconds the claim was made for (a handler can tell how long it holds it).
    visibility_timeout: float


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """One message as a receiver sees it.

    ``receive_count`` is 1 on first delivery and grows by one on every redelivery (exact
    or a lower bound, as the provider's ``exact_receive_count`` capability declares).
    ``enqueued_at`` is seconds since the epoch (or the provider clock's epoch).
    ``claim`` is the hold this delivery made (``None`` only for an unclaimed pushed copy,
    which must be claimed by id before it is processed).
    """

    msg_id: int
    queue_name: str
    payload: bytes = field(repr=False)
    receive_count: int
    enqueued_at: float
    claim: Claim | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Available:
    """Signal-only notification: a message exists on ``queue_name``; fetch it separately.

    ``msg_id`` is the announced message when the provider knows it, else ``None`` (for
    example after a listener reconnect: "catch up on this queue").
    """

    queue_name: str
    msg_id: int | None


@dataclass(frozen=True, slots=True)
class Message:
    """Full-message notification.

    ``claimed`` tells whether the provider set the message's visibility for this consumer
    (it must then be acked or nacked) or pushed an unclaimed copy that the consumer must
    claim by id before processing (see the ``pushed_messages_claimed`` capability).
    """

    message: QueuedMessage
    claimed: bool = True

    @property
    def queue_name(self) -> str:
        """The queue the message is on."""
        return self.message.queue_name


MessageNotification = Available | Message

ClaimRef = Claim | QueuedMessage
"""What settling by claim accepts: a claim, or the claimed message that carries it."""
