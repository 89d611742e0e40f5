"""The event system: a listener and/or a fallback poller feeding handler workers.

``QueueConsumer`` runs one handler over a set of queues in a :class:`DeploymentMode`.
Handler success acks; failure nacks (or leaves the message to its visibility timeout).
A message is handled once per claim: pushed unclaimed copies are claimed by id first,
and a message already in flight here is never handed to a second worker. ``stop`` stops
intake, lets in-flight handlers finish within a bound, and releases what was claimed but
not started (the rest of a batch a cancelled worker was running too), so nothing is
lost. Every settlement names the claim it settles (``ack_claims``/``nack_claim``): a
handler that overran its claim cannot settle the claim another consumer holds now. A
worker hands its ack to the :class:`~.settlement.Settler` and takes the next message;
the work counts as succeeded once the ack is confirmed.

Claims the consumer makes itself carry their claim time (on ``clock``, which must run
with the provider's time: by default the provider's own ``clock`` if it has one): a
claim past half its visibility timeout is not started but released, so work queued
behind a slow handler does not run on expired claims.

Unclaimed copies arrive one notification per message. While more commands are waiting,
a worker claims in batches (``receive_messages``) instead of one ``fetch_message`` round
trip per copy, and copies of messages this consumer claimed recently are dropped without
a round trip (a nack or a lapsed claim forgets the message, so its next copy counts).
A hint whose claim failed is caught up on one poll interval later where no poller runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from mqcontract.clock import Clock, SystemClock
from mqcontract.errors import (
    BackendUnavailable,
    MessageNotFound,
    MessagingError,
    OperationTimeout,
)
from mqcontract.events.commands import (
    Command,
    Intake,
    ProcessClaimed,
    ProcessFromMessage,
    ProcessFromMessageEvent,
    command_channel,
)
from mqcontract.events.listener import QueueListener
from mqcontract.events.modes import DeploymentMode
from mqcontract.events.poller import FallbackPoller
from mqcontract.events.settlement import Settler
from mqcontract.events.stats import ConsumerStats
from mqcontract.messages import QueuedMessage
from mqcontract.service import MessagingService

__all__ = ["ConsumerSettings", "Handler", "QueueConsumer"]

log = logging.getLogger(__name__)

#: How many recently claimed messages a consumer remembers (to drop their pushed copies).
RECENT_CLAIMS = 10_000
#: Share of the visibility timeout after which a worker no longer starts a message the
#: consumer claimed (the handler it would start gets at least the other half).
CLAIM_USABLE = 0.5

Handler = Callable[[QueuedMessage], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class ConsumerSettings:
    """Tuning; ``poll_interval`` None means the provider's ``fallback_polling_interval``."""

    mode: DeploymentMode = DeploymentMode.HYBRID
    visibility_timeout: float = 30.0
    batch_size: int = 10
    workers: int = 4
    channel_capacity: int = 100
    poll_interval: float | None = None
    default_poll_interval: float = 5.0
    nack_on_failure: bool = True
    stop_grace: float = 10.0
    #: Acks handed to the settler and not yet confirmed, at most (a worker handing over
    #: one more waits). Each is a claim still held (push never has more than the
    #: provider's prefetch). None: ``max(64, 2 * batch_size)``, so that a polled batch
    #: can be settled whole (one statement on PGMQ) while the next is handed over; a
    #: bound under the batch size split every batch into several round trips.
    max_unconfirmed_acks: int | None = None
    #: Batches of acks being confirmed at once (see :mod:`~.settlement`).
    max_settling_batches: int = 4

    @property
    def ack_bound(self) -> int:
        """``max_unconfirmed_acks``, or its default for ``batch_size``."""
        if self.max_unconfirmed_acks is not None:
            return self.max_unconfirmed_acks
        return max(64, 2 * self.batch_size)


def _timeout_of(message: QueuedMessage) -> float | None:
    """The visibility timeout ``message``'s claim states (a pushed claim has its own)."""
    return message.claim.visibility_timeout if message.claim is not None else None


