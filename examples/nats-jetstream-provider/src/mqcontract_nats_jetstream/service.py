"""The NATS JetStream provider: mqcontract's protocol on work-queue streams.

How the contract maps onto JetStream (details in the README):

* **Queues.** A work-queue stream per queue (``<prefix>-<queue>``, one subject), its one
  durable pull consumer ``mqcontract``, and a claims ledger stream beside it
  (:mod:`._ledger`). A stream per queue, rather than one stream with a subject per queue,
  makes deleting a queue one call that takes its messages with it, gives every queue its
  own sequence (the ids) and lets ``list_queues`` ask the server for the streams on
  ``<prefix>.q.*`` instead of tracking a registry. Both streams get the ``replicas``
  setting (the consumer inherits it); a server that cannot place that many refuses the
  stream, and ``create_queue`` raises ``QueueError`` after removing what it made.
* **Ids.** The stream sequence the server assigns on publish: unique in the queue and
  increasing in send order; never chosen by a producer.
* **Receive.** A pull request (``no_wait``) on the consumer, then each delivery is claimed
  in the ledger and its deadline set with ``-NAK {"delay": vt}``: on a message it still
  holds, nats-server moves the redelivery time to *now + delay* without counting a
  delivery, so every receive has its own timeout although JetStream's ack wait is one per
  consumer. The consumer's ack wait (``fetch_grace_seconds``) only covers the moment
  between the pull and that nak.
* **receive_count.** JetStream's delivery count (``num_delivered``): exact per consumer.
* **Claims.** Token = the delivery count of the delivery that made the claim, above the
  message's stream timestamp (``ns << 32 | count``): a stream made again numbers its
  messages from 1, and the timestamp keeps a claim made before the queue was deleted
  from matching the new message with its id (CLAIM-10). The ledger decides every
  settle, each change of state by one create the server checks on every replica
  (JetStream's own ack names the message only).
* **Push.** Full, claimed: a long-poll pull loop per subscribed queue, on a connection of
  the subscription's own (:mod:`._push`).
* **Not offered.** Delay (nats-server 2.9 has no scheduled delivery: a ``Nats-Schedule``
  header is delivered at once) and fetch by id (a consumer hands out messages in order).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import nats.errors
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
    QueueError,
    QueueNotFound,
    StaleClaim,
    StaleReason,
)
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.service import BaseMessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract.validation import check_queue_name
from nats.aio.msg import Msg

from mqcontract_nats_jetstream import _ledger
from mqcontract_nats_jetstream._config import PROVIDER_NAME, NatsJetStreamConfig, load_settings
from mqcontract_nats_jetstream._errors import (
    CONSUMER_NOT_FOUND,
    ERRORS,
    MESSAGE_NOT_FOUND,
    NOT_CLUSTERED,
    REPLICAS_REFUSED,
    STORE_NOT_CREATED,
    STREAM_NOT_FOUND,
    JsError,
    Severed,
)
from mqcontract_nats_jetstream._forgetting import Forgetting
from mqcontract_nats_jetstream._ledger import HELD, RELEASED, SETTLED, Record
from mqcontract_nats_jetstream._link import Link
from mqcontract_nats_jetstream._names import CONSUMER, QueueNames
from mqcontract_nats_jetstream._push import PushLoop

__all__ = ["NatsJetStreamMessagingService", "connect_nats_jetstream", "open_nats_jetstream"]

T = TypeVar("T")

#: The oldest server this is written for (nak with a delay, expected-last-subject-sequence).
MIN_SERVER_VERSION = (2, 9)
#: Claims this service remembers the ledger record of (to settle without a read first).
_REMEMBERED = 10_000
#: What a sweep at the cap leaves, at most (see ``_keep_grant``).
_KEPT_AFTER_SWEEP = _REMEMBERED * 9 // 10
#: STREAM.CREATE attempts while the server's store races a deletion (STORE_NOT_CREATED).
STORE_ATTEMPTS = 4
#: How long a pull may go unanswered before the queue's existence is checked.
_SILENCE = 0.25
#: How long past its expiry a pull of an existing queue may go unanswered before it is
#: given up: its consumer went with a deletion of the queue, which exists again. A live
#: consumer answers a pull by its expiry, so only a link slower than this (one way) is
#: taken for a dead consumer: the pull is given up, its late deliveries go back (nak),
#: and the next pull asks again. nats-server 2.9.10 also leaves a live consumer's pull
#: unanswered now and then, when another connection's pull on it was just abandoned (a
#: subscription closed beside this one: 9 of 100 such pulls there, 0 of 100 on 2.15.1):
#: the bound is also how long such a subscription hears nothing, so it stays well under
#: the delivery bound a consumer expects (3 s).
_UNANSWERED = 1.5
#: Bound on one look at the stream before an acked message's records are purged, and on
#: the purge (:mod:`._forgetting`), apart from the operation's own.
_GONE_BOUND = 5.0
#: Nanoseconds since a stream's leader last heard from a replica, at most, for the
#: leader's word that a message is gone to count (an idle replica is heard from about
#: every 1.5 s; measured on nats-server 2.9.10 and 2.15.1).
_PEER_SEEN = 3_000_000_000
#: How long one ``$JS.API.INFO`` at connect may go unanswered before it is asked again.
_INFO_SILENCE = 1.0


#: A token's low bits: the delivery count (the bits above: the message's timestamp).
_COUNT_BITS = 32
_COUNT_MASK = (1 << _COUNT_BITS) - 1


def _delivery(msg: Msg) -> tuple[int, int, int, int]:
    """(stream seq, delivery count, consumer seq, enqueued at in ns) from a delivery's reply
    subject ``$JS.ACK.<stream>.<consumer>.<count>.<seq>.<consumer seq>.<ns>.<pending>``."""
    tokens = msg.reply.split(".")
    if len(tokens) > 9:  # with a domain and account hash: drop them
        tokens = tokens[:2] + tokens[4:]
    return int(tokens[5]), int(tokens[4]), int(tokens[6]), int(tokens[7])


def _is_id(value: object) -> bool:
    """Whether ``value`` could be a stream sequence (an int in 1..2**64-1)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**64


