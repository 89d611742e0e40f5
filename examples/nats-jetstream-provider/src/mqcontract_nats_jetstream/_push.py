"""Push: per subscribed queue, a loop that pulls, claims and hands out held messages.

Each loop keeps one waiting pull request open on the queue's consumer (it expires every
``push_poll_interval_seconds`` and is renewed), so a new, released or lapsed message is
delivered to it as soon as the server has it; the loop claims it (the same ledger step as
``receive_messages``, with ``push_visibility_timeout_seconds``), takes whatever else is
there at once, and puts each message into the subscription as ``Message(claimed=True)``.
A subscription holds at most ``prefetch_count`` messages; a settle through the service
frees room. All of it runs on a connection of the subscription's own (``-push``), which
nats-py reconnects after a drop; nothing is lost meanwhile, the messages wait in the
stream.

Stopping hands back (nacks) every message pulled but not taken by the consumer, whatever
the loop was doing: a pull still waiting is abandoned to the link (which hands back what
it delivers later and closes only once the request has ended), deliveries already pulled
are handed back unclaimed, a claim under way is finished and then released. Nothing
stays invisible for the ack wait or the push timeout because a subscription closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import nats.errors
from mqcontract.errors import MessagingError, ProviderClosed, QueueNotFound
from mqcontract.messages import Claim, Message, QueuedMessage
from mqcontract.subscription import QueueSubscription
from nats.aio.msg import Msg

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

    async def pull(
        self, link: Link, queue: str, limit: int, *, expires: float | None = None
    ) -> list[Msg]: ...

    async def grant(
        self, link: Link, queue: str, deliveries: list[Msg], vt: float
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
        *,
        stop_timeout: float,
    ) -> None:
        self.subscription = subscription
        self.link = link
        self._owner = owner
        self._settings = settings
        #: How long :meth:`stop` lets a round finish before it cancels it.
        self._stop_timeout = stop_timeout
        #: claim -> monotonic deadline of each message pushed and not settled
        self.held: dict[Claim, float] = {}
        self._room_freed = asyncio.Event()
        self._stopping = asyncio.Event()
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
        """Stop pulling; hand back what the consumer never took. Idempotent.

        A round is not cancelled at an arbitrary point: a pull still waiting for its
        first delivery is abandoned (the link hands back what it brings later), but
        deliveries already pulled are claimed and then handed back, or handed back
        unclaimed. Only a round stuck past ``stop_timeout`` is cancelled."""
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=self._stop_timeout)
            for task in stuck:
                log.warning("nats-jetstream push: %s did not stop in time", task.get_name())
                task.cancel()
            if stuck:
                await asyncio.wait(stuck)
        for note in self.subscription.pending():
            if isinstance(note, Message):
                await self._hand_back(note.message)
        for claim in list(self.held):
            self._owner.untrack(claim, self)
        await self.link.close()  # after every pull request it sent has ended

    def _room(self) -> int:
        now = time.monotonic()
        for claim, deadline in list(self.held.items()):
            if deadline <= now:  # lapsed: no longer ours, it may be anyone's now
                del self.held[claim]
                self._owner.untrack(claim, self)
        return self._settings.prefetch_count - len(self.held)

    async def _run(self, queue: str) -> None:
        failures = 0
        while not self._stopping.is_set():
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
                await self._until(self._stopping, pause)

    async def _round(self, queue: str) -> None:
        room = min(self._room(), self._owner.max_receive_limit)
        if room <= 0:
            self._room_freed.clear()
            await self._until(self._room_freed, self._settings.push_poll_interval_seconds)
            return
        deliveries = await self._pull(queue, room)
        if not deliveries:
            return
        if self._stopping.is_set():  # pulled as the subscription closed: visible at once
            for msg in deliveries:
                await self.link.nak_quietly(msg)
            return
        vt = self._settings.push_visibility_timeout_seconds
        messages = await self._owner.grant(self.link, queue, deliveries, vt)
        deadline = time.monotonic() + vt
        for message in messages:
            if message.claim is None:  # every message claimed here carries its claim
                continue
            self.held[message.claim] = deadline
            self._owner.track(message.claim, self)
            if not self.subscription.put(Message(message, claimed=True)):  # closed meanwhile
                await self._hand_back(message)

    async def _pull(self, queue: str, room: int) -> list[Msg]:
        """Deliveries of one waiting pull; ``[]`` if the loop is stopped meanwhile."""
        pulling = asyncio.ensure_future(
            self._owner.pull(
                self.link, queue, room, expires=self._settings.push_poll_interval_seconds
            )
        )
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({pulling, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await self.link.abandon(pulling)
            raise
        finally:
            stopped.cancel()
        if not pulling.done():  # stopped: the link follows the request to its end
            await self.link.abandon(pulling)
            return []
        return pulling.result()

    async def _until(self, event: asyncio.Event, seconds: float) -> None:
        """Wait until ``event`` is set or the loop stops, at most ``seconds``."""
        waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._stopping.wait())}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

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
