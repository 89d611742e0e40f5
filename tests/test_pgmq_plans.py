"""The provider's per-message statements stay index scans under a generic plan.

asyncpg prepares every statement, and after five runs PostgreSQL may switch a prepared
statement to a generic plan, chosen without the parameters' values. A plan that scans
the whole queue table there costs every receive or settlement time in proportion to the
backlog (the receive did: it hashed the table to find its claimed rows again). So each
statement is planned here as generic on a queue with a backlog, and no plan may read the
queue's table sequentially.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from mqcontract.providers.pgmq import PgmqMessagingService
from mqcontract.providers.pgmq._sql import queue_sql
from tests import pgmq_support

service = pgmq_support.service
queue = pgmq_support.queue

BACKLOG = 5000

#: Statement attribute -> arguments (ids and counts that may or may not match a row).
STATEMENTS: dict[str, tuple[object, ...]] = {
    "receive": (100, 30.0),
    "fetch": (17, 30.0),
    "ack_delete": (17, 1, 1_700_000_000_000_000),
    "ack_many_delete": ([17, 18, 19], [1, 1, 1], [1_700_000_000_000_000] * 3),
    "ack_archive": (17, 1, 1_700_000_000_000_000),
    "ack_many_archive": ([17, 18, 19], [1, 1, 1], [1_700_000_000_000_000] * 3),
    "nack": (17, 1, 1_700_000_000_000_000, 7000),
    "claim_state": (17,),
}


def _scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (node type, relation) in a JSON plan tree."""
    found = [(str(plan.get("Node Type")), str(plan.get("Relation Name")))]
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


def _literal(value: object) -> str:
    """A number, or a list of numbers as an array literal (EXECUTE takes no binds)."""
    if isinstance(value, list):
        return "'{" + ",".join(str(v) for v in value) + "}'"
    return str(value)


async def _generic_plan(conn: Any, sql: str, args: tuple[object, ...]) -> list[tuple[str, str]]:
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.execute(f"PREPARE probe AS {sql}")
    try:
        literals = ", ".join(_literal(arg) for arg in args)
        # EXPLAIN without ANALYZE: the plan only, nothing is claimed or deleted.
        rows = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE probe({literals})")
    finally:
        await conn.execute("DEALLOCATE probe")
    return _scans(json.loads(rows)[0]["Plan"])


@pytest.mark.parametrize("statement", sorted(STATEMENTS))
async def test_no_statement_scans_the_queue_table_under_a_generic_plan(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str, statement: str
) -> None:
    await service.send_batch(queue, [b'{"n": %d}' % i for i in range(BACKLOG)])
    conn = await asyncpg.connect(pgmq_db_url, timeout=5)
    try:
        await conn.execute(f"ANALYZE pgmq.q_{queue}")
        sql = getattr(queue_sql(queue), statement)
        scans = await _generic_plan(conn, sql, STATEMENTS[statement])
    finally:
        await conn.close()
    assert ("Seq Scan", f"q_{queue}") not in scans, scans
