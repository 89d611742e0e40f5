"""DUR: what a returned send or ack promises once the server crashes and starts again.

The shared services are never restarted, so these rules run on the harness's private
server (the ``private_backend`` hook): one configured as a production queue would be,
which the rule kills with SIGKILL (no shutdown of any kind) and starts again on the same
storage and port. Every rule opens its own services on that server: the case's service
is on the shared one. A service open across the restart stays open: the provider must
recover on its own, as it would in production; only DUR-4 asks anything of that
recovery (push resumes), the others read with a fresh service so that a lost message
cannot hide behind a provider that has not reconnected yet.

Each rule's queue is created before a clean restart of the server (:meth:`_Private.queue`),
so that the crash judges what the rule is about and not a queue created a moment before;
in real time one clean restart ages the queues of every DUR rule, and a queue may then
have been through the crashes of the rules run before its own.

"Up again" is when :meth:`~mqcontract.testing.PrivateBackend.restart` returned (the
server answers requests); the recovery bound (three times the slack, as after severed
connections in ERR-5) is what a provider then has to reconnect and find its queues.

Claims held across the restart: where the server keeps the visibility timeout (declared
``visibility_enforced_by: server``) a claim keeps its deadline through the restart and
comes back neither before nor long after it; where the holder's own timers end claims
(``holder``) the restart cuts the holder's connection, so the claim may come back as
soon as the server is up, but no later than its deadline.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from mqcontract.capabilities import VisibilityEnforcer
from mqcontract.clock import VirtualClock
from mqcontract.errors import MessagingError
from mqcontract.messages import Available, Message, QueuedMessage
from mqcontract.service import MessagingService, Subscription
from mqcontract.testing import PrivateBackend
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._conditions import ANY_PUSH
from mqcontract_conformance.cases._payloads import body, same_payload
from mqcontract_conformance.cases._redelivery import check_redelivered, count_ok
from mqcontract_conformance.context import CaseContext, ContractViolation, notification_id
from mqcontract_conformance.leftovers import PerHarness, at_teardown
from mqcontract_conformance.registry import registered, rule

#: Providers that promise their messages outlive a crash of the server.
DURABLE = Applies.flag("survives_restart")
HOOK = ("private_backend",)


@dataclass
class _AgedQueues:
    """Queues on one private server, created before its last clean restart and not yet
    taken by a case; ``crashed_in``: the rules whose cases crashed the server since."""

    backend: PrivateBackend
    names: list[str]
    crashed_in: list[str] = field(default_factory=list)


#: Per harness: the aged queues its DUR cases take, one each.
_AGED: PerHarness[_AgedQueues] = PerHarness()
_SERIAL = itertools.count(1)


class _Private:
    """The private server for one case: what the rule opened there is closed after the
    case (the runner closes ``ctx.others``), and its queue is deleted."""

    def __init__(self, ctx: CaseContext, backend: PrivateBackend) -> None:
        self.ctx = ctx
        self.backend = backend
        self.queues: list[str] = []

    async def open(self) -> MessagingService:
        """A fresh service on the private server, as another process would open it."""
        service = await self.backend.open(self.ctx.clock)
        self.ctx.others.append(service)
        return service

    async def queue(self) -> str:
        """A queue on the private server that was created before a clean restart of it.

        The restart makes the queue as old, to the server, as any production queue: a
        server may answer a create before it has written the queue down (RabbitMQ 3.10.8
        killed a few milliseconds after a durable declare-ok can come back without the
        queue, and with it the messages it confirmed: 4 of 233 crashes on a loaded
        machine), and a rule about sends, acks, claims or push must not fail for
        what is the queue's creation. One clean restart ages a queue for each DUR rule
        (:meth:`_aged`); a queue gone when its case takes it fails the rule: nothing
        sent to it could survive a crash either. The server may still be replaying its
        log when the queue is found: what the rule first waits for before the crash is
        given the recovery bound too.
        """
        ctx = self.ctx
        aged = await self._aged()
        name = aged.names.pop(0)
        self.queues.append(name)  # dropped after the case
        checker = await self.backend.open(ctx.clock)
        errors: list[MessagingError] = []

        async def found() -> bool:
            try:
                return await checker.queue_exists(name)
            except MessagingError as exc:
                errors.append(exc)
                return False

        try:
            await ctx.eventually(found, _recovery(ctx), "the queue after a clean restart")
        except ContractViolation:
            since = ""
            if aged.crashed_in:  # the loss may be theirs: say so, and how to tell
                since = (
                    f" and the crashes of the cases of {', '.join(aged.crashed_in)} since "
                    f"(run {ctx.rule_id} alone to judge it on its own)"
                )
            ctx.fail(
                f"queue {name!r}, created before a clean restart of the server{since}, "
                f"does not exist within {_recovery(ctx):g} s of looking for it"
                f"{_last_error(errors, 'looks')}"
            )
        finally:
            with contextlib.suppress(MessagingError):
                await checker.close()
        return name

    async def _aged(self) -> _AgedQueues:
        """The harness's aged queues, made now (created, then one clean restart) when
        none are left.

        In real time one restart serves every DUR rule the provider claims (a RabbitMQ
        node takes 15 s to stop cleanly and start); the queues left untaken are dropped
        at the harness's teardown (:mod:`~mqcontract_conformance.leftovers`). On a
        virtual clock a private server may keep a world per clock, that is per case (the
        in-process ones do), so each case ages just its own queue, at no cost in real
        time. The pool belongs to the harness's private backend: one that returns
        another object gets a pool of its own.
        """
        ctx = self.ctx
        aged = _AGED.get(ctx.harness)
        if aged is not None and aged.backend is self.backend and aged.names:
            return aged
        count = 1 if ctx.clock is not None else max(1, _rules_aging_queues(ctx))
        names = [f"mq_{ctx.run_id}_dur_{next(_SERIAL)}" for _ in range(count)]
        self.queues.extend(names)  # dropped after the case if anything below fails
        creator = await self.backend.open(ctx.clock)
        try:
            for name in names:
                await creator.create_queue(name)
        finally:
            with contextlib.suppress(MessagingError):
                await creator.close()  # not reconnecting in the background meanwhile
        started = time.monotonic()
        await self.backend.restart(crash=False)
        ctx.metrics["setup_restart_seconds"] = round(time.monotonic() - started, 3)
        del self.queues[-count:]  # the pool's now, until a case takes one
        aged = _AgedQueues(self.backend, names)
        _AGED.set(ctx.harness, aged)
        if count > 1:
            at_teardown(ctx.harness, functools.partial(_drop_untaken, aged))
        return aged

    async def restart(self) -> None:
        """Crash the server and start it again; the time it took is reported."""
        aged = _AGED.get(self.ctx.harness)
        if aged is not None and aged.backend is self.backend:
            aged.crashed_in.append(self.ctx.rule_id)
        started = time.monotonic()
        await self.backend.restart(crash=True)
        took = round(time.monotonic() - started, 3)
        self.ctx.metrics["restart_seconds"] = took
        self.ctx.metrics["restarts"] = self.ctx.metrics.get("restarts", 0.0) + 1

    async def drop_queues(self) -> None:
        if self.queues:
            await _drop(self.backend, self.queues, self.ctx.clock, self.ctx.others)


def _rules_aging_queues(ctx: CaseContext) -> int:
    """How many rules take an aged queue: every DUR rule the provider claims."""
    return sum(
        1
        for r in registered()
        if r.group == "DUR" and HOOK[0] in r.hooks and r.applies_when.applies(ctx.caps)
    )


async def _drop_untaken(aged: _AgedQueues) -> None:
    """At the harness's teardown: drop the aged queues no case took (an emptied pool is
    never handed out again)."""
    names, aged.names = aged.names, []
    if not names:
        return
    opened: list[MessagingService] = []
    try:
        await _drop(aged.backend, names, None, opened)
    finally:
        for service in opened:
            with contextlib.suppress(MessagingError):
                await service.close()


async def _drop(
    backend: PrivateBackend,
    names: list[str],
    clock: VirtualClock | None,
    opened: list[MessagingService],
) -> None:
    """Delete ``names`` on ``backend`` through a fresh service (added to ``opened``, for
    the caller to close); errors are ignored: this is cleanup."""
    with contextlib.suppress(MessagingError):
        service = await backend.open(clock)
        opened.append(service)
        for name in names:
            with contextlib.suppress(MessagingError):
                await service.delete_queue(name)


@contextlib.asynccontextmanager
async def _private(ctx: CaseContext) -> AsyncIterator[_Private]:
    """The harness's private server (``HookUnavailable`` when it has none)."""
    private = _Private(ctx, await ctx.harness.private_backend())
    try:
        yield private
    finally:
        await private.drop_queues()


