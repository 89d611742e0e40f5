"""SQL text. Queue names reach here only after ``check_queue_name`` (``[a-z_][a-z0-9_]*``,
at most 47 characters), so interpolating ``pgmq.q_<name>`` is safe; every value is a
bound, explicitly cast parameter.

PGMQ's own ``read``/``set_vt`` take whole seconds, so claiming is written here with
``make_interval(secs => float8)``: sub-second visibility timeouts work.

Sending is the ``INSERT`` that ``pgmq.send``/``pgmq.send_batch`` run (same columns, same
values: ``vt`` the send time or the delay's end, ``headers`` NULL), prepared per queue:
PGMQ's functions build it with ``format`` and ``EXECUTE`` it, so the server parses and
plans it again on every call.

A claim is identified by the row's ``read_ct`` right after it was claimed and by its
``enqueued_at`` (in whole microseconds, :func:`enqueued_us`): every claim (ours, or a
foreign client's ``pgmq.read``) adds one to ``read_ct``, and nothing changes
``enqueued_at``, so a claim still holds its message exactly while the row has both and
``vt`` is in the future. ``read_ct`` alone is not enough: a queue deleted and created
again numbers its rows from 1 again, and its message 1, claimed once, has the ``read_ct``
a claim on the old queue's message 1 had (CLAIM-10). Ack and nack check all of it in the
statement that changes the row; only when no row matched does ``claim_state`` tell why.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = [
    "CHANNEL_PREFIX",
    "READ_CT_LIMIT",
    "TRIGGER_NAME",
    "channel",
    "create_trigger",
    "effective_threshold",
    "enqueued_us",
    "queue_sql",
    "restore_trigger",
    "trigger_args",
    "trigger_fires",
]

CHANNEL_PREFIX = "mqcontract_"
TRIGGER_NAME = "mqcontract_notify"
#: ``read_ct`` is an ``integer``: a row already there (only a foreign ``UPDATE`` gets it
#: there) cannot be claimed again, since its count cannot grow. Receive and fetch pass it
#: by, so it stays in the table for whoever set it and the rest of the queue is delivered
#: around it; claiming it failed the whole statement ("integer out of range"), every
#: receive of the queue from then on (as ``pgmq.read`` still does).
READ_CT_LIMIT = 2**31 - 1

PROBE_JSONB = "SELECT $1::text::jsonb IS NOT NULL"
CREATE = "SELECT pgmq.create($1::text)"
#: The advisory lock PGMQ's own create/drop take for a queue (``pgmq.acquire_queue_lock``).
QUEUE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('pgmq.queue_' || $1::text))"
#: PGMQ's drop: false (no error, nothing removed) when the queue's table is missing.
DROP = "SELECT pgmq.drop_queue($1::text)"
#: Whether ``pgmq.meta`` lists the queue, whatever became of its table.
LISTED = "SELECT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = $1::text)"
#: A queue exists while ``pgmq.meta`` lists it (as ``m``) AND its table is there (named
#: as ``pgmq.format_table_name`` does): ``DROP TABLE pgmq.q_<queue>`` from outside leaves
#: the row, and every operation on the queue then finds no table (``QueueNotFound``).
#: By name in ``pg_class``, not ``to_regclass``: a foreign row's name may not parse.
_HAS_TABLE = (
    "EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = to_regnamespace('pgmq')"
    " AND c.relname = lower('q_' || m.queue_name))"
)
LIST = f"SELECT m.queue_name::text FROM pgmq.meta m WHERE {_HAS_TABLE}"
EXISTS = f"SELECT EXISTS ({LIST} AND m.queue_name = $1::text)"
#: Which of the named queues exist (listed and with a table, as in ``EXISTS``), whether
#: each is partitioned, and the args and ``tgenabled`` of our trigger on each (both NULL:
#: no trigger). On a partitioned queue the trigger is cloned onto every partition; a
#: clone that does not fire counts as the trigger not firing (``D``), and ``ALTER TABLE
#: <parent> ENABLE TRIGGER`` re-enables the clones too.
QUEUE_TRIGGERS = f"""
SELECT m.queue_name::text AS queue, t.tgargs AS args,
       CASE WHEN EXISTS (
           SELECT 1 FROM pg_trigger p WHERE p.tgparentid = t.oid AND p.tgenabled NOT IN ('O', 'A')
       ) THEN 'D' ELSE t.tgenabled::text END AS enabled,
       c.relkind = 'p' AS partitioned
