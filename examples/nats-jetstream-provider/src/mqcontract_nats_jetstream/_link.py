"""One NATS connection and what the provider asks of it: API requests, publishes, pulls.

nats-py reconnects by itself, but a request in flight when the connection drops is not
told: it would wait for its answer until its timeout. :meth:`Link.guarded` races every
operation against the connection dropping (nats-py's ``disconnected_cb``) and raises
:class:`Severed` at once instead; the next call runs on the new connection. Nothing is
retried here: a publish that may or may not have been stored must not be sent twice.

Pulls use an inbox of the link's own (``<inbox>.<n>``, one token per pull request), so a
delivery that arrives after its caller gave up (a timeout, a cancellation) is still seen:
it is handed back at once (``-NAK``) instead of staying invisible for the consumer's ack
wait.
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

__all__ = ["Link", "status_of"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long nats-py waits between reconnect attempts (its default is 2 s).
RECONNECT_WAIT = 0.1


def status_of(msg: Msg) -> str | None:
    """The status of a status message (``404`` no messages, ``408`` expired, ...)."""
    headers = msg.headers
    return headers.get("Status") if headers else None


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
        #: pull token or stream name -> the arrivals of the pull waiting for it
        self._waiting: dict[str, asyncio.Queue[Msg]] = {}
        self._pulling: dict[str, asyncio.Lock] = {}
        self.orphans = 0

    @classmethod
    async def connect(cls, url: str, name: str, *, timeout: float) -> Link:
        """Connect (bounded by ``timeout``); reconnects forever after that."""
        link: Link | None = None

        async def disconnected() -> None:
            if link is not None:
                link._dropped()

        async def quiet(exc: Exception) -> None:  # nats-py prints these by default
            log.debug("nats %s: %s", name, exc)

        client = await nats.connect(
            url,
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
        up to ``expires`` seconds for the first, then take what else is there at once."""
        async with self._pulling.setdefault(stream, asyncio.Lock()):
            return await self._pull(stream, consumer, batch, expires)

    async def _pull(
        self, stream: str, consumer: str, batch: int, expires: float | None
    ) -> list[Msg]:
        # Deliveries arrive on their own subject, not the request's reply token, so they
        # are routed by stream (one pull per stream at a time on this link), and the status
        # that ends a pull (404 none, 408 expired) by its token.
        token = f"{self._inbox}.{next(self._tokens)}"
        arrivals: asyncio.Queue[Msg] = asyncio.Queue()
        self._waiting[token] = self._waiting[stream] = arrivals
        # A waiting request asks for one message: a 2.9 server keeps a waiting request
        # open until its whole batch is filled, and would go on delivering into it after
        # this pull returned. The rest is taken at once by a ``no_wait`` request.
        if expires is None:
            request: dict[str, Any] = {"batch": batch, "no_wait": True}
        else:
            request = {"batch": 1, "expires": int(expires * 1e9)}
        got: list[Msg] = []
        try:
            await self.client.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                json.dumps(request).encode(),
                reply=token,
            )
            while len(got) < batch:
                msg = await self.guarded(arrivals.get())
                status = status_of(msg)
                if status is None:
                    got.append(msg)
                    if expires is not None and len(got) == 1 and batch > 1:
                        # The first is here: take the rest of what is there at once.
                        got.extend(await self._pull_now(stream, consumer, batch - 1, arrivals))
                        break
                    continue
                if status in ("404", "408", "409"):  # no messages, expired, limits
                    break
                if status == "100":  # idle heartbeat
                    continue
                description = msg.headers.get("Description", "") if msg.headers else ""
                raise JsError(int(status), 0, description)
            return got
        except BaseException:
            for msg in got:  # never handed out: visible again at once
                await self.nak_quietly(msg)
            raise
        finally:
            self._waiting.pop(token, None)
            if self._waiting.get(stream) is arrivals:
                del self._waiting[stream]
            while not arrivals.empty():
                msg = arrivals.get_nowait()
                if status_of(msg) is None:
                    await self.nak_quietly(msg)

    async def _pull_now(
        self, stream: str, consumer: str, batch: int, arrivals: asyncio.Queue[Msg]
    ) -> list[Msg]:
        """After a waiting pull's first delivery: a ``no_wait`` pull on the same arrivals."""
        token = f"{self._inbox}.{next(self._tokens)}"
        self._waiting[token] = arrivals
        got: list[Msg] = []
        try:
            await self.client.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                json.dumps({"batch": batch, "no_wait": True}).encode(),
                reply=token,
            )
            while len(got) < batch:
                msg = await self.guarded(arrivals.get())
                status = status_of(msg)
                if status is None:
                    got.append(msg)
                elif msg.subject == token:  # our end; the waiting pull's own 408 may come
                    break
            return got
        except BaseException:
            for msg in got:
                await self.nak_quietly(msg)
            raise
        finally:
            self._waiting.pop(token, None)

    async def _route(self, msg: Msg) -> None:
        key = msg.subject
        if status_of(msg) is None and msg.reply.startswith("$JS.ACK."):
            tokens = msg.reply.split(".")  # with a domain and account hash: stream 5th
            key = tokens[2] if len(tokens) == 9 else tokens[4]
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.put_nowait(msg)
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

    async def close(self) -> None:
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
