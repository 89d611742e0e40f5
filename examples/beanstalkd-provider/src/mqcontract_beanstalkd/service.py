"""The beanstalkd provider: mqcontract's protocol on tubes, reservations and ``stats-job``.

How the contract maps onto beanstalkd (:mod:`._tubes` names the tubes):

* **Queues.** A tube of messages, plus a registry tube holding one marker job delayed for
  ever: the queue exists while its marker does (tubes themselves come and go with their
  watchers), and ``list_queues`` is ``list-tubes`` filtered to markers. The marker's job
  id is the queue's *incarnation*, written into every message sent to it: a message still
  held by another connection when its queue was deleted, and released later, belongs to
  an older incarnation and is deleted by the next receive instead of resurrecting in a
  re-created queue.
* **Ids.** The job id: assigned by the server, unique and increasing across the server
  (``producer_assigned_ids=False``). Ids start again at 1 when a server without a binlog
  restarts.
* **Receive.** ``stats-tube`` for the number ready, that many ``reserve-with-timeout 0``
  pipelined, then ``stats-job`` for each: ``reserves`` is the exact ``receive_count``.
  All jobs share one priority, so the ready queue is in id order: oldest first, and a
  released or expired job returns to its original place.
* **Visibility.** A job's time-to-run is fixed at ``put``; every job gets the lease (1 s)
  and longer claims are renewed with ``touch`` up to their deadline (:mod:`._leases`).
  The server expires them; a timeout below the lease lasts the lease, so the declared
  precision is the lease.
* **Claims.** A reservation belongs to the connection that made it and dies with it. A
  claim's token is ``<connection serial>:<reserves>``: settling it needs this very
  connection (another serial: *not held*, the reservation is gone or was never ours),
  ``stats-job`` showing the job reserved with that count (a higher count: *superseded*;
  not reserved: *lapsed*; no job: *settled*), and then an action only the reserving
  connection can take: ``release`` (nack), or ``bury`` then ``delete`` (ack; ``delete``
  alone would also delete a job that expired a moment earlier). The connection is used
  by one operation at a time, so nothing this service does can come in between.
* **Delay.** ``put`` with a delay, rounded up to whole seconds.
* **Connections.** One per service, used by one operation at a time; each operation runs
  to its end even if its caller is cancelled (an interrupted exchange would leave the
  stream out of step), and one that outlives its bound aborts the connection. A broken
  connection is replaced by the next operation; nothing is retried (a put could enqueue
  twice).
* **Not offered.** Push (beanstalkd has only blocking reserve), fetch by id
  (``reserve-job`` also takes delayed and buried jobs, so it cannot promise "only if
  visible").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

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
    ConfigurationError,
    QueueNotFound,
    StaleClaim,
    StaleReason,
)
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.service import BaseMessagingService
from mqcontract.validation import check_queue_name

from mqcontract_beanstalkd._config import (
    PROVIDER_NAME,
    BeanstalkdConfig,
    load_settings,
    parse_address,
)
from mqcontract_beanstalkd._errors import ERRORS
from mqcontract_beanstalkd._leases import POKE_EVERY, Lease, Leases
from mqcontract_beanstalkd._protocol import (
    Link,
    Reply,
    ServerError,
    check,
    parse_list,
    parse_stats,
    put_command,
)
from mqcontract_beanstalkd._tubes import HEADER_SIZE, Body, Tubes, link_tube

__all__ = ["BeanstalkdMessagingService", "connect_beanstalkd", "open_beanstalkd"]

T = TypeVar("T")

#: Every job's priority: one value, so the ready queue is in job id (send) order.
PRIORITY = 1024
#: The marker's delay: the largest the protocol takes (136 years).
FOREVER = 2**32 - 1
#: The marker's body (never read; it only makes the job recognisable by eye).
MARKER = b"mqcontract queue"
#: Largest id range ``stored_ids`` scans with ``stats-job``.
MAX_SCAN = 1_000_000
_SCAN_CHUNK = 2000
_JOB_ID_LIMIT = 2**63


def _token(claim: Claim) -> tuple[str, int] | None:
    """``(serial, reserves)`` of a claim this provider may have made; ``None`` otherwise."""
    msg_id, token = claim.msg_id, claim.token
    if not isinstance(msg_id, int) or isinstance(msg_id, bool) or not 0 < msg_id < _JOB_ID_LIMIT:
        return None
    if not isinstance(token, str):
        return None
    serial, sep, count = token.partition(":")
    if not sep or not serial or not (count.isascii() and count.isdigit()) or len(count) > 10:
        return None
    return serial, int(count)


def _use(link: Link, tube: str) -> list[bytes]:
    """The ``use`` command, unless ``link`` already uses ``tube``."""
    if link.using == tube:
        return []
    link.using = tube
    return [b"use " + tube.encode()]


def _watch(link: Link, tube: str) -> list[bytes]:
    """Watch ``tube`` (and stop watching the previous message tube)."""
    if link.watching == tube:
        return []
    commands = [b"watch " + tube.encode()]
    if link.watching is not None:
        commands.append(b"ignore " + link.watching.encode())
    link.watching = tube
    return commands


async def _exchange(link: Link, steps: Sequence[tuple[bytes, tuple[str, ...]]]) -> list[Reply]:
    """Pipeline ``steps`` (command, expected statuses); :class:`ServerError` on any other."""
    replies = await link.pipeline([command for command, _ in steps])
    return [check(c, r, *ok) for (c, ok), r in zip(steps, replies, strict=True)]


class BeanstalkdMessagingService(BaseMessagingService):
    """Queues as beanstalkd tubes; see the module docstring."""

    provider_name = PROVIDER_NAME
    error_table = ERRORS

    def __init__(
        self,
        settings: BeanstalkdConfig,
        link: Link,
        *,
        operation_timeout: float,
        server_version: str,
        max_job_size: int,
    ) -> None:
        self.settings = settings
        self.server_version = server_version
        self.max_job_size = max_job_size
        self._host, self._port = parse_address(settings.url)
        self._target = settings.url
        self._operation_timeout = operation_timeout
        self._closed = False
        self._link: Link | None = link
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._leases = Leases(float(settings.lease_seconds))
        #: Jobs an ack buried but whose ``delete`` did not arrive (the connection broke).
        self._limbo: set[int] = set()
        self._keeper = asyncio.create_task(self._keep_leases())
        self._capabilities = Capabilities(
            push=PushKind.NONE,
            fetch_by_id=False,
            requires_fallback_polling=False,
            fallback_polling_interval=settings.poll_interval_seconds,
            delay=True,
            visibility_precision_seconds=float(settings.lease_seconds),
            requeue_position=RequeuePosition.ORIGINAL,
            exact_receive_count=True,
            fifo=True,
            payload_fidelity=PayloadFidelity.BYTES,
            max_message_size_bytes=max_job_size - HEADER_SIZE,
            list_queues=True,
            producer_assigned_ids=False,
            # beanstalkd 1.12 often leaves a quiet connection's reservations past their
            # deadline until that connection speaks: the live holder pokes it once a claim
            # is due. A frozen holder cannot, and nothing (no heartbeat) bounds that.
            visibility_enforced_by=VisibilityEnforcer.HOLDER,
            frozen_holder_release_seconds=None,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- the connection ----------------------------------------------------------------

    @property
    def link(self) -> Link | None:
        """The current connection (for the harness and tests)."""
        return self._link

    def link_tube(self, serial: str) -> str:
        return link_tube(self.settings.tube_prefix, serial)

    async def _open_link(self) -> Link:
        serial = secrets.token_hex(8)
        async with asyncio.timeout(self.settings.connect_timeout_seconds):
            link = await Link.connect(self._host, self._port, serial)
        own = self.link_tube(serial).encode()
        await _exchange(
            link, [(b"watch " + own, ("WATCHING",)), (b"ignore default", ("WATCHING",))]
        )
        return link

    async def _current(self) -> Link:
        """The connection, replaced if it broke (its reservations died with it)."""
        link = self._link
        if link is None or link.broken:
            self._link = None
            self._leases.clear()
            link = self._link = await self._open_link()
            if self._limbo:  # acks whose delete was cut off: finish them
                ids = sorted(self._limbo)
                await link.pipeline([b"delete %d" % i for i in ids])
                self._limbo.difference_update(ids)
        return link

    async def _locked(self, work: Callable[[Link], Awaitable[T]]) -> T:
        async with self._lock:
            return await work(await self._current())

    async def _op(self, work: Callable[[Link], Awaitable[T]]) -> T:
        """Run ``work`` on the connection, alone, bounded; it finishes even if the caller
        is cancelled, and one that outlives the bound aborts the connection."""
        task = asyncio.ensure_future(self._locked(work))
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        try:
            async with asyncio.timeout(self._operation_timeout):
                return await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            raise

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away is not an error

    # -- lifecycle ---------------------------------------------------------------------

    def _tubes(self, queue: str) -> Tubes:
        return Tubes.of(self.settings.tube_prefix, queue)

    @staticmethod
    async def _marker(link: Link, tubes: Tubes) -> int | None:
        """The queue's incarnation (its marker's job id), or ``None``: no such queue."""
        steps = [(c, ("USING",)) for c in _use(link, tubes.registry)]
        replies = await _exchange(link, [*steps, (b"peek-delayed", ("FOUND", "NOT_FOUND"))])
        return replies[-1].id() if replies[-1].status == "FOUND" else None

    async def _create_queue(self, name: str) -> None:
        tubes = self._tubes(name)

        async def create(link: Link) -> None:
            if await self._marker(link, tubes) is None:
                await link.one(put_command(PRIORITY, FOREVER, 1, MARKER), "INSERTED")

        await self._op(create)

    async def _delete_queue(self, name: str) -> None:
        tubes = self._tubes(name)

        async def delete(link: Link) -> None:
            while (marker := await self._marker(link, tubes)) is not None:
                await link.one(b"delete %d" % marker, "DELETED", "NOT_FOUND")
            await self._purge(link, tubes.messages, self._leases.take(name))

        await self._op(delete)

    async def _purge(self, link: Link, tube: str, held: Sequence[int]) -> None:
        """Delete every job of ``tube`` this connection can reach: the ones it holds, and
        every ready, delayed and buried one (kicked to ready, reserved, deleted)."""
        commands = [b"delete %d" % i for i in held]
        commands += [*_use(link, tube), b"kick 4294967295", b"kick 4294967295"]
        commands += _watch(link, tube)
        for reply in await link.pipeline(commands):
            check(b"purge", reply, "DELETED", "NOT_FOUND", "USING", "KICKED", "WATCHING")
        while True:
            (stats,) = await _exchange(link, [(b"stats-tube " + tube.encode(), ("OK",))])
            ready = int(parse_stats(stats.body).get("current-jobs-ready", "0"))
            if not ready:
                return
            replies = await link.pipeline([b"reserve-with-timeout 0"] * min(ready, 1000))
            ids = [r.id() for r in replies if r.status == "RESERVED"]
            if not ids:
                return
            await link.pipeline([b"delete %d" % i for i in ids])

    async def purge_tube(self, tube: str) -> None:
        """Delete every job of ``tube`` not held by another connection (the harness's
        teardown of a run's tubes)."""
        self._check_open()

        async def purge(link: Link) -> None:
            await self._purge(link, tube, [])

        await self._translated("purge_tube", "", self._op(purge))

    async def _queue_exists(self, name: str) -> bool:
        registry = self._tubes(name).registry.encode()

        async def exists(link: Link) -> bool:
            reply = await link.one(b"stats-tube " + registry, "OK", "NOT_FOUND")
            stats = parse_stats(reply.body)
            return reply.status == "OK" and int(stats.get("current-jobs-delayed", "0")) > 0

        return await self._op(exists)

    async def _list_queues(self) -> list[str]:
        start = f"{self.settings.tube_prefix}.q."

        async def names(link: Link) -> list[str]:
            (tubes,) = await _exchange(link, [(b"list-tubes", ("OK",))])
            registries = [t for t in parse_list(tubes.body) if t.startswith(start)]
            if not registries:
                return []
            replies = await link.pipeline([b"stats-tube " + t.encode() for t in registries])
            return sorted(
                tube.removeprefix(start)
                for tube, reply in zip(registries, replies, strict=True)
                if reply.status == "OK"
                and int(parse_stats(reply.body).get("current-jobs-delayed", "0")) > 0
            )

        return await self._op(names)

    # -- messages ----------------------------------------------------------------------

    async def _put(self, queue: str, payloads: Sequence[bytes], delay: float) -> list[int]:
        tubes = self._tubes(queue)
        seconds = math.ceil(delay)

        async def put(link: Link) -> list[int]:
            incarnation = await self._marker(link, tubes)
            if incarnation is None:
                raise QueueNotFound(queue)
            steps = [(c, ("USING",)) for c in _use(link, tubes.messages)]
            now = time.time()
            bodies = [Body(p, now, incarnation).encode() for p in payloads]
            puts = [put_command(PRIORITY, seconds, self.settings.lease_seconds, b) for b in bodies]
            replies = await _exchange(link, [*steps, *((p, ("INSERTED",)) for p in puts)])
            return [r.id() for r in replies[len(steps) :]]

        return await self._op(put)

    async def _send(self, queue: str, payload: bytes) -> int:
        (msg_id,) = await self._put(queue, [payload], 0)
        return msg_id

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        (msg_id,) = await self._put(queue, [payload], delay_seconds)
        return msg_id

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        return await self._put(queue, payloads, 0)

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        tubes = self._tubes(queue)
        loop = asyncio.get_running_loop()

        async def receive(link: Link) -> list[QueuedMessage]:
            uses = [(c, ("USING",)) for c in _use(link, tubes.registry)]
            watches = [(c, ("WATCHING",)) for c in _watch(link, tubes.messages)]
            replies = await _exchange(
                link,
                [
                    *uses,
                    (b"peek-delayed", ("FOUND", "NOT_FOUND")),
                    *watches,
                    (b"stats-tube " + tubes.messages.encode(), ("OK", "NOT_FOUND")),
                ],
            )
            peek = replies[len(uses)]
            if peek.status != "FOUND":
                raise QueueNotFound(queue)
            incarnation = peek.id()
            ready = int(parse_stats(replies[-1].body).get("current-jobs-ready", "0"))
            if not ready:
                return []
            reserved_at = loop.time()
            reserves = await link.pipeline([b"reserve-with-timeout 0"] * min(limit, ready))
            jobs = [
                check(b"reserve", r, "RESERVED", "TIMED_OUT", "DEADLINE_SOON") for r in reserves
            ]
            jobs = [r for r in jobs if r.status == "RESERVED"]
            if not jobs:
                return []
            stats = await link.pipeline([b"stats-job %d" % r.id() for r in jobs])
            messages: list[QueuedMessage] = []
            stale: list[int] = []
            for job, stat in zip(jobs, stats, strict=True):
                job_id = job.id()
                facts = parse_stats(check(b"stats-job", stat, "OK").body)
                sent_at = time.time() - int(facts.get("age", "0"))
                body = Body.decode(job.body or b"", sent_at=sent_at)
                if body.incarnation is not None and body.incarnation != incarnation:
                    stale.append(job_id)  # sent to a deleted incarnation of this queue
                    continue
                count = int(facts["reserves"])
                self._leases.add(queue, job_id, count, reserved_at, visibility_timeout)
                messages.append(
                    QueuedMessage(
                        msg_id=job_id,
                        queue_name=queue,
                        payload=body.payload,
                        receive_count=count,
                        enqueued_at=body.enqueued_at,
                        claim=Claim(queue, job_id, f"{link.serial}:{count}", visibility_timeout),
                    )
                )
            if stale:
                await link.pipeline([b"delete %d" % i for i in stale])
            return messages

        return await self._op(receive)

    # -- settling ----------------------------------------------------------------------

    @staticmethod
    def _reason(reply: Reply, count: int, tube: str) -> StaleReason | None:
        """Why the claim (reserve ``count``) does not hold the job ``stats-job`` described
        in ``reply``, or ``None`` if it does: the job is reserved with that count, so by
        the reservation this connection made (anyone's since would have raised it)."""
        if reply.status == "NOT_FOUND":
            return StaleReason.SETTLED
        facts = parse_stats(reply.body)
        reserves = int(facts.get("reserves", "0"))
        if facts.get("tube") != tube or reserves < count:
            return StaleReason.NOT_HELD
        if reserves > count:
            return StaleReason.SUPERSEDED
        state = facts.get("state")
        if state == "buried":  # an ack of this very claim is under way
            return StaleReason.SETTLED
        if state != "reserved":
            return StaleReason.LAPSED
        return None

    async def _settle(self, queue: str, claim: Claim, ack: bool) -> None:
        parsed = _token(claim)
        job_id = claim.msg_id
        tubes = self._tubes(queue)

        async def held(link: Link, count: int) -> StaleReason | None:
            reply = await link.one(b"stats-job %d" % job_id, "OK", "NOT_FOUND")
            return self._reason(reply, count, tubes.messages)

        async def settle(link: Link) -> StaleReason | None:
            # One round trip: the queue exists (else QueueNotFound, whatever the claim
            # is), and the job's state, if the claim can be one of this connection's.
            uses = [(c, ("USING",)) for c in _use(link, tubes.registry)]
            steps = [*uses, (b"peek-delayed", ("FOUND", "NOT_FOUND"))]
            ours = parsed is not None and parsed[0] == link.serial
            if ours:
                steps.append((b"stats-job %d" % job_id, ("OK", "NOT_FOUND")))
            replies = await _exchange(link, steps)
            if replies[len(uses)].status != "FOUND":
                raise QueueNotFound(queue)
            if parsed is None or not ours:  # not a claim, or its connection is gone
                return StaleReason.NOT_HELD
            count = parsed[1]
            reason = self._reason(replies[-1], count, tubes.messages)
            if reason is not None:
                return reason
            if ack:
                # bury: only the reserving connection can, and a buried job is nobody's;
                # then delete. (delete alone also deletes a job that just expired.)
                bury = await link.one(b"bury %d %d" % (job_id, PRIORITY), "BURIED", "NOT_FOUND")
                if bury.status == "NOT_FOUND":
                    return await held(link, count) or StaleReason.LAPSED
                self._limbo.add(job_id)
                await link.one(b"delete %d" % job_id, "DELETED", "NOT_FOUND")
                self._limbo.discard(job_id)
            else:
                release = await link.one(
                    b"release %d %d 0" % (job_id, PRIORITY), "RELEASED", "NOT_FOUND"
                )
                if release.status == "NOT_FOUND":
                    return await held(link, count) or StaleReason.LAPSED
            self._leases.drop(job_id)
            return None

        reason = await self._op(settle)
        if reason is not None:
            raise StaleClaim(queue, job_id, reason)

    async def _ack(self, queue: str, claim: Claim) -> None:
        await self._settle(queue, claim, ack=True)

    async def _nack(self, queue: str, claim: Claim) -> None:
        await self._settle(queue, claim, ack=False)

    # -- renewals ----------------------------------------------------------------------

    async def _keep_leases(self) -> None:
        """Touch and poke held jobs on the schedule of :class:`~._leases.Leases`."""
        loop = asyncio.get_running_loop()
        leases = self._leases
        while True:
            leases.changed.clear()
            wake = leases.next_wake()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(wake):
                    await leases.changed.wait()
            touch, poke = leases.due_now(loop.time())
            if not touch and not poke:
                continue
            try:
                async with asyncio.timeout(self._operation_timeout):
                    await self._locked(functools.partial(self._renew, touch=touch, poke=poke))
            except Exception:  # a broken link is replaced by the next call
                await asyncio.sleep(POKE_EVERY)

    async def _renew(self, link: Link, touch: list[int], poke: list[Lease]) -> None:
        """Touch the claims that need more time; ask about the ones past their deadline
        (which also makes the server expire them: see :mod:`._leases`)."""
        loop = asyncio.get_running_loop()
        leases = self._leases
        touch = [i for i in touch if leases.due(i) is not None]
        at = loop.time()
        replies = await link.pipeline(
            [b"touch %d" % i for i in touch] + [b"stats-job %d" % p.job_id for p in poke]
        )
        for job_id, reply in zip(touch, replies, strict=False):
            if reply.status == "TOUCHED":
                leases.touched(job_id, at)
            else:  # expired, or settled meanwhile
                leases.drop(job_id)
        for lease, reply in zip(poke, replies[len(touch) :], strict=True):
            facts = parse_stats(reply.body) if reply.status == "OK" else {}
            if facts.get("state") == "reserved" and facts.get("reserves") == str(lease.count):
                leases.still_held(lease, loop.time())
            else:
                leases.drop_lease(lease)

    # -- the backdoor ------------------------------------------------------------------

    async def stored_ids(self, queue: str) -> list[int]:
        """Backdoor for tests: every message of ``queue`` ready, delayed or held, read with
        ``stats-job`` over the ids since the queue's marker (it claims nothing)."""
        self._check_open()
        tubes = self._tubes(check_queue_name(queue))

        async def scan(link: Link) -> list[int]:
            marker = await self._marker(link, tubes)
            if marker is None:
                return []
            own = self.link_tube(link.serial)
            steps = [(c, ("USING",)) for c in _use(link, own)]
            probe = put_command(PRIORITY, FOREVER, 1, b"")  # the newest id, for the range
            (*_, put) = await _exchange(link, [*steps, (probe, ("INSERTED",))])
            newest = put.id()
            await link.one(b"delete %d" % newest, "DELETED", "NOT_FOUND")
            if newest - marker > MAX_SCAN:
                raise ServerError(b"stored_ids", f"{newest - marker} ids to scan")
            found: list[int] = []
            for start in range(marker + 1, newest, _SCAN_CHUNK):
                ids = range(start, min(start + _SCAN_CHUNK, newest))
                replies = await link.pipeline([b"stats-job %d" % i for i in ids])
                for job_id, reply in zip(ids, replies, strict=True):
                    if reply.status != "OK":
                        continue
                    facts = parse_stats(reply.body)
                    state = facts.get("state")
                    if facts.get("tube") == tubes.messages and state != "buried":
                        found.append(job_id)
            return found

        return await self._translated("stored_ids", queue, self._op(scan))

    # -- closing -----------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._keeper.cancel()
        pending = [*self._tasks, self._keeper]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._link is not None:
            await self._link.close()  # the server releases whatever it still held
        self._leases.clear()


async def connect_beanstalkd(
    settings: BeanstalkdConfig, *, operation_timeout: float = 30.0
) -> BeanstalkdMessagingService:
    """Connect, read the server's version and job size limit, and return the service."""
    try:
        host, port = parse_address(settings.url)
    except ValueError as exc:
        raise ConfigurationError(f"providers.{PROVIDER_NAME}.url", "(hidden)", str(exc)) from None
    link: Link | None = None
    try:
        async with asyncio.timeout(settings.connect_timeout_seconds):
            link = await Link.connect(host, port, secrets.token_hex(8))
            own = link_tube(settings.tube_prefix, link.serial).encode()
            stats, *_ = await _exchange(
                link,
                [
                    (b"stats", ("OK",)),
                    (b"watch " + own, ("WATCHING",)),
                    (b"ignore default", ("WATCHING",)),
                ],
            )
    except Exception as exc:  # any failure to reach the server means unavailable
        if link is not None:
            link.abort()
        raise BackendUnavailable(
            PROVIDER_NAME, settings.url, f"{type(exc).__name__}: {exc}"
        ) from exc
    facts = parse_stats(stats.body)
    return BeanstalkdMessagingService(
        settings,
        link,
        operation_timeout=operation_timeout,
        server_version=facts.get("version", "?"),
        max_job_size=int(facts.get("max-job-size", "65535")),
    )


async def open_beanstalkd(config: MessagingConfig) -> BeanstalkdMessagingService:
    """Provider factory for the ``beanstalkd`` entry point."""
    return await connect_beanstalkd(
        load_settings(config), operation_timeout=config.operation_timeout_seconds
    )
