"""Faults injected during a stress run, through the harness's fault hooks.

=============  =========================================================================
``none``       no faults
``listener``   the push connection is killed (PGMQ: the LISTEN backend terminated)
``pool``       the operation connections are killed (PGMQ: the pool's backends)
``connection`` every connection of the consumer's provider (RabbitMQ: the connection
               closed under its consumers; PGMQ: pool and listener)
``restart``    the provider's private server (``Harness.private_backend``: one the run
               started, never a shared one) is SIGKILLed and started again on the same
               storage and port; the whole load runs on it, every consumer is hit at once
=============  =========================================================================

Each tick hits the next consumer's provider in turn, so every consumer is hit. A fault
counts as in progress while its hook runs (a restart takes seconds), so the run never
stops its consumers, nor drains, while the server is down. The
cluster faults (``leader-kill``, ``partition``) need ``--cluster`` and are run by
:class:`~mqcontract_conformance.stress._cluster_faults.ClusterFaultInjector`; both kinds
of injector look alike to the run (:class:`Injector`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from mqcontract.service import MessagingService
from mqcontract_conformance.stress._cluster_faults import CLUSTER_FAULTS

__all__ = ["FAULTS", "SERVICE_FAULTS", "FaultInjector", "Injector"]

log = logging.getLogger(__name__)

#: Faults against one provider's connections or its single server.
SERVICE_FAULTS = ("none", "listener", "pool", "connection", "restart")
#: What the ``restart`` fault does, for the account.
RESTART_HOW = "SIGKILL of the provider's private server, started again on the same storage and port"
FAULTS = SERVICE_FAULTS + CLUSTER_FAULTS


class Injector(Protocol):
    """What the run needs of an injector."""

    kind: str
    injected: int
    errors: list[str]

    @property
    def active(self) -> bool:
        """A fault is in progress (the run waits for it to end)."""
        ...

    async def run(self) -> None:
        """Inject until cancelled."""
        ...

    def summary(self) -> dict[str, Any]:
        """The ``faults`` section of the account."""
        ...


Hook = Callable[[MessagingService], Awaitable[None]]


class FaultInjector:
    """Runs ``kind`` every ``interval`` seconds until cancelled; counts what it did."""

    def __init__(
        self,
        kind: str,
        *,
        interval: float,
        targets: Sequence[MessagingService],
        kill_listener: Hook,
        sever_connection: Hook,
        restart: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if kind not in SERVICE_FAULTS:
            raise ValueError(f"unknown fault {kind!r}; choose from {', '.join(SERVICE_FAULTS)}")
        self.kind = kind
        self.interval = interval
        self._targets = list(targets)
        self._kill_listener = kill_listener
        self._sever = sever_connection
        self._restart = restart
        self.injected = 0
        self.errors: list[str] = []
        #: Seconds each injection took (a restart: until the server answered again).
        self.seconds: list[float] = []
        self._injecting = False

    @property
    def active(self) -> bool:
        """A hook is running (a restart until the server answers again)."""
        return self._injecting

    def summary(self) -> dict[str, Any]:
        """The ``faults`` section of the account."""
        summary: dict[str, Any] = {
            "kind": self.kind,
            "injected": self.injected,
            "errors": self.errors[:5],
        }
        if self.kind == "restart":
            summary["how"] = RESTART_HOW
            summary["restart_seconds"] = self.seconds[:20]
        return summary

    async def inject_once(self, target: MessagingService) -> None:
        """One fault of this kind against ``target``."""
        if self.kind == "listener":
            await self._kill_listener(target)
        elif self.kind == "pool":
            await self._sever(target)
        elif self.kind == "connection":
            await self._sever(target)
            if target.provider_name == "pgmq":
                await self._kill_listener(target)
        elif self.kind == "restart":
            if self._restart is None:
                raise ValueError("the restart fault needs the harness's private server")
            await self._restart()

    async def run(self) -> None:
        """Inject until cancelled; a failed injection is counted, not fatal."""
        if self.kind == "none":
            return
        turn = 0
        while True:
            await asyncio.sleep(self.interval)
            target = self._targets[turn % len(self._targets)]
            turn += 1
            started = time.monotonic()
            self._injecting = True
            try:
                await self.inject_once(target)
            except Exception as exc:  # a hook that failed once may work next time
                self.errors.append(f"{type(exc).__name__}: {exc}")
                log.warning("fault %s failed: %s", self.kind, exc)
                continue
            finally:
                self._injecting = False
            self.injected += 1
            self.seconds.append(round(time.monotonic() - started, 3))
