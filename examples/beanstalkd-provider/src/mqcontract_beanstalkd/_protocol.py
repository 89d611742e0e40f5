"""A small asyncio client for the beanstalkd protocol: one connection, pipelined commands.

Why not a library: a reservation belongs to the connection that made it, so the provider
must know exactly which connection each command runs on and when that connection died.
greenstalk is synchronous (every call would block a thread), aiostalk wraps it, and
neither pipelines. The protocol is a line per command and a line (plus a body for
``RESERVED``, ``FOUND`` and ``OK``) per reply, so this module is short: it writes a batch
of commands at once and reads exactly one reply per command, in order.

A connection whose exchange was interrupted (cancelled, timed out, or the socket failed)
cannot be trusted to be in step with the server any more: it is marked broken and
aborted, and its owner opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ERROR_REPLIES",
    "Link",
    "LinkBroken",
    "Reply",
    "ServerError",
    "check",
    "parse_list",
    "parse_stats",
    "put_command",
]

#: Replies that mean the server refused the command itself.
ERROR_REPLIES = frozenset(
    {
        "OUT_OF_MEMORY",
        "INTERNAL_ERROR",
        "BAD_FORMAT",
        "UNKNOWN_COMMAND",
        "JOB_TOO_BIG",
        "DRAINING",
        "EXPECTED_CRLF",
    }
)
#: Replies whose last word is the length of a body that follows.
_WITH_BODY = frozenset({"RESERVED", "FOUND", "OK"})


class LinkBroken(ConnectionError):
    """The connection failed or was interrupted mid-exchange; it is closed now."""


class ServerError(Exception):
    """The server answered a command with an error (``OUT_OF_MEMORY``, ``DRAINING``, ...)."""

    def __init__(self, command: bytes, reply: str) -> None:
        self.reply = reply
        verb = command.split(b" ", 1)[0].decode(errors="replace")
        super().__init__(f"{verb}: {reply}")


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply: its status word, the other words, and the body if it has one."""

    status: str
    args: tuple[str, ...]
    body: bytes | None = None

    def id(self) -> int:
        """The job id of ``INSERTED``, ``RESERVED``, ``FOUND``, ``BURIED <id>``."""
        return int(self.args[0])


def put_command(priority: int, delay: int, ttr: int, body: bytes) -> bytes:
    """``put`` with its body, ready to send."""
    return b"put %d %d %d %d\r\n%b" % (priority, delay, ttr, len(body), body)


def parse_stats(body: bytes | None) -> dict[str, str]:
    """The YAML mapping of ``stats``, ``stats-tube``, ``stats-job`` (flat ``key: value``)."""
    result: dict[str, str] = {}
    for line in (body or b"").decode(errors="replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            result[key.strip()] = value.strip()
    return result


def parse_list(body: bytes | None) -> list[str]:
    """The YAML list of ``list-tubes`` (``- name`` lines)."""
    return [
        line[2:].strip()
        for line in (body or b"").decode(errors="replace").splitlines()
        if line.startswith("- ")
    ]


class Link:
    """One beanstalkd connection; ``serial`` names it for claims and for the server.

    The owner serializes use (one exchange at a time) and remembers what the connection
    uses and watches (:attr:`using`, :attr:`watching`), which only it changes.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, serial: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.serial = serial
        self.broken = False
        #: The tube ``put`` goes to (``use``); the server's default is ``default``.
        self.using = "default"
        #: The message tube watched besides the link's own tube, if any.
        self.watching: str | None = None

    @classmethod
    async def connect(cls, host: str, port: int, serial: str) -> Link:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, serial)

    async def pipeline(self, commands: Sequence[bytes]) -> list[Reply]:
        """Send ``commands`` at once and read one reply for each, in order."""
        if self.broken:
            raise LinkBroken("connection already broken")
        try:
            self._writer.write(b"".join(c + b"\r\n" for c in commands))
            await self._writer.drain()
            return [await self._read() for _ in commands]
        except BaseException as exc:  # a half-read exchange leaves the stream out of step
            self.abort()
            if isinstance(exc, OSError | asyncio.IncompleteReadError | EOFError):
                raise LinkBroken(f"{type(exc).__name__}: {exc}") from exc
            raise

    async def one(self, command: bytes, *expected: str) -> Reply:
        """Run one command; :class:`ServerError` unless its status is one of ``expected``."""
        (reply,) = await self.pipeline([command])
        return check(command, reply, *expected)

    async def _read(self) -> Reply:
        line = await self._reader.readuntil(b"\r\n")
        words = line[:-2].decode(errors="replace").split()
        if not words:
            raise LinkBroken("empty reply line")
        status, args = words[0], tuple(words[1:])
        body = None
        if status in _WITH_BODY and args:
            data = await self._reader.readexactly(int(args[-1]) + 2)
            body = data[:-2]
        return Reply(status, args, body)

    def abort(self) -> None:
        """Drop the connection now (no goodbye); the server releases its reservations."""
        self.broken = True
        self._writer.transport.abort()

    def sever(self) -> None:
        """Shut the socket down both ways, as a network failure would: the server sees the
        connection end, and this side's next read meets end of file."""
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def close(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):
            self._writer.write(b"quit\r\n")
            self._writer.close()
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()
        self._writer.transport.abort()


def check(command: bytes, reply: Reply, *expected: str) -> Reply:
    """``reply`` if its status is expected; else :class:`ServerError`."""
    if reply.status not in expected:
        raise ServerError(command, " ".join((reply.status, *reply.args)))
    return reply