async def _receive_until(
    ctx: CaseContext,
    service: MessagingService,
    queue: str,
    wanted: Iterable[int],
    within: float,
    what: str,
    vt: float | None = None,
    started: list[float] | None = None,
) -> list[QueuedMessage]:
    """Receive (retrying connection errors: the provider may still be reconnecting)
    until every id in ``wanted`` came; every message received is returned, in order.
    ``started``, when given, gets the time each look began."""
    missing = set(wanted)
    got: list[QueuedMessage] = []
    limit = min(100, ctx.caps.max_receive_limit)
    errors: list[MessagingError] = []

    async def all_came() -> bool:
        try:
            if started is not None:
                started.append(ctx.now())  # when each look began: a claim starts after it
            batch = await service.receive_messages(queue, limit, vt or ctx.timing.long)
        except MessagingError as exc:
            errors.append(exc)
            return False
        got.extend(batch)
        missing.difference_update(m.msg_id for m in batch)
        return not missing

    try:
        await ctx.eventually(all_came, within, what)
    except ContractViolation:
        ctx.fail(
            f"{what}: {sorted(missing)} not received within {within:g} s after the restart "
            f"(received {[m.msg_id for m in got]}{_last_error(errors)})"
        )
    return got


def _last_error(errors: list[MessagingError], what: str = "receives") -> str:
    """How the probes failed, when some did: the count and the last error."""
    if not errors:
        return ""
    return f"; {len(errors)} {what} failed, the last with {errors[-1]!r}"


