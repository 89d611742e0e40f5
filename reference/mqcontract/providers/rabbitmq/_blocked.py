"""Whether the broker blocked a connection (``connection.blocked``: a resource alarm).

A memory or disk alarm makes the broker block every connection that publishes: it reads
nothing more from it until the alarm clears, and every node of a cluster shares the
alarm. aiormq tracks that state in a private event only; a connection without one counts
as not blocked.
"""

from __future__ import annotations

import asyncio

import aiormq.abc

__all__ = ["is_blocked"]


def is_blocked(connection: aiormq.abc.AbstractConnection) -> bool:
    """Whether the broker announced ``connection.blocked`` on ``connection`` and has not
    announced ``connection.unblocked`` since."""
    unblocked = getattr(connection, "_Connection__connection_unblocked", None)
    return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()
