"""Broken providers whose claims outlive the queue they were made on (CLAIM-10)."""

from __future__ import annotations

import itertools

from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = ["SPECIMENS", "TokenIsDeliveryCount"]


class TokenIsDeliveryCount(InMemoryMessagingService):
    """A claim's token is the message's delivery count, and ids restart at 1 in a queue
    deleted and created again: a claim made before the deletion settles the new queue's
    message with its id while another consumer holds it on the same delivery.

    PGMQ's reference provider did this (token ``read_ct``, ``msg_id`` restarting with the
    queue's table). Every other claim rule passes: a count still tells one delivery of a
    message from the next.
    """

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        super()._claim(queue, entry, visibility_timeout)
        entry.claim_token = entry.receive_count
        return entry.snapshot(queue.name)

    async def _create_queue(self, name: str) -> None:
        # Ids restart with each incarnation, as a table created again does (whatever
        # the in-memory provider numbers its queues from).
        if name not in self._queues:
            await super()._create_queue(name)
            self._queues[name].ids = itertools.count(1)


SPECIMENS: tuple[Specimen, ...] = (Specimen(TokenIsDeliveryCount, "CLAIM-10"),)