class QueueConsumer:
    """Consumes ``queues`` with ``handler``; use ``async with`` or start/stop."""

    def __init__(
        self,
        service: MessagingService,
        queues: Sequence[str],
        handler: Handler,
        settings: ConsumerSettings | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.service = service
        self.queues = list(queues)
        self.handler = handler
        self.settings = settings or ConsumerSettings()
        self.mode = self.settings.mode.effective_for_provider(service.capabilities)
        #: Whether the fallback poller polls as soon as the consumer starts. Not where
        #: push delivers the backlog (PUSH-14): push is draining it already, and a poll
        #: at once would claim part of it too (RabbitMQ: one ``basic.get`` round trip per
        #: message; Hybrid drained a backlog at 0.7x of EventDrivenOnly). A backlog push
        #: does not deliver (the listener died) still waits at most one interval.
        self.polls_at_start = self.mode.polls and not (
            self.mode.listens and service.capabilities.push_delivers_backlog
        )
        self.stats = ConsumerStats()
        provider_clock = getattr(service, "clock", None)
        self._clock: Clock = clock or (
            provider_clock if isinstance(provider_clock, Clock) else SystemClock()
        )
        self._sender, self._receiver = command_channel(self.settings.channel_capacity)
        self._listener: QueueListener | None = None
        self._intake: list[asyncio.Task[None]] = []
        #: Catch-ups scheduled after a failed hint (``_retry_hint``), and their queues.
        self._retries: set[asyncio.Task[None]] = set()
        self._retrying: set[str] = set()
        self._workers: list[asyncio.Task[None]] = []
        #: Set once stop cancels the workers (until the next start): a CancelledError then
        #: is stop's. Not cleared when stop itself is cancelled halfway: workers it had
        #: cancelled must end, not live on as if a handler had cancelled itself.
        self._cancelling_workers = False
        #: start and stop one at a time (two concurrent starts made two of everything).
        self._lifecycle = asyncio.Lock()
        #: Ids whose handler runs, and the claims of each id waiting behind it, with
        #: their intake and when they began to wait (see ``_process``).
        self._in_flight: set[tuple[str, int]] = set()
        self._behind: dict[
            tuple[str, int], collections.deque[tuple[QueuedMessage, Intake, float]]
        ] = {}
        #: Recent claims by id, with their message's ``enqueued_at``; oldest first,
        #: evicted from the front in constant time (see ``stats``).
        self._claimed: collections.OrderedDict[tuple[str, int], float] = collections.OrderedDict()
        #: The unstarted rest of each claimed batch a worker is running.
        self._unstarted: dict[int, collections.deque[QueuedMessage]] = {}  # by id()
        #: Claimed by a poll that was stopped before it could send them on.
        self._stranded: list[QueuedMessage] = []
        #: Stop gave up releasing (the backend stopped answering, or ``stop_grace`` ran
        #: out): what is left comes back after its visibility timeout instead.
        self._release_given_up = False
        #: The message whose release is being asked for (counted if stop cuts it short).
        self._releasing: QueuedMessage | None = None
        self._settler = Settler(
            service,
            self._acked,
            bound=self.settings.ack_bound,
            depth=self.settings.max_settling_batches,
        )
        self._running = False

    @property
    def poll_interval(self) -> float:
        """The poller's interval for this provider."""
        return (
            self.settings.poll_interval
            or self.service.fallback_polling_interval
            or self.settings.default_poll_interval
        )

    async def start(self) -> None:
        """Subscribe and/or start polling, then start the workers."""
        async with self._lifecycle:
            await self._start()

    async def _start(self) -> None:
        if self._running:
            return
        if self.mode.listens:
            self._listener = QueueListener(
                self.service, self.queues, self._sender, self.stats, self._clock
            )
            await self._listener.open()
            self._intake.append(asyncio.create_task(self._listener.run(), name="mq-listener"))
        if self.mode.polls:
            poller = FallbackPoller(
                self.service,
                self.queues,
                self._sender,
                self.stats,
                interval=self.poll_interval,
                batch_size=self.settings.batch_size,
                visibility_timeout=self.settings.visibility_timeout,
                clock=self._clock,
                defer_first=not self.polls_at_start,
                stranded=self._stranded.extend,
            )
            self._intake.append(asyncio.create_task(poller.run(), name="mq-poller"))
        self._settler.start()
        self._cancelling_workers = False
        self._workers = [self._new_worker(i) for i in range(self.settings.workers)]
        self._running = True

    async def stop(self) -> None:
        """Stop intake, finish in-flight work within ``stop_grace``, release the rest
        (within ``stop_grace`` again, while the backend answers: see ``left_on_stop``).

        Not from a handler: stop waits for the handlers, so one awaiting it would wait for
        itself and be cancelled halfway (``RuntimeError``; schedule it instead, with
        ``asyncio.create_task(consumer.stop())``).
        """
        if asyncio.current_task() in self._workers:
            raise RuntimeError(
                "QueueConsumer.stop() awaited from a handler would wait for that handler;"
                " schedule it instead: asyncio.create_task(consumer.stop())"
            )
        async with self._lifecycle:
            await self._stop()

    async def _stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self._release_given_up = False
        # Intake stops first, but the subscription stays open until every settlement is
        # done: pushed claims live on it (RabbitMQ: on its channel), so closing it first
        # would void the acks still being confirmed and requeue work already done.
        await _cancel_and_wait([*self._intake, *self._retries], self.settings.stop_grace)
        self._intake = []  # a start after this one makes its own
        stranded, self._stranded = self._stranded, []
        await self._release_at_stop(stranded)  # nobody will run them: back to the queue now
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.stop_grace):
                await self._receiver.drained()
        self._cancelling_workers = True
        await _cancel_and_wait(self._workers, self.settings.stop_grace)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.stop_grace):
                await self._settler.drain()
        await self._settler.close(self.settings.stop_grace)
        await self._release_at_stop(self._take_unstarted())
        if self._listener is not None:
            await self._listener.close()

    async def __aenter__(self) -> QueueConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- workers -----------------------------------------------------------------------

    def _new_worker(self, index: int) -> asyncio.Task[None]:
        task = asyncio.create_task(self._work(), name=f"mq-worker-{index}")
        task.add_done_callback(functools.partial(self._worker_ended, index))
        return task

    def _worker_ended(self, index: int, task: asyncio.Task[None]) -> None:
        """Replace a worker whose task was cancelled by someone other than stop while
        the consumer runs (its handler cancelled its own task: the request cannot be told
        from anyone else's, so it ended the worker), unless the consumer's other tasks
        are being cancelled too (the event loop shutting down without a stop)."""
        if not task.cancelled() or not self._running or self._cancelling_workers:
            return
        if any(t.cancelled() or t.cancelling() for t in self._intake) or self._settler.cancelled():
            return
        if index < len(self._workers) and self._workers[index] is task:
            self._workers[index] = self._new_worker(index)

    async def _work(self) -> None:
        while not self._cancelling_workers:  # (a handler may swallow stop's cancellation)
            if _cancel_requested():  # asked of this worker, and swallowed by a handler
                raise asyncio.CancelledError
            command = await self._receiver.receive()
            try:
                await self._dispatch(command)
            except MessagingError as exc:
                self.stats.record_error(f"worker: {exc}")
                self._retry_hint(command, exc)
            except Exception as exc:  # a provider bug must not silently kill the worker
                log.exception("worker: unexpected error")
                self.stats.record_error(f"worker: {type(exc).__name__}: {exc}")
            finally:
                self._receiver.done()

    def _retry_hint(self, command: Command, error: MessagingError) -> None:
        """Catch up on the queue of a hint whose claim failed, one poll interval later.

        A signal or unclaimed copy is the only word that its queue has work (and those
        folded into a catch-up went with it): where no poller runs, dropping it leaves
        the message until the next notification, which may never come. A poller polls
        the queue within an interval anyway. Only a failure that passes (the backend
        unavailable, an operation out of time) is retried: a refusal (a deleted queue, a
        batch size over the provider's limit) would fail the same way every interval.
        """
        match command:
            case (
                ProcessFromMessageEvent(queue_name=queue)
                | ProcessFromMessage(message=QueuedMessage(queue_name=queue), claimed=False)
            ):
                pass
            case _:
                return
        transient = isinstance(error, BackendUnavailable | OperationTimeout)
        if not self._running or self.mode.polls or not transient:
            return
        if queue in self._retrying:
            return
        self._retrying.add(queue)
        self.stats.hint_retries += 1
        task = asyncio.create_task(self._catch_up_later(queue), name="mq-retry")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _catch_up_later(self, queue: str) -> None:
        try:
            await self._clock.sleep(self.poll_interval)
        finally:
            self._retrying.discard(queue)  # a failure of this catch-up retries again
        try:
            await self._sender.send(ProcessFromMessageEvent(queue, None))
        except Exception as exc:  # nobody awaits this task: say what went wrong here
            log.exception("retry of %s: unexpected error", queue)
            self.stats.record_error(f"retry: {type(exc).__name__}: {exc}")

    async def _dispatch(self, command: Command) -> None:
        match command:
            case ProcessFromMessage(message=message, claimed=True, path=path, claimed_at=at):
                if at is not None and self._aged(at, _timeout_of(message)):
                    self.stats.released_unstarted += 1
                    await self._release([message])
                else:
                    await self._process(message, path, at)
            case ProcessClaimed(messages=messages, path=path, claimed_at=at):
                await self._run_claimed(collections.deque(messages), path, at, fresh=False)
            case ProcessFromMessage(message=message, claimed=False, path=path):
                await self._claim_and_process(
                    message.queue_name, message.msg_id, path, message.enqueued_at
                )
            case ProcessFromMessageEvent(queue_name=queue, msg_id=msg_id, path=path):
                if msg_id is None and self._listener is not None:
                    self._listener.catch_up_started(queue)
                if msg_id is not None and self.service.supports_fetch_by_message_id:
                    await self._claim_and_process(queue, msg_id, path)
                else:
                    await self._catch_up(queue, path)

    async def _claim_and_process(
        self, queue: str, msg_id: int, path: Intake, enqueued_at: float | None = None
    ) -> None:
        """Claim one hinted message by id and run it.

        A copy of a message this consumer claimed recently is dropped without a round
        trip. "The same message" is the same id and, when the hint says (a pushed copy
        does; a signal does not), the same ``enqueued_at``: a queue deleted and created
        again (by anyone) numbers its messages from 1 again, and its new message 1 is
        not the old one this consumer acked.
        """
        if not self.service.supports_fetch_by_message_id:
            await self._catch_up(queue, path)
            return
        seen = self._claimed.get((queue, msg_id))
        if seen is not None and (enqueued_at is None or enqueued_at == seen):
            self.stats.already_claimed += 1  # claimed here already: no round trip
            return
        if self._receiver.waiting():
            await self._catch_up(queue, path)  # a burst: claim in batches
            return
        claimed_at = self._clock.now()
        message = await self.service.fetch_message(queue, msg_id, self.settings.visibility_timeout)
        if message is None:
            self.stats.already_claimed += 1  # processed, held elsewhere, or not yet visible
            return
        self._remember(message)
        if self._aged(claimed_at, share=1.0):  # the fetch took the whole timeout
            self.stats.released_unstarted += 1
            await self._release([message])
            return
        await self._process(message, path, claimed_at)

    async def _catch_up(self, queue: str, path: Intake) -> None:
        """Drain ``queue`` from this worker in batches (one round trip per batch).

        Workers that are idle take the next messages of the batch; the rest run here, in
        order, while the claim is young: once it has aged (say, behind a slow handler)
        the unstarted rest is released instead of run on claims that may have expired,
        and from then on this worker claims only what it and the idle workers can start
        (at once: no other hint may come for what it released). It stops claiming when
        the consumer stops. Nothing is sent on a full channel: a worker blocked there
        while every other worker does the same would deadlock.
        """
        narrow = False
        while self._running:
            wanted = self.settings.batch_size
            if narrow:
                wanted = min(wanted, 1 + self._sender.idle())
            claimed_at = self._clock.now()
            batch = await self.service.receive_messages(
                queue, wanted, self.settings.visibility_timeout
            )
            for message in batch:
                self._remember(message)
            pending = collections.deque(batch)
            if not await self._run_claimed(pending, path, claimed_at, fresh=True):
                # What it released is visible again, and no hint may come for it (the
                # hints that announced it may have been folded into this catch-up).
                narrow = True
                continue
            if len(batch) < wanted:
                return

    async def _run_claimed(
        self,
        pending: collections.deque[QueuedMessage],
        path: Intake,
        claimed_at: float,
        *,
        fresh: bool,
    ) -> bool:
        """Run messages claimed together, in order, handing the next ones to idle workers;
        False when the rest was released (the claim aged, or the consumer stops).

        ``fresh``: claimed just now, so the first message starts unless the receive itself
        took the whole timeout (a receive that hangs on a failing backend can return
        claims that lapsed meanwhile, and the message may have been claimed, run and acked
        elsewhere since); the next ones only in the first half. A batch that waited in
        the channel is checked against the first half before its first message too.
        """
        started = not fresh
        self._unstarted[id(pending)] = pending
        try:
            done = await self._run_in_order(pending, path, claimed_at, started=started)
        except asyncio.CancelledError:
            if self._stop_cancelled():
                raise  # stays listed: stop releases what this worker never started
            # Someone else ended this worker: nobody would run the rest, or release it
            # (within stop_grace: the loop may be shutting down under the provider too).
            self._unstarted.pop(id(pending), None)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.stop_grace):
                    self.stats.released_unstarted += await self._release(pending)
            raise
        except BaseException:
            self._unstarted.pop(id(pending), None)
            raise
        self._unstarted.pop(id(pending), None)
        return done

    async def _run_in_order(
        self,
        pending: collections.deque[QueuedMessage],
        path: Intake,
        claimed_at: float,
        *,
        started: bool,
    ) -> bool:
        while pending:
            if _cancel_requested():  # asked of this worker, and swallowed by a handler
                raise asyncio.CancelledError  # the rest is released by the caller
            if not self._running:
                await self._release(pending, on_stop=True)
                return False
            if self._aged(claimed_at, share=CLAIM_USABLE if started else 1.0):
                self.stats.released_unstarted += len(pending)
                await self._release(pending)
                return False
            message = pending.popleft()
            while pending and self._sender.idle() > 0:
                command = ProcessFromMessage(pending[0], True, path, claimed_at)
                if not self._sender.offer(command):
                    break
                pending.popleft()
            started = True
            await self._process(message, path, claimed_at)
        return True

    def _aged(
        self, claimed_at: float, timeout: float | None = None, share: float = CLAIM_USABLE
    ) -> bool:
        """Whether a claim taken at ``claimed_at`` (on this consumer's clock) is past
        ``share`` of its timeout (``timeout``: the claim's own when known, else the
        consumer's). For claims the consumer makes, ``claimed_at`` is taken before the
        call that claims, so the age is never underestimated. A pushed claim is stamped
        when the listener takes it from the subscription: the time it waited there before
        (at most the prefetch, while every worker is busy) is not counted."""
        vt = self.settings.visibility_timeout if timeout is None else timeout
        return self._clock.now() - claimed_at > vt * share

    async def _release(self, messages: Iterable[QueuedMessage], *, on_stop: bool = False) -> int:
        """Give up claimed messages nobody started; how many were nacked (``on_stop``:
        each also counted in ``released_on_stop`` as it goes).

        Nacked by claim, so others may take them at once; a claim that lapsed meanwhile
        raises and changes nothing (someone else may hold the message by now), and the
        message comes back as its timeout promised. A deque is emptied as it goes, so a
        release cut short (its worker cancelled at stop) leaves only what it did not
        release, for stop to release once.
        """
        pending = messages
        if not isinstance(pending, collections.deque):
            pending = collections.deque(pending)
        nacked = 0
        while pending:
            message = pending.popleft()
            self._claimed.pop((message.queue_name, message.msg_id), None)
            if on_stop and self._release_given_up:
                self.stats.left_on_stop += 1  # back after its timeout (_release_at_stop)
                continue
            self._releasing = message
            try:
                await self.service.nack_claim(message.queue_name, message)
            except (OperationTimeout, BackendUnavailable):
                if on_stop:  # not answering: asking for each of the rest costs a timeout
                    self._release_given_up = True
                    self.stats.left_on_stop += 1
            except MessagingError:
                pass  # stale: it lapsed or was taken; nothing to give back
            else:
                nacked += 1
                if on_stop:
                    self.stats.released_on_stop += 1
            self._releasing = None  # (still set if cancelled: stop counts it as left)
        return nacked

    def _remember(self, message: QueuedMessage) -> None:
        """Note a claim, so pushed copies of the message are dropped without a fetch."""
        key = (message.queue_name, message.msg_id)
        self._claimed[key] = message.enqueued_at
        self._claimed.move_to_end(key)  # a new claim of an id is the newest
        if len(self._claimed) > RECENT_CLAIMS:
            self._claimed.popitem(last=False)

    async def _process(
        self, message: QueuedMessage, path: Intake, claimed_at: float | None = None
    ) -> None:
        """Run ``message``, then whatever was claimed with its id while it ran.

        A second claim of an id whose handler still runs is either the same message
        claimed again (its first claim lapsed behind a slow handler) or, where producers
        choose ids (RabbitMQ), another message with the same id, which the contract
        delivers and settles on its own (CLAIM-7). Dropping it held its claim unsettled
        until its timeout, and such messages ran a timeout apart. It waits behind the
        running one instead, without a worker: one consumer never runs two handlers for
        one id at once, and the worker that ran the first runs the next once it is done,
        unless its claim (aged from ``claimed_at``, when it was claimed; else from now)
        is past half its timeout by then: it is released, as is everything left waiting
        when the consumer stops, and what has aged already whenever another joins.
        """
        key = (message.queue_name, message.msg_id)
        if key in self._in_flight:
            self.stats.duplicate_claims += 1
            since = self._clock.now() if claimed_at is None else claimed_at
            behind = self._behind.setdefault(key, collections.deque())
            behind.append((message, path, since))  # before any await: its runner sees it
            while behind and self._aged(behind[0][2], _timeout_of(behind[0][0])):
                self.stats.released_unstarted += 1  # bounded: only young claims wait
                await self._release([behind.popleft()[0]])
            return
        self._in_flight.add(key)
        try:
            await self._run_one(message, path, key)
            while waiting := self._behind.get(key):
                message, path, since = waiting.popleft()
                if not waiting:
                    del self._behind[key]
                if not self._running:
                    await self._release([message], on_stop=True)
                elif self._aged(since, _timeout_of(message)):
                    self.stats.released_unstarted += 1
                    await self._release([message])
                else:
                    await self._run_one(message, path, key)
        except BaseException:
            if not self._stop_cancelled():  # the worker lives on: nothing waits in vain
                stranded = [m for m, _, _ in self._behind.pop(key, ())]
                with contextlib.suppress(Exception):
                    await self._release(stranded)
            raise
        finally:
            self._in_flight.discard(key)

    def _stop_cancelled(self) -> bool:
        """Whether the running task is being cancelled by stop (not by its handler)."""
        task = asyncio.current_task()
        return self._cancelling_workers and task is not None and task.cancelling() > 0

    async def _run_one(self, message: QueuedMessage, path: Intake, key: tuple[str, int]) -> None:
        # ``_value_``: the member's value without ``value``'s Python-level descriptor.
        self.stats.started(key, path._value_, message.receive_count)
        try:
            await self.handler(message)
        except (KeyboardInterrupt, SystemExit):
            raise  # the process is ending, not the handler failing
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and self._stop_cancelled():
                raise
            # Anything else the handler raised is its failure: a CancelledError of its
            # own (it awaited something cancelled), a GeneratorExit, a
            # BaseExceptionGroup, a BaseException subclass. A request to cancel this
            # worker's task that is not stop's (the event loop shutting down, or the
            # handler cancelling its own task: they cannot be told apart) ends the
            # worker once the message is given back; it is never withdrawn, which left
            # the task unable to end (a loop's shutdown waited on it for ever).
            requested = _cancel_requested()
            self.stats.handler_failed(key)
            log.info("handler failed for %s/%s: %s", *key, exc)
            if self.settings.nack_on_failure:
                # A redelivery the nack triggers may arrive before the nack returns: it
                # waits behind this one (``_process``), and runs once this returns.
                self._claimed.pop(key, None)
                try:
                    await self.service.nack_claim(message.queue_name, message)
                except MessageNotFound:
                    pass  # the claim is gone already: it comes back anyway
                except MessagingError as error:  # outcome unknown; the timeout retries
                    self.stats.record_error(f"nack {key[0]}/{key[1]}: {error}")
            if requested:
                raise asyncio.CancelledError from exc
            return
        await self._settler.ack(message)  # counted once the ack is confirmed

    def _acked(self, message: QueuedMessage, outcome: bool | MessagingError) -> None:
        """The outcome of a handed-over ack: only a settled one counts as succeeded.

        A stale claim (it lapsed, or died with a connection) or an unknown outcome means
        the message may come back; the rest of the work went on regardless.
        """
        key = (message.queue_name, message.msg_id)
        if outcome is True:
            self.stats.ack_confirmed(key)
            return
        if outcome is False or isinstance(outcome, MessageNotFound):
            self.stats.late_acks += 1
        else:
            self.stats.unsettled_acks += 1
            self.stats.record_error(f"ack {key[0]}/{key[1]}: {outcome}")
        self._claimed.pop(key, None)

    def _take_unstarted(self) -> list[QueuedMessage]:
        """Every claim no worker will run now that the workers are cancelled."""
        unstarted: list[QueuedMessage] = []
        behind, self._behind = self._behind, {}
        for waiting in behind.values():  # their worker was cancelled: nobody runs them
            unstarted.extend(message for message, _, _ in waiting)
        running, self._unstarted = self._unstarted, {}
        for pending in running.values():  # its worker was cancelled: nothing else runs it
            unstarted.extend(pending)
        for command in self._receiver.take_pending():
            if isinstance(command, ProcessFromMessage) and command.claimed:
                unstarted.append(command.message)
            elif isinstance(command, ProcessClaimed):
                unstarted.extend(command.messages)
        return unstarted

    async def _release_at_stop(self, messages: list[QueuedMessage]) -> None:
        """Give back claims nobody will run, within ``stop_grace`` and while the backend
        answers. A release is a courtesy (a claim left comes back after its visibility
        timeout), so a backend that stops answering (a table locked, a broker frozen)
        costs stop one operation timeout or ``stop_grace``, not an operation timeout per
        claim (a batch of 100 took close to an hour); what is left is ``left_on_stop``."""
        pending = collections.deque(messages)
        self._releasing = None
        if not self._release_given_up:
            try:
                async with asyncio.timeout(self.settings.stop_grace):
                    await self._release(pending, on_stop=True)
            except TimeoutError:
                self._release_given_up = True
                self.stats.left_on_stop += self._releasing is not None
                self._releasing = None
        for message in pending:
            self._claimed.pop((message.queue_name, message.msg_id), None)
        self.stats.left_on_stop += len(pending)


def _cancel_requested() -> bool:
    """Whether someone asked to cancel the running task (whatever its handler made of
    the request: raised it, wrapped it, or swallowed it)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _cancel_and_wait(tasks: list[asyncio.Task[None]], bound: float) -> None:
    """Cancel ``tasks`` and wait for them, at most ``bound`` seconds (a handler that
    swallows cancellation must not hold stop for ever). Our own cancellation is ours:
    waiting with ``asyncio.wait`` does not pass it on into the tasks. What a task
    raised instead of ending is logged, not raised into stop."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=bound)
    for task in pending:
        log.warning("%s did not end within %g s of being cancelled", task.get_name(), bound)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("%s ended with an error", task.get_name(), exc_info=task.exception())
