"""HOLD: holders that stop running without dying still give their claims back, in bounded time.

Who returns a claim decides what a frozen holder (SIGSTOP, a stalled VM, a debugger on a
breakpoint) costs: where the backend enforces the visibility timeout the claim lapses on
time; where the holder's own timers do, nothing runs until the backend gives up the
holder's silent connection. Both are legitimate; an unbounded hold is not.
"""

from __future__ import annotations

from mqcontract.capabilities import VisibilityEnforcer
from mqcontract.messages import QueuedMessage
from mqcontract_conformance.cases._payloads import body, same_payload
from mqcontract_conformance.context import CaseContext, ContractViolation
from mqcontract_conformance.registry import rule


@rule(
    "HOLD-1",
    "Messages held by a consumer process that is frozen (stopped, not dead) come back: "
    "within their visibility timeout where the server enforces it, within the declared "
    "frozen_holder_release_seconds where the holder does (a bound must be declared); each "
    "comes back once, with its payload, and none is lost.",
    why="A stopped process keeps its sockets open, so nothing tells the backend it is gone; "
    "where only the holder's own timers return claims, its messages wait for the backend "
    "to give up the connection (three minutes with RabbitMQ's default heartbeat), and an "
    "author who never measured this cannot document it.",
    hooks=("freeze_holder",),
    provisional=True,
)
async def claims_of_frozen_holder_come_back(ctx: CaseContext) -> None:
    q = await ctx.queue()
    payloads = [body(i, "frozen") for i in range(3)]
    sent = dict(zip(await ctx.service.send_batch(q, payloads), payloads, strict=True))
    vt = ctx.timing.unit
    caps = ctx.caps
    if caps.visibility_enforced_by is VisibilityEnforcer.SERVER:
        bound, source = vt, "the visibility timeout (enforced by the server)"
    else:
        declared = caps.frozen_holder_release_seconds
        ctx.check(
            declared is not None,
            "the holder enforces the visibility timeout but no frozen_holder_release_seconds "
            "is declared: a frozen holder may keep its claims for ever",
        )
        assert declared is not None
        bound, source = max(vt, declared), "the declared frozen_holder_release_seconds"
    within = bound + ctx.timing.slack
    got: dict[int, QueuedMessage] = {}
    twice: list[int] = []

    async def all_back() -> bool:
        for m in await ctx.receive(q, limit=min(2 * len(sent), caps.max_receive_limit)):
            if m.msg_id in got:
                twice.append(m.msg_id)
            got[m.msg_id] = m
        return set(got) >= set(sent)

    async with ctx.harness.freeze_holder(ctx.service, q, len(sent), vt) as held:
        frozen = ctx.now()
        ctx.check(
            sorted(held) == sorted(sent),
            f"the frozen holder reported holding {sorted(held)}, expected {sorted(sent)}",
        )
        try:
            await ctx.eventually(all_back, within, "the frozen holder's messages back")
        except ContractViolation:
            ctx.fail(
                f"held by a frozen process, not delivered again within {within:g} s "
                f"({source}: {bound:g} s, plus slack): {sorted(set(sent) - set(got))} "
                f"(received {sorted(got)})"
            )
        ctx.metrics["returned_after_s"] = round(ctx.now() - frozen, 3)
        ctx.metrics["bound_s"] = bound
    ctx.check(not twice, f"delivered twice: {sorted(twice)}")
    wrong = [
        i for i, m in got.items() if not same_payload(caps.payload_fidelity, sent[i], m.payload)
    ]
    ctx.check(not wrong, f"payload changed on redelivery: {sorted(wrong)}")
    for msg_id, m in got.items():
        await ctx.service.ack_claim(q, m)
        del sent[msg_id]
    again = [m.msg_id for m in await ctx.receive(q)]
    ctx.check(not again, f"delivered again after every message was acked: {again}")