class NatsJetStreamMessagingService(BaseMessagingService):
    """Queues as JetStream work-queue streams; see the module docstring."""

    provider_name = PROVIDER_NAME
    error_table = ERRORS

    def __init__(
        self,
        settings: NatsJetStreamConfig,
        link: Link,
        *,
        operation_timeout: float,
        server_version: str,
        max_payload: int,
    ) -> None:
        self.settings = settings
        self.link = link
        self.server_version = server_version
        self._target = settings.url
        self._operation_timeout = operation_timeout
        self._closed = False
        #: Claims granted here: the record written and the key it was written under.
        #: Oldest first (``popitem(last=False)`` evicts in constant time).
        self._granted: collections.OrderedDict[Claim, tuple[Record, str]] = (
            collections.OrderedDict()
        )
        self._loops: dict[QueueSubscription, PushLoop] = {}
        #: Releases of claims granted for callers cancelled meanwhile (``grant``).
        self._giving_up: set[asyncio.Future[None]] = set()
        self._pushed: dict[Claim, PushLoop] = {}
        self.forgetting = Forgetting(
            self._gone, self._forget, delay=settings.ledger_retention_seconds
        )
        self._capabilities = Capabilities(
            push=PushKind.FULL,
            pushed_messages_claimed=True,
            fetch_by_id=False,
            requires_fallback_polling=False,
            fallback_polling_interval=None,
            delay=False,
            visibility_precision_seconds=0.01,
            requeue_position=RequeuePosition.ORIGINAL,
            exact_receive_count=True,
            # Fresh messages come in publish order, but redeliveries come back ahead of
            # them in the order they became available again (a message that lapsed later
            # is received after one that lapsed sooner, whatever their sequences): no
            # single order a consumer can rely on, so none is claimed (see the README).
            fifo=False,
            payload_fidelity=PayloadFidelity.BYTES,
            max_message_size_bytes=min(settings.max_message_size_bytes, max_payload),
            list_queues=True,
            producer_assigned_ids=False,
            visibility_enforced_by=VisibilityEnforcer.SERVER,
        )
        self.max_receive_limit = self._capabilities.max_receive_limit

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- plumbing ----------------------------------------------------------------------

    def names(self, queue: str) -> QueueNames:
        return QueueNames(self.settings.prefix, queue)

    async def _bounded(self, operation: Awaitable[T]) -> T:
        async with asyncio.timeout(self._operation_timeout):
            return await operation

    async def _queue_gone(self, queue: str, exc: JsError) -> Exception:
        """``QueueNotFound`` if ``queue`` is gone (the cause of ``exc``), else ``exc``."""
        maybe_gone = exc.code in (404, 503) or exc.err_code in (
            STREAM_NOT_FOUND,
            CONSUMER_NOT_FOUND,
        )
        if maybe_gone and not await self._queue_exists(queue):
            return QueueNotFound(queue)
        return exc

    # -- lifecycle ---------------------------------------------------------------------

    async def _create_queue(self, name: str) -> None:
        names = self.names(name)
        replicas = self.settings.replicas
        queue_stream = {
            "name": names.stream,
            "subjects": [names.subject],
            "retention": "workqueue",
            "storage": "file",
            "max_msg_size": -1,
            "discard": "old",
            "num_replicas": replicas,
        }
        ledger = {
            "name": names.ledger,
            "subjects": [names.records],
            "retention": "limits",
            "storage": "file",
            "max_msgs_per_subject": 1,
            "num_replicas": replicas,
        }
        consumer = {  # its replicas: the stream's (num_replicas left out)
            "stream_name": names.stream,
            "config": {
                "durable_name": CONSUMER,
                "ack_policy": "explicit",
                "ack_wait": int(self.settings.fetch_grace_seconds * 1e9),
                "max_deliver": -1,
                "max_ack_pending": -1,
                "max_waiting": 4096,
                "deliver_policy": "all",
                "replay_policy": "instant",
            },
        }

        async def create_stream(stream: dict[str, Any]) -> dict[str, Any]:
            """STREAM.CREATE, tried again while the server's store races a deletion."""
            for attempt in range(1, STORE_ATTEMPTS + 1):
                try:
                    return await self.link.api(f"STREAM.CREATE.{stream['name']}", stream)
                except JsError as exc:
                    if exc.err_code != STORE_NOT_CREATED or attempt == STORE_ATTEMPTS:
                        raise
                    await asyncio.sleep(0.05 * attempt)
            raise AssertionError("unreachable")

        async def create() -> None:
            for stream in (ledger, queue_stream):
                reply = await create_stream(stream)
                kept = int((reply.get("config") or {}).get("num_replicas") or 1)
                if kept < replicas:  # a server that lowers it instead of refusing
                    raise JsError(500, NOT_CLUSTERED, f"stream created with {kept} replicas")
            await self.link.api(f"CONSUMER.DURABLE.CREATE.{names.stream}.{CONSUMER}", consumer)

        try:
            await self._bounded(create())
        except JsError as exc:
            if replicas == 1 or exc.err_code not in REPLICAS_REFUSED:
                raise
            await self._unmake(name)
            raise QueueError(name, _too_many_replicas(name, replicas, exc)) from exc

    async def _unmake(self, name: str) -> None:
        """Delete what a refused ``create_queue`` made, unless the queue existed before
        (its consumer is made last: without it, the streams are this call's leftovers).
        Best effort: the refusal is what the caller must hear."""
        with contextlib.suppress(Exception):
            if not await self._queue_exists(name):
                await self._delete_queue(name)

    async def _delete_queue(self, name: str) -> None:
        names = self.names(name)

        async def delete() -> None:
            for stream in (names.stream, names.ledger):
                try:
                    await self.link.api(f"STREAM.DELETE.{stream}")
                except JsError as exc:
                    if exc.err_code != STREAM_NOT_FOUND:
                        raise

        await self._bounded(delete())

    async def _queue_exists(self, name: str) -> bool:
        try:
            await self._bounded(
                self.link.api(f"CONSUMER.INFO.{self.names(name).stream}.{CONSUMER}")
            )
        except JsError as exc:
            if exc.err_code in (STREAM_NOT_FOUND, CONSUMER_NOT_FOUND):
                return False
            raise
        return True

    async def _list_queues(self) -> list[str]:
        lead = f"{self.settings.prefix}-"
        found: list[str] = []
        while True:
            reply = await self._bounded(
                self.link.api(
                    "STREAM.NAMES", {"subject": f"{self.settings.prefix}.q.*", "offset": len(found)}
                )
            )
            page = reply.get("streams") or []
            found.extend(page)
            if not page or len(found) >= int(reply.get("total", 0)):
                break
        return sorted(n.removeprefix(lead) for n in found if n.startswith(lead))

    # -- messages ----------------------------------------------------------------------

    async def _send(self, queue: str, payload: bytes) -> int:
        names = self.names(queue)
        try:
            ack = await self._bounded(self.link.publish_js(names.subject, payload))
        except JsError as exc:
            raise await self._queue_gone(queue, exc) from exc
        return int(ack["seq"])

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        """Publishes pipelined on the one connection: written in order, so the server
        assigns increasing sequences in payload order; each waits for its own ack."""
        names = self.names(queue)
        if not payloads:  # nothing to publish, but a missing queue is still missing
            if not await self._queue_exists(queue):
                raise QueueNotFound(queue)
            return []

        async def publish_all() -> list[dict[str, Any]]:
            return await asyncio.gather(*(self.link.publish_js(names.subject, p) for p in payloads))

        try:
            acks = await self._bounded(publish_all())
        except JsError as exc:
            raise await self._queue_gone(queue, exc) from exc
        return [int(ack["seq"]) for ack in acks]

    async def claim(
        self, link: Link, queue: str, limit: int, vt: float, *, expires: float | None = None
    ) -> list[QueuedMessage]:
        """Pull up to ``limit`` deliveries (waiting up to ``expires`` for the first) and
        claim them for ``vt`` seconds; oldest first."""
        deliveries = await self.pull(link, queue, limit, expires=expires)
        return await self.grant(link, queue, deliveries, vt)

    async def pull(
        self, link: Link, queue: str, limit: int, *, expires: float | None = None
    ) -> list[Msg]:
        """Up to ``limit`` deliveries, none claimed yet (waiting up to ``expires`` for the
        first). Cancelling it loses nothing: the link hands back what still comes."""
        names = self.names(queue)
        try:
            async with asyncio.timeout(self._operation_timeout + (expires or 0)):
                return await self._pull(link, names, limit, expires)
        except JsError as exc:
            raise await self._queue_gone(queue, exc) from exc

    async def grant(
        self, link: Link, queue: str, deliveries: list[Msg], vt: float
    ) -> list[QueuedMessage]:
        """Claim ``deliveries`` for ``vt`` seconds; oldest first. All or nothing: if one
        claim fails, the claims made are released and the rest handed back before the
        error is raised, so none of them waits out a timeout nobody was given.

        A caller cancelled meanwhile does not cut the claims short (a ledger write in
        flight may or may not land): they finish in the background and are given back
        at once, instead of waiting out the fetch's ack wait (``fetch_grace_seconds``)."""
        if not deliveries:
            return []
        granting = asyncio.ensure_future(self._grant_all(link, queue, deliveries, vt))
        try:
            return await asyncio.shield(granting)
        except asyncio.CancelledError:
            giving_up = asyncio.ensure_future(self._give_up(link, granting))
            self._giving_up.add(giving_up)
            giving_up.add_done_callback(self._giving_up.discard)
            raise

    async def _give_up(self, link: Link, granting: asyncio.Future[list[QueuedMessage]]) -> None:
        """Release what a cancelled caller's claims granted (a failed grant undid itself)."""
        with contextlib.suppress(Exception):
            granted = await granting
            await self._undo(link, granted, [])

    async def _grant_all(
        self, link: Link, queue: str, deliveries: list[Msg], vt: float
    ) -> list[QueuedMessage]:
        names = self.names(queue)
        outcomes = await asyncio.gather(
            *(self._bounded(self._grant(link, names, d, vt)) for d in deliveries),
            return_exceptions=True,
        )
        granted = [m for m in outcomes if isinstance(m, QueuedMessage)]
        failed = [
            d for d, o in zip(deliveries, outcomes, strict=True) if isinstance(o, BaseException)
        ]
        error = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if error is None:
            try:  # every deadline is set before the caller has its claims
                await self._bounded(link.flush())
            except (JsError, Severed, TimeoutError, nats.errors.Error) as exc:
                error = exc
        if error is not None:
            await self._undo(link, granted, failed)
            if isinstance(error, JsError):
                raise await self._queue_gone(queue, error) from error
            raise error
        return sorted(granted, key=lambda m: m.msg_id)

    async def _undo(self, link: Link, granted: list[QueuedMessage], failed: list[Msg]) -> None:
        """Best effort after a failed grant: release its claims, hand back the rest (if
        that fails too, they come back when their timeout or the ack wait passes)."""
        for message in granted:
            if message.claim is not None:
                with contextlib.suppress(Exception):
                    await self.settle(message.queue_name, message.claim, "nack")
        for msg in failed:
            await link.nak_quietly(msg)

    async def _pull(
        self, link: Link, names: QueueNames, limit: int, expires: float | None
    ) -> list[Msg]:
        """The deliveries of one pull. The server's API ignores a pull for a consumer that
        does not exist (it answers nothing), so a pull that hears nothing for a while
        asks whether the queue still exists; one that hears nothing for longer is given up
        (``[]``): the queue may have been deleted and created again, with a new consumer
        the next pull reaches."""
        pull = asyncio.ensure_future(link.pull(names.stream, CONSUMER, limit, expires=expires))
        give_up = time.monotonic() + (expires or 0) + _UNANSWERED
        try:
            while True:
                done, _ = await asyncio.wait({pull}, timeout=(expires or 0) + _SILENCE)
                if done:
                    return pull.result()
                if not await self._queue_exists(names.queue):
                    raise QueueNotFound(names.queue)
                if time.monotonic() >= give_up and not pull.done():
                    await link.abandon(pull)
                    return []
        except BaseException:  # nothing pulled stays with a caller that is gone
            await link.abandon(pull)
            raise

    async def _grant(
        self, link: Link, names: QueueNames, msg: Msg, vt: float
    ) -> QueuedMessage | None:
        """Claim one delivery in the ledger and set its deadline; ``None`` if the ledger
        says it is not this delivery's to hand out (settled, or still someone's claim)."""
        seq, count, delivery_seq, enqueued_ns = _delivery(msg)
        # Above the count, the message's timestamp: the same for every delivery of it,
        # and later for a message of the queue made again under the same id.
        counted = (enqueued_ns << _COUNT_BITS) | count
        record = await _ledger.read(link, names, seq)
        while True:
            now = time.time()
            if record is not None:
                if record.state == SETTLED:  # acked, the ack did not land: finish it
                    await link.publish(msg.reply)
                    return None
                if record.state == HELD and record.deadline > now:
                    # Delivered again while someone holds it (a late nak of an older
                    # delivery, a stale copy): put the holder's deadline back, hand
                    # nothing out.
                    await link.publish(msg.reply, _nak_delay(record.deadline - now))
                    return None
            # The token: this delivery's count, or one past the last claim's if the count
            # went back (a consumer leader elected with an older replica of the counts).
            token = counted if record is None else max(counted, record.token + 1)
            claim = Record(HELD, token, now + vt, delivery_seq)
            key = _ledger.key_after(record)
            if key is None or not await _ledger.write(link, names, seq, claim, after=record):
                record = await _ledger.read(link, names, seq, known=record)
                continue
            await link.publish(msg.reply, _nak_delay(vt))
            claimed = Claim(names.queue, seq, token, vt)
            self._keep_grant(claimed, (claim, key))
            return QueuedMessage(
                msg_id=seq,
                queue_name=names.queue,
                payload=bytes(msg.data),
                receive_count=count,
                enqueued_at=enqueued_ns / 1e9,
                claim=claimed,
            )

    def _keep_grant(self, claim: Claim, written: tuple[Record, str]) -> None:
        """Remember ``claim``'s record; at the cap, forget lapsed ones, then the oldest.

        The sweep leaves at most ``_KEPT_AFTER_SWEEP`` of the cap, so it runs once per
        tenth of the cap's inserts, not on every insert while all of them are live (a
        forgotten record only costs a read when its claim is settled).
        """
        granted = self._granted
        if len(granted) >= _REMEMBERED:
            now = time.time()
            for old, (rec, _) in list(granted.items()):
                if rec.deadline <= now:
                    del granted[old]
            while len(granted) > _KEPT_AFTER_SWEEP:
                granted.popitem(last=False)
        granted[claim] = written

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return await self.claim(self.link, queue, limit, visibility_timeout)

    # -- settling ----------------------------------------------------------------------

    async def settle(self, queue: str, claim: Claim, mode: str) -> StaleReason | None:
        """Ack (``mode="ack"``) or nack the message of ``claim`` if it is the live claim;
        else the reason it is stale, with nothing changed."""
        token = claim.token
        if not _is_id(claim.msg_id) or not isinstance(token, int) or isinstance(token, bool):
            return StaleReason.NOT_HELD
        names, seq = self.names(queue), claim.msg_id
        link = self.link
        written = self._granted.pop(claim, None)
        record: Record | None = None
        try:
            async with asyncio.timeout(self._operation_timeout):
                if written is not None and _stale(written[0], token, time.time()) is None:
                    # Built on only if still where this service wrote it: the queue may
                    # have been deleted and made again, or the claim settled elsewhere
                    # and its records purged, and a create on the emptied chain succeeds.
                    mine, key = written
                    found = await _ledger.at(link, names, seq, key)
                    if found is not None and found.encode() == mine.encode():
                        record = mine
                if record is None or _stale(record, token, time.time()) is not None:
                    # Not granted here, or lapsed: the ledger tells what happened since.
                    record = await _ledger.read(link, names, seq)
                while True:
                    if record is None:
                        return await self._unrecorded(names, seq)
                    stale = _stale(record, token, time.time())
                    if stale is not None:
                        return stale
                    state = SETTLED if mode == "ack" else RELEASED
                    done = Record(state, token, record.deadline, record.delivery_seq)
                    if not await _ledger.write(link, names, seq, done, after=record):
                        record = await _ledger.read(link, names, seq, known=record)
                        continue
                    subject = names.ack_subject(token & _COUNT_MASK, seq, record.delivery_seq)
                    if mode == "ack":
                        await link.request(subject, b"", None)  # the server confirms it
                        # Its records are purged later, once the stream no longer holds
                        # it: a consumer leader cut off from its majority confirms acks it
                        # cannot carry out, and the message comes back. The settled record
                        # makes ``_grant`` finish that delivery, not hand it out.
                        self.forgetting.later(names, seq)
                    else:
                        # Sent as a request: the server answers once the nak is applied.
                        # JetStream applies acks apart from the connection's reading, so
                        # a flush alone returns before it, and a receive right after the
                        # nack could miss the message on a busy server (MODEL-1 did).
                        await link.request(subject, b"-NAK", None)
                    return None
        except JsError as exc:
            raise await self._queue_gone(queue, exc) from exc
        finally:
            loop = self._pushed.pop(claim, None)
            if loop is not None:
                loop.settled(claim)

    async def _gone(self, names: QueueNames, seq: int) -> bool:
        """Whether the stream no longer holds message ``seq``. Not knowing (no answer
        within a bound: the stream's leader is cut off, say) counts as not gone.

        Only a leader with every replica current is believed, and only if it still leads
        them all after its answer: a leader cut off from its majority (partitions can
        come every few seconds, so the wait before this look does not rule one out) may
        have dropped an acked message its successor still holds and hands out again. A
        purge on its word made 203 redeliveries of acked messages in one account
        (nats-server 2.15.1, 32 partitions); without purges, none in 20.
        """
        try:
            async with asyncio.timeout(_GONE_BOUND):
                before = await self._whole_leader(names)
                if before is None:
                    return False
                try:
                    await self.link.api(f"STREAM.MSG.GET.{names.stream}", {"seq": seq})
                except JsError as exc:
                    if exc.err_code != MESSAGE_NOT_FOUND:
                        return False
                    return await self._whole_leader(names) == before
        except Exception:  # no answer (or a connection gone): not known to be gone
            pass
        return False

    async def _whole_leader(self, names: QueueNames) -> str | None:
        """The stream's leader if every replica is current and was heard from within
        :data:`_PEER_SEEN`; ``""`` for a stream of one replica; None otherwise."""
        info = await self.link.api(f"STREAM.INFO.{names.stream}", {})
        config = info.get("config") if isinstance(info, dict) else None
        wanted = int(config.get("num_replicas", 1)) if isinstance(config, dict) else 1
        if wanted <= 1:
            return ""
        cluster = info.get("cluster") or {}
        replicas = cluster.get("replicas") or []
        leader = cluster.get("leader")
        if not isinstance(leader, str) or len(replicas) < wanted - 1:
            return None
        for replica in replicas:
            seen = replica.get("active")
            if not replica.get("current") or not isinstance(seen, int) or seen > _PEER_SEEN:
                return None
        return leader

    async def _forget(self, names: QueueNames, seq: int) -> None:
        async with asyncio.timeout(_GONE_BOUND):
            await _ledger.forget(self.link, names, seq)

    async def _unrecorded(self, names: QueueNames, seq: int) -> StaleReason:
        """No record: the message was acked (gone), or no claim was ever made on it."""
        try:
            await self.link.api(f"STREAM.MSG.GET.{names.stream}", {"seq": seq})
        except JsError as exc:
            if exc.err_code == MESSAGE_NOT_FOUND:
                return StaleReason.SETTLED
            raise
        return StaleReason.NOT_HELD

    async def _ack(self, queue: str, claim: Claim) -> None:
        reason = await self.settle(queue, claim, "ack")
        if reason is not None:
            raise StaleClaim(queue, claim.msg_id, reason)

    async def _nack(self, queue: str, claim: Claim) -> None:
        reason = await self.settle(queue, claim, "nack")
        if reason is not None:
            raise StaleClaim(queue, claim.msg_id, reason)

    async def stored_ids(self, queue: str) -> list[int]:
        """Backdoor for tests: every stored id on ``queue`` (held or not), read from the
        stream's state without a delivery; ``[]`` for a missing queue."""
        self._check_open()
        names = self.names(check_queue_name(queue))

        async def read() -> list[int]:
            try:
                info = await self._bounded(
                    self.link.api(f"STREAM.INFO.{names.stream}", {"deleted_details": True})
                )
            except JsError as exc:
                if exc.err_code == STREAM_NOT_FOUND:
                    return []
                raise
            state: dict[str, Any] = info["state"]
            if not state.get("messages"):
                return []
            deleted = set(state.get("deleted") or [])
            first, last = int(state["first_seq"]), int(state["last_seq"])
            return [s for s in range(first, last + 1) if s not in deleted]

        return await self._translated("stored_ids", queue, read())

    # -- push --------------------------------------------------------------------------

    async def _subscribe(self, queues: tuple[str, ...]) -> QueueSubscription:
        if not queues:
            raise InvalidArgument("queues", [], "at least one queue name")
        for name in queues:
            if not await self._queue_exists(name):
                raise QueueNotFound(name)
        subscription = QueueSubscription(queues, on_close=self._unsubscribe)
        link = await Link.connect(
            self.settings.servers,
            f"{self.link.name}-push",
            timeout=self.settings.connect_timeout_seconds,
        )
        loop = PushLoop(
            self,
            subscription,
            self.settings,
            link,
            stop_timeout=self._operation_timeout + self.settings.push_poll_interval_seconds,
        )
        self._loops[subscription] = loop
        loop.start()
        return subscription

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        loop = self._loops.pop(subscription, None)
        if loop is not None:
            await loop.stop()

    @property
    def push_links(self) -> list[Link]:
        """The connections of open subscriptions (for the harness's ``kill_listener``)."""
        return [loop.link for loop in self._loops.values()]

    def track(self, claim: Claim, loop: PushLoop) -> None:
        self._pushed[claim] = loop

    def untrack(self, claim: Claim, loop: PushLoop) -> None:
        if self._pushed.get(claim) is loop:
            del self._pushed[claim]

    async def release(self, claim: Claim) -> None:
        """Hand back a pushed message the consumer never took (if it still holds it)."""
        self._check_open()
        queue = claim.queue_name
        await self._translated("release", queue, self.settle(queue, claim, "nack"))

    async def close(self) -> None:
        if self._closed:
            return
        for subscription in list(self._loops):
            await subscription.aclose()
        self._closed = True
        if self._giving_up:  # each bounded by the operation timeout
            await asyncio.gather(*self._giving_up, return_exceptions=True)
        await self.forgetting.close()
        await self.link.close()
        await super().close()


