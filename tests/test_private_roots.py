"""A private server's directory is made when it first starts, not when it is built.

Objects are built to read their addresses or their configuration (the cluster unit tests,
a stress run that fails before starting) and may never be closed: built that way they
must leave nothing in the temp directory. Starting and removing for real is covered by
``tests/test_private_clusters.py`` and the durability tests.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from mqcontract_fixtures.private._child import temp_root
from mqcontract_fixtures.private.beanstalkd import PrivateBeanstalkd
from mqcontract_fixtures.private.mariadb import PrivateMariaDb
from mqcontract_fixtures.private.mosquitto import PrivateMosquitto
from mqcontract_fixtures.private.nats import PrivateNatsCluster, PrivateNatsServer
from mqcontract_fixtures.private.postgres import PrivatePostgres
from mqcontract_fixtures.private.rabbitmq import PrivateRabbitCluster, PrivateRabbitNode
from mqcontract_fixtures.private.redis import PrivateRedis
from mqcontract_fixtures.private.stress_clusters import NatsCluster, RabbitCluster

BUILDERS: dict[str, Callable[[], Any]] = {
    "nats-server": PrivateNatsServer,
    "nats-cluster": lambda: PrivateNatsCluster(3),
    "nats-stress-cluster": lambda: NatsCluster(3, netns=False),
    "rabbit-node": PrivateRabbitNode,
    "rabbit-cluster": lambda: PrivateRabbitCluster(3),
    "rabbit-stress-cluster": lambda: RabbitCluster(3, netns=False, vhost="v"),
    "postgres": PrivatePostgres,
    "mariadb": PrivateMariaDb,
    "redis": PrivateRedis,
    "beanstalkd": PrivateBeanstalkd,
    "mosquitto": PrivateMosquitto,
}


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp directory every private server draws its root from, empty."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_a_private_server_built_and_never_started_leaves_nothing(kind: str, temp_dir: Path) -> None:
    built = BUILDERS[kind]()
    assert list(temp_dir.iterdir()) == [], f"{kind} made a directory when it was built"
    close = getattr(built, "close_now", None)
    if close is not None:
        close()
    else:
        asyncio.run(built.close())
    assert list(temp_dir.iterdir()) == []


def test_temp_roots_are_fresh_paths_in_the_temp_directory(temp_dir: Path) -> None:
    roots = {temp_root("mqcontract-x-") for _ in range(100)}
    assert len(roots) == 100
    assert all(root.parent == temp_dir and root.name.startswith("mqcontract-x-") for root in roots)
    assert not any(root.exists() for root in roots)


def test_a_server_backend_refuses_an_opener_it_cannot_call() -> None:
    """A holder's ``Opener`` passed by mistake failed much later, deep in a DUR rule, as
    "'Opener' object is not callable"; it is refused where the harness builds it."""
    from mqcontract_fixtures.holders import Opener
    from mqcontract_fixtures.private import ServerBackend, ServerProcess

    with pytest.raises(TypeError, match=r"async callable \(clock\) -> MessagingService"):
        ServerBackend(cast(ServerProcess, None), cast(Any, Opener.__new__(Opener)), {})
