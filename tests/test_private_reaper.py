"""A run killed outright leaves no private server behind (``_reaper``'s watchman).

``atexit`` does not run on SIGTERM or SIGKILL: before the watchman, a stopped run's
private RabbitMQ nodes ran on and a later run's cluster node failed to start beside
them. Each case starts a real process tree (a server whose child leaves its session, as
PostgreSQL's backends do) from a separate Python process, kills that process, and waits
for the tree and its directory to go.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mqcontract_conformance.timing import TimingProfile
from mqcontract_fixtures.private._reaper import running

TIMING = TimingProfile.from_scale()

#: The starting process: a server (``sh`` with a ``sleep`` in its group and one in a
#: session of its own) by ServerProcess or by a cluster member's Child, its pids and
#: directory printed as one JSON line; then it waits to be killed, or closes the server
#: and exits when told to (``close``).
_STARTER = r"""
import asyncio, json, sys
from pathlib import Path
from mqcontract_fixtures.private._child import Child, temp_root
from mqcontract_fixtures.private._reaper import descendants, watch_dir
from mqcontract_fixtures.private._server import ServerProcess

TREE = ["sh", "-c", "sleep 600 & setsid sleep 601 & wait"]

class Sleeper(ServerProcess):
    name = "sleeper"
    @classmethod
    def binary(cls): return Path("/bin/sh")
    def command(self): return TREE
    async def ready(self): return True

async def main(kind: str, close: bool) -> None:
    if kind == "server":
        server = Sleeper()
        await server.start()
        pid, root = server.proc.pid, server.root
    else:
        root = temp_root("mqcontract-reaper-test-")
        root.mkdir()
        watch_dir(root)
        child = Child("sleeper")
        await child.spawn(TREE, {"PATH": "/usr/bin:/bin"}, root / "log")
        pid = child.pid
    while len(descendants(pid)) < 2:
        await asyncio.sleep(0.01)
    print(json.dumps({"pids": [pid, *descendants(pid)], "root": str(root)}), flush=True)
    if close:
        if kind == "server":
            await server.close()
        else:
            await child.kill()
        print("closed", flush=True)
    else:
        await asyncio.sleep(600)

asyncio.run(main(sys.argv[1], sys.argv[2] == "close"))
"""


def _start(kind: str, close: bool = False) -> tuple[subprocess.Popen[str], list[int], Path]:
    starter = subprocess.Popen(
        [sys.executable, "-c", _STARTER, kind, "close" if close else "wait"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert starter.stdout is not None
    started = json.loads(starter.stdout.readline())
    return starter, started["pids"], Path(started["root"])


def _gone_within(pids: list[int], root: Path, bound: float) -> list[str]:
    """What is still there after ``bound`` seconds (polled: it may go sooner)."""
    deadline = time.monotonic() + bound
    while True:
        left = [f"pid {pid}" for pid in pids if running(pid)]
        if root.exists():
            left.append(str(root))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(TIMING.step)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("kind", ["server", "member"])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_run_leaves_no_private_server_and_no_directory(
    kind: str, how: signal.Signals
) -> None:
    starter, pids, root = _start(kind)
    try:
        assert all(map(running, pids)), "the tree did not start"
        assert root.exists()
        os.kill(starter.pid, how)
        starter.wait(TIMING.operation)
        left = _gone_within(pids, root, TIMING.slack)
        assert not left, f"{how.name} of the run that started them left: {left}"
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        starter.kill()
        starter.wait(TIMING.operation)


def _watchman() -> subprocess.Popen[str]:
    from mqcontract_fixtures.private import _reaper

    return subprocess.Popen(
        [sys.executable, "-I", _reaper.__file__], stdin=subprocess.PIPE, text=True
    )


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_the_watchman_spares_what_it_was_told_ended_and_a_reused_pid(tmp_path: Path) -> None:
    """Only processes still listed, and still the process they were when listed, are
    killed: a server the run ended and whose number another process took since is never
    signalled, nor is a kept directory removed."""
    forgotten = subprocess.Popen(["sleep", "600"], start_new_session=True)
    reused = subprocess.Popen(["sleep", "600"], start_new_session=True)
    listed = subprocess.Popen(["sleep", "600"], start_new_session=True)
    kept, removed = tmp_path / "kept", tmp_path / "removed"
    kept.mkdir()
    removed.mkdir()
    watchman = _watchman()
    assert watchman.stdin is not None
    try:
        from mqcontract_fixtures.private._reaper import stat_fields

        start = stat_fields(str(listed.pid))[19]
        watchman.stdin.write(
            f"pid + {forgotten.pid} {stat_fields(str(forgotten.pid))[19]}\n"
            f"pid - {forgotten.pid}\n"
            f"pid + {reused.pid} {int(stat_fields(str(reused.pid))[19]) - 1}\n"
            f"pid + {listed.pid} {start}\n"
            f"dir + {kept}\ndir - {kept}\ndir + {removed}\n"
        )
        watchman.stdin.close()
        assert watchman.wait(TIMING.operation) == 0
        assert listed.wait(TIMING.operation) == -signal.SIGKILL
        assert forgotten.poll() is None, "a pid the run said had ended was killed"
        assert reused.poll() is None, "a pid that names another process now was killed"
        assert kept.exists()
        assert not removed.exists()
    finally:
        for proc in (forgotten, reused, listed):
            proc.kill()
            proc.wait()
        watchman.kill()
        watchman.wait()
