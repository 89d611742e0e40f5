"""The values that cross the provider boundary: queued messages and push notifications."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Available", "Message", "MessageNotification", "QueuedMessage"]


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """One message as a receiver sees it.

    ``receive_count`` is 1 on first delivery and grows by one on every redelivery (exact
    or a lower bound, as the provider's ``exact_receive_count`` capability declares).
    ``enqueued_at`` is seconds since the epoch (or the provider clock's epoch).
    """

    msg_id: int
    queue_name: str
    payload: bytes = field(repr=False)
    receive_count: int
    enqueued_at: float


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
