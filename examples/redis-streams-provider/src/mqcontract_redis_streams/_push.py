"""Push: one loop per subscription that claims messages and hands them out held.

Each round runs the same atomic claim as ``receive_messages`` on every subscribed queue
(with ``push_visibility_timeout_seconds``), up to the subscription's free capacity
(``prefetch_count`` minus what it holds), and puts each message into the subscription as
``Message(claimed=True)``: it stays held until acked or nacked, or until that timeout.

Between rounds the loop blocks in ``XREAD`` on the streams, starting after the last entry
the claim saw, on a connection of its own: a new message wakes it at once. Messages that
become visible without a new entry — released, expired, or delayed and now due — are
picked up when that read times out, after at most ``push_poll_interval_seconds`` (or
sooner, when the next delayed message is due). A nack through this provider wakes it too.

A broken connection is retried with a short back-off; nothing is lost meanwhile, because
the messages wait in Redis, not in notifications. Stopping hands back (``release``) every
message claimed but not yet taken by the consumer, with its delivery undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

from mqcontract.errors import MessagingError, ProviderClosed, QueueNotFound
from mqcontract.messages import Claim, Message, QueuedMessage
from mqcontract.subscription import QueueSubscription
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mqcontract_redis_streams._config import RedisStreamsConfig

__all__ = ["ClaimResult", "PushLoop", "PushOwner"]

log = logging.getLogger(__name__)

#: Longest pause after consecutive failures (connection lost, server restarting).
MAX_BACKOFF = 2.0

ClaimResult = tuple[list[QueuedMessage], str, float | None]
"""Messages claimed, the last stream entry id seen, seconds until the next delay is due."""


class PushOwner(Protocol):
    """What the loop needs from the service."""

    max_receive_limit: int

    def stream_key(self, queue: str) -> str: ...

    async def claim(self, queue: str, limit: int, visibility_timeout: float) -> ClaimResult: ...

    async def release(self, claim: Claim) -> None: ...

    def track(self, claim: Claim, loop: PushLoop) -> None: ...

    def untrack(self, claim: Claim, loop: PushLoop) -> None: ...


class PushLoop:
    """Claims and hands out messages for one subscription."""

    def __init__(
        self,
        owner: PushOwner,
        subscription: QueueSubscription,
        settings: RedisStreamsConfig,
        reader: Redis,
        *,
        timeout: float,
    ) -> None:
        self.subscription = subscription
        self._owner = owner
        self._settings = settings
        self._reader = reader
        self._timeout = timeout
        #: claim -> monotonic deadline of each message pushed and not settled
        self.held: dict[Claim, float] = {}
        self._cursors: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._turn = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin claiming in the background."""
        names = ",".join(self.subscription.queues)
        self._task = asyncio.create_task(self._run(), name=f"mqcontract-redis-push:{names}")

    def settled(self, claim: Claim, *, visible_again: bool) -> None:
        """A pushed claim was settled through the service, or found stale there."""
        was_full = self._room() <= 0
        self.held.pop(claim, None)
        if visible_again or was_full:
            self._wake.set()

    async def stop(self) -> None:
        """Stop claiming; hand back what the consumer never took. Idempotent."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(Exception):
                await task
        for note in self.subscription.pending():
            if isinstance(note, Message):
                await self._hand_back(note.message)
        for claim in list(self.held):
            self._owner.untrack(claim, self)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await self._reader.aclose()

    # -- the loop ----------------------------------------------------------------------

    def _room(self) -> int:
        now = time.monotonic()
        for claim, deadline in list(self.held.items()):
            if deadline <= now:  # expired: no longer ours, it may be anyone's now
                del self.held[claim]
                self._owner.untrack(claim, self)
        return self._settings.prefetch_count - len(self.held)

    async def _run(self) -> None:
        failures = 0
        while not self.stopping():
            self._wake.clear()
            try:
                more, wait = await self._round()
                if self.stopping():
                    return
                if not more:
                    await self._wait(wait)
                failures = 0
            except ProviderClosed:
                return
            except (MessagingError, RedisError, OSError) as exc:
                failures += 1
                pause = min(MAX_BACKOFF, 0.05 * 2**failures)
                log.warning(
                    "redis-streams push on %s: %s; retrying in %.2f s", self.names, exc, pause
                )
                await self._sleep(pause)

    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (a method: checks after an await stay live)."""
        return self._stopping

    @property
    def names(self) -> str:
        return ",".join(self.subscription.queues)

    async def _round(self) -> tuple[bool, float]:
        """Claim from every queue (starting at a rotating one); (more waiting?, max wait)."""
        queues = self.subscription.queues
        wait = self._settings.push_poll_interval_seconds
        more = False
        self._turn += 1
        for k in range(len(queues)):
            queue = queues[(self._turn + k) % len(queues)]
            room = min(self._room(), self._owner.max_receive_limit)
            if room <= 0:
                return False, wait
            try:
                messages, last_id, due_in = await self._owner.claim(
                    queue, room, self._settings.push_visibility_timeout_seconds
                )
            except QueueNotFound:  # deleted while subscribed: resumes if re-created
                self._cursors[queue] = "0-0"
                continue
            self._cursors[queue] = last_id
            if due_in is not None:
                wait = min(wait, due_in)
            more = more or len(messages) == room
            deadline = time.monotonic() + self._settings.push_visibility_timeout_seconds
            for message in messages:
                if message.claim is None:  # every message claimed here carries its claim
                    continue
                self.held[message.claim] = deadline
                self._owner.track(message.claim, self)
                if not self.subscription.put(Message(message, claimed=True)):
                    await self._hand_back(message)
        return more and self._room() > 0, wait

    async def _wait(self, seconds: float) -> None:
        """Until a new entry, a local nack or free capacity, or ``seconds`` pass."""
        if self._room() <= 0:
            await self._sleep(seconds)
            return
        streams: dict[Any, Any] = {  # redis-py's key and id types
            self._owner.stream_key(q): cursor for q, cursor in self._cursors.items()
        }
        if not streams:
            await self._sleep(seconds)
            return
        block_ms = max(1, int(seconds * 1000))
        read = asyncio.ensure_future(self._read(streams, block_ms))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({read, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (read, woken):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                        await task
        if read.done() and not read.cancelled():
            error = read.exception()
            if error is not None:
                raise error

    async def _read(self, streams: dict[Any, Any], block_ms: int) -> object:
        """Block until an entry follows a cursor; bounded even if the server goes silent."""
        async with asyncio.timeout(block_ms / 1000 + self._timeout):
            return await self._reader.xread(streams, count=1, block=block_ms)

    async def _sleep(self, seconds: float) -> None:
        """Pause, but wake early on a local settle or stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _hand_back(self, message: QueuedMessage) -> None:
        claim = message.claim
        if claim is None:
            return
        self.held.pop(claim, None)
        self._owner.untrack(claim, self)
        try:
            await self._owner.release(claim)
        except MessagingError as exc:  # it comes back when its timeout passes
            log.warning(
                "redis-streams push: could not hand back %s on %s: %s",
                claim.msg_id,
                claim.queue_name,
                exc,
            )