def _recovery(ctx: CaseContext) -> float:
    """How long after a restart the server's messages must be receivable again: the
    bound a provider has to recover from severed connections (ERR-5)."""
    return ctx.timing.slack * 3


@rule(
    "DUR-1",
    "A send_message and a send_batch that returned survive a crash of the server (SIGKILL, "
    "then a start on the same storage): within the recovery bound of it being up again "
    "every message is received, once, with the id the send returned, its payload and a "
    "receive_count of 1. As in every DUR rule, the queue was created before a clean "
    "restart of the server, so that it is as old to the server as a production queue (a "
    "queue gone after that restart fails the rule).",
    why="A send that returned is a promise: the producer drops its copy. A server that "
    "confirms before the message reaches its storage (a write-behind buffer, Redis "
    "without appendfsync, a broker confirming before persisting) loses it when the "
    "process dies, and nothing else in the contract notices.",
    applies_when=DURABLE,
    hooks=HOOK,
    provisional=True,
)
async def sends_survive_a_crash(ctx: CaseContext) -> None:
    async with _private(ctx) as private:
        q = await private.queue()
        producer = await private.open()
        payloads = [body(0, "single"), *(body(i, "batch") for i in range(1, 4))]
        ids = [await producer.send_message(q, payloads[0])]
        ids += await producer.send_batch(q, payloads[1:])
        sent = dict(zip(ids, payloads, strict=True))
        await private.restart()
        consumer = await private.open()
        got = await _receive_until(ctx, consumer, q, sent, _recovery(ctx), "sent before the crash")
        ids_got = [m.msg_id for m in got]
        twice = sorted({i for i in ids_got if ids_got.count(i) > 1})
        ctx.check(not twice, f"delivered twice after the restart: {twice}")
        unknown = sorted(set(ids_got) - set(sent))
        ctx.check(not unknown, f"received ids never sent: {unknown} (sent {sorted(sent)})")
        fidelity = ctx.caps.payload_fidelity
        changed = [m.msg_id for m in got if not same_payload(fidelity, sent[m.msg_id], m.payload)]
        ctx.check(not changed, f"payload changed across the restart: {changed}")
        counts = {m.msg_id: m.receive_count for m in got if not count_ok(ctx, m.receive_count, 1)}
        ctx.check(not counts, f"receive_count of a first delivery after the restart: {counts}")
        for m in got:
            await consumer.ack_claim(q, m)

        async def more() -> list[int]:
            return [m.msg_id for m in await consumer.receive_messages(q, 10, ctx.timing.long)]

        await ctx.never(more, ctx.timing.margin, "delivered again after every message was acked")


