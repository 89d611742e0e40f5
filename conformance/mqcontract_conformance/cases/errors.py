"""ERR: the error hierarchy, bounded operations, closed providers, recovery."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

from mqcontract.errors import BackendUnavailable, MessageNotFound, MessagingError, ProviderClosed
from mqcontract_conformance.cases._payloads import body
from mqcontract_conformance.context import CaseContext
from mqcontract_conformance.rules import rule


@rule(
    "ERR-1",
    "Every failure of every operation is a MessagingError subclass.",
    why="Callers catch one base class; a raw driver exception escaping is a leak.",
)
async def failures_are_messaging_errors(ctx: CaseContext) -> None:
    q = await ctx.queue()
    missing = ctx.queue_name()
    svc = ctx.service
    big = b"x" * (ctx.caps.max_message_size_bytes + 1)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "send to missing": lambda: svc.send_message(missing, body(1)),
        "receive from missing": lambda: svc.receive_messages(missing, 1, 1.0),
        "oversized": lambda: svc.send_message(q, big),
        "payload not bytes": lambda: svc.send_message(q, "text"),  # type: ignore[arg-type]
        "nan timeout": lambda: svc.receive_messages(q, 1, math.nan),
        "limit 0": lambda: svc.receive_messages(q, 0, 1.0),
        "ack unknown": lambda: svc.ack_message(q, 123456789),
        "bad name": lambda: svc.create_queue("DROP TABLE;"),
        "name not str": lambda: svc.create_queue(42),  # type: ignore[arg-type]
    }
    wrong = []
    for what, call in calls.items():
        try:
            await call()
        except MessagingError:
            continue
        except Exception as exc:
            wrong.append(f"{what}: {type(exc).__module__}.{type(exc).__name__}: {exc}")
            continue
        wrong.append(f"{what}: no error")
    ctx.check(not wrong, "not MessagingError: " + "; ".join(wrong))


@rule(
    "ERR-2",
    "Errors name the queue and the offending value or limit in their message.",
    why="An error that does not say which queue is useless in a log of thousands.",
)
async def errors_are_specific(ctx: CaseContext) -> None:
    q = await ctx.queue()
    missing = ctx.queue_name()
    checks: list[tuple[Callable[[], Awaitable[object]], list[str]]] = [
        (lambda: ctx.service.send_message(missing, body(1)), [missing]),
        (lambda: ctx.service.receive_messages(q, 0, 1.0), [q, "limit", "0"]),
        (lambda: ctx.service.ack_message(q, 424242), [q, "424242"]),
        (lambda: ctx.service.create_queue("Bad;Name"), ["Bad;Name"]),
    ]
    for call, needles in checks:
        try:
            await call()
        except MessagingError as exc:
            text = str(exc)
            absent = [n for n in needles if n not in text]
            ctx.check(not absent, f"{type(exc).__name__} {text!r} does not mention {absent}")
        else:
            ctx.fail(f"expected an error naming {needles}")


@rule(
    "ERR-3",
    "After close, every operation raises a MessagingError (ProviderClosed) instead of "
    "hanging or reconnecting silently; close is idempotent.",
    why="Shutdown must be clean and final.",
)
async def closed_provider(ctx: CaseContext) -> None:
    q = await ctx.queue()
    await ctx.service.close()
    await ctx.service.close()
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "send": lambda: ctx.service.send_message(q, body(1)),
        "receive": lambda: ctx.service.receive_messages(q, 1, 1.0),
        "create": lambda: ctx.service.create_queue(q),
    }
    for what, call in calls.items():
        await ctx.raises(ProviderClosed, call(), f"{what} after close")


@rule(
    "ERR-4",
    "Every operation of a normal exchange completes within the operation bound.",
    why="A call that can block forever takes a worker with it.",
)
async def operations_bounded(ctx: CaseContext) -> None:
    slow: list[str] = []

    async def timed(what: str, call: Awaitable[object]) -> object:
        start = ctx.now()
        result = await call
        if ctx.now() - start > ctx.timing.operation:
            slow.append(f"{what} took {ctx.now() - start:.2f} s")
        return result

    q = ctx.queue_name()
    await timed("create_queue", ctx.service.create_queue(q))
    await timed("queue_exists", ctx.service.queue_exists(q))
    sent = await timed("send_message", ctx.service.send_message(q, body(1)))
    await timed("receive_messages", ctx.service.receive_messages(q, 10, ctx.timing.long))
    await timed("ack_message", ctx.service.ack_message(q, sent))  # type: ignore[arg-type]
    await timed("receive (empty)", ctx.service.receive_messages(q, 10, ctx.timing.long))
    await timed("delete_queue", ctx.service.delete_queue(q))
    ctx.check(not slow, "; ".join(slow))


@rule(
    "ERR-5",
    "After its connections are severed the provider recovers by itself: operations work "
    "again within the bound and no stored message is lost.",
    why="Networks drop; asyncpg and AMQP connections do not come back on their own.",
    hooks=("sever_connection",),
)
async def recovers_after_sever(ctx: CaseContext) -> None:
    q = await ctx.queue()
    ids = set(await ctx.service.send_batch(q, [body(i) for i in range(5)]))
    held = await ctx.receive(q, limit=2)
    await ctx.harness.sever_connection(ctx.service)

    async def works() -> bool:
        try:
            await ctx.service.queue_exists(q)
        except MessagingError:
            return False
        return True

    await ctx.eventually(works, ctx.timing.slack * 3, "provider usable after sever")
    got: list[int] = []

    async def all_back() -> bool:
        try:
            got.extend(m.msg_id for m in await ctx.receive(q, limit=10, vt=ctx.timing.long))
        except MessagingError:
            return False
        return set(got) >= ids - {m.msg_id for m in held}

    await ctx.eventually(all_back, ctx.timing.slack * 3, "messages receivable after sever")
    lost = ids - set(got) - {m.msg_id for m in held}
    ctx.check(not lost, f"lost after sever: {sorted(lost)}")


@rule(
    "ERR-6",
    "Settling a message held before a sever either succeeds, and then no provider on the "
    "backend ever receives it again, or raises MessageNotFound (the claim died with the "
    "connection) or BackendUnavailable (outcome unknown), and then it is still deliverable.",
    why="At-least-once must not become 'acked here, processed again there': a provider "
    "that reports an ack of a claim the broker already requeued as done lets another "
    "consumer run the finished work again.",
    hooks=("sever_connection",),
    provisional=True,
)
async def settling_after_sever(ctx: CaseContext) -> None:
    q = await ctx.queue()
    sent = await ctx.service.send_message(q, body(1))
    [held] = await ctx.receive_exactly(q, 1)
    await ctx.harness.sever_connection(ctx.service)

    async def works() -> bool:
        try:
            await ctx.service.queue_exists(q)
        except MessagingError:
            return False
        return True

    await ctx.eventually(works, ctx.timing.slack * 3, "provider usable after sever")
    try:
        await ctx.service.ack_message(q, held.msg_id)
        acked = True
    except (MessageNotFound, BackendUnavailable):
        acked = False
    # Another process on the same backend, as a competing consumer would be.
    other = await ctx.harness.open(ctx.clock)
    try:

        async def redelivered() -> list[int]:
            return [m.msg_id for m in await other.receive_messages(q, 10, ctx.timing.long)]

        if acked:
            await ctx.never(
                redelivered, ctx.timing.slack, f"message {sent} redelivered after its ack returned"
            )
        else:
            got = await ctx.eventually(
                redelivered, ctx.timing.long + ctx.timing.slack * 3, "the unsettled message back"
            )
            ctx.check(got == [sent], f"expected message {sent} back, received {got}")
            await other.ack_message(q, sent)
    finally:
        await other.close()
