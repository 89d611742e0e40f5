"""Policies that would break a delayed send, found before it is published.

A delayed message waits in a wait queue (:mod:`._delay`) whose ``x-message-ttl`` is the
delay and whose ``x-expires`` removes it once idle. A virtual host's policies apply to
those queues too, and RabbitMQ takes the *smaller* of a policy's ``message-ttl`` or
``expires`` and the queue's argument, and a policy's ``max-length`` bounds a queue that
declares none. Measured on RabbitMQ 3.10: a ``message-ttl`` of 2 s made a 10 s delay
come after 2 s; ``max-length`` 2 (drop-head) dead-lettered the oldest waiting messages
into the target at once; an ``expires`` shorter than the delay deleted the wait queue
with the message in it, after ``send_message_with_delay`` had returned its id. And a
target bounded with ``overflow: reject-publish`` drops a delayed message that comes due
while it is full (dead-lettering is not confirmed), where a plain send is refused.

So where the management API is known, a delayed send first reads the policies (the
operator's too) and the target's own arguments, and refuses with :class:`DelayUnsafe`
when one of these would hold: better an error naming the policy than a message early
or lost. Policies are read, not the queue's ``effective_policy_definition``: the
management API reports that only some time after a queue is declared. What was found
is kept for :data:`POLICY_RECHECK` seconds. Without the API, or when it does not
answer, nothing is checked (logged once): the limits of :mod:`._delay` apply.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from mqcontract.errors import BackendUnavailable, QueueError

from ._management import ManagementClient

__all__ = ["POLICY_RECHECK", "DelayUnsafe", "PolicyCheck", "delay_problem"]

log = logging.getLogger(__name__)

#: Seconds a vhost's policies, as read for a delayed send, are trusted before reading again.
POLICY_RECHECK = 30.0
#: An ``expires`` at least this much longer than the delay keeps a wait queue alive until
#: its message is due (each send re-declares it, which renews the lease).
EXPIRES_MARGIN_MS = 1_000
#: ``apply-to`` values that cover a classic queue (3.10: queues, all; later: classic_queues).
_QUEUE_KINDS = frozenset({"queues", "all", "classic_queues"})
_TARGET_KINDS = frozenset({"queues", "all", "classic_queues", "quorum_queues"})


class DelayUnsafe(QueueError):
    """A delayed send to ``queue`` would not be kept as the contract says: a policy of the
    virtual host (or the target's own arguments) would let the message come early, or
    lose it (see the module docstring). ``why`` names the policy and its key."""

    def __init__(self, queue: str, why: str) -> None:
        self.why = why
        super().__init__(
            queue,
            f"a delayed send to queue {queue!r} would not be kept: {why}. Exclude the"
            " wait queues (mqcontract.delay.*) from it, or send without a delay",
        )


def _applying(policies: list[dict[str, Any]], name: str, kinds: frozenset[str]) -> Any:
    """The policy RabbitMQ applies to a queue ``name``: of those whose pattern matches,
    the highest priority; None if none does."""
    best: dict[str, Any] | None = None
    for policy in policies:
        pattern = policy.get("pattern")
        if policy.get("apply-to", "all") not in kinds or not isinstance(pattern, str):
            continue
        try:
            if re.search(pattern, name) is None:
                continue
        except re.error:
            continue  # an Erlang pattern Python does not read: not judged here
        if best is None or policy.get("priority", 0) > best.get("priority", 0):
            best = policy
    return best


def _number(definition: dict[str, Any], key: str) -> int | None:
    value = definition.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _wait_problem(definition: dict[str, Any], ms: int) -> str | None:
    ttl = _number(definition, "message-ttl")
    if ttl is not None and ttl < ms:
        return f"message-ttl {ttl} ms, shorter than the delay ({ms} ms): it would come early"
    expires = _number(definition, "expires")
    if expires is not None and expires < ms + EXPIRES_MARGIN_MS:
        return (
            f"expires {expires} ms, not longer than the delay ({ms} ms): the wait queue"
            " would be deleted with the message in it"
        )
    for key in ("max-length", "max-length-bytes"):
        if _number(definition, key) is not None:
            return (
                f"{key} {definition[key]}: a full wait queue dead-letters its oldest message"
                " into the target before its delay (or refuses it)"
            )
    return None


def _target_problem(definition: dict[str, Any]) -> str | None:
    overflow = definition.get("overflow", definition.get("x-overflow"))
    bounded = any(
        _number(definition, k) is not None
        for k in ("max-length", "max-length-bytes", "x-max-length", "x-max-length-bytes")
    )
    if bounded and overflow in ("reject-publish", "reject-publish-dlx"):
        return (
            f"the target is bounded with overflow {overflow}: a delayed message that comes"
            " due while it is full is dropped (a plain send is refused instead)"
        )
    return None


def delay_problem(
    policies: list[dict[str, Any]],
    operator_policies: list[dict[str, Any]],
    target_arguments: dict[str, Any],
    target: str,
    wait: str,
    ms: int,
) -> str | None:
    """Why a delay of ``ms`` to ``target`` through ``wait`` would not be kept, or None."""
    for source, found in (("policy", policies), ("operator policy", operator_policies)):
        policy = _applying(found, wait, _QUEUE_KINDS)
        if policy is not None:
            problem = _wait_problem(dict(policy.get("definition") or {}), ms)
            if problem:
                return f"{source} {policy.get('name')!r} gives its wait queue {wait!r} {problem}"
        policy = _applying(found, target, _TARGET_KINDS)
        if policy is not None:
            merged = {**target_arguments, **dict(policy.get("definition") or {})}
            problem = _target_problem(merged)
            if problem:
                return f"{source} {policy.get('name')!r}: {problem}"
    problem = _target_problem(target_arguments)
    return f"its declare arguments: {problem}" if problem else None


class PolicyCheck:
    """Reads a vhost's policies for delayed sends, at most every :data:`POLICY_RECHECK` s."""

    def __init__(self, management: ManagementClient, vhost: str, bound: float) -> None:
        self._management = management
        self._vhost = vhost
        self._bound = bound
        self._read_at = -POLICY_RECHECK
        self._policies: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        self._targets: dict[str, tuple[float, dict[str, Any]]] = {}
        self._warned = False

    async def check(self, target: str, wait: str, ms: int) -> None:
        """:class:`DelayUnsafe` if a policy would break this delay; best effort."""
        try:
            async with asyncio.timeout(self._bound):
                policies, operator = await self._read_policies()
                arguments = await self._target_arguments(target)
        except (BackendUnavailable, TimeoutError) as exc:
            if not self._warned:
                self._warned = True
                why = str(exc) or f"no answer within {self._bound:g} s"
                log.warning("cannot read RabbitMQ policies for delayed sends: %s", why)
            return
        problem = delay_problem(policies, operator, arguments, target, wait, ms)
        if problem is not None:
            raise DelayUnsafe(target, problem)

    async def _read_policies(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        now = time.monotonic()
        if now - self._read_at >= POLICY_RECHECK:
            self._policies = (
                await self._management.policies(self._vhost),
                await self._management.operator_policies(self._vhost),
            )
            self._read_at = now
        return self._policies

    async def _target_arguments(self, target: str) -> dict[str, Any]:
        now = time.monotonic()
        known = self._targets.get(target)
        if known is None or now - known[0] >= POLICY_RECHECK:
            known = (now, await self._management.queue_arguments(self._vhost, target))
            self._targets[target] = known
        return known[1]

    def forget(self, target: str) -> None:
        """``target`` was deleted: its arguments are read again next time."""
        self._targets.pop(target, None)