FROM pgmq.meta m
JOIN pg_class c ON c.oid = to_regclass('pgmq.q_' || m.queue_name)
LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = '{TRIGGER_NAME}'
WHERE m.queue_name = ANY($1::text[])
"""
#: Whether PGMQ and our notify function are there, whether the function is current
#: (``$1``: :data:`~mqcontract.providers.pgmq._install.NOTIFY_FUNCTION_REVISION`), and
#: where PGMQ's version is kept (the extension's, or the schema comment of a SQL install).
INSTALLED = """
SELECT to_regclass('pgmq.meta') IS NOT NULL AS pgmq,
       to_regprocedure('mqcontract.pgmq_notify_insert()') IS NOT NULL AS notify,
       coalesce(obj_description(to_regprocedure('mqcontract.pgmq_notify_insert()'), 'pg_proc')
                = $1::text, false) AS notify_current,
       (SELECT extversion FROM pg_extension WHERE extname = 'pgmq') AS extension_version,
       obj_description(to_regnamespace('pgmq'), 'pg_namespace') AS schema_comment
"""


def enqueued_us(column: str) -> str:
    """``column`` (a ``timestamptz``) as whole microseconds since the epoch, a ``bigint``:
    exact (``extract`` is ``numeric`` since PostgreSQL 14; before, the ``float8`` it gives
    still rounds back to the microsecond). Claims carry it, and settling compares the
    same expression, so what a claim was given is what it is checked against. A foreign
    client's time that no ``bigint`` of microseconds holds (``infinity``, or a finite time
    after January 294247, which ``timestamptz`` takes up to 294276) is 0: one such row
    must not stop every receive of its queue."""
    return (
        f"(CASE WHEN isfinite({column}) AND {column} < {_BIGINT_US_END}"
        f" THEN extract(epoch FROM {column}) * 1000000 ELSE 0 END)::bigint"
    )


#: The first time whose microseconds since the epoch no ``bigint`` holds is in January
#: 294247 (2**63 µs after 1970); times from this one on read as 0.
_BIGINT_US_END = "'294247-01-01 00:00:00+00'::timestamptz"


_RETURNING = (
    f"RETURNING m.msg_id, m.read_ct, {enqueued_us('m.enqueued_at')} AS enqueued_us,"
    " m.message::text AS message"
)


#: NOTIFY payloads must stay under 8000 bytes; the notify function clamps to this.
MAX_NOTIFY_BYTES = 7999


def effective_threshold(configured: int) -> int:
    """The byte threshold the notify function really applies for ``configured``."""
    return max(0, min(configured, MAX_NOTIFY_BYTES))


def channel(queue: str) -> str:
    """The NOTIFY channel of ``queue`` (at most 58 bytes: under PostgreSQL's 63)."""
    return CHANNEL_PREFIX + queue


class QueueSql:
    """Statements for one (validated) queue."""

    def __init__(self, queue: str) -> None:
        table = f"pgmq.q_{queue}"
        archive = f"pgmq.a_{queue}"
        self.send = (
            f"INSERT INTO {table} (vt, message) VALUES (clock_timestamp(), $1::jsonb)"
            " RETURNING msg_id"
        )
        self.send_delayed = (
            f"INSERT INTO {table} (vt, message)"
            " VALUES (clock_timestamp() + make_interval(secs => $2::float8), $1::jsonb)"
            " RETURNING msg_id"
        )
        # Ids in array order; one vt for the batch (as pgmq.send_batch: its argument),
        # which a volatile call in the select list would not give.
        self.send_batch = (
            "WITH sent AS MATERIALIZED (SELECT clock_timestamp() AS vt)"
            f" INSERT INTO {table} (vt, message)"
            " SELECT sent.vt, m.message"
            " FROM sent, unnest($1::jsonb[]) WITH ORDINALITY AS m(message, n) ORDER BY m.n"
            " RETURNING msg_id"
        )
        # The claimed rows are found again by ``= ANY(ARRAY(...))``, an index scan
        # whatever the plan: joined to the CTE instead, the generic plan asyncpg's
        # prepared statement gets after five runs hashed the whole table (a sequential
        # scan per receive, slower the longer the backlog).
        self.receive = f"""
WITH cte AS (
    SELECT msg_id FROM {table}
    WHERE vt <= clock_timestamp() AND read_ct < {READ_CT_LIMIT}
    ORDER BY msg_id
    LIMIT $1::int
    FOR UPDATE SKIP LOCKED
)
UPDATE {table} m
SET vt = clock_timestamp() + make_interval(secs => $2::float8),
    read_ct = m.read_ct + 1,
    last_read_at = clock_timestamp()
WHERE m.msg_id = ANY(ARRAY(SELECT msg_id FROM cte))
{_RETURNING}
"""
        self.fetch = f"""
UPDATE {table} m
SET vt = clock_timestamp() + make_interval(secs => $2::float8),
    read_ct = m.read_ct + 1,
    last_read_at = clock_timestamp()
WHERE m.msg_id = (
    SELECT msg_id FROM {table}
    WHERE msg_id = $1::bigint AND vt <= clock_timestamp() AND read_ct < {READ_CT_LIMIT}
    FOR UPDATE SKIP LOCKED
)
{_RETURNING}
"""
        enqueued = enqueued_us("enqueued_at")
        held = (
            f"msg_id = $1::bigint AND read_ct = $2::int AND {enqueued} = $3::bigint"
            " AND vt > clock_timestamp()"
        )
        self.ack_delete = f"DELETE FROM {table} WHERE {held} RETURNING msg_id"
        self.ack_archive = _archiving(table, archive, held, "msg_id")
        # Many claims in one statement: a row matches once however often the arrays
        # name it, so a duplicated claim settles once. The rows are found by index
        # through ``= ANY(ARRAY(SELECT ...))``, as in ``receive``: with the pair test
        # alone (or ``= ANY($1)``) the custom plans a prepared statement starts with
        # scanned the whole table, dead rows too (2.5 ms per batch of 100 at 20,000
        # rows, 0.3 ms by index; the generic plan that follows happened to use the index).
        held_many = (
            "msg_id = ANY(ARRAY(SELECT unnest($1::bigint[])))"
            f" AND (msg_id, read_ct, {enqueued}) IN"
            " (SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[]))"
            " AND vt > clock_timestamp()"
        )
        settled = f"msg_id, read_ct, {enqueued}"
        self.ack_many_delete = f"DELETE FROM {table} WHERE {held_many} RETURNING {settled}"
        self.ack_many_archive = _archiving(table, archive, held_many, settled)
        # A released message is announced again, like a new one (any producer's nack
        # through this provider; PGMQ itself has no nack).
        self.nack = f"""
WITH released AS (
    UPDATE {table} SET vt = clock_timestamp()
    WHERE {held}
    RETURNING msg_id, read_ct, enqueued_at, vt, message
)
SELECT msg_id, pg_notify(
    '{channel(queue)}',
    mqcontract.pgmq_notify_payload(
        '{queue}', msg_id, read_ct, enqueued_at, vt, message, $4::int)) IS NULL AS notified
FROM released
"""
        #: Why a settlement matched no row (the failure path only): no row, or its
        #: current ``read_ct`` and its ``enqueued_at`` in microseconds.
        self.claim_state = f"SELECT read_ct, {enqueued} FROM {table} WHERE msg_id = $1::bigint"
        self.empty_check = f"SELECT 1 FROM {table} LIMIT 0"
        self.stored_ids = f"SELECT msg_id FROM {table} ORDER BY msg_id"


def _archiving(table: str, archive: str, where: str, returning: str) -> str:
    """Move the rows matching ``where`` to the archive (as ``pgmq.archive`` does)."""
    return f"""
WITH archived AS (
    DELETE FROM {table} WHERE {where}
    RETURNING msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers
)
INSERT INTO {archive} (msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers)
SELECT msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers FROM archived
RETURNING {returning}
"""


def create_trigger(queue: str, threshold_bytes: int) -> str:
    """(Re)create our notify trigger on ``queue`` with ``threshold_bytes`` as its argument.

    On a partitioned queue PostgreSQL clones it onto every partition, present and future;
    the notify function names the queue after the partition root."""
    return (
        f"CREATE OR REPLACE TRIGGER {TRIGGER_NAME} AFTER INSERT ON pgmq.q_{queue} FOR EACH ROW"
        f" EXECUTE FUNCTION mqcontract.pgmq_notify_insert('{int(threshold_bytes)}')"
    )


def trigger_fires(enabled: str | None) -> bool:
    """Whether a trigger with ``pg_trigger.tgenabled`` = ``enabled`` fires for ordinary
    sessions: ``O`` (origin) and ``A`` (always) do; ``D`` (disabled) and ``R`` (replica
    only) do not, nor does a missing trigger (None)."""
    return enabled in ("O", "A")


def restore_trigger(queue: str, threshold_bytes: int, *, create: bool) -> str:
    """One simple-protocol script (one round trip, one implicit transaction) that makes our
    notify trigger on ``queue`` fire again: under the queue's advisory lock (as
    ``pgmq.create``/``drop_queue`` take it), ``create`` it with :func:`create_trigger`
    when it is missing, then ENABLE it (a disabled or replica-only trigger, or one made
    disabled meanwhile)."""
    lock = f"SELECT pg_advisory_xact_lock(hashtext('pgmq.queue_{queue}'))"
    steps = [lock]
    if create:
        steps.append(create_trigger(queue, threshold_bytes))
    steps.append(f"ALTER TABLE pgmq.q_{queue} ENABLE TRIGGER {TRIGGER_NAME}")
    return ";\n".join(steps)


def trigger_args(threshold_bytes: int) -> bytes:
    """``pg_trigger.tgargs`` of a trigger made by :func:`create_trigger`."""
    return f"{int(threshold_bytes)}".encode() + b"\x00"


@lru_cache(maxsize=1024)
def queue_sql(queue: str) -> QueueSql:
    """The (cached) statements for ``queue``; callers validate the name first."""
    return QueueSql(queue)
