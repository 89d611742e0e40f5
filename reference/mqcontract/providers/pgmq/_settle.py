"""Settling by claim on PGMQ: a claim's token is the row's ``read_ct`` when it was claimed
and the row's ``enqueued_at`` (microseconds since the epoch), in one int.

Every claim of a row (ours, or any PGMQ client's ``pgmq.read``) adds one to ``read_ct``,
so a claim still holds its message exactly while ``read_ct`` equals its token's and ``vt``
is in the future. ``enqueued_at`` tells a queue's incarnations apart: a queue deleted and
created again numbers its rows from 1 again, so a claim on the old queue's message 1
(``read_ct`` 1) would otherwise match the new queue's message 1 on its first delivery
(CLAIM-10); nothing a PGMQ client does changes a row's ``enqueued_at``. The ack and nack
statements (``_sql``) check all three where they change the row. When no row matched,
:func:`stale_reason` reads the row once (only then) to tell why.

The token is ``enqueued_us << 31 | read_ct`` (:func:`claim_token`): an int, taken apart
with a shift and a mask, and larger for a later claim of the same id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mqcontract.errors import StaleReason
from mqcontract.messages import Claim
from mqcontract.providers.pgmq._sql import QueueSql
from mqcontract.validation import is_message_id

__all__ = ["READ_BITS", "claim_key", "claim_token", "settled_flags", "stale_reason", "storable_id"]

#: ``msg_id`` and the microseconds are ``bigint``s, ``read_ct`` an ``integer``: other values
#: match no row (and asyncpg would refuse them, or truncate a float).
_BIGINT = range(-(2**63), 2**63)
_BIGINT_MIN, _BIGINT_MAX = _BIGINT[0], _BIGINT[-1]
#: A token's low bits hold ``read_ct`` (at least 1, 0: never claimed; at most 2**31 - 1).
READ_BITS = 31
_READ_MASK = (1 << READ_BITS) - 1

#: ``(msg_id, read_ct, enqueued_us)``: the row a live claim holds.
ClaimKey = tuple[int, int, int]


def storable_id(msg_id: object) -> bool:
    """Whether ``msg_id`` can name a PGMQ row."""
    return is_message_id(msg_id) and msg_id in _BIGINT


def claim_token(read_ct: int, enqueued_us: int) -> int:
    """The token of a claim that left its row with ``read_ct`` and ``enqueued_us``."""
    return (enqueued_us << READ_BITS) | read_ct


def claim_key(claim: Claim) -> ClaimKey | None:
    """``(msg_id, read_ct, enqueued_us)`` of the row ``claim`` holds if it is live; None
    when no row can match it (an id or a token this provider never hands out)."""
    msg_id, token = claim.msg_id, claim.token
    if type(msg_id) is not int or type(token) is not int:
        if not storable_id(msg_id) or not isinstance(token, int) or isinstance(token, bool):
            return None
        msg_id, token = int(msg_id), int(token)
    read_ct, enqueued = token & _READ_MASK, token >> READ_BITS
    if read_ct and _BIGINT_MIN <= msg_id <= _BIGINT_MAX and _BIGINT_MIN <= enqueued <= _BIGINT_MAX:
        return (msg_id, read_ct, enqueued)
    return None


async def stale_reason(conn: Any, sql: QueueSql, claim: Claim) -> StaleReason:
    """Why ``claim`` settled nothing, read from the row as it is now (best effort: it
    may have moved on since the settlement looked). A missing queue raises the
    driver's ``UndefinedTableError`` (``QueueNotFound`` once translated)."""
    if not storable_id(claim.msg_id):
        await conn.execute(sql.empty_check)
        return StaleReason.SETTLED  # no such row, ever
    row = await conn.fetchrow(sql.claim_state, claim.msg_id)
    if row is None:
        return StaleReason.SETTLED
    key = claim_key(claim)
    if key is None:
        return StaleReason.NOT_HELD
    read_ct, enqueued = row[0], row[1]
    if enqueued != key[2]:
        # Another message has the id now: one sent after the claim's message was gone
        # (with the queue it was in, deleted since), or a token no row of this id had.
        return StaleReason.SETTLED if key[2] < enqueued else StaleReason.NOT_HELD
    if read_ct > key[1]:
        return StaleReason.SUPERSEDED  # claimed again since, by us or any PGMQ client
    if read_ct == key[1]:
        return StaleReason.LAPSED  # its vt passed, or it was released
    return StaleReason.NOT_HELD  # a token no claim of this row had yet


def settled_flags(keys: list[ClaimKey | None], rows: Iterable[Any]) -> list[bool]:
    """For each key, whether a returned row settled it; a key named twice counts once
    (the first time), since one row settles one claim."""
    done = {(int(r[0]), int(r[1]), int(r[2])) for r in rows}
    flags: list[bool] = []
    for key in keys:
        if key is not None and key in done:
            done.discard(key)
            flags.append(True)
        else:
            flags.append(False)
    return flags