def _stale(record: Record, token: int, now: float) -> StaleReason | None:
    """Why ``token`` no longer holds the message ``record`` describes (``None``: it does)."""
    if record.token > token:
        return StaleReason.SUPERSEDED
    if record.token < token:
        return StaleReason.NOT_HELD
    if record.state == SETTLED:
        return StaleReason.SETTLED
    if record.state == RELEASED or record.deadline <= now:
        return StaleReason.LAPSED
    return None


def _too_many_replicas(name: str, replicas: int, exc: JsError) -> str:
    """Why ``name`` was not created: the replicas asked for, the server's words, the limit."""
    if exc.err_code == NOT_CLUSTERED:
        limit = "this server has no cluster: 1 is the limit"
    else:
        limit = "the limit is the number of running nodes in the cluster"
    return (
        f"queue {name!r} not created: JetStream cannot keep {replicas} replicas of its "
        f"streams (providers.{PROVIDER_NAME}.replicas = {replicas}; {exc}); {limit}"
    )


def _nak_delay(seconds: float) -> bytes:
    """``-NAK`` that makes a held message visible again in ``seconds`` (not before)."""
    return b'-NAK {"delay": %d}' % max(1, int(seconds * 1e9))


async def _jetstream_answers(link: Link) -> None:
    """Ask ``$JS.API.INFO`` until it is answered (the caller bounds the whole wait).

    A cluster that has just elected its meta leader can leave a JetStream API request
    unanswered (seen in CI: one silent ``INFO`` on a new 3-node cluster); asking once and
    waiting for the whole connect timeout failed a connect that a second ask would have
    made. An error reply (no JetStream: no responders) is final at once.
    """
    while True:
        try:
            async with asyncio.timeout(_INFO_SILENCE):
                await link.api("INFO")
            return
        except TimeoutError:
            continue  # unanswered: asked again, within the caller's bound


