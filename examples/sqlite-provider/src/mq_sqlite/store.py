"""Synchronous SQL over one sqlite3 connection. Every function runs in the worker thread.

A message is *visible* when ``visible_at <= now``; it is *held* for a receiver when
``held = 1`` and ``visible_at > now``. A delayed message is invisible but not held, and a
claim whose timeout passed is visible again without anyone touching the row. Ids come
from ``AUTOINCREMENT``, so they are never reused, even after a queue is dropped.

A claim's token is ``deliveries`` as that claim set it: every claim adds one and nothing
else changes it, so a token names one claim. Settling is one conditional statement
(held, this token, deadline not passed); only when it matches no row does a read in the
same transaction say why the claim is stale.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mqcontract.errors import StaleReason

SCHEMA = """
CREATE TABLE IF NOT EXISTS mq_queues (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    created_at  REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS mq_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id    INTEGER NOT NULL,
    body        BLOB    NOT NULL,
    enqueued_at REAL    NOT NULL,
    visible_at  REAL    NOT NULL,
    deliveries  INTEGER NOT NULL DEFAULT 0,
    held        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS mq_messages_by_queue ON mq_messages (queue_id, id);
"""


class NoSuchQueue(Exception):
    """The named queue does not exist."""


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    body: bytes
    deliveries: int
    enqueued_at: float


def open_connection(path: str, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
    """Open ``path`` in WAL mode, in autocommit, and make sure the schema exists."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.executescript(SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")


def _queue_id(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute("SELECT id FROM mq_queues WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def queue_exists(conn: sqlite3.Connection, name: str) -> bool:
    return _queue_id(conn, name) is not None


def create_queue(conn: sqlite3.Connection, name: str, now: float) -> None:
    conn.execute(
        "INSERT INTO mq_queues (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        (name, now),
    )


def drop_queue(conn: sqlite3.Connection, name: str) -> None:
    with _transaction(conn):
        qid = _queue_id(conn, name)
        if qid is not None:
            conn.execute("DELETE FROM mq_messages WHERE queue_id = ?", (qid,))
            conn.execute("DELETE FROM mq_queues WHERE id = ?", (qid,))


def queue_names(conn: sqlite3.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT name FROM mq_queues ORDER BY name")]


def insert(
    conn: sqlite3.Connection, name: str, bodies: Sequence[bytes], now: float, visible_at: float
) -> list[int]:
    """Enqueue ``bodies`` in order, all or nothing."""
    with _transaction(conn):
        qid = _queue_id(conn, name)
        if qid is None:
            raise NoSuchQueue(name)
        ids: list[int] = []
        for body in bodies:
            row = conn.execute(
                "INSERT INTO mq_messages (queue_id, body, enqueued_at, visible_at)"
                " VALUES (?, ?, ?, ?) RETURNING id",
                (qid, body, now, visible_at),
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))
    return ids


def claim(conn: sqlite3.Connection, name: str, limit: int, now: float, until: float) -> list[Row]:
    """Hold up to ``limit`` visible messages until ``until``, oldest first."""
    with _transaction(conn):
        qid = _queue_id(conn, name)
        if qid is None:
            raise NoSuchQueue(name)
        rows = conn.execute(
            "UPDATE mq_messages SET held = 1, visible_at = ?, deliveries = deliveries + 1"
            " WHERE id IN (SELECT id FROM mq_messages WHERE queue_id = ? AND visible_at <= ?"
            "              ORDER BY id LIMIT ?)"
            " RETURNING id, body, deliveries, enqueued_at",
            (until, qid, now, limit),
        ).fetchall()
    out = [Row(int(r[0]), bytes(r[1]), int(r[2]), float(r[3])) for r in rows]
    out.sort(key=lambda r: r.id)
    return out


def claim_one(
    conn: sqlite3.Connection, name: str, msg_id: int, now: float, until: float
) -> Row | None:
    """Hold message ``msg_id`` until ``until`` if it is visible now."""
    with _transaction(conn):
        qid = _queue_id(conn, name)
        if qid is None:
            raise NoSuchQueue(name)
        r = conn.execute(
            "UPDATE mq_messages SET held = 1, visible_at = ?, deliveries = deliveries + 1"
            " WHERE id = ? AND queue_id = ? AND visible_at <= ?"
            " RETURNING id, body, deliveries, enqueued_at",
            (until, msg_id, qid, now),
        ).fetchone()
    return None if r is None else Row(int(r[0]), bytes(r[1]), int(r[2]), float(r[3]))


#: A claim as the store sees it: (msg_id, token), ``None`` where the value cannot name a
#: row or a claim (the caller checked: no such value reaches SQL).
ClaimKey = tuple[int | None, int | None]


def settle(
    conn: sqlite3.Connection,
    name: str,
    claims: Sequence[ClaimKey],
    now: float,
    *,
    remove: bool,
) -> list[StaleReason | None]:
    """Delete (``remove``) or release each message its claim still holds, in one
    transaction; for each claim ``None`` if settled, else why it is stale."""
    with _transaction(conn):
        qid = _queue_id(conn, name)
        if qid is None:
            raise NoSuchQueue(name)
        return [_settle_one(conn, qid, msg_id, token, now, remove) for msg_id, token in claims]


def _settle_one(
    conn: sqlite3.Connection,
    qid: int,
    msg_id: int | None,
    token: int | None,
    now: float,
    remove: bool,
) -> StaleReason | None:
    if msg_id is None or token is None:
        return StaleReason.NOT_HELD
    held = " WHERE id = ? AND queue_id = ? AND held = 1 AND deliveries = ? AND visible_at > ?"
    if remove:
        cur = conn.execute("DELETE FROM mq_messages" + held, (msg_id, qid, token, now))
    else:
        cur = conn.execute(
            "UPDATE mq_messages SET held = 0, visible_at = 0" + held, (msg_id, qid, token, now)
        )
    if cur.rowcount == 1:
        return None
    row = conn.execute(
        "SELECT deliveries FROM mq_messages WHERE id = ? AND queue_id = ?", (msg_id, qid)
    ).fetchone()
    if row is None:
        return StaleReason.SETTLED
    deliveries = int(row[0])
    if deliveries > token:
        return StaleReason.SUPERSEDED
    if deliveries < token:
        return StaleReason.NOT_HELD
    return StaleReason.LAPSED  # this claim's count, but released or past its deadline


def stored_ids(conn: sqlite3.Connection, name: str) -> list[int]:
    """Every id stored on ``name``, in any state, without touching a row."""
    return [
        int(r[0])
        for r in conn.execute(
            "SELECT m.id FROM mq_messages AS m JOIN mq_queues AS q ON q.id = m.queue_id"
            " WHERE q.name = ? ORDER BY m.id",
            (name,),
        )
    ]
