"""Pull requests, each followed until the server has ended it.

A pull request on a JetStream consumer goes on delivering until the server ends it: its
batch is filled, or a status arrives on its reply subject (``404`` no messages, ``408``
expired, ``409`` ...). A caller that stops waiting does not end it: nats-server 2.9 has
no call that withdraws a request, and a delivery that reaches a connection nobody reads
any more stays invisible for the consumer's whole ack wait. So the link listens for a
request until it has ended (or its expiry has surely passed), and hands back (``-NAK``)
whatever it still brings once its caller has gone.

A :class:`Pull` sends one request at a time and the server answers requests in order,
so every delivery belongs to the oldest open request. A request ends with its connection
too: after a drop nothing is followed any more (what the server still delivers on the
new connection to the same inbox reaches no pull and is handed back at once).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from nats.aio.msg import Msg

__all__ = ["ANSWER_GRACE", "END_STATUSES", "IDLE", "Pull", "status_of"]

#: How long after its expiry (a ``no_wait`` request: after it was sent) the server has
#: surely answered a request's end; only a stalled server or connection takes longer.
ANSWER_GRACE = 1.0
#: Statuses that end a pull normally: no messages, expired, a limit or the consumer gone.
END_STATUSES = frozenset({"404", "408", "409"})
#: An idle heartbeat: ends nothing.
IDLE = "100"


def status_of(msg: Msg) -> str | None:
    """The status of a status message (``404`` no messages, ``408`` expired, ...)."""
    headers = msg.headers
    return headers.get("Status") if headers else None


@dataclass(slots=True)
class _Request:
    token: str
    #: Deliveries it may still bring.
    remaining: int
    #: Loop time by which the server has ended it, whatever happened.
    ends_by: float


class Pull:
    """One caller's pull on one stream: its requests, their arrivals, what came.

    Arrivals are taken without an await (:meth:`arrived`, then :meth:`take`): a
    cancelled ``asyncio.Queue.get`` can have taken a delivery already, and it would be
    lost with the cancellation."""

    def __init__(self, stream: str, *, connection: int) -> None:
        self.stream = stream
        #: Which connection of the link its requests went out on (its count of drops):
        #: a request does not outlive its connection.
        self.connection = connection
        self._arrivals: deque[Msg] = deque()
        self._arrival = asyncio.Event()
        #: Deliveries received for the caller.
        self.got: list[Msg] = []
        #: Every reply token this pull used (routed to ``arrivals`` until it is done).
        self.tokens: list[str] = []
        self._open: list[_Request] = []

    def put(self, msg: Msg) -> None:
        """An arrival for this pull (a delivery or a status)."""
        self._arrivals.append(msg)
        self._arrival.set()

    async def arrived(self) -> None:
        """Until an arrival is there to :meth:`take`; cancelling it takes nothing."""
        while not self._arrivals:
            self._arrival.clear()
            await self._arrival.wait()

    def take(self) -> Msg | None:
        """The oldest arrival not taken yet, if any."""
        return self._arrivals.popleft() if self._arrivals else None

    def sent(self, token: str, batch: int, ends_by: float) -> None:
        """A request went out on ``token`` for up to ``batch`` deliveries."""
        self.tokens.append(token)
        self._open.append(_Request(token, batch, ends_by))

    @property
    def open(self) -> bool:
        """Whether a request may still deliver."""
        return bool(self._open)

    @property
    def ends_by(self) -> float:
        """Loop time by which every open request has surely ended."""
        return max((r.ends_by for r in self._open), default=0.0)

    def account(self, msg: Msg) -> str | None:
        """Note what ``msg`` means for the open requests; its status (``None``: a delivery)."""
        status = status_of(msg)
        if status is None:
            if self._open:
                head = self._open[0]
                head.remaining -= 1
                if head.remaining <= 0:  # filled: the server sends nothing more for it
                    self._open.pop(0)
            return None
        if status != IDLE:  # any other status is the request's last word
            self._open = [r for r in self._open if r.token != msg.subject]
        return status
