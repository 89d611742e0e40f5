"""What every side of a comparison offers: the workloads, done its own way.

A *side* is one way of doing the same work against the same queue: the mqcontract
provider, the raw driver, or another client library. The runner times the calls; a
side only does the work. Consumers call ``on_message`` once per message they hand to
their handler (before acking it) and count it done once acked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = ["Consumer", "Side", "Wakeup", "batches"]


class Consumer(Protocol):
    """A running consumer of one queue (started by :meth:`Side.consumer`)."""

    @property
    def acked(self) -> int:
        """Messages handled and acked so far."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Side(Protocol):
    """One way of doing the workloads (see the module docstring)."""

    #: Short label used in tables and JSON: ``provider``, ``raw``, ``pgmq-client``.
    label: str
    #: One sentence: what exactly this side does (driver, statements, confirms).
    description: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, queue: str, payloads: Sequence[bytes]) -> None:
        """One send call per payload, one after the other."""

    async def send_batch(self, queue: str, payloads: Sequence[bytes], batch: int) -> None:
        """Batch sends of ``batch`` payloads, one batch after the other."""

    async def receive_ack(self, queue: str, count: int, limit: int) -> int:
        """Receive up to ``limit`` at a time and settle them, until ``count`` were acked.

        A batch is settled as the side's client settles a batch best (the provider:
        ``ack_claims``; raw PGMQ: one ``pgmq.delete`` of the ids; raw AMQP: an ack
        per delivery, which is what the protocol has).
        """

    def consumer(
        self, queue: str, on_message: Callable[[], None], *, mode: str, workers: int, batch: int
    ) -> Consumer:
        """A consumer of ``queue`` (``mode`` is a deployment mode; raw sides ignore it)."""


def batches(payloads: Sequence[bytes], size: int) -> list[Sequence[bytes]]:
    """``payloads`` cut into consecutive chunks of at most ``size``."""
    return [payloads[i : i + size] for i in range(0, len(payloads), max(size, 1))]


class Wakeup:
    """Edge-triggered wake-ups for raw consumers' drain loops (fired by LISTEN callbacks).

    A worker notes :attr:`generation` before it reads; if the read came back empty it
    waits until the generation moves on (or ``timeout`` passes), so a notification that
    arrived between the read and the wait is never missed.
    """

    def __init__(self) -> None:
        self.generation = 0
        self._event = asyncio.Event()

    def fire(self) -> None:
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait_after(self, generation: int, timeout: float) -> None:
        if self.generation != generation:
            return
        event = self._event
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass
