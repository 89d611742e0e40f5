"""The MQTT provider: mqcontract's protocol on topics, QoS 1 and a shared subscription.

It maps the work-queue contract onto MQTT as far as MQTT goes, and no further:

* **Queues.** A topic per queue, ``<prefix>/q/<queue>``. MQTT has no queues to create and
  accepts a publish to any topic, so a retained marker per queue (``<prefix>/registry/``)
  is the registry: every service subscribes to the markers and keeps the set they
  describe, which answers ``queue_exists``, ``list_queues`` and every existence check.
* **Consumers.** A service joins the queue's shared subscription
  (``$share/mqcontract/<topic>``, QoS 1) when it creates the queue, receives from it or
  subscribes to it. The broker hands each message to one member, round-robin, *when it
  is published*, and pushes it straight to that member.
* **Receive** takes what the broker has pushed to this service so far: an echo through
  the service's own sync topic first makes sure that everything the broker sent before
  has arrived. A message pushed to another member is not receivable here, ever.
* **Ack** is the PUBACK (paho with ``manual_ack``): until then the message sits in this
  service's session. **Nack** gives the claim up and sends nothing: MQTT has no negative
  acknowledgement, and the broker does not send an unacknowledged message again while the
  connection lives. It comes back only when the session reconnects.
* **Visibility timeouts** are accepted and not enforced: nothing in MQTT returns a
  message to the others after a while. **receive_count** is 1, or 2 for a message the
  broker marked as sent again (``dup``): a lower bound. **Delay** does not exist.
* **Ids** are chosen here, by the producer, and carried as a user property: the
  producer's clock in milliseconds, 16 random bits per service below.
* **Connections.** One MQTT v5 connection per service with a session that outlives a
  network cut (``session_expiry_seconds``): after one it reconnects by itself and the
  broker sends again what it had sent and not seen acknowledged. ``close`` ends the
  session, and whatever this service was sent and did not ack is dropped by the broker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable
from typing import TypeVar

from mqcontract.capabilities import (
    Capabilities,
    PayloadFidelity,
    PushKind,
    RequeuePosition,
    VisibilityEnforcer,
)
from mqcontract.config import MessagingConfig
from mqcontract.errors import (
    BackendUnavailable,
    InvalidArgument,
    QueueNotFound,
    StaleClaim,
    StaleReason,
)
from mqcontract.messages import Claim, Message, QueuedMessage
from mqcontract.service import BaseMessagingService
from mqcontract.subscription import QueueSubscription

from mqcontract_mqtt._config import PROVIDER_NAME, MqttConfig, endpoint, load_settings
from mqcontract_mqtt._errors import ERRORS
from mqcontract_mqtt._link import NO_MATCHING_SUBSCRIBERS, Incoming, Link, LinkDown, LinkRefused
from mqcontract_mqtt._topics import Topics

__all__ = ["MqttMessagingService", "connect_mqtt", "open_mqtt"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: User properties every message carries: its id and when it was sent.
ID_PROPERTY = "mqc-id"
SENT_PROPERTY = "mqc-at"
#: How many settled claims are remembered to say *why* a settle is stale.
ENDED_MEMORY = 100_000
#: Longest pause between reconnect attempts.
MAX_BACKOFF = 1.0


class Delivery:
    """One message the broker pushed to this service, not yet acknowledged."""

    __slots__ = ("enqueued_at", "incoming", "msg_id", "queue")

    def __init__(self, incoming: Incoming, queue: str, msg_id: int, enqueued_at: float) -> None:
        self.incoming = incoming
        self.queue = queue
        self.msg_id = msg_id
        self.enqueued_at = enqueued_at

    @property
    def receive_count(self) -> int:
        """1, or at least 2 for a message the broker sent again after a reconnect."""
        return 2 if self.incoming.dup else 1


def _parse(incoming: Incoming, queue: str) -> Delivery | None:
    """The delivery ``incoming`` is, or None if it carries no id of this provider."""
    raw_id = incoming.user_properties.get(ID_PROPERTY, "")
    if not raw_id.isdigit() or not 0 < int(raw_id) < 2**63:
        return None
    try:
        sent = float(incoming.user_properties.get(SENT_PROPERTY, ""))
    except ValueError:
        sent = time.time()
    return Delivery(incoming, queue, int(raw_id), sent)


class MqttMessagingService(BaseMessagingService):
    """Queues as MQTT topics; see the module docstring."""

    provider_name = PROVIDER_NAME
    error_table = ERRORS

    def __init__(self, settings: MqttConfig, *, operation_timeout: float) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.client_id = f"mqc-{uuid.uuid4().hex[:16]}"
        self._target = settings.url
        self._operation_timeout = operation_timeout
        self._closed = False
        self.link = Link(
            endpoint(settings),
            self.client_id,
            keepalive=settings.keepalive_seconds,
            session_expiry=settings.session_expiry_seconds,
            connect_timeout=settings.connect_timeout_seconds,
            on_message=self._arrived,
            on_lost=self._lost,
        )
        self._capabilities = Capabilities(
            push=PushKind.FULL,
            pushed_messages_claimed=True,
            fetch_by_id=False,
            requires_fallback_polling=False,
            fallback_polling_interval=0.25,
            delay=False,
            requeue_position=RequeuePosition.ORIGINAL,
            exact_receive_count=False,
            fifo=True,
            payload_fidelity=PayloadFidelity.BYTES,
            max_message_size_bytes=settings.max_message_size_bytes,
            list_queues=True,
            producer_assigned_ids=True,
            visibility_enforced_by=VisibilityEnforcer.HOLDER,
            frozen_holder_release_seconds=None,
            # Mosquitto acknowledges a QoS 1 publish before it saves it and never fsyncs
            # (autosave is periodic): a broker crash can lose what was acknowledged.
            survives_restart=False,
        )
        #: Queues whose marker this service has seen (or written).
        self.registry: set[str] = set()
        #: Queues whose shared subscription this service joined.
        self.joined: set[str] = set()
        self._buffers: dict[str, collections.deque[Delivery]] = {}
        self._held: dict[str, Delivery] = {}
        self._ended: collections.OrderedDict[str, StaleReason] = collections.OrderedDict()
        self._tokens = itertools.count(1)
        self._pushes: dict[str, list[QueueSubscription]] = {}
        self._turn = itertools.count()
        self._syncs: dict[str, asyncio.Future[None]] = {}
        self._join_lock = asyncio.Lock()
        self._reconnecting: asyncio.Task[None] | None = None
        self._id_tag = secrets.randbits(16)
        self._last_ms = 0
        #: Sends the broker acknowledged with "no matching subscribers": gone for good.
        self.discarded_sends = 0

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- connecting --------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, learn the registry and open the sync topic."""
        await self.link.connect(self.settings.connect_timeout_seconds)
        await self._bounded(self._resubscribe())

    async def _resubscribe(self) -> None:
        self.registry.clear()
        await self.link.subscribe(
            [self.topics.markers, self.topics.sync(self.client_id)]
            + [self.topics.shared(q) for q in sorted(self.joined)]
        )
        await self._sync()

    def _lost(self) -> None:
        """The connection dropped: every delivery of it is void (the broker will send the
        unacknowledged ones again to the resumed session); reconnect in the background."""
        for buffer in self._buffers.values():
            buffer.clear()
        for token in list(self._held):
            self._end(token, StaleReason.NOT_HELD)
        for subscriptions in self._pushes.values():
            for subscription in subscriptions:
                subscription.pending()
        for future in self._syncs.values():
            if not future.done():
                future.set_exception(LinkDown("the connection to the MQTT broker was lost"))
        if not self._closed and (self._reconnecting is None or self._reconnecting.done()):
            self._reconnecting = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        pause = 0.05
        while not self._closed:
            try:
                present = await self.link.connect(self.settings.connect_timeout_seconds)
                if not present:
                    await self._bounded(self._resubscribe())
                return
            except Exception as exc:  # keep trying until closed, whatever failed
                log.warning("mqtt %s: reconnect failed: %s", self.client_id, exc)
            await asyncio.sleep(pause)
            pause = min(MAX_BACKOFF, pause * 2)

    async def _bounded(self, call: Awaitable[T]) -> T:
        """``call`` within the operation bound, started once the connection is up: an
        operation that meets a reconnect waits for it (it has sent nothing yet)."""
        async with asyncio.timeout(self._operation_timeout):
            if not self.link.connected and not self._closed:
                await self.link.wait_up()
            return await call

    # -- arriving messages (paho callback, on the loop) --------------------------------

    def _arrived(self, incoming: Incoming) -> None:
        queue = self.topics.queue_of(incoming.topic)
        if queue is not None:
            self._arrived_message(incoming, queue)
            return
        marked = self.topics.marked(incoming.topic)
        if marked is not None:
            if incoming.payload:
                self.registry.add(marked)
            else:
                self.registry.discard(marked)
                self._forget(marked)
        elif incoming.topic == self.topics.sync(self.client_id):
            future = self._syncs.get(incoming.payload.decode(errors="replace"))
            if future is not None and not future.done():
                future.set_result(None)
        self.link.ack(incoming)

    def _arrived_message(self, incoming: Incoming, queue: str) -> None:
        delivery = _parse(incoming, queue)
        if delivery is None or queue not in self.registry:
            # Not this provider's message, or its queue was deleted: acknowledged, so the
            # broker forgets it, and dropped.
            if delivery is None:
                log.warning("mqtt %s: dropped a message without an id on %s", self.client_id, queue)
            self.link.ack(incoming)
            return
        if not self._push_out(delivery):
            self._buffers.setdefault(queue, collections.deque()).append(delivery)

    def _push_out(self, delivery: Delivery) -> bool:
        """Hand ``delivery`` to an open subscription of its queue, claimed; False if none."""
        subscriptions = [s for s in self._pushes.get(delivery.queue, []) if not s.closed]
        if not subscriptions:
            return False
        subscription = subscriptions[next(self._turn) % len(subscriptions)]
        message = self._claim(delivery, self.settings.push_visibility_timeout_seconds)
        if subscription.put(Message(message, claimed=True)):
            return True
        self._unclaim(message)
        return False

    def _forget(self, queue: str) -> None:
        """Drop what this service holds of a deleted queue, acknowledged so the broker
        forgets it too."""
        for delivery in self._buffers.pop(queue, ()):
            self.link.ack(delivery.incoming)
        for token, delivery in list(self._held.items()):
            if delivery.queue == queue:
                self.link.ack(delivery.incoming)
                self._end(token, StaleReason.SETTLED)

    # -- claims ------------------------------------------------------------------------

    def _claim(self, delivery: Delivery, visibility_timeout: float) -> QueuedMessage:
        token = f"{self.client_id}#{next(self._tokens)}"
        self._held[token] = delivery
        return QueuedMessage(
            msg_id=delivery.msg_id,
            queue_name=delivery.queue,
            payload=delivery.incoming.payload,
            receive_count=delivery.receive_count,
            enqueued_at=delivery.enqueued_at,
            claim=Claim(delivery.queue, delivery.msg_id, token, visibility_timeout),
        )

    def _unclaim(self, message: QueuedMessage) -> Delivery | None:
        """Take back a claim that was never handed to a consumer."""
        if message.claim is None or not isinstance(message.claim.token, str):
            return None
        return self._held.pop(message.claim.token, None)

    def _end(self, token: str, reason: StaleReason) -> None:
        self._held.pop(token, None)
        self._ended[token] = reason
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    def _holding(self, queue: str, claim: Claim) -> tuple[str, Delivery]:
        """The live delivery ``claim`` names, or ``StaleClaim`` saying why not."""
        token = claim.token
        if not isinstance(token, str):
            raise StaleClaim(queue, claim.msg_id, StaleReason.NOT_HELD)
        delivery = self._held.get(token)
        if delivery is None or delivery.msg_id != claim.msg_id or delivery.queue != queue:
            raise StaleClaim(queue, claim.msg_id, self._ended.get(token, StaleReason.NOT_HELD))
        if delivery.incoming.generation != self.link.generation:
            self._end(token, StaleReason.NOT_HELD)
            raise StaleClaim(queue, claim.msg_id, StaleReason.NOT_HELD)
        return token, delivery

    # -- plumbing ----------------------------------------------------------------------

    async def _sync(self) -> None:
        """Publish to this service's echo topic and wait for it: the broker sends a client
        its messages in order, so everything routed here before has then arrived."""
        key = uuid.uuid4().hex
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._syncs[key] = future
        try:
            await self.link.publish(self.topics.sync(self.client_id), key.encode())
            await future
        finally:
            self._syncs.pop(key, None)

    async def _require_queue(self, queue: str) -> None:
        if queue in self.registry:
            return
        await self._sync()  # another service may have created it a moment ago
        if queue not in self.registry:
            raise QueueNotFound(queue)

    async def _join(self, queue: str) -> None:
        """Join the queue's shared subscription (from now on, the broker gives this service
        its turn of every message published there)."""
        async with self._join_lock:
            if queue in self.joined:
                return
            await self.link.subscribe([self.topics.shared(queue)])
            self.joined.add(queue)

    def _next_id(self) -> int:
        now_ms = max(int(time.time() * 1000), self._last_ms + 1)
        self._last_ms = now_ms
        return (now_ms << 16) | self._id_tag

    # -- lifecycle ---------------------------------------------------------------------

    async def _create_queue(self, name: str) -> None:
        async def create() -> None:
            await self.link.publish(self.topics.marker(name), b"1", retain=True)
            self.registry.add(name)
            await self._join(name)

        await self._bounded(create())

    async def _delete_queue(self, name: str) -> None:
        async def delete() -> None:
            await self.link.publish(self.topics.marker(name), b"", retain=True)
            self.registry.discard(name)
            self._forget(name)
            if name in self.joined:
                self.joined.discard(name)
                await self.link.unsubscribe([self.topics.shared(name)])

        await self._bounded(delete())

    async def _queue_exists(self, name: str) -> bool:
        await self._bounded(self._sync())
        return name in self.registry

    async def _list_queues(self) -> list[str]:
        await self._bounded(self._sync())
        return sorted(self.registry)

    # -- messages ----------------------------------------------------------------------

    async def publish(self, queue: str, msg_id: int, payload: bytes) -> None:
        """Publish ``payload`` on ``queue`` as message ``msg_id`` (send, and the harness's
        foreign producer)."""
        code = await self.link.publish(
            self.topics.queue(queue),
            payload,
            user_properties=[(ID_PROPERTY, str(msg_id)), (SENT_PROPERTY, f"{time.time():.6f}")],
        )
        if code == NO_MATCHING_SUBSCRIBERS:
            self.discarded_sends += 1
            log.warning("mqtt: message %s on %s had no subscriber: discarded", msg_id, queue)

    async def _send(self, queue: str, payload: bytes) -> int:
        async def send() -> int:
            await self._require_queue(queue)
            msg_id = self._next_id()
            await self.publish(queue, msg_id, payload)
            return msg_id

        return await self._bounded(send())

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        async def receive() -> list[QueuedMessage]:
            await self._require_queue(queue)
            await self._join(queue)
            await self._sync()
            buffer = self._buffers.get(queue)
            taken: list[QueuedMessage] = []
            while buffer and len(taken) < limit:
                delivery = buffer.popleft()
                if delivery.incoming.generation == self.link.generation:
                    taken.append(self._claim(delivery, visibility_timeout))
            return taken

        return await self._bounded(receive())

    def _write_ack(self, queue: str, claim: Claim) -> tuple[str, int]:
        """Write the PUBACK of the delivery ``claim`` holds; its token and the connection
        generation it went out on. Not yet an ack that holds: see :meth:`_confirm_acks`."""
        token, delivery = self._holding(queue, claim)
        if not self.link.ack(delivery.incoming):
            self._end(token, StaleReason.NOT_HELD)  # the broker will send it again
            raise StaleClaim(queue, claim.msg_id, StaleReason.NOT_HELD)
        return token, delivery.incoming.generation

    async def _confirm_acks(self, tokens: list[str], generation: int) -> None:
        """Return once the broker has read the PUBACKs of ``tokens``, written on
        ``generation``; only then are their claims settled.

        MQTT confirms no PUBACK, and a PUBACK still in the client, or in the socket when
        the connection drops, is lost: the broker sends the message again to the resumed
        session, and work whose ack returned runs twice. The broker reads a connection's
        packets in order, so its answer to a publish written after the PUBACKs (to a
        topic nobody subscribes to; a refusal is an answer too) comes after it has them:
        one round trip for any number of acks. Cut off first, the outcome is unknown
        (``ConnectionLost``), never "done", and the claims are no longer held (the
        broker sends the messages again if it never read the PUBACKs).
        """
        try:
            async with asyncio.timeout(self._operation_timeout):
                if self.link.generation == generation:
                    with contextlib.suppress(LinkRefused):
                        await self.link.publish(self.topics.confirm, b"")
            if self.link.generation != generation:
                raise LinkDown("the connection dropped before the broker confirmed the ack")
        except BaseException:
            for token in tokens:
                self._end(token, StaleReason.NOT_HELD)
            raise
        for token in tokens:
            self._end(token, StaleReason.SETTLED)

    async def _ack(self, queue: str, claim: Claim) -> None:
        await self._bounded(self._require_queue(queue))
        token, generation = self._write_ack(queue, claim)
        await self._confirm_acks([token], generation)

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        """Every PUBACK written at once, then one round trip confirms them all."""
        await self._bounded(self._require_queue(queue))
        settled: list[bool] = []
        written: dict[int, list[str]] = {}
        for claim in claims:
            try:
                token, generation = self._write_ack(queue, claim)
            except StaleClaim:
                settled.append(False)
            else:
                written.setdefault(generation, []).append(token)
                settled.append(True)
        for generation, tokens in written.items():
            await self._confirm_acks(tokens, generation)
        return settled

    async def _nack(self, queue: str, claim: Claim) -> None:
        await self._bounded(self._require_queue(queue))
        token, _ = self._holding(queue, claim)
        # No NACK in MQTT: the message stays unacknowledged in this session, and the
        # broker sends it again only if the session reconnects.
        self._end(token, StaleReason.LAPSED)

    # -- push --------------------------------------------------------------------------

    async def _subscribe(self, queues: tuple[str, ...]) -> QueueSubscription:
        if not queues:
            raise InvalidArgument("queues", [], "at least one queue name")

        async def subscribe() -> QueueSubscription:
            for name in queues:
                await self._require_queue(name)
            for name in queues:
                await self._join(name)
            await self._sync()
            subscription = QueueSubscription(queues, on_close=self._unsubscribe)
            for name in queues:
                self._pushes.setdefault(name, []).append(subscription)
                buffer = self._buffers.pop(name, collections.deque())
                while buffer:
                    delivery = buffer.popleft()
                    if not self._push_out(delivery):
                        buffer.appendleft(delivery)
                        self._buffers[name] = buffer
                        break
            return subscription

        return await self._bounded(subscribe())

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        """Messages pushed but never handed to the consumer go back to this service's
        buffer (they are still this service's: the broker gave them to nobody else)."""
        for name in subscription.queues:
            members = self._pushes.get(name, [])
            if subscription in members:
                members.remove(subscription)
        returned: list[Delivery] = []
        for note in subscription.pending():
            if isinstance(note, Message):
                delivery = self._unclaim(note.message)
                if delivery is not None:
                    returned.append(delivery)
        for delivery in reversed(returned):
            if not self._push_out(delivery):
                self._buffers.setdefault(delivery.queue, collections.deque()).appendleft(delivery)

    @property
    def subscription_count(self) -> int:
        return sum(len(members) for members in self._pushes.values())

    async def close(self) -> None:
        if self._closed:
            return
        for members in list(self._pushes.values()):
            for subscription in list(members):
                await subscription.aclose()
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnecting
        with contextlib.suppress(Exception):
            await self.link.close(self._operation_timeout)
        await super().close()


async def connect_mqtt(
    settings: MqttConfig, *, operation_timeout: float = 30.0
) -> MqttMessagingService:
    """Connect, subscribe to the registry, and return the service."""
    service = MqttMessagingService(settings, operation_timeout=operation_timeout)
    try:
        await service.start()
    except Exception as exc:  # any failure to reach the broker means unavailable
        with contextlib.suppress(Exception):
            await service.close()
        raise BackendUnavailable(
            PROVIDER_NAME, settings.url, f"{type(exc).__name__}: {exc}"
        ) from exc
    return service


async def open_mqtt(config: MessagingConfig) -> MqttMessagingService:
    """Provider factory for the ``mqtt`` entry point."""
    return await connect_mqtt(
        load_settings(config), operation_timeout=config.operation_timeout_seconds
    )
