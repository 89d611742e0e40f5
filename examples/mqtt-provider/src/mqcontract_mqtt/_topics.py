"""Topic names. A queue is a topic; a run's queues live under its own prefix.

``<prefix>/q/<queue>``         the queue's messages (QoS 1), read through the shared
                               subscription ``$share/mqcontract/<prefix>/q/<queue>``
``<prefix>/registry/<queue>``  a retained marker per existing queue (MQTT cannot list
                               topics, and publishing to a topic nobody created succeeds)
``<prefix>/sync/<client id>``  a service's own echo topic: when a message published there
                               comes back, everything the broker sent before it has arrived
``<prefix>/confirm``           nobody subscribes: the broker's PUBACK of a publish there
                               says it has read everything the client wrote before it

Queue names are already checked (``[a-z_][a-z0-9_]*``), so they hold no ``/``, ``+`` or
``#`` and a name can never spell another queue's topic or a wildcard.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SHARE_GROUP", "Topics"]

#: The shared-subscription group every consumer of every queue joins.
SHARE_GROUP = "mqcontract"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one prefix."""

    prefix: str

    def queue(self, name: str) -> str:
        return f"{self.prefix}/q/{name}"

    def shared(self, name: str) -> str:
        """The subscription competing consumers of ``name`` share."""
        return f"$share/{SHARE_GROUP}/{self.queue(name)}"

    def queue_of(self, topic: str) -> str | None:
        """The queue a message topic belongs to, or None."""
        head = f"{self.prefix}/q/"
        return topic[len(head) :] if topic.startswith(head) else None

    def marker(self, name: str) -> str:
        return f"{self.prefix}/registry/{name}"

    @property
    def markers(self) -> str:
        """The wildcard every marker matches."""
        return f"{self.prefix}/registry/+"

    def marked(self, topic: str) -> str | None:
        """The queue a marker topic names, or None."""
        head = f"{self.prefix}/registry/"
        return topic[len(head) :] if topic.startswith(head) else None

    @property
    def confirm(self) -> str:
        return f"{self.prefix}/confirm"

    def sync(self, client_id: str) -> str:
        return f"{self.prefix}/sync/{client_id}"
