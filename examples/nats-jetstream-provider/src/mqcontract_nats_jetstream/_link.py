"""One NATS connection and what the provider asks of it: API requests, publishes, pulls.

nats-py reconnects by itself, but a request in flight when the connection drops is not
told: it would wait for its answer until its timeout. :meth:`Link.guarded` races every
operation against the connection dropping (nats-py's ``disconnected_cb``) and raises
:class:`Severed` at once instead; the next call runs on the new connection. Nothing is
retried here: a publish that may or may not have been stored must not be sent twice.

Pulls use an inbox of the link's own (``<inbox>.<n>``, one token per pull request), so a
delivery that arrives after its caller gave up (a timeout, a cancellation) is still seen:
it is handed back at once (``-NAK``) instead of staying invisible for the consumer's ack
wait. The request of a caller that left is followed until the server ends it
(:mod:`._pulls`), and :meth:`Link.close` waits for that: a delivery still on its way when
the connection closed would be lost to the ack wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from mqcontract_nats_jetstream._errors import JsError, Severed
from mqcontract_nats_jetstream._pulls import ANSWER_GRACE, END_STATUSES, IDLE, Pull, status_of

__all__ = ["Link", "status_of"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long nats-py waits between reconnect attempts (its default is 2 s).
RECONNECT_WAIT = 0.1


class Link:
    """A NATS connection, with the disconnects it went through counted."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        #: Disconnects seen so far.
        self.drops = 0
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox = ""
        self._tokens = itertools.count(1)
        #: pull token or stream name -> the pull its arrivals belong to
        self._waiting: dict[str, Pull] = {}
        self._pulling: dict[str, asyncio.Lock] = {}
        #: pulls whose caller left, followed until their requests end
        self._tails: set[asyncio.Task[None]] = set()
        #: deliveries that arrived for no pull, handed back at once
        self.orphans = 0

    @classmethod
    async def connect(cls, servers: list[str], name: str, *, timeout: float) -> Link:
        """Connect to one of ``servers`` (bounded by ``timeout``); reconnects forever
        after that, to whichever of them answers."""
        link: Link | None = None

        async def disconnected() -> None:
            if link is not None:
                link._dropped()

        async def quiet(exc: Exception) -> None:  # nats-py prints these by default
            log.debug("nats %s: %s", name, exc)

        client = await nats.connect(
            servers=servers,
            name=name,
            connect_timeout=timeout,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT,
            disconnected_cb=disconnected,
            error_cb=quiet,
        )
        link = cls(client, name)
        link._inbox = client.new_inbox()
        await client.subscribe(f"{link._inbox}.*", cb=link._route)
        return link

    def _dropped(self) -> None:
        self.drops += 1
        lost, self._lost = self._lost, asyncio.get_running_loop().create_future()
        if not lost.done():
            lost.set_result(None)

    async def guarded(self, operation: Awaitable[T]) -> T:
        """``operation``, or :class:`Severed` as soon as the connection drops under it."""
        lost = self._lost
        task = asyncio.ensure_future(operation)
        try:
            watched: set[asyncio.Future[Any]] = {task, lost}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            raise Severed(f"connection {self.name} dropped")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    # -- requests ------------------------------------------------------------------------

    async def request(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> Msg:
        """A request; no responders (no stream on ``subject``, no JetStream) is a 503."""
        try:
            return await self.guarded(
                self.client.request(subject, payload, timeout=3600, headers=headers)
            )
        except nats.errors.NoRespondersError:
            raise JsError(503, 0, f"no responders on {subject}") from None

    async def api(self, what: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JetStream API request (``$JS.API.<what>``); :class:`JsError` on an error reply."""
        payload = json.dumps(body).encode() if body is not None else b""
        reply = await self.request(f"$JS.API.{what}", payload, None)
        return _answer(reply)

    async def publish_js(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Publish into a stream and wait for its acknowledgement (``seq``, ``stream``)."""
        return _answer(await self.request(subject, payload, headers))

    async def publish(self, subject: str, payload: bytes = b"") -> None:
        """Fire and forget (acks and naks); :meth:`flush` waits until the server has them."""
        await self.client.publish(subject, payload)

    async def flush(self) -> None:
        await self.guarded(self.client.flush(timeout=3600))

    # -- pulls ---------------------------------------------------------------------------

    async def pull(
        self, stream: str, consumer: str, batch: int, *, expires: float | None = None
    ) -> list[Msg]:
        """Up to ``batch`` deliveries. Without ``expires``: what is there now. With it: wait
        up to ``expires`` seconds for the first, then take what else is there at once.

        A caller that leaves early (cancelled, timed out, the connection dropped) leaves
        its requests to :meth:`_follow`: what they deliver after that is handed back."""
        lock = self._pulling.setdefault(stream, asyncio.Lock())
        await lock.acquire()
        pull = Pull(stream, connection=self.drops)
        # Deliveries arrive on their own subject, not the request's reply token, so they
        # are routed by stream (one pull per stream at a time on this link), and the status
        # that ends a request (404 none, 408 expired) by its token.
        self._waiting[stream] = pull
        try:
            await self._collect(pull, consumer, batch, expires)
        except BaseException:
            self._follow(pull, lock, pull.got)
            raise
        got, pull.got = pull.got, []
        if pull.open:  # cannot happen with a server that answers in order; stay safe
            self._follow(pull, lock, [])
        else:
            self._done(pull)
            lock.release()
        return got

    async def _collect(self, pull: Pull, consumer: str, batch: int, expires: float | None) -> None:
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{pull.stream}.{consumer}"
        # A waiting request asks for one message: a 2.9 server keeps a waiting request
        # open until its whole batch is filled, and would go on delivering into it after
        # this pull returned. The rest is taken at once by a ``no_wait`` request.
        await self._request(pull, subject, 1 if expires is not None else batch, expires)
        asked_rest = expires is None or batch == 1
        while len(pull.got) < batch:
            if not pull.open:
                if asked_rest or not pull.got:
                    return
                await self._request(pull, subject, batch - len(pull.got), None)
                asked_rest = True
            await self.guarded(pull.arrived())
            msg = pull.take()
            if msg is None:
                continue
            status = pull.account(msg)
            if status is None:
                pull.got.append(msg)
            elif status not in END_STATUSES and status != IDLE:
                description = msg.headers.get("Description", "") if msg.headers else ""
                raise JsError(int(status), 0, description)

    async def _request(self, pull: Pull, subject: str, batch: int, expires: float | None) -> None:
        token = f"{self._inbox}.{next(self._tokens)}"
        body: dict[str, Any] = {"batch": batch}
        if expires is None:
            body["no_wait"] = True
        else:
            body["expires"] = int(expires * 1e9)
        self._waiting[token] = pull
        ends_by = asyncio.get_running_loop().time() + (expires or 0.0) + ANSWER_GRACE
        pull.sent(token, batch, ends_by)
        await self.client.publish(subject, json.dumps(body).encode(), reply=token)

    async def abandon(self, pulling: asyncio.Future[list[Msg]]) -> None:
        """Give up on a running :meth:`pull`: cancel it (its requests are followed to
        their end), or, if it has just returned, hand back what it returned."""
        if not pulling.done():
            pulling.cancel()
            await asyncio.wait({pulling})
        if pulling.cancelled() or pulling.exception() is not None:
            return
        for msg in pulling.result():
            await self.nak_quietly(msg)

    def _follow(self, pull: Pull, lock: asyncio.Lock, hand_back: list[Msg]) -> None:
        """Listen for ``pull``'s open requests until they end, handing back every
        delivery; the stream's next pull waits for that (it would get their arrivals)."""
        task = asyncio.create_task(
            self._finish(pull, lock, hand_back), name=f"nats-pull-tail:{pull.stream}"
        )
        self._tails.add(task)
        task.add_done_callback(self._tails.discard)

    async def _finish(self, pull: Pull, lock: asyncio.Lock, hand_back: list[Msg]) -> None:
        loop = asyncio.get_running_loop()
        try:
            for kept in hand_back:  # never handed out: visible again at once
                await self.nak_quietly(kept)
            while pull.open and pull.connection == self.drops:
                left = pull.ends_by - loop.time()
                if left <= 0:
                    log.warning("nats %s: a pull on %s was not answered", self.name, pull.stream)
                    break
                with contextlib.suppress(TimeoutError, Severed):
                    async with asyncio.timeout(left):
                        await self.guarded(pull.arrived())
                came = pull.take()
                if came is not None and pull.account(came) is None:
                    await self.nak_quietly(came)
        finally:
            self._done(pull)
            while (left_over := pull.take()) is not None:
                if status_of(left_over) is None:
                    await self.nak_quietly(left_over)
            lock.release()

    def _done(self, pull: Pull) -> None:
        """Stop routing to ``pull``: a later delivery on its stream is an orphan."""
        for token in pull.tokens:
            self._waiting.pop(token, None)
        if self._waiting.get(pull.stream) is pull:
            del self._waiting[pull.stream]

    async def _route(self, msg: Msg) -> None:
        key = msg.subject
        if status_of(msg) is None and msg.reply.startswith("$JS.ACK."):
            tokens = msg.reply.split(".")  # with a domain and account hash: stream 5th
            key = tokens[2] if len(tokens) == 9 else tokens[4]
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.put(msg)
        elif status_of(msg) is None:  # its puller is gone: hand it back now
            self.orphans += 1
            await self.nak_quietly(msg)

    async def nak_quietly(self, msg: Msg) -> None:
        if msg.reply:
            with contextlib.suppress(Exception):
                await self.client.publish(msg.reply, b"-NAK")

    # -- lifecycle -----------------------------------------------------------------------

    def local_port(self) -> int | None:
        """The client's TCP port now (the harness's ``sever_connection`` kills it)."""
        transport: Any = getattr(self.client, "_transport", None)
        writer = getattr(transport, "_io_writer", None)
        if writer is None:
            return None
        sockname = writer.get_extra_info("sockname")
        return int(sockname[1]) if sockname else None

    def server_port(self) -> int | None:
        """The server's TCP port on the connection now (one of several in a cluster)."""
        transport: Any = getattr(self.client, "_transport", None)
        writer = getattr(transport, "_io_writer", None)
        if writer is None:
            return None
        peername = writer.get_extra_info("peername")
        return int(peername[1]) if peername else None

    async def close(self) -> None:
        """Close once every pull request sent here has ended (each bounded by its
        expiry), so no delivery reaches a connection nobody reads; nats-py writes the
        hand-backs still buffered before it closes."""
        try:
            if self._tails:
                await asyncio.wait(set(self._tails))
        finally:
            with contextlib.suppress(Exception):
                await self.client.close()


def _answer(reply: Msg) -> dict[str, Any]:
    status = status_of(reply)
    if status == "503":
        raise JsError(503, 0, "no responders: JetStream is not reachable")
    try:
        body: dict[str, Any] = json.loads(reply.data) if reply.data else {}
    except ValueError as exc:
        raise JsError(500, 0, f"unreadable JetStream reply: {exc}") from None
    error = body.get("error")
    if error:
        raise JsError(
            int(error.get("code", 0)),
            int(error.get("err_code", 0)),
            str(error.get("description", "")),
        )
    return body
