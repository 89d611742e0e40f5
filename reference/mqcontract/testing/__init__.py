"""The harness: how the conformance kit drives one provider (``mqcontract.testing``).

It lives beside the abstraction, not in the kit, so that provider packages, the
reference fixtures and the kit's tools (verify, bench, stress) all speak to it without
depending on one another, as ``trio.testing`` sits beside ``trio``.

A provider author supplies a :class:`Harness` (or just a provider factory, which the suite
wraps in a plain one). The harness opens a fresh service for each case, cleans up after
it, and optionally offers fault hooks, a backdoor oracle and virtual time. A hook it does
not offer raises :class:`HookUnavailable`, and the rules needing it are skipped with that
reason. Every case runs in its own event loop, so a harness keeps no loop-bound objects
between :meth:`Harness.open` calls.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from mqcontract.clock import VirtualClock
from mqcontract.config import MessagingConfig
from mqcontract.errors import MessagingError, ProviderClosed
from mqcontract.service import MessagingService
from mqcontract.testing.sides import Side

__all__ = ["Harness", "HarnessFactory", "HarnessSettings", "HookUnavailable", "PrivateBackend"]


class HookUnavailable(Exception):
    """The harness cannot perform this fault or inspection for its provider."""


class PrivateBackend(abc.ABC):
    """A server of the harness's backend that only this run uses, so a rule may crash it.

    Rules run on the shared services, which nobody may restart; the durability rules need
    one that can be killed and started again on the same storage and port. It is
    configured as a production queue would be (what makes a returned send durable on,
    e.g. fsync), and it holds no event-loop-bound object between calls: every case runs
    in its own loop, and one server serves every case of the run.
    """

    @abc.abstractmethod
    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        """A fresh, connected service on this server (closed by the caller)."""

    @abc.abstractmethod
    async def restart(self, *, crash: bool = True) -> None:
        """Stop the server (``crash``: SIGKILL, no shutdown of any kind; else a clean
        stop) and start it again on the same storage and port; return once it accepts
        connections. Services opened before stay open: they must recover on their own."""

    def describe(self) -> dict[str, str]:
        """How the server is configured, for reports (never credentials)."""
        return {}


@dataclass(frozen=True, kw_only=True)
class HarnessSettings:
    """What the suite tells a harness factory about this run."""

    config: MessagingConfig
    #: Short unique id of this run and xdist worker; embed it in every name you create.
    run_id: str
    #: Fail instead of skip when the backend is missing (CI).
    require_backend: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)


class Harness:
    """Base harness: override :meth:`open`; everything else has a sensible default."""

    #: Rule ids known to fail for this provider, with the reason: run as strict xfail.
    known_broken: Mapping[str, str] = {}

    def __init__(
        self,
        name: str,
        settings: HarnessSettings,
        factory: Callable[[MessagingConfig], Awaitable[MessagingService]] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._factory = factory

    # -- lifecycle -----------------------------------------------------------------------

    async def setup(self) -> None:
        """Once per run and worker, before any case: provision (databases, plugins)."""

    async def teardown(self) -> None:
        """Once per run and worker, after every case: drop what setup made."""

    def new_clock(self) -> VirtualClock | None:
        """A fresh virtual clock for one case, or None when the provider runs in real time."""
        return None

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        """A fresh, connected service for one case (``clock`` from :meth:`new_clock`).

        Services opened by one harness share its backend: a case may open a second one
        to play another process (ERR-6), and cleanup may use a fresh one. A harness
        whose instances are isolated (in-process storage) offers no fault hooks, so the
        rules that need a second instance skip.
        """
        if self._factory is None:
            raise NotImplementedError("a harness without a factory must override open()")
        return await self._factory(self.settings.config)

    async def cleanup(self, service: MessagingService, queues: Sequence[str]) -> None:
        """Delete the case's queues; errors are ignored so one failure cannot mask another."""
        for queue in queues:
            try:
                await service.delete_queue(queue)
            except ProviderClosed:
                raise
            except MessagingError:
                pass

    def describe(self) -> dict[str, str]:
        """Backend facts for reports (never credentials).

        The report reads ``version`` (shown beside the provider's name); every other key
        is listed as a fact (server version, driver version, ...).
        """
        return {}

    # -- fault hooks (optional) ----------------------------------------------------------

    async def kill_listener(self, service: MessagingService) -> None:
        """Break the push connection abruptly; the provider must notice and reconnect."""
        raise HookUnavailable(f"{self.name}: no kill_listener hook")

    async def suppress_notifications(
        self, service: MessagingService, queue: str
    ) -> Callable[[], Awaitable[None]]:
        """Stop announcing new messages on ``queue``; return a coroutine fn that restores it."""
        raise HookUnavailable(f"{self.name}: no suppress_notifications hook")

    async def sever_connection(self, service: MessagingService) -> None:
        """Kill the operation connections; the provider must recover on its own."""
        raise HookUnavailable(f"{self.name}: no sever_connection hook")

    async def crash_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> list[int]:
        """Kill a consumer process on the backend of ``service`` while it holds messages.

        Start a separate OS process that opens the provider on the same backend, receives
        ``count`` messages from ``queue`` with ``visibility_timeout`` and reports that it
        holds them; then kill it without warning (SIGKILL) and return, once it is reaped,
        the ids it held. Every step is bounded; the process is reaped whatever happens.
        """
        raise HookUnavailable(f"{self.name}: no crash_holder hook")

    def freeze_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> AbstractAsyncContextManager[list[int]]:
        """Freeze a consumer process on the backend of ``service`` while it holds messages.

        As :meth:`crash_holder`, but the process is stopped (SIGSTOP), not killed: its
        connections stay open and nothing in it runs. Entering yields the ids it holds;
        leaving kills and reaps it, whatever happened in between.
        """
        raise HookUnavailable(f"{self.name}: no freeze_holder hook")

    async def publish_foreign(
        self, service: MessagingService, queue: str, msg_id: int, payload: bytes
    ) -> None:
        """Publish ``payload`` on ``queue`` as a foreign producer would (not through the
        provider), carrying ``msg_id`` as its id, even if a message already has that id.

        Only for providers whose producers choose ids (``producer_assigned_ids``): the
        claim rules use it to put two messages with one id on a queue.
        """
        raise HookUnavailable(f"{self.name}: no publish_foreign hook")

    async def stored_ids(self, service: MessagingService, queue: str) -> list[int]:
        """Backdoor oracle: ids of every message stored on ``queue`` (any visibility)."""
        raise HookUnavailable(f"{self.name}: no stored_ids backdoor")

    async def private_backend(self) -> PrivateBackend:
        """A private server of this backend that may be restarted (the DUR rules).

        Started on first use and kept for the run's other cases (starting a server costs
        seconds); :meth:`teardown` stops it and removes its storage. A harness whose
        backend has no server to restart (in-process storage) does not offer it.
        """
        raise HookUnavailable(f"{self.name}: no private_backend hook")

    # -- benchmarks (optional) -----------------------------------------------------------

    def raw_sides(self, workers: int) -> Sequence[Side]:
        """Ways of doing ``mqcontract bench``'s workloads on this backend without mqcontract.

        Each is timed against the provider in the same run (the raw driver, another
        client library); none by default, and then bench times the provider alone.
        """
        return []


HarnessFactory = Callable[[HarnessSettings], Harness]
