"""EVT: the event system over each provider — modes, fallback recovery, stop/start."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from mqcontract.capabilities import PushKind
from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.messages import QueuedMessage
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.cases._conditions import ANY_PUSH
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.registry import rule


def _settings(ctx: CaseContext, mode: DeploymentMode, **kw: object) -> ConsumerSettings:
    return ConsumerSettings(
        mode=mode,
        visibility_timeout=ctx.timing.long,
        stop_grace=ctx.timing.slack,
        **kw,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def _consumer(
    ctx: CaseContext,
    queues: list[str],
    mode: DeploymentMode,
    handler: Callable[[QueuedMessage], Awaitable[None]] | None = None,
    **kw: object,
) -> AsyncIterator[QueueConsumer]:
    async def ok(_: QueuedMessage) -> None:
        return None

    consumer = QueueConsumer(
        ctx.service, queues, handler or ok, _settings(ctx, mode, **kw), clock=ctx.clock
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _first_poll_done(ctx: CaseContext, consumer: QueueConsumer) -> None:
    """Wait out the poll a consumer makes as it starts (``polls_at_start``).

    Messages sent while it runs are the poller's as much as push's: a poller claiming
    a batch per idle worker took all 30 of EVT-1's messages before push delivered one,
    and "nothing came by push" would have blamed push for a race it did not lose.
    """
    if consumer.polls_at_start:

        async def polled() -> bool:
            failed = any(e.startswith("poller:") for e in consumer.stats.errors)
            return consumer.stats.polls >= 1 or failed

        await ctx.eventually(polled, _poll_bound(ctx, consumer), "the consumer's first poll")


def _poll_bound(ctx: CaseContext, consumer: QueueConsumer) -> float:
    return consumer.poll_interval + ctx.timing.slack


async def _all_processed(
    ctx: CaseContext,
    consumer: QueueConsumer,
    expected: set[tuple[str, int]],
    within: float,
    what: str,
    *,
    stalled: bool = False,
) -> None:
    """Wait until every expected message succeeded; fail after ``within`` seconds, or,
    with ``stalled``, once ``within`` seconds passed in which none more succeeded (many
    messages: the rule is about push going on, not about how fast a loaded machine runs
    them; a whole case is still bounded by the profile's ``case``)."""
    best = 0

    async def done() -> bool:
        return expected <= set(consumer.stats.succeeded)

    async def more() -> bool:
        nonlocal best
        finished = len(expected & set(consumer.stats.succeeded))
        if finished > best:
            best = finished
            return True
        return False

    try:
        if stalled:
            while not await done():
                await ctx.eventually(more, within, what)
        else:
            await ctx.eventually(done, within, what)
        return
    except AssertionError:
        pass  # failed below, without the bare timeout chained to it
    missing = sorted(expected - set(consumer.stats.succeeded))
    bound = "with none processed for" if stalled else "never processed within"
    stats = consumer.stats
    ctx.fail(
        f"{what}: {len(missing)} of {len(expected)} {bound} {within:g} s: "
        f"{missing[:20]}; handler runs: {stats.handler_runs}, acks refused as stale:"
        f" {stats.late_acks}, acks of unknown outcome: {stats.unsettled_acks}; errors:"
        f" {stats.errors[:3]}"
    )


def _exactly_once(
    ctx: CaseContext, consumer: QueueConsumer, expected: set[tuple[str, int]]
) -> None:
    twice = consumer.stats.processed_twice()
    ctx.check(not twice, f"processed twice: {twice[:20]}")
    unexpected = set(consumer.stats.succeeded) - expected
    ctx.check(not unexpected, f"processed messages never sent: {sorted(unexpected)[:20]}")


@rule(
    "EVT-1",
    "In Hybrid mode every message is processed exactly once while notifications work.",
    why="Push and the fallback poller both see messages; a claim must decide who runs it.",
)
async def hybrid_exactly_once(ctx: CaseContext) -> None:
    q = await ctx.queue()
    async with _consumer(ctx, [q], DeploymentMode.HYBRID) as consumer:
        await _first_poll_done(ctx, consumer)
        sent = {(q, i) for i in await ctx.service.send_batch(q, [body(i) for i in range(30)])}
        await _all_processed(ctx, consumer, sent, _poll_bound(ctx, consumer), "hybrid")
    _exactly_once(ctx, consumer, sent)
    if ANY_PUSH.applies(ctx.caps):
        ctx.check(
            consumer.stats.by_path["push"] > 0, f"nothing came by push: {consumer.stats.by_path}"
        )


@rule(
    "EVT-2",
    "With notifications suppressed, every message sent meanwhile is processed within the "
    "fallback polling interval plus a bound; once restored, push delivers again.",
    why="Dropped NOTIFYs are silent; only the fallback poller notices the gap.",
    applies_when=ANY_PUSH,
    hooks=("suppress_notifications",),
)
async def fallback_after_suppressed_notifications(ctx: CaseContext) -> None:
    q = await ctx.queue()
    async with _consumer(ctx, [q], DeploymentMode.HYBRID) as consumer:
        restore = await ctx.harness.suppress_notifications(ctx.service, q)
        start = ctx.now()
        gap = {(q, i) for i in await ctx.service.send_batch(q, [body(i) for i in range(5)])}
        await _all_processed(ctx, consumer, gap, _poll_bound(ctx, consumer), "sent during outage")
        ctx.metrics["recovery_seconds"] = round(ctx.now() - start, 3)
        await restore()
        pushed_before = consumer.stats.by_path["push"]
        after = {(q, await ctx.service.send_message(q, body(i, "after"))) for i in range(5)}
        await _all_processed(ctx, consumer, after, _poll_bound(ctx, consumer), "after restore")
        ctx.check(
            consumer.stats.by_path["push"] > pushed_before,
            f"push did not resume after restore: {consumer.stats.by_path}",
        )
    _exactly_once(ctx, consumer, gap | after)


@rule(
    "EVT-3",
    "After the push connection is killed, messages sent during the gap are processed within "
    "the fallback interval plus a bound, and push resumes once the listener reconnects.",
    why="asyncpg does not reconnect by itself and notifications sent while disconnected "
    "are gone for good; the original never recovered.",
    applies_when=ANY_PUSH,
    hooks=("kill_listener",),
)
async def recovery_after_listener_killed(ctx: CaseContext) -> None:
    q = await ctx.queue()
    async with _consumer(ctx, [q], DeploymentMode.HYBRID) as consumer:
        first = {(q, await ctx.service.send_message(q, body(0)))}
        await _all_processed(ctx, consumer, first, _poll_bound(ctx, consumer), "before the kill")
        await ctx.harness.kill_listener(ctx.service)
        start = ctx.now()
        gap = {(q, i) for i in await ctx.service.send_batch(q, [body(i) for i in range(1, 6)])}
        await _all_processed(ctx, consumer, gap, _poll_bound(ctx, consumer), "sent in the gap")
        ctx.metrics["recovery_seconds"] = round(ctx.now() - start, 3)
        pushed_before = consumer.stats.by_path["push"]
        later: set[tuple[str, int]] = set()

        async def pushed_again() -> bool:
            later.add((q, await ctx.service.send_message(q, body(len(later), "later"))))
            await ctx.pause(ctx.timing.step * 4)
            return consumer.stats.by_path["push"] > pushed_before

        await ctx.eventually(pushed_again, ctx.timing.slack * 3, "push resumed after reconnect")
        await _all_processed(ctx, consumer, later, _poll_bound(ctx, consumer), "after reconnect")
    _exactly_once(ctx, consumer, first | gap | later)


@rule(
    "EVT-4",
    "PollingOnly processes every message without subscribing.",
    why="Restricted environments (no LISTEN, no consumer connections) still work.",
)
async def polling_only(ctx: CaseContext) -> None:
    q = await ctx.queue()
    async with _consumer(ctx, [q], DeploymentMode.POLLING_ONLY) as consumer:
        sent = {(q, i) for i in await ctx.service.send_batch(q, [body(i) for i in range(10)])}
        await _all_processed(ctx, consumer, sent, _poll_bound(ctx, consumer), "polling only")
        ctx.check(consumer.stats.notifications == 0, "PollingOnly received notifications")
    _exactly_once(ctx, consumer, sent)
    ctx.check(set(consumer.stats.by_path) == {"poll"}, f"paths used: {consumer.stats.by_path}")


#: Messages EVT-5 sends: more than a provider's prefetch (100 by default) holds at once,
#: so push must keep going as the event system settles what it was given.
PUSH_ONLY_MESSAGES = 250


@rule(
    "EVT-5",
    "EventDrivenOnly on a provider that needs no fallback processes every message by push, "
    f"{PUSH_ONLY_MESSAGES} of them (more than a prefetch's worth, settled as the event "
    "system settles them).",
    why="Push-native brokers need no poller; the listener alone must suffice, also once "
    "the first prefetch's worth of messages was settled.",
    applies_when=ANY_PUSH & ~Applies.flag("requires_fallback_polling"),
)
async def event_driven_only(ctx: CaseContext) -> None:
    q = await ctx.queue()
    async with _consumer(ctx, [q], DeploymentMode.EVENT_DRIVEN_ONLY) as consumer:
        ctx.check(consumer.mode is DeploymentMode.EVENT_DRIVEN_ONLY, f"ran as {consumer.mode}")
        payloads = [body(i) for i in range(PUSH_ONLY_MESSAGES)]
        sent = {(q, i) for i in await ctx.service.send_batch(q, payloads)}
        await _all_processed(
            ctx, consumer, sent, ctx.timing.delivery, "event driven only", stalled=True
        )
    _exactly_once(ctx, consumer, sent)
    ctx.check(set(consumer.stats.by_path) == {"push"}, f"paths used: {consumer.stats.by_path}")


@rule(
    "EVT-6",
    "A failing handler leads to redelivery with receive_count + 1, and the message is "
    "processed once the handler succeeds.",
    why="Failure must mean retry, never loss.",
)
async def failure_redelivers(ctx: CaseContext) -> None:
    q = await ctx.queue()
    failed: set[int] = set()

    async def flaky(message: QueuedMessage) -> None:
        if message.msg_id not in failed:
            failed.add(message.msg_id)
            raise RuntimeError("first attempt fails")

    async with _consumer(ctx, [q], DeploymentMode.HYBRID, flaky) as consumer:
        sent = {(q, i) for i in await ctx.service.send_batch(q, [body(i) for i in range(5)])}
        await _all_processed(ctx, consumer, sent, _poll_bound(ctx, consumer) * 2, "after failure")
    _exactly_once(ctx, consumer, sent)
    for key in sent:
        counts = consumer.stats.receive_counts[key]
        ctx.check(len(counts) >= 2, f"{key} handled {len(counts)} time(s)")
        ok = counts[1] == counts[0] + 1 if ctx.caps.exact_receive_count else counts[1] >= 2
        ctx.check(ok, f"{key} receive counts {counts}")


@rule(
    "EVT-7",
    "Stopping a consumer mid-run and starting another loses nothing and processes nothing "
    "twice; stop returns within its bound.",
    why="The original's pollers could not be stopped; deploys restart consumers all the time.",
)
async def stop_start_loses_nothing(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = {(q, i) for i in await ctx.service.send_batch(q, [body(i) for i in range(30)])}

    async def slow(_: QueuedMessage) -> None:
        await ctx.pause(ctx.timing.step)

    first = QueueConsumer(
        ctx.service, [q], slow, _settings(ctx, DeploymentMode.HYBRID, workers=2), clock=ctx.clock
    )
    await first.start()

    async def some_done() -> bool:
        return first.stats.processed >= 5

    await ctx.eventually(some_done, _poll_bound(ctx, first), "first consumer made progress")
    start = ctx.now()
    await first.stop()
    ctx.check(
        ctx.now() - start <= ctx.timing.slack + ctx.timing.operation, "stop overran its bound"
    )
    async with _consumer(ctx, [q], DeploymentMode.HYBRID) as second:
        remaining = sent - set(first.stats.succeeded)
        await _all_processed(ctx, second, remaining, _poll_bound(ctx, second), "second consumer")
    both = set(first.stats.succeeded) & set(second.stats.succeeded)
    ctx.check(not both, f"processed by both consumers: {sorted(both)[:20]}")
    _exactly_once(ctx, first, sent)
    _exactly_once(ctx, second, sent)


@rule(
    "EVT-8",
    "The effective deployment mode follows the documented table: a provider that requires "
    "fallback polling always gets its poller; a provider without push only polls.",
    why="The original forced RabbitMQ to EventDrivenOnly whatever was asked.",
)
async def effective_mode_table(ctx: CaseContext) -> None:
    for requested in DeploymentMode:
        effective = requested.effective_for_provider(ctx.caps)
        if ctx.caps.requires_fallback_polling:
            ctx.check(effective.polls, f"{requested} became {effective} without a poller")
        if ctx.caps.push is PushKind.NONE:
            ctx.check(effective is DeploymentMode.POLLING_ONLY, f"{requested} became {effective}")
        if requested is DeploymentMode.POLLING_ONLY:
            ctx.check(effective is DeploymentMode.POLLING_ONLY, f"PollingOnly became {effective}")


@rule(
    "EVT-9",
    "Killing the push connection repeatedly during a run of 1,000 messages loses none and "
    "processes none twice; the recovery time is reported.",
    why="Recovery must hold under load, not only for one message.",
    applies_when=ANY_PUSH,
    hooks=("kill_listener",),
)
async def repeated_kills_under_load(ctx: CaseContext) -> None:
    q = await ctx.queue()
    total, kills = 1000, 3
    sent: set[tuple[str, int]] = set()
    recoveries: list[float] = []
    baseline: list[float] = []
    async with _consumer(ctx, [q], DeploymentMode.HYBRID, batch_size=50, workers=8) as consumer:
        per_round = total // (kills + 1)
        for round_no in range(kills + 1):
            killed = round_no > 0
            if killed:
                await ctx.harness.kill_listener(ctx.service)
            start = ctx.now()
            payloads = [body(i, f"r{round_no}") for i in range(per_round)]
            batch = {(q, i) for i in await ctx.service.send_batch(q, payloads)}
            sent |= batch
            await _all_processed(
                ctx, consumer, batch, _poll_bound(ctx, consumer) * 2, f"round {round_no}"
            )
            # From the kill to the round's last message processed; round 0 is the baseline.
            (recoveries if killed else baseline).append(ctx.now() - start)
        await _all_processed(ctx, consumer, sent, _poll_bound(ctx, consumer) * 2, "all rounds")
    _exactly_once(ctx, consumer, sent)
    ctx.metrics.update(
        messages=float(len(sent)),
        kills=float(kills),
        baseline_round_seconds=round(baseline[0], 3),
        max_recovery_seconds=round(max(recoveries), 3),
        mean_recovery_seconds=round(sum(recoveries) / len(recoveries), 3),
        duplicate_claims=float(consumer.stats.duplicate_claims),
    )