@rule(
    "DUR-2",
    "A message whose ack returned stays gone after a crash of the server: within the "
    "recovery bound of it being up again a message nacked before the crash is received "
    "again, and no acked one is.",
    why="An ack that returned is the consumer's word that the work is done; a server that "
    "deletes lazily (a tombstone in memory, a delete not yet written) brings finished "
    "work back after a crash, and it runs twice.",
    applies_when=DURABLE,
    hooks=HOOK,
    provisional=True,
)
async def acks_survive_a_crash(ctx: CaseContext) -> None:
    async with _private(ctx) as private:
        q = await private.queue()
        service = await private.open()
        ids = await service.send_batch(q, [body(i, "acked") for i in range(4)])
        got = await _receive_until(ctx, service, q, ids, _recovery(ctx), "sent before the acks")
        by_id = {m.msg_id: m for m in got}
        first, *batch, kept = ids
        await service.ack_claim(q, by_id[first])
        settled = await service.ack_claims(q, [by_id[i] for i in batch])
        ctx.check(all(settled), f"ack_claims of live claims reported {settled}")
        await service.nack_claim(q, by_id[kept])
        acked = {first, *batch}
        await private.restart()
        consumer = await private.open()
        back = await _receive_until(ctx, consumer, q, [kept], _recovery(ctx), "the nacked message")
        resurrected = sorted({m.msg_id for m in back} & acked)
        ctx.check(not resurrected, f"acked before the crash, delivered after it: {resurrected}")

        async def acked_back() -> list[int]:
            return [
                m.msg_id
                for m in await consumer.receive_messages(q, 10, ctx.timing.long)
                if m.msg_id in acked
            ]

        await ctx.never(acked_back, ctx.timing.margin, "acked before the crash, delivered after it")


@rule(
    "DUR-3",
    "A claim held across a crash of the server comes back once, with its id, payload, "
    "enqueued_at and receive_count 2 (at least 2 where counts are not exact), within its "
    "visibility timeout plus slack (or, when the server was back only after that, within "
    "the recovery bound of its being back); where the server enforces the visibility "
    "timeout, not before it has passed.",
    why="A server that keeps claims in memory hands every message a consumer was working "
    "on to another consumer the moment it is back (the work runs twice, at once); one "
    "that forgets the claim's deadline, or its delivery count, never gives the message "
    "back, or resets the count a dead-letter policy relies on.",
    applies_when=DURABLE,
    hooks=HOOK,
    provisional=True,
)
async def claims_survive_a_crash(ctx: CaseContext) -> None:
    # Long enough that a real server is up again well before the claim ends.
    vt = min(ctx.timing.slack * 2, ctx.caps.max_visibility_timeout_seconds)
    async with _private(ctx) as private:
        q = await private.queue()
        holder = await private.open()
        sent = await holder.send_message(q, body(1, "held"))
        looks_began: list[float] = []
        got = await _receive_until(
            ctx, holder, q, [sent], _recovery(ctx), "the message to hold", vt, looks_began
        )
        claimed_from = looks_began[-1]  # the look that claimed it (the server may replay)
        claimed_by = ctx.now()
        ctx.check(len(got) == 1, f"one message sent, received {[m.msg_id for m in got]}")
        held = got[0]
        await private.restart()
        up = ctx.now()
        watcher = await private.open()
        back: list[QueuedMessage] = []
        looks: list[str] = []  # what each look after the restart got: for the failure

        async def came_back() -> list[int]:
            try:
                batch = await watcher.receive_messages(q, 10, ctx.timing.long)
            except MessagingError as exc:
                looks.append(f"{ctx.now() - up:.2f} s: {type(exc).__name__}: {exc}")
                return []
            looks.append(f"{ctx.now() - up:.2f} s: {[m.msg_id for m in batch]}")
            back.extend(batch)
            return [m.msg_id for m in batch]

        server_keeps = ctx.caps.visibility_enforced_by is VisibilityEnforcer.SERVER
        if server_keeps:
            early = claimed_from + vt - ctx.now() - ctx.caps.visibility_precision_seconds
            ctx.metrics["watched_before_deadline_seconds"] = round(max(early, 0.0), 3)
            if early > 0:
                await ctx.never(
                    came_back,
                    early,
                    f"claimed for {vt:g} s, back before that after the restart",
                    due=ctx.now() + early,
                )
        # A server slow to start again (a busy machine) may be back only after the claim
        # ended: the message is due then within what any recovery gets (DUR-2). Back
        # before that, the claim's own deadline holds.
        due = claimed_by + vt + ctx.timing.slack
        if up >= claimed_by + vt:
            due = max(due, up + _recovery(ctx))
        ctx.metrics["server_back_after_claim_seconds"] = round(up - claimed_by, 3)
        within = max(due - ctx.now(), ctx.timing.step)
        try:
            if not back:  # else the last look before the deadline got it, at the deadline
                await ctx.eventually(came_back, within, "the claim held across the restart")
        except ContractViolation:
            ctx.fail(
                f"claimed for {vt:g} s before the crash: message {held.msg_id} not back "
                f"within its visibility timeout plus {ctx.timing.slack:g} s, nor within "
                f"{_recovery(ctx):g} s of the server being back (back "
                f"{up - claimed_by:.2f} s after the claim; {len(looks)} looks since, "
                f"first and last: {looks[:2] + looks[-3:]})"
            )
        ctx.metrics["back_after_claim_seconds"] = round(ctx.now() - claimed_by, 3)
        await ctx.never(came_back, ctx.timing.margin, "delivered again while the watcher holds it")
        ids = [m.msg_id for m in back]
        ctx.check(ids == [held.msg_id], f"expected message {held.msg_id} back once, got {ids}")
        check_redelivered(ctx, "after the restart", held, back[0], deliveries=2)
        await watcher.ack_claim(q, back[0])


