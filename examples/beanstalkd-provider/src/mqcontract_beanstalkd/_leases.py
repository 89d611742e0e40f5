"""When to renew each held job: a job's time-to-run is fixed when it is put, so a claim
longer than it is kept alive with ``touch``.

Every job is put with the lease (``lease_seconds``, default 1 s) as its time-to-run. A
claim for ``vt`` seconds is then held like this: the server would expire the job one
lease after it was reserved (or last touched); while that would be before the claim's
deadline, the job is touched again, half a lease before it would expire, and for the last
time exactly one lease before the deadline, so the server expires it at the deadline.
A timeout shorter than the lease lasts the lease (the declared precision).

Only the server ever expires a claim: the holder can keep one alive, never hold it past
its deadline. A holder that dies, freezes or stalls for half a lease stops renewing, and
the server returns its messages within a lease of the last renewal.

One more duty: beanstalkd 1.12 does not always expire the jobs of a connection that sends
nothing (with jobs reserved at different times, their time-left goes negative and they
stay reserved until the connection next speaks; beanstalkd issues #262, #380). So once a
claim's deadline has passed, the holder *pokes*: it asks ``stats-job`` on its connection,
which makes the server look at that connection's deadlines, until the job is no longer
reserved by this claim.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

__all__ = ["POKE_AFTER", "POKE_EVERY", "Lease", "Leases"]

#: How long after a claim's expiry the holder first pokes, and then how often.
POKE_AFTER = 0.01
POKE_EVERY = 0.05


@dataclass(slots=True)
class Lease:
    """One job held by this connection: the claim's deadline and the server's expiry."""

    queue: str
    job_id: int
    #: The job's ``reserves`` when this claim was made.
    count: int
    #: Event-loop time at which the claim's visibility timeout ends.
    due: float
    #: Event-loop time by which the server expires the job unless it is touched (an
    #: estimate taken before the command was sent, so never later than the server's).
    expires: float
    #: When to poke next, once the claim's deadline has passed.
    poke_at: float | None = None


class Leases:
    """The jobs held by the current connection, and the renewal schedule."""

    def __init__(self, lease_seconds: float) -> None:
        self.lease = lease_seconds
        self._held: dict[int, Lease] = {}
        #: Set whenever the schedule may have moved earlier.
        self.changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._held)

    def add(
        self, queue: str, job_id: int, count: int, reserved_at: float, visibility_timeout: float
    ) -> None:
        self._held[job_id] = Lease(
            queue, job_id, count, reserved_at + visibility_timeout, reserved_at + self.lease
        )
        self.changed.set()

    def drop(self, job_id: int) -> None:
        self._held.pop(job_id, None)

    def take(self, queue: str) -> list[int]:
        """Forget and return every job held on ``queue`` (the queue is being deleted)."""
        ids = [i for i, lease in self._held.items() if lease.queue == queue]
        for job_id in ids:
            del self._held[job_id]
        return ids

    def clear(self) -> None:
        """The connection is gone, and with it every reservation."""
        self._held.clear()

    def _next_touch(self, lease: Lease) -> float | None:
        if lease.expires >= lease.due:
            return None  # the server expires it at (or just past) its deadline
        return min(lease.expires - self.lease / 2, lease.due - self.lease)

    def _next_event(self, lease: Lease) -> float:
        touch = self._next_touch(lease)
        if touch is not None:
            return touch
        return lease.poke_at if lease.poke_at is not None else lease.expires + POKE_AFTER

    def next_wake(self) -> float | None:
        """When the next renewal or poke is due (event-loop time), if any is."""
        return min((self._next_event(lease) for lease in self._held.values()), default=None)

    def due_now(self, now: float) -> tuple[list[int], list[Lease]]:
        """Jobs to touch now, and claims past their deadline to poke now."""
        touch: list[int] = []
        poke: list[Lease] = []
        for job_id, lease in self._held.items():
            if self._next_event(lease) > now:
                continue
            if self._next_touch(lease) is not None:
                touch.append(job_id)
            else:
                poke.append(lease)
        return touch, poke

    def touched(self, job_id: int, at: float) -> None:
        lease = self._held.get(job_id)
        if lease is not None:
            lease.expires = at + self.lease

    def still_held(self, lease: Lease, now: float) -> None:
        """A poke found the job still reserved by this claim: poke again soon."""
        if self._held.get(lease.job_id) is lease:
            lease.poke_at = now + POKE_EVERY

    def drop_lease(self, lease: Lease) -> None:
        """Forget ``lease`` (not a newer claim on the same job)."""
        if self._held.get(lease.job_id) is lease:
            del self._held[lease.job_id]

    def due(self, job_id: int) -> float | None:
        lease = self._held.get(job_id)
        return None if lease is None else lease.due
