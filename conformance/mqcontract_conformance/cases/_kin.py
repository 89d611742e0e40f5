"""Queues whose names are close to one another: where name handling goes wrong.

A provider that matches names by prefix (a Redis ``SCAN MATCH name*``, an unanchored
pattern subscription, a ``LIKE 'name%'``) or keys its storage on a truncated name (an
identifier limit once a prefix is added) keeps every rule that uses one short name at a
time; these names put such a provider's queues on top of one another.
"""

from __future__ import annotations

from dataclasses import dataclass

from mqcontract.messages import QueuedMessage
from mqcontract.validation import MAX_QUEUE_NAME_LENGTH
from mqcontract_conformance.context import CaseContext

__all__ = ["Kin", "first_receive", "kin_queues"]


@dataclass(frozen=True)
class Kin:
    """A queue and its kin, all created, each deleted after the case."""

    #: The queue the rule acts on.
    base: str
    #: Names that extend ``base`` (a dead-letter queue, one more character), and the name
    #: ``base`` extends by one character.
    around: tuple[str, ...]
    #: Two names of the longest valid length, differing only in their last character.
    longest: tuple[str, str]

    @property
    def all(self) -> tuple[str, ...]:
        return (self.base, *self.around, *self.longest)

    def tag(self, name: str) -> bytes:
        """A payload telling which queue it was sent to (ids may repeat across queues)."""
        return f"sent to {name}".encode()


async def kin_queues(ctx: CaseContext) -> Kin:
    """Create a fresh queue, its kin and a longest-name pair, registered for cleanup."""
    shorter = ctx.queue_name()  # registered for cleanup, as every name below
    base = shorter + "q"
    stem = (base + "_" * MAX_QUEUE_NAME_LENGTH)[: MAX_QUEUE_NAME_LENGTH - 1]
    kin = Kin(
        base=base,
        around=(base + "_dlq", base + "x", shorter),
        longest=(stem + "a", stem + "b"),
    )
    ctx.queues.extend(name for name in kin.all if name != shorter)
    for name in kin.all:
        await ctx.service.create_queue(name)
    return kin


async def first_receive(ctx: CaseContext, queue: str, what: str) -> list[QueuedMessage]:
    """The first receive from ``queue`` that returns anything; fails with ``what`` (the
    rule's words for where the message went) after the delivery bound."""
    got: list[QueuedMessage] = []

    async def some() -> bool:
        got.extend(await ctx.receive(queue))
        return bool(got)

    try:
        await ctx.eventually(some, ctx.timing.delivery, queue)
    except AssertionError:
        ctx.fail(f"nothing receivable from {queue} within {ctx.timing.delivery:g} s: {what}")
    return got