async def connect_nats_jetstream(
    settings: NatsJetStreamConfig,
    *,
    operation_timeout: float = 30.0,
    client_name: str | None = None,
) -> NatsJetStreamMessagingService:
    """Connect, check the server has JetStream and is recent enough; the service."""
    name = client_name or f"mqc-js-{uuid.uuid4().hex[:12]}"
    try:
        async with asyncio.timeout(settings.connect_timeout_seconds * 2):
            link = await Link.connect(
                settings.servers, name, timeout=settings.connect_timeout_seconds
            )
            try:
                await _jetstream_answers(link)
            except BaseException:
                await link.close()
                raise
    except Exception as exc:  # any failure to reach JetStream means unavailable
        raise BackendUnavailable(
            PROVIDER_NAME, settings.url, f"{type(exc).__name__}: {exc}"
        ) from exc
    info = link.client._server_info
    version = str(info.get("version", "0"))
    parsed = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parsed < MIN_SERVER_VERSION:
        await link.close()
        raise BackendUnavailable(
            PROVIDER_NAME, settings.url, f"nats-server {version} is too old: 2.9 or later is needed"
        )
    return NatsJetStreamMessagingService(
        settings,
        link,
        operation_timeout=operation_timeout,
        server_version=version,
        max_payload=int(link.client.max_payload),
    )


async def open_nats_jetstream(config: MessagingConfig) -> NatsJetStreamMessagingService:
    """Provider factory for the ``nats-jetstream`` entry point."""
    return await connect_nats_jetstream(
        load_settings(config), operation_timeout=config.operation_timeout_seconds
    )
