"""Broken providers whose holders keep claims when they stop running (HOLD)."""

from __future__ import annotations

import asyncio
import dataclasses
import heapq

from mqcontract.capabilities import Capabilities, VisibilityEnforcer
from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract_conformance.selftest.catalogue import Specimen
from mqcontract_conformance.selftest.harness import FROZEN


class HolderTimersWithoutHeartbeat(InMemoryMessagingService):
    """Returns claims with timers in the holding process and declares a frozen-holder bound,
    but nothing (no heartbeat) ends the claims of a holder whose timers stopped."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(
            super().capabilities,
            visibility_enforced_by=VisibilityEnforcer.HOLDER,
            frozen_holder_release_seconds=2.0,
        )

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        message = super()._claim(queue, entry, visibility_timeout)
        entry.version += 1  # the store forgets the deadline: this process keeps it
        timers: set[asyncio.Task[None]] = self.__dict__.setdefault("_timers", set())
        timer = asyncio.ensure_future(self._release(queue, entry, entry.claim_token))
        timers.add(timer)
        timer.add_done_callback(timers.discard)
        return message

    async def _release(self, queue: _Queue, entry: _Entry, token: object) -> None:
        await self.clock.sleep(entry.claim_timeout)
        if getattr(self, FROZEN, False) or not entry.held or entry.claim_token != token:
            return
        heapq.heappush(queue.timed, (self.clock.now(), entry.msg_id, entry.version))

    async def close(self) -> None:
        for timer in list(self.__dict__.get("_timers", ())):
            timer.cancel()
        await super().close()


SPECIMENS: tuple[Specimen, ...] = (Specimen(HolderTimersWithoutHeartbeat, "HOLD-1"),)
