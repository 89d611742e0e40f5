"""Faults injected during a stress run, through the harness's fault hooks.

=============  =========================================================================
``none``       no faults
``listener``   the push connection is killed (PGMQ: the LISTEN backend terminated)
``pool``       the operation connections are killed (PGMQ: the pool's backends)
``connection`` every connection of the consumer's provider (RabbitMQ: the connection
               closed under its consumers; PGMQ: pool and listener)
``restart``    PostgreSQL restarted (only on a private cluster the run started itself)
=============  =========================================================================

Each tick hits the next consumer's provider in turn, so every consumer is hit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from mqcontract.service import MessagingService

__all__ = ["FAULTS", "FaultInjector"]

log = logging.getLogger(__name__)

FAULTS = ("none", "listener", "pool", "connection", "restart")

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
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; choose from {', '.join(FAULTS)}")
        self.kind = kind
        self.interval = interval
        self._targets = list(targets)
        self._kill_listener = kill_listener
        self._sever = sever_connection
        self._restart = restart
        self.injected = 0
        self.errors: list[str] = []

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
                raise ValueError("the restart fault needs a private PostgreSQL cluster")
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
            try:
                await self.inject_once(target)
            except Exception as exc:  # a hook that failed once may work next time
                self.errors.append(f"{type(exc).__name__}: {exc}")
                log.warning("fault %s failed: %s", self.kind, exc)
                continue
            self.injected += 1
