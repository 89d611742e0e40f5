"""What every redelivery must keep, checked the same way on every path that redelivers."""

from __future__ import annotations

from mqcontract.messages import QueuedMessage
from mqcontract_conformance.context import CaseContext

__all__ = ["check_redelivered", "count_ok"]


def count_ok(ctx: CaseContext, observed: int, expected: int) -> bool:
    """``observed`` is the ``expected`` delivery count: exactly where the provider claims
    exact counts, else at least 2 once the message was delivered before."""
    return observed == expected if ctx.caps.exact_receive_count else observed >= min(expected, 2)


def check_redelivered(
    ctx: CaseContext,
    path: str,
    first: QueuedMessage,
    again: QueuedMessage,
    *,
    deliveries: int,
    copy: bool = False,
) -> None:
    """``again`` is ``first`` delivered once more: same id, payload (byte for byte as the
    first delivery gave it) and enqueued_at, and ``deliveries`` as its receive_count.

    ``copy``: ``again`` is an unclaimed pushed copy, which may also show 0 (PUSH-2).
    """
    ctx.check(again.msg_id == first.msg_id, f"{path}: id {again.msg_id}, expected {first.msg_id}")
    ctx.check(
        again.payload == first.payload,
        f"{path}: payload {again.payload!r}, first delivered as {first.payload!r}",
    )
    ctx.check(
        again.enqueued_at == first.enqueued_at,
        f"{path}: enqueued_at {again.enqueued_at!r}, first delivered with {first.enqueued_at!r}",
    )
    count = again.receive_count
    ctx.check(
        count_ok(ctx, count, deliveries) or (copy and count == 0),
        f"{path}: receive_count {count}, expected {deliveries}"
        + ("" if ctx.caps.exact_receive_count else " (at least 2)"),
    )
