"""Settling by claim on PGMQ: a claim's token is the row's ``read_ct`` when it was claimed.

Every claim of a row (ours, or any PGMQ client's ``pgmq.read``) adds one to ``read_ct``,
so a claim still holds its message exactly while ``read_ct`` equals its token and ``vt``
is in the future; the ack and nack statements (``_sql``) check both where they change
the row. When no row matched, :func:`stale_reason` reads the row once (only then) to
tell why.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mqcontract.errors import StaleReason
from mqcontract.messages import Claim
from mqcontract.providers.pgmq._sql import QueueSql
from mqcontract.validation import is_message_id

__all__ = ["claim_key", "settled_flags", "stale_reason", "storable_id"]

#: ``msg_id`` is a ``bigint``, ``read_ct`` an ``integer``: other values match no row (and
#: asyncpg would refuse them, or truncate a float).
_BIGINT = range(-(2**63), 2**63)
_BIGINT_MIN, _BIGINT_MAX = _BIGINT[0], _BIGINT[-1]
#: A claim's ``read_ct`` is at least 1 (0: never claimed).
_READ_COUNT = range(1, 2**31)


def storable_id(msg_id: object) -> bool:
    """Whether ``msg_id`` can name a PGMQ row."""
    return is_message_id(msg_id) and msg_id in _BIGINT


def claim_key(claim: Claim) -> tuple[int, int] | None:
    """``(msg_id, read_ct)`` of the row ``claim`` holds if it is live; None when no row
    can match it (an id or a token this provider never hands out)."""
    msg_id, token = claim.msg_id, claim.token
    if type(msg_id) is int and type(token) is int:  # the common case, without calls
        if _BIGINT_MIN <= msg_id <= _BIGINT_MAX and 1 <= token < 2**31:
            return (msg_id, token)
        return None
    if not storable_id(msg_id) or not isinstance(token, int) or isinstance(token, bool):
        return None
    return (msg_id, token) if token in _READ_COUNT else None


async def stale_reason(conn: Any, sql: QueueSql, claim: Claim) -> StaleReason:
    """Why ``claim`` settled nothing, read from the row as it is now (best effort: it
    may have moved on since the settlement looked). A missing queue raises the
    driver's ``UndefinedTableError`` (``QueueNotFound`` once translated)."""
    if not storable_id(claim.msg_id):
        await conn.execute(sql.empty_check)
        return StaleReason.SETTLED  # no such row, ever
    read_ct = await conn.fetchval(sql.claim_state, claim.msg_id)
    if read_ct is None:
        return StaleReason.SETTLED
    key = claim_key(claim)
    if key is None:
        return StaleReason.NOT_HELD
    if read_ct > key[1]:
        return StaleReason.SUPERSEDED  # claimed again since, by us or any PGMQ client
    if read_ct == key[1]:
        return StaleReason.LAPSED  # its vt passed, or it was released
    return StaleReason.NOT_HELD  # a token no claim of this row had yet


def settled_flags(keys: list[tuple[int, int] | None], rows: Iterable[Any]) -> list[bool]:
    """For each key, whether a returned row settled it; a key named twice counts once
    (the first time), since one row settles one claim."""
    done = {(int(r[0]), int(r[1])) for r in rows}
    flags: list[bool] = []
    for key in keys:
        if key is not None and key in done:
            done.discard(key)
            flags.append(True)
        else:
            flags.append(False)
    return flags