@rule(
    "DUR-4",
    "A subscription open across a crash of the server resumes on its own: without the "
    "caller subscribing again, a message sent after the server is up is announced within "
    "the recovery bound (the provider reconnecting), and, once push has resumed, within "
    "the delivery bound of its send; the subscription neither ends nor raises.",
    why="A consumer process subscribes once and runs for months; a provider whose "
    "subscription survives the restart as an open iterator that never yields again "
    "leaves every worker idle while the queue fills, and nothing reports an error.",
    applies_when=DURABLE & ANY_PUSH,
    hooks=HOOK,
    provisional=True,
)
async def push_resumes_after_a_crash(ctx: CaseContext) -> None:
    async with _private(ctx) as private:
        q = await private.queue()
        subscriber = await private.open()
        sub = await subscriber.subscribe(q)
        ctx.subscriptions.append(sub)
        before = await subscriber.send_message(q, body(0, "before"))
        note = await _announced(ctx, sub, q, {before}, _recovery(ctx))
        if note is None:
            ctx.fail(f"message {before} not announced before the restart")
        await _settle(ctx, subscriber, q, note, before)
        await private.restart()
        restarted = ctx.now()
        producer = await private.open()
        sent: list[int] = []
        deadline = restarted + _recovery(ctx) + ctx.timing.delivery
        refused: list[str] = []
        while True:
            if ctx.now() >= deadline:
                ctx.fail(
                    f"push did not resume: none of {sent}, sent after the restart, was "
                    f"announced within {ctx.now() - restarted:.3g} s; the subscription "
                    f"stays open and silent (sends refused: {refused[-3:]})"
                )
            try:
                sent.append(await producer.send_message(q, body(len(sent), "after")))
            except MessagingError as exc:  # the server may still be recovering the queue
                refused.append(f"{type(exc).__name__}: {exc}")
                await ctx.pause(ctx.timing.step * 4)
                continue
            note = await _announced(ctx, sub, q, set(sent), ctx.timing.delivery)
            if note is not None:
                break
        ctx.metrics["push_resumed_after_seconds"] = round(ctx.now() - restarted, 3)
        announced = notification_id(note)
        assert announced is not None  # _announced matched it against ``sent``
        await _settle(ctx, subscriber, q, note, announced)
        probe = await producer.send_message(q, body(0, "probe"))
        probe_sent = ctx.now()
        if await _announced(ctx, sub, q, {probe}, ctx.timing.delivery) is None:
            ctx.fail(
                f"push resumed, but message {probe}, sent after it had, was not announced "
                f"within the delivery bound ({ctx.timing.delivery:g} s)"
            )
        ctx.metrics["last_delivery_seconds"] = round(ctx.now() - probe_sent, 3)


async def _announced(
    ctx: CaseContext, sub: Subscription, q: str, ids: set[int], within: float
) -> Message | Available | None:
    """The first notification announcing one of ``ids`` within ``within`` seconds (None
    if none did); a subscription that ends or raises fails the rule."""
    deadline = ctx.now() + within
    while (remaining := deadline - ctx.now()) > 0:
        try:
            note = await ctx.next_notification(sub, remaining)
        except ContractViolation:  # nothing within the bound
            return None
        except StopAsyncIteration:
            ctx.fail(f"the subscription to {q} ended at the restart")
        except MessagingError as exc:
            ctx.fail(f"the subscription to {q} raised {type(exc).__name__}: {exc}")
        if note.queue_name == q and notification_id(note) in ids:
            return note
    return None


async def _settle(
    ctx: CaseContext, service: MessagingService, q: str, note: Message | Available, msg_id: int
) -> None:
    """Take an announced message off the queue, as a consumer would."""
    if isinstance(note, Message) and note.claimed:
        await service.ack_claim(q, note.message)
        return
    got = await _receive_until(ctx, service, q, [msg_id], ctx.timing.delivery, "the announced")
    for m in got:
        await service.ack_claim(q, m)
