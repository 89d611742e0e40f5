"""Network-namespace labs beside each other: no shared /24, nothing left by a dead process.

Real namespaces (root, ``ip`` and ``nft``; skipped elsewhere), one node each: a second
or so per test. The labs' clusters are exercised in ``tests/test_private_clusters.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
from typing import Any

import pytest

from mqcontract_fixtures.private import netns
from mqcontract_fixtures.private.netns import NetnsLab, netns_available

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not netns_available(), reason="needs root, ip and nft"),
    pytest.mark.xdist_group("netns-labs"),  # one worker: neither sees the other's labs
]

#: A lab made by a process that is then killed before it can close it.
_ABANDON = """
import asyncio, json, os, signal, sys
from mqcontract_fixtures.private.netns import NetnsLab
lab = NetnsLab(2)
asyncio.run(lab.create())
print(json.dumps({"namespaces": [lab.switch, *lab.namespaces], "link": lab.host_link}))
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split(" ", 1)[0] for line in out.stdout.splitlines()}


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def test_labs_started_together_never_share_a_subnet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both see every octet free (neither has added its address yet) and try the same
    one first: the second must take another."""
    monkeypatch.setattr(netns, "_used_octets", set)
    monkeypatch.setattr(random, "shuffle", lambda items: items.sort())
    monkeypatch.setattr(random, "choice", lambda items: items[0])
    first, second = NetnsLab(1), NetnsLab(1)
    try:
        assert first.octet != second.octet
        assert first.address(0) != second.address(0)
    finally:
        asyncio.run(first.close())
        asyncio.run(second.close())
    for octet in (first.octet, second.octet):  # a closed lab's octet is free again
        held = netns._hold(netns._locks() / f"octet-{octet}.lock")
        assert held is not None
        held.close()


def test_a_lab_whose_process_died_is_swept_by_the_next_and_a_live_one_is_not() -> None:
    dead = subprocess.run(
        [sys.executable, "-c", _ABANDON], capture_output=True, text=True, timeout=60
    )
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    left: dict[str, Any] = json.loads(dead.stdout)
    assert set(left["namespaces"]) <= _namespaces()
    assert _link_exists(left["link"])

    async def scenario() -> None:
        async with NetnsLab(1) as live:
            assert not set(left["namespaces"]) & _namespaces(), "the dead lab was not swept"
            assert not _link_exists(left["link"])
            mine = {live.switch, *live.namespaces}
            bystander = NetnsLab(1)  # sweeps again, with ours alive
            try:
                assert mine <= _namespaces(), "a live lab was swept"
            finally:
                await bystander.close()
        assert not mine & _namespaces()
        assert not (netns._locks() / f"{live._token}.lock").exists()

    asyncio.run(scenario())
