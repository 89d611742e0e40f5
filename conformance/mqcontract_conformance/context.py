"""What a rule's check gets: the service, its capabilities, and waiting helpers.

Waiting is polling with early exit against deadlines from the timing profile; under a
virtual clock each polling step advances virtual time instead of sleeping, so timing
rules run instantly and exactly the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

from mqcontract.capabilities import Capabilities
from mqcontract.clock import VirtualClock
from mqcontract.errors import MessagingError
from mqcontract.messages import Message, MessageNotification, QueuedMessage
from mqcontract.service import MessagingService, Subscription
from mqcontract.testing import Harness, HookUnavailable
from mqcontract_conformance._where import in_rule_stack
from mqcontract_conformance.measurement import Measurement
from mqcontract_conformance.timing import TimingProfile

__all__ = ["CaseContext", "ContractViolation"]

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

#: Real seconds allowed per polling step when the clock is virtual (a loop-turn budget).
_VIRTUAL_REAL_STEP = 0.002
#: Real seconds a virtual-time case may take before it is declared stuck.
_VIRTUAL_REAL_BOUND = 20.0


class ContractViolation(AssertionError):
    """A rule does not hold; the message says what was expected and what was observed."""


class CaseContext:
    """One rule run against one freshly opened provider."""

    def __init__(
        self,
        *,
        rule_id: str,
        service: MessagingService,
        harness: Harness,
        timing: TimingProfile,
        clock: VirtualClock | None,
        run_id: str,
    ) -> None:
        self.rule_id = rule_id
        self.service = service
        self.caps: Capabilities = service.capabilities
        self.harness = harness
        self.timing = timing
        self.clock = clock
        self.run_id = run_id
        self.queues: list[str] = []
        self.subscriptions: list[Subscription] = []
        #: Further services a case opened (another consumer); closed after the case.
        self.others: list[MessagingService] = []
        #: Figures a rule measured (recovery times, counts): reported in the JSON results.
        self.metrics: dict[str, float] = {}
        #: Capabilities a rule measured, beside what the provider declares (CAP rules).
        self.measured: list[Measurement] = []
        self._names = itertools.count(1)

    # -- naming and setup --------------------------------------------------------------

    def queue_name(self) -> str:
        """A unique valid name embedding the run id and rule (not created)."""
        rule = self.rule_id.lower().replace("-", "")
        name = f"mq_{self.run_id}_{rule}_{next(self._names)}"
        self.queues.append(name)
        return name

    async def queue(self) -> str:
        """Create and return a fresh queue; it is deleted after the case."""
        name = self.queue_name()
        await self.service.create_queue(name)
        return name

    async def subscribe(self, *queues: str) -> Subscription:
        """Subscribe to ``queues``; the subscription is closed after the case."""
        sub = await self.service.subscribe_many(list(queues))
        self.subscriptions.append(sub)
        return sub

    async def other_consumer(self, queue: str) -> MessagingService:
        """A second service on the same backend, as another process would open it.

        Closed after the case. A harness whose services do not share a backend (it cannot
        see ``queue``) cannot play a competing consumer: the rule is skipped with that
        reason (``HookUnavailable``), never passed.
        """
        other = await self.harness.open(self.clock)
        self.others.append(other)
        if not await other.queue_exists(queue):
            raise HookUnavailable(
                f"{self.harness.name}: services opened by the harness do not share a backend"
            )
        return other

    # -- time --------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds on the case's clock (virtual or monotonic)."""
        return self.clock.now() if self.clock is not None else time.monotonic()

    async def pause(self, seconds: float) -> None:
        """One polling step: advance virtual time, or yield real time."""
        if self.clock is not None:
            await asyncio.sleep(0)
            await self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    async def wait_past(self, instant: float) -> None:
        """Poll the clock until ``instant`` (a ``now()`` value) has passed.

        Only for rules about time itself (a timeout or delay must have elapsed before the
        next observation); everything else waits on an observable condition.
        """
        while self.now() < instant:
            await self.pause(min(self.timing.step, max(instant - self.now(), 0.001)))

    async def eventually(
        self, probe: Callable[[], Awaitable[T | None]], within: float, what: str
    ) -> T:
        """Poll ``probe`` until it returns a truthy value; fail after ``within`` seconds."""
        __tracebackhide__ = True  # the rule's line, not the helper's
        deadline = self.now() + within
        real_deadline = time.monotonic() + (
            _VIRTUAL_REAL_BOUND if self.clock is not None else within + self.timing.operation
        )
        while True:
            result = await probe()
            if result:
                return result
            if self.now() >= deadline or time.monotonic() >= real_deadline:
                self.fail(f"{what}: not observed within {within:g} s")
            await self.pause(self.timing.step)

    async def never(
        self,
        probe: Callable[[], Awaitable[T | None]],
        during: float,
        what: str,
        *,
        due: float | None = None,
    ) -> T | None:
        """Poll ``probe`` for ``during`` seconds; fail as soon as it returns a truthy value.

        ``due``: the instant (a ``now()`` value, at or after the window's end) from which
        what is probed may rightly be seen (a claim's timeout has run out), so that a
        look begun before it may see it rightly too: a truthy result returned before
        ``due`` fails (the backend answered before it: surely too early); one returned
        at or after it is returned to the caller, who may need what the probe took (a
        claim). The price: an early answer whose look returned after ``due`` passes, so
        a probe must return as soon as it sees something. Returns None when no probe saw
        anything.
        """
        __tracebackhide__ = True  # the rule's line, not the helper's
        deadline = self.now() + during
        while self.now() < deadline:
            result = await probe()
            if result:
                if due is not None and self.now() >= due:
                    return result
                self.fail(f"{what}: observed {result!r} before {during:g} s passed")
            await self.pause(self.timing.step)
        return None

    # -- receiving ---------------------------------------------------------------------

    async def receive(
        self, queue: str, limit: int = 10, vt: float | None = None
    ) -> list[QueuedMessage]:
        """One receive with a long visibility timeout unless ``vt`` is given."""
        return await self.service.receive_messages(queue, limit, vt or self.timing.long)

    async def receive_exactly(
        self, queue: str, count: int, vt: float | None = None, within: float | None = None
    ) -> list[QueuedMessage]:
        """Receive until ``count`` messages arrived; fail on more or on a timeout.

        A full receive is followed by the next at once (a pause only after one that came
        back short), so hundreds of messages at a small ``max_receive_limit`` still fit
        the bound."""
        __tracebackhide__ = True  # the rule's line, not the helper's
        got: list[QueuedMessage] = []
        size = min(100, self.caps.max_receive_limit)

        async def probe() -> bool:
            while True:
                batch = await self.receive(queue, size, vt)
                got.extend(batch)
                if len(got) >= count or len(batch) < size:
                    return len(got) >= count

        bound = within or self.timing.delivery
        try:
            await self.eventually(probe, bound, f"{count} messages")
            arrived = True
        except ContractViolation:
            arrived = False  # failed below, without the bare timeout chained to it
        if not arrived:
            self.fail(_short(count, queue, got, f"within {bound:g} s"))
        if len(got) > count:
            self.fail(_short(count, queue, got, "(more than expected)"))
        return got

    async def sever_until_usable(self, queue: str) -> None:
        """Sever the provider's connections (the harness hook) and wait, bounded, until an
        operation on ``queue`` works again."""
        await self.harness.sever_connection(self.service)

        async def works() -> bool:
            try:
                await self.service.queue_exists(queue)
            except MessagingError:
                return False
            return True

        await self.eventually(works, self.timing.slack * 3, "provider usable after the sever")

    async def check_still_held(self, queue: str, message: QueuedMessage, what: str) -> None:
        """``message`` stays invisible (someone still holds it) for half the margin: a
        settlement that released it makes it receivable, and that fails the rule."""
        __tracebackhide__ = True  # the rule's line, not the helper's

        async def visible() -> list[int]:
            return [m.msg_id for m in await self.receive(queue) if m.msg_id == message.msg_id]

        what = f"message {message.msg_id} released {what}"
        await self.never(visible, self.timing.margin / 2, what)

    async def next_notification(
        self, sub: Subscription, within: float | None = None
    ) -> MessageNotification:
        """The next notification, within the delivery bound."""
        bound = self.timing.delivery if within is None else within
        task = asyncio.ensure_future(sub.__anext__())
        deadline = self.now() + bound
        real_deadline = time.monotonic() + (
            _VIRTUAL_REAL_BOUND if self.clock is not None else bound + self.timing.operation
        )
        try:
            while True:
                step = _VIRTUAL_REAL_STEP if self.clock is not None else self.timing.step
                done, _ = await asyncio.wait({task}, timeout=step)
                if done:
                    return task.result()
                if self.now() >= deadline or time.monotonic() >= real_deadline:
                    self.fail(f"no notification on {sub.queues} within {bound:g} s")
                if self.clock is not None:
                    await self.clock.advance(self.timing.step)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await task

    async def next_claimed(self, sub: Subscription) -> Message:
        """The next notification, which must be a claimed ``Message`` (claimed push)."""
        note = await self.next_notification(sub)
        if not (isinstance(note, Message) and note.claimed):
            self.fail(f"expected a claimed Message: {note!r}")
        return note

    async def collect_notifications(
        self,
        sub: Subscription,
        expected: Iterable[tuple[str, int]],
        within: float | None = None,
        *,
        each: Callable[[MessageNotification], Awaitable[None]] | None = None,
    ) -> dict[tuple[str, int], MessageNotification]:
        """Notifications until every expected (queue, id) was announced; diagnostic on
        failure. ``each`` sees every notification as it comes (to settle it: a claimed
        push may stop at the configured prefetch while its claims are held)."""
        missing = set(expected)
        seen: dict[tuple[str, int], MessageNotification] = {}
        bound = self.timing.delivery if within is None else within
        deadline = self.now() + bound
        while missing:
            remaining = max(deadline - self.now(), self.timing.step)
            try:
                note = await self.next_notification(sub, remaining)
            except ContractViolation:
                self.fail(
                    f"not notified within {bound:g} s: {sorted(missing)}; notified: {sorted(seen)}"
                )
            if each is not None:
                await each(note)
            msg_id = notification_id(note)
            if msg_id is not None:
                seen[(note.queue_name, msg_id)] = note
                missing.discard((note.queue_name, msg_id))
        return seen

    # -- assertions --------------------------------------------------------------------

    def fail(self, message: str) -> NoReturn:
        """Fail the rule, naming it and the run id (which every queue name embeds)."""
        __tracebackhide__ = True  # the rule's line, not the helper's
        raise ContractViolation(f"[{self.rule_id}] {message} (run id {self.run_id})")

    def check(self, condition: object, message: str) -> None:
        """Fail with ``message`` unless ``condition`` holds."""
        __tracebackhide__ = True  # the rule's line, not the helper's
        if not condition:
            self.fail(message)

    async def raises(
        self, expected: type[E] | tuple[type[E], ...], call: Awaitable[Any], what: str
    ) -> E:
        """Await ``call``; it must raise ``expected`` (a MessagingError subclass)."""
        __tracebackhide__ = True  # the rule's line, not the helper's
        try:
            result = await call
        except expected as exc:
            return exc
        except MessagingError as exc:
            self.fail(f"{what}: expected {_names(expected)}, got {type(exc).__name__}: {exc}")
        except Exception as exc:
            self.fail(
                f"{what}: expected {_names(expected)}, got non-MessagingError "
                f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
            )
        return self.fail(f"{what}: expected {_names(expected)}, but it returned {result!r}")

    async def accepts(self, call: Awaitable[T], what: str) -> T:
        """Await ``call``, which the rule is about accepting: a MessagingError it raises
        fails the rule (a refusal of something legal), not the run."""
        __tracebackhide__ = True  # the rule's line, not the helper's
        try:
            return await call
        except MessagingError as exc:
            self.fail(f"{what} was refused: {type(exc).__name__}: {exc}")

    def check_order(self, expected: Sequence[int], observed: Sequence[int], what: str) -> None:
        """Fail with the out-of-order positions if the sequences differ."""
        __tracebackhide__ = True  # the rule's line, not the helper's
        if list(expected) == list(observed):
            return
        wrong = [
            f"#{i}: expected {e}, got {o}"
            for i, (e, o) in enumerate(itertools.zip_longest(expected, observed))
            if e != o
        ]
        self.fail(
            f"{what}: {len(wrong)} positions differ: {'; '.join(wrong[:8])}; "
            f"expected {list(expected)}, observed {list(observed)}"
        )


def notification_id(note: MessageNotification) -> int | None:
    """The message id a notification announces (None for a catch-up signal)."""
    if isinstance(note, Message):
        return note.message.msg_id
    return note.msg_id


def _names(expected: type[BaseException] | tuple[type[BaseException], ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(e.__name__ for e in expected)
    return expected.__name__


def _short(count: int, queue: str, got: Sequence[QueuedMessage], when: str) -> str:
    """What ``receive_exactly`` expected and got, and the line of the rule that asked."""
    plural = "message" if count == 1 else "messages"
    line = in_rule_stack()
    asked = f", at {line}" if line else ""
    return (
        f"expected {count} {plural} on {queue}, received {len(got)} {when}: "
        f"{[m.msg_id for m in got]}{asked}"
    )
