"""Push: per subscribed queue, a loop that pulls, claims and hands out held messages.

Each loop keeps one waiting pull request open on the queue's consumer (it expires every
``push_poll_interval_seconds`` and is renewed), so a new, released or lapsed message is
delivered to it as soon as the server has it; the loop claims it (the same ledger step as
``receive_messages``, with ``push_visibility_timeout_seconds``), takes whatever else is
there at once, and puts each message into the subscription as ``Message(claimed=True)``.
A subscription holds at most ``prefetch_count`` messages; a settle through the service
frees room. All of it runs on a connection of the subscription's own (``-push``), which
nats-py reconnects after a drop; nothing is lost meanwhile, the messages wait in the
stream. Stopping hands back (nacks) every message claimed but not yet taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

import nats.errors
from mqcontract.errors import MessagingError, ProviderClosed, QueueNotFound
from mqcontract.messages import Claim, Message, QueuedMessage
from mqcontract.subscription import QueueSubscription

from mqcontract_nats_jetstream._config import NatsJetStreamConfig
from mqcontract_nats_jetstream._errors import JsError, Severed
from mqcontract_nats_jetstream._link import Link

__all__ = ["PushLoop", "PushOwner"]

log = logging.getLogger(__name__)

#: Longest pause after consecutive failures (connection lost, queue deleted).
MAX_BACKOFF = 1.0


class PushOwner(Protocol):
    """What the loop needs from the service."""

    max_receive_limit: int

    async def claim(
        self, link: Link, queue: str, limit: int, vt: float, *, expires: float | None = None
    ) -> list[QueuedMessage]: ...

    async def release(self, claim: Claim) -> None: ...

    def track(self, claim: Claim, loop: PushLoop) -> None: ...

    def untrack(self, claim: Claim, loop: PushLoop) -> None: ...


class PushLoop:
    """Claims and hands out messages for one subscription."""

    def __init__(
        self,
        owner: PushOwner,
        subscription: QueueSubscription,
        settings: NatsJetStreamConfig,
        link: Link,
    ) -> None:
        self.subscription = subscription
        self.link = link
        self._owner = owner
        self._settings = settings
        #: claim -> monotonic deadline of each message pushed and not settled
        self.held: dict[Claim, float] = {}
        self._room_freed = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for queue in self.subscription.queues:
            task = asyncio.create_task(self._run(queue), name=f"mqcontract-nats-push:{queue}")
            self._tasks.append(task)

    def settled(self, claim: Claim) -> None:
        """A pushed claim was settled through the service, or found stale there."""
        if self.held.pop(claim, None) is not None:
            self._room_freed.set()

    async def stop(self) -> None:
        """Stop pulling; hand back what the consumer never took. Idempotent."""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for note in self.subscription.pending():
            if isinstance(note, Message):
                await self._hand_back(note.message)
        for claim in list(self.held):
            self._owner.untrack(claim, self)
        await self.link.close()

    def _room(self) -> int:
        now = time.monotonic()
        for claim, deadline in list(self.held.items()):
            if deadline <= now:  # lapsed: no longer ours, it may be anyone's now
                del self.held[claim]
                self._owner.untrack(claim, self)
        return self._settings.prefetch_count - len(self.held)

    async def _run(self, queue: str) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._round(queue)
                failures = 0
            except ProviderClosed:
                return
            except (
                MessagingError,
                JsError,
                Severed,
                nats.errors.Error,
                OSError,
                TimeoutError,
            ) as exc:
                failures += 1
                pause = min(MAX_BACKOFF, 0.05 * 2**failures)
                if not isinstance(exc, QueueNotFound):  # deleted: resumes if re-created
                    log.warning("nats-jetstream push on %s: %s; again in %.2f s", queue, exc, pause)
                await asyncio.sleep(pause)

    async def _round(self, queue: str) -> None:
        room = min(self._room(), self._owner.max_receive_limit)
        if room <= 0:
            self._room_freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.push_poll_interval_seconds):
                    await self._room_freed.wait()
            return
        vt = self._settings.push_visibility_timeout_seconds
        messages = await self._owner.claim(
            self.link, queue, room, vt, expires=self._settings.push_poll_interval_seconds
        )
        deadline = time.monotonic() + vt
        for message in messages:
            if message.claim is None:  # every message claimed here carries its claim
                continue
            self.held[message.claim] = deadline
            self._owner.track(message.claim, self)
            if not self.subscription.put(Message(message, claimed=True)):
                await self._hand_back(message)

    async def _hand_back(self, message: QueuedMessage) -> None:
        claim = message.claim
        if claim is None:
            return
        self.held.pop(claim, None)
        self._owner.untrack(claim, self)
        try:
            await self._owner.release(claim)
        except MessagingError as exc:  # it comes back when its timeout passes
            log.warning("nats-jetstream push: could not hand back %s: %s", claim.msg_id, exc)
