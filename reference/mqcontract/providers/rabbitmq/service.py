r"""The RabbitMQ provider: AMQP 0-9-1 through aio-pika's robust connection.

How the contract maps onto RabbitMQ (each seam has its module):

* **Connections and channels** (:mod:`._channels`): up to three robust connections, for
  operations, for publishing (a resource alarm blocks only it) and for push consumers;
  every channel is owned and re-opened here.
* **Ids** (:mod:`._ids`): assigned at publish and carried as the AMQP ``message_id``
  property, so they survive requeues and dead-lettering. Their node bits are leased from
  the broker (:mod:`._lease`), so live producers never share them; producers choose ids
  (``producer_assigned_ids``), so a foreign publisher can still put two messages with one
  id on a queue, and settlement by claim keeps those apart.
* **Foreign messages** (published by other clients): a ``message_id`` is an id only in
  its canonical form (ASCII digits, ``1..2**63 - 1``); a message without one gets a hash
  of its body and properties as its id, the same on every redelivery and in every
  process (messages alike in both share it). Its ``enqueued_at`` is mqcontract's header
  when that holds a time, else the AMQP ``timestamp``, else the time in a parsed id;
  with none of these (a hashed id holds no time) it is when this process first saw the
  message. *Limitation:* that last one is kept per process (bounded, 100,000 messages):
  another process, or this one after a restart or after forgetting it, reports a later
  time for the same message; no broker-side time exists (RabbitMQ keeps none for classic
  or quorum queues) to do better. Values pamqp cannot decode (a timestamp past the year
  9999, a string that is not UTF-8) are decoded tolerantly, never fatal to the
  connection (:mod:`._decoding`).
* **Send.** Publisher confirms plus ``mandatory=True`` on the default exchange: a message
  to a missing queue comes back (``Basic.Return``) and raises ``QueueNotFound``; nothing
  is silently dropped and nothing is created. A batch's messages are confirmed one by
  one: when the broker refuses some (``Basic.Nack``, say a foreign queue's
  ``x-overflow=reject-publish``) and takes the rest, ``BatchRefused.sent_ids`` says which
  it took.
* **Receive.** ``basic.get`` on a channel per queue; each message is held
  (:mod:`._holds`) with a client-side visibility timer.
* **Ack/nack** (:mod:`._holds`, :mod:`._settlement`): every delivery held gets its own
  claim token; only a live claim this service holds reaches the broker, anything else
  (acked, nacked, expired, another service's, or held on a channel that has since closed)
  raises ``StaleClaim`` without a frame being sent. A claim lost with its connection is
  gone like an expired one (ERR-6), and a redelivery still waiting in a subscription is
  held by nobody yet (ERR-7, PUSH-12): an ack that returned is never redelivered anywhere,
  and an ack that raised means the work runs again (at least once). A settlement the
  connection cut off raises ``ConnectionLost`` or ``OperationTimeout``: its outcome is
  unknown, and the channel is closed if it is still open, so the message is requeued
  rather than left held without a timer. ``ack_claims`` writes each channel's ack frames
  at once, then one read-back per channel confirms them all (:mod:`._settlement`). A
  ``basic.get`` channel's read-back is a passive declare of its queue, so a settlement
  of a received claim on a queue another client deleted raises ``QueueNotFound`` at no
  extra cost; a pushed claim's queue deleted is known from the broker's cancel.
* **Receive count.** Quorum queues: ``x-delivery-count`` + 1, exact (checked on 3.10;
  RabbitMQ 4 adds a default delivery limit of 20 after which a quorum queue drops the
  message), per message even when messages share an id. Classic queues keep no count: 1
  unless ``redelivered``, else a lower bound (at least 2, or one more than this process
  saw last time; :mod:`._counts` says how messages sharing an id are told apart) —
  declared as ``exact_receive_count=False``.
* **Delay** (:mod:`._delay`): wait queues with per-queue TTL dead-lettering into the target.
  A wait queue that exists with other arguments (declared by another client, or another
  version) is ``WaitQueueConflict``, a ``QueueError`` naming both queues: not an outage.
* **Push** (:mod:`._consumers`): ``basic.consume`` per subscription; each delivery is a
  claimed ``Message`` held like a received one. A missing queue fails the subscription
  before anything is consumed. A subscription outlives the deletion of its queues (the
  broker cancels their consumers): once a queue of that name exists again, it is
  consumed again within about a second, while its other queues go on. *Limitation*
  (RabbitMQ 3.10, quorum queues): the broker cancels a deleted quorum queue's consumers
  ~30 ms after the delete and never if the name is declared again within that time;
  such a consumer stays attached to the new queue and swallows its messages unseen. So
  ``delete_queue`` of a quorum queue other clients consume returns only after
  ``QUORUM_CANCEL_GRACE`` (0.25 s); a foreign client that deletes and re-declares a
  quorum queue faster than that still leaves this provider's subscriptions to it deaf
  until their channel is closed (a reconnect, or closing the subscription).
* **Listing.** Only through the management HTTP API: ``management_url``, else the URL
  derived from the AMQP URL when it answers at connect (:func:`._management.find_management`);
  without it ``list_queues`` is not claimed. Queues are marked with the declare argument
  ``x-mqcontract`` and only marked ones are listed.
* **Errors** (:mod:`._errors`): one table; arguments and the closed state are checked by
  ``BaseMessagingService`` before any of this runs. A queue exclusive to another
  connection is ``QueueLocked`` (a ``QueueError``), not a lost connection, for the
  operations that use the queue itself (receive, subscribe, ``subscribe_many`` naming it,
  create, delete); sending to it is allowed (delayed or not, a batch or an empty one),
  and ``queue_exists`` says it exists. A subscription whose queue becomes exclusive to
  another connection goes on consuming its other queues and looks for that one again.
  A queue the user's permissions do not cover is ``AccessRefused`` (a ``QueueError``
  quoting the broker's ACCESS_REFUSED), for whichever operation the broker refuses.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

from aio_pika import RobustConnection
from aiormq.exceptions import (
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    ConnectionNotImplemented,
    DeliveryError,
)
from pamqp import commands as spec

from mqcontract.capabilities import (
    Capabilities,
    PayloadFidelity,
    PushKind,
    RequeuePosition,
    VisibilityEnforcer,
)
from mqcontract.config import MessagingConfig, RabbitMqConfig
from mqcontract.errors import (
    BackendUnavailable,
    OperationTimeout,
    QueueNotFound,
    StaleClaim,
    UnsupportedOperation,
)
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.service import BaseMessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract.validation import QUEUE_NAME_PATTERN

from . import _delay
from ._channels import (
    MISSED_HEARTBEATS,
    Channel,
    Channels,
    exists,
    heartbeat_seconds,
    open_connection,
)
from ._consumers import Consumers
from ._errors import (
    ERRORS,
    BatchRefused,
    PublishingBlocked,
    UnsupportedQueueType,
    WaitQueueConflict,
    unsupported_type,
)
from ._holds import ENQUEUED_AT_HEADER, Holds
from ._ids import MessageIdGenerator
from ._lease import NodeLease
from ._liveness import Liveness
from ._management import ManagementClient, find_management, vhost_of
from ._policies import PolicyCheck
from ._tasks import Background

__all__ = ["RabbitMqMessagingService", "connect_rabbitmq", "open_connection"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Declare argument marking queues created through mqcontract (RabbitMQ ignores unknown
#: ``x-`` arguments and does not compare them on re-declare).
MARKER_ARGUMENT = "x-mqcontract"
#: Seconds ``delete_queue`` waits after deleting a quorum queue that other clients
#: consume, for the broker to cancel their consumers (it does ~30 ms after the delete,
#: measured on RabbitMQ 3.10, and never once the name is declared again): many times
#: that, so a re-create right after the delete cannot beat it.
QUORUM_CANCEL_GRACE = 0.25
#: Seconds ``delete_queue`` waits for the management API's list of other processes'
#: wait queues (at most a third of the operation's bound): they expire on their own, so
#: a management API that does not answer must not cost the delete its whole bound.
WAIT_LISTING_BOUND = 5.0
#: Seconds a queue found of a type the provider cannot serve is refused without asking
#: the broker again (it may have been deleted and declared again as a queue it serves).
UNSUPPORTED_RECHECK = 30.0


class RabbitMqMessagingService(BaseMessagingService):
    """RabbitMQ through robust connections and owned channels; see the module docstring."""

    error_table = ERRORS

    def __init__(
        self,
        config: RabbitMqConfig,
        connection: RobustConnection,
        *,
        quorum: bool,
        operation_timeout: float,
        connection_name: str,
        ids: MessageIdGenerator | None = None,
        management: ManagementClient | None = None,
    ) -> None:
        self.provider_name = "rabbitmq-quorum" if quorum else "rabbitmq"
        self.connection_name = connection_name
        self._quorum = quorum
        self._target = config.url
        self._operation_timeout = operation_timeout
        self._closed = False
        #: This service's ids; given ones keep their node (no lease is taken for them).
        self._ids = ids or MessageIdGenerator()
        self._lease = None if ids is not None else NodeLease(self._ids, timeout=operation_timeout)
        self._vhost = vhost_of(config.urls[0])
        #: The management API, when :func:`find_management` found one (``list_queues``).
        self._management = management
        self._wait_queues: dict[str, set[str]] = {}
        #: Policies that would break a delayed send, read where the management API is.
        self._policy_check = (
            None
            if management is None
            else PolicyCheck(
                management, self._vhost, min(operation_timeout / 3, WAIT_LISTING_BOUND)
            )
        )
        #: Queues a ``basic.get`` found of a type the provider cannot serve, and when:
        #: asking again would close the connection again (and void every claim on it),
        #: so for ``UNSUPPORTED_RECHECK`` seconds it is refused without asking.
        self._unservable: dict[str, float] = {}
        self._tasks = Background()
        self._holds = Holds(quorum=quorum, tasks=self._tasks, timeout=operation_timeout)
        self._channels = Channels(
            config,
            connection,
            provider=self.provider_name,
            connection_name=connection_name,
            timeout=operation_timeout,
            tasks=self._tasks,
            is_closed=lambda: self._closed,
            busy=self._holds.channels,
        )
        self._liveness = Liveness(
            lambda: self._channels.connections,
            timeout=config.connection_timeout_seconds,
            tasks=self._tasks,
            is_closed=lambda: self._closed,
        )
        self._consumers = Consumers(
            config,
            provider=self.provider_name,
            channels=self._channels,
            holds=self._holds,
            tasks=self._tasks,
            timeout=operation_timeout,
            is_closed=lambda: self._closed,
        )
        self._holds.on_released = self._consumers.maybe_retire
        # Holds first: the consumers then see only what is still held.
        self._channels.on_channel_closed += [
            self._holds.forget_channel,
            self._consumers.channel_closed,
        ]
        self._capabilities = Capabilities(
            push=PushKind.FULL,
            pushed_messages_claimed=True,
            fetch_by_id=False,
            requires_fallback_polling=False,
            fallback_polling_interval=None,
            delay=True,
            # A client-side timer plus one nack frame: measured ~10 ms late on a local
            # broker; 50 ms leaves room for a loaded machine.
            visibility_precision_seconds=0.05,
            requeue_position=RequeuePosition.BACK if quorum else RequeuePosition.ORIGINAL,
            exact_receive_count=quorum,
            fifo=True,
            payload_fidelity=PayloadFidelity.BYTES,
            max_message_size_bytes=config.max_message_size_bytes,
            list_queues=self._management is not None,
            producer_assigned_ids=True,
            # Timers in this process return claims: a frozen holder keeps them until the
            # broker gives its silent connection up.
            visibility_enforced_by=VisibilityEnforcer.HOLDER,
            frozen_holder_release_seconds=float(MISSED_HEARTBEATS * heartbeat_seconds(config)),
            # basic.consume delivers what is ready in the queue, not only later publishes.
            push_delivers_backlog=True,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- lifecycle ---------------------------------------------------------------------

    def _queue_arguments(self) -> dict[str, Any]:
        kind = "quorum" if self._quorum else "classic"
        return {"x-queue-type": kind, MARKER_ARGUMENT: kind}

    async def _require_queue(self, name: str) -> None:
        """``QueueNotFound`` unless ``name`` exists (exclusive to another connection or
        not: publishing to it is allowed, and a stale claim on it is still stale)."""
        if not await self._queue_exists(name):
            raise QueueNotFound(name)

    async def _create_queue(self, name: str) -> None:
        async with self._channels.scratch() as channel:
            try:
                await channel.queue_declare(name, durable=True, arguments=self._queue_arguments())
            except ChannelPreconditionFailed as exc:
                queue_type = unsupported_type(str(exc))
                if queue_type is not None:
                    raise UnsupportedQueueType(name, queue_type) from None
                # It exists with other properties (say, the other queue type): it exists.
                log.warning("queue %r exists with different arguments; keeping it", name)
        self._unservable.pop(name, None)

    async def _delete_queue(self, name: str) -> None:
        self._unservable.pop(name, None)
        if self._policy_check is not None:
            self._policy_check.forget(name)
        waits = self._wait_queues.pop(name, set())
        if self._management is not None:
            # Other processes' wait queues too; without the API they expire on their own.
            prefix = _delay.wait_queue_prefix(name)
            try:
                async with asyncio.timeout(min(self._operation_timeout / 3, WAIT_LISTING_BOUND)):
                    listed = await self._management.queues(self._vhost)
            except (BackendUnavailable, TimeoutError) as exc:
                why = str(exc) or f"no answer from {self._management.display_url}"
                log.warning("cannot list wait queues of %r: %s", name, why)
                listed = []
            waits |= {q["name"] for q in listed if str(q.get("name", "")).startswith(prefix)}
        # Other clients' consumers of a quorum queue are cancelled by the broker some
        # 30 ms after the delete, and never if the name is declared again before that:
        # they would stay attached to the new queue and silently swallow its messages
        # (RabbitMQ 3.10). Deleting one that others consume waits that out.
        others = await self._consumer_count(name) if self._quorum else 0
        async with self._channels.scratch() as channel:
            await channel.queue_delete(name)
            for wait in sorted(waits):
                await channel.queue_delete(wait)
        self._holds.forget_queue(name)
        self._channels.drop_receiver(name)
        others -= await self._consumers.queue_deleted(name)
        if others > 0:
            await asyncio.sleep(QUORUM_CANCEL_GRACE)

    async def _consumer_count(self, name: str) -> int:
        """How many consumers ``name`` has (0 if it does not exist)."""
        async with self._channels.scratch() as channel:
            try:
                ok = await channel.queue_declare(name, passive=True)
            except ChannelNotFoundEntity:
                return 0
        return int(getattr(ok, "consumer_count", 0) or 0)

    async def _queue_exists(self, name: str) -> bool:
        async with self._channels.scratch() as channel:
            try:
                return await exists(channel, name)
            except ChannelLockedResource:
                return True  # exclusive to another connection, but it exists

    def _unsupported(self, operation: str) -> str:
        if operation == "list_queues":
            return "list_queues (needs the management API; none was found)"
        return operation

    async def _list_queues(self) -> list[str]:
        if self._management is None:
            raise UnsupportedOperation(
                self.provider_name, "list_queues (needs the management API; none was found)"
            )
        listed = await self._management.queues(self._vhost)
        names = {
            str(q["name"])
            for q in listed
            if MARKER_ARGUMENT in (q.get("arguments") or {})
            and QUEUE_NAME_PATTERN.fullmatch(str(q.get("name", "")))
        }
        return sorted(names)

    # -- sending -----------------------------------------------------------------------

    async def _publisher(self) -> Channel:
        """The publish channel, on a connection holding this service's node lease (ids
        are made only after this, so each carries a node its connection holds)."""
        channel = await self._channels.publisher()
        if self._lease is not None:
            await self._lease.ensure(channel.connection)
        return channel

    async def _publish(self, channel: Channel, routing_key: str, body: bytes, msg_id: int) -> None:
        """Publish and wait for the broker's confirm (callers bound it by the timeout)."""
        properties = spec.Basic.Properties(
            message_id=str(msg_id),
            delivery_mode=2,
            content_type="application/octet-stream",
            headers={ENQUEUED_AT_HEADER: time.time_ns() // 1000},
        )
        # No wait for the frame to be flushed (the confirm says more than that), so a
        # batch's publishes are queued in one go instead of one loop turn each.
        await channel.basic_publish(
            body,
            exchange="",
            routing_key=routing_key,
            properties=properties,
            mandatory=True,
            wait=False,
        )

    async def _send(self, queue: str, payload: bytes) -> int:
        channel = await self._publisher()
        msg_id = self._ids.next_id()
        async with asyncio.timeout(self._operation_timeout):
            await self._publish(channel, queue, payload, msg_id)
        return msg_id

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        if delay_seconds <= 0:
            return await self._send(queue, payload)
        ms = _delay.delay_ms(delay_seconds)
        wait = _delay.wait_queue_name(queue, ms)
        await self._require_queue(queue)
        async with self._channels.scratch() as channel:
            # Re-declaring renews the wait queue's x-expires lease.
            try:
                await channel.queue_declare(
                    wait, durable=True, arguments=_delay.wait_queue_arguments(queue, ms)
                )
            except ChannelPreconditionFailed as exc:
                # Declared by someone else with other arguments: lasting, not an outage
                # (only this throwaway channel is closed).
                reply = str(exc.args[0] if exc.args else exc)
                raise WaitQueueConflict(queue, wait, reply) from exc
        self._wait_queues.setdefault(queue, set()).add(wait)
        if self._policy_check is not None:
            await self._policy_check.check(queue, wait, ms)
        channel = await self._publisher()
        msg_id = self._ids.next_id()
        async with asyncio.timeout(self._operation_timeout):
            await self._publish(channel, wait, payload, msg_id)
        return msg_id

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        if not payloads:  # nothing to publish, so nothing would come back: ask
            await self._require_queue(queue)
            return []
        channel = await self._publisher()
        ids = [self._ids.next_id() for _ in payloads]
        # One channel keeps publish order; confirms are awaited together, under one bound
        # (the publishes run at once: a timer each would bound them no differently).
        pairs = zip(payloads, ids, strict=True)
        async with asyncio.timeout(self._operation_timeout):
            results = await asyncio.gather(
                *(self._publish(channel, queue, body, msg_id) for body, msg_id in pairs),
                return_exceptions=True,
            )
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not _refused(failure):
                raise failure  # not enqueued (returned), or not known to be: as for one send
        if failures:
            # Only refusals: each message's own confirm says whether the broker took it,
            # whatever order the confirms came back in.
            outcomes = zip(ids, results, strict=True)
            taken = [msg_id for msg_id, r in outcomes if not isinstance(r, BaseException)]
            raise BatchRefused(queue, taken, len(ids))
        return ids

    # -- receiving and settling --------------------------------------------------------

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        self._refuse_unservable(queue)
        channel = await self._channels.receiver(queue)
        claimed: list[QueuedMessage] = []
        async with asyncio.timeout(self._operation_timeout):
            while len(claimed) < limit:
                try:
                    delivered = await channel.basic_get(queue, no_ack=False)
                except ConnectionNotImplemented:
                    self._unservable[queue] = time.monotonic()  # not on every poll
                    raise UnsupportedQueueType(queue, None) from None
                if not isinstance(delivered.delivery, spec.Basic.GetOk):
                    break
                claimed.append(self._holds.hold(queue, channel, delivered, visibility_timeout))
        return claimed

    def _refuse_unservable(self, queue: str) -> None:
        """``UnsupportedQueueType`` if a ``basic.get`` found ``queue`` of such a type lately."""
        found = self._unservable.get(queue)
        if found is not None and time.monotonic() - found < UNSUPPORTED_RECHECK:
            raise UnsupportedQueueType(queue, None)

    async def _ack(self, queue: str, claim: Claim) -> None:
        await self._settle(queue, claim, ack=True)

    async def _nack(self, queue: str, claim: Claim) -> None:
        await self._settle(queue, claim, ack=False)

    async def _settle(self, queue: str, claim: Claim, *, ack: bool) -> None:
        """Ack or nack the delivery ``claim`` holds; a claim lost with its channel is not
        held (ERR-6). A stale claim on a deleted queue is ``QueueNotFound``."""
        try:
            await self._holds.settle(queue, claim, ack=ack)
        except StaleClaim:
            await self._require_queue(queue)
            raise

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        settled = await self._holds.ack_many(queue, claims)
        if not all(settled):
            await self._require_queue(queue)
        return settled

    # -- push --------------------------------------------------------------------------

    async def _subscribe(self, queues: tuple[str, ...]) -> QueueSubscription:
        for queue in queues:
            self._refuse_unservable(queue)
        # A missing queue is QueueNotFound before anything is consumed (Consumers).
        return await self._consumers.subscribe(queues)

    # -- shutdown ----------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        await self._consumers.close()
        self._closed = True
        self._holds.clear()
        # Closing the connection makes the broker requeue everything still unacked.
        await self._channels.close()
        await self._tasks.cancel_all()

    async def _translated(
        self, operation: str, queue: str, call: Awaitable[T], *, connecting: bool = False
    ) -> T:
        """As the base class; an operation that ran out of time also has every connection
        probed (:mod:`._liveness`), so a node that answers nothing is left, and a send
        that ran out of time behind a resource alarm says so (:class:`PublishingBlocked`)."""
        try:
            return await super()._translated(operation, queue, call, connecting=connecting)
        except OperationTimeout as exc:
            self._liveness.suspect()
            if operation in _SENDS and self._channels.blocked("publish"):
                raise PublishingBlocked(exc.operation, exc.seconds, exc.queue) from exc
            raise

    # -- for harnesses -----------------------------------------------------------------

    @property
    def connection_names(self) -> tuple[str, ...]:
        """Client-provided names of the open connections: operations first, then
        publishing and push once a send and a subscribe opened them."""
        return self._channels.connection_names

    @property
    def push_connection_name(self) -> str | None:
        """The push connection's name, once a subscribe opened it."""
        if self._channels.push_connection is None:
            return None
        return self._channels.name_of("push")

    @property
    def push_connection(self) -> RobustConnection | None:
        """The push connection, once a subscribe opened it."""
        return self._channels.push_connection

    @property
    def robust_connections(self) -> tuple[RobustConnection, ...]:
        """The open connections, in the order of :attr:`connection_names`."""
        return self._channels.connections


#: The operations that publish, on the connection a resource alarm blocks.
_SENDS = frozenset({"send_message", "send_message_with_delay", "send_batch"})


def _refused(failure: BaseException) -> bool:
    """Whether a publish failed by the broker's ``Basic.Nack``: refused, not enqueued (a
    ``Basic.Return``, also a ``DeliveryError``, is a missing queue)."""
    return isinstance(failure, DeliveryError) and isinstance(failure.frame, spec.Basic.Nack)


async def connect_rabbitmq(config: MessagingConfig, *, quorum: bool) -> RabbitMqMessagingService:
    """Connect (bounded by ``connection_timeout_seconds``) and return the service."""
    provider = "rabbitmq-quorum" if quorum else "rabbitmq"
    name = f"mqcontract-{provider}-{uuid.uuid4().hex[:12]}"
    connection = await open_connection(config.rabbitmq, provider, name)
    try:
        management = await find_management(
            config.rabbitmq, provider=provider, timeout=config.operation_timeout_seconds
        )
    except BaseException:
        await connection.close()
        raise
    return RabbitMqMessagingService(
        config.rabbitmq,
        connection,
        quorum=quorum,
        operation_timeout=config.operation_timeout_seconds,
        connection_name=name,
        management=management,
    )
