"""Key names: every key of a queue embeds its name, so a run id in queue names isolates runs.

``<prefix>:queues``            set     the registry (``list_queues``, existence checks)
``<prefix>:q:<name>:stream``   stream  visible and held messages; consumer group ``mqcontract``
``<prefix>:q:<name>:ids``      hash    msg_id -> stream entry id (a settle finds its claim's entry)
``<prefix>:q:<name>:seq``      string  INCR counter: the queue's msg_ids
``<prefix>:q:<name>:delayed``  zset    msg_id scored by the millisecond it becomes due
``<prefix>:q:<name>:parked``   hash    ``p:<id>`` payload and ``t:<id>`` send time of delayed ones
``<prefix>:q:<name>:held``     zset    index: stream entry id of each held message by deadline (ms)
``<prefix>:q:<name>:ready``    zset    index: entries visible again (nacked, released, expired),
                                       zero-padded so that lexical order is stream order

Queue names are already checked (``[a-z_][a-z0-9_]*``), so they contain no ``:``, ``*``
or braces and a name can never spell another queue's key.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GROUP", "QueueKeys", "registry_key"]

#: The one consumer group of every stream, and the one consumer in it: who holds a
#: message is decided by its idle time (see ``_scripts``), not by consumer names, so no
#: consumer is ever left behind with entries when a process goes away.
GROUP = "mqcontract"


def registry_key(prefix: str) -> str:
    """The set of queue names."""
    return f"{prefix}:queues"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue, in the order the scripts take them."""

    registry: str
    stream: str
    ids: str
    seq: str
    delayed: str
    parked: str
    held: str
    ready: str

    @classmethod
    def of(cls, prefix: str, queue: str) -> QueueKeys:
        base = f"{prefix}:q:{queue}"
        return cls(
            registry_key(prefix),
            f"{base}:stream",
            f"{base}:ids",
            f"{base}:seq",
            f"{base}:delayed",
            f"{base}:parked",
            f"{base}:held",
            f"{base}:ready",
        )

    def all(self) -> list[str]:
        """KEYS for a script: registry, stream, ids, seq, delayed, parked, held, ready."""
        return [
            self.registry,
            self.stream,
            self.ids,
            self.seq,
            self.delayed,
            self.parked,
            self.held,
            self.ready,
        ]
