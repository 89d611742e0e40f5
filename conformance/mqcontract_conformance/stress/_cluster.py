"""A private PostgreSQL cluster for the restart fault: its own data directory and port.

The stress run never restarts a server it did not start. ``PrivateCluster`` runs
``initdb`` into a fresh directory under the temp dir, starts ``postgres`` on a free
port (loopback only, trust authentication, socket in the data directory), restarts it
on request and removes everything afterwards. ``initdb`` refuses to run as root, so
under root the binaries run as the ``postgres`` system user.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import socket
import tempfile
from pathlib import Path

from mqcontract.errors import BackendUnavailable

__all__ = ["PrivateCluster", "find_pg_bin"]


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (PATH, then Debian's layout)."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """One throwaway PostgreSQL server (see the module docstring)."""

    def __init__(self) -> None:
        bindir = find_pg_bin()
        if bindir is None:
            raise BackendUnavailable("pgmq", "initdb/pg_ctl", "PostgreSQL binaries not found")
        self.bindir = bindir
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mqcontract-stress-pg-"))
        self.datadir = self.root / "data"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        """The admin URL (no password: trust authentication on loopback)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            detail = out.decode(errors="replace").strip().splitlines()[-3:]
            raise BackendUnavailable("pgmq", f"{args[0]} {self.datadir}", " | ".join(detail))

    def _options(self) -> str:
        return (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} "
            "-c max_connections=200 -c fsync=off"
        )

    async def start(self) -> None:
        """initdb and start."""
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        await self._run("initdb", "-D", str(self.datadir), "-A", "trust", "-U", "postgres")
        await self._run(
            "pg_ctl", "-D", str(self.datadir), "-o", self._options(), "-l",
            str(self.datadir / "server.log"), "-w", "start",
        )  # fmt: skip

    async def restart(self) -> None:
        """Fast shutdown (every session is cut) and start again; waits until it accepts."""
        # -l again: without it the server would inherit (and hold open) our stdout pipe.
        await self._run(
            "pg_ctl", "-D", str(self.datadir), "-o", self._options(), "-l",
            str(self.datadir / "server.log"), "-m", "fast", "-w", "restart",
        )  # fmt: skip

    async def remove(self) -> None:
        """Stop immediately and delete the directory."""
        with contextlib.suppress(BackendUnavailable):
            await self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
