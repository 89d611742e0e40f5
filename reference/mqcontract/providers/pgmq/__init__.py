"""The PGMQ provider: PGMQ queues on PostgreSQL through asyncpg.

Requires the ``pgmq`` extra (``asyncpg`` and the ``pgmq`` package, whose bundled SQL is
what :func:`install_pgmq` installs). Entry point: :func:`open_pgmq`.

Push: every queue carries an ``AFTER INSERT`` trigger that NOTIFYs ``mqcontract_<queue>``
with a JSON payload naming the queue and message id, and carrying the message itself when
the whole payload fits in ``push_threshold_bytes`` (bytes, not characters). Pushed messages
are unclaimed copies; claim one with ``fetch_message``. Delayed messages are announced when
they become visible (the listener holds their notification), provided the listener was
connected when they were sent. Notifications can be lost (listener down, trigger disabled),
so consumers must also poll: ``requires_fallback_polling`` is true. ``subscribe`` restores
a queue's trigger that was dropped or disabled (or raises ``NotifyTriggerUnavailable``
when the role may not), and ``PgmqMessagingService.listener_health`` shows whether the
LISTEN connection is up, when it last (re)connected and how often it was lost.

Versions: the provider runs on the PGMQ versions in ``TESTED_PGMQ_VERSIONS`` and refuses
others (``UnsupportedPgmqVersion``); ``install_pgmq`` upgrades an older SQL install in
place with PGMQ's own upgrade scripts where it finds a chain of them.

Partitioned queues (``pgmq.create_partitioned``, pg_partman's range partitions by
``msg_id``) are supported: push names the queue, not the partition a message landed in.

Payloads: valid JSON is stored as ``jsonb`` (normalized), any other bytes as
``{"$mqcontract_b64": "<base64>"}``; see ``_payload``.

Claims: a claim's token is the row's ``read_ct`` when it was claimed together with the
row's ``enqueued_at``, so other PGMQ clients on the same queues keep working: their
``pgmq.read`` of a message whose claim lapsed supersedes that claim, and
``pgmq.set_vt(queue, id, 0)`` makes it lapse; either way settling the old claim raises
``StaleClaim`` and leaves the row alone. ``enqueued_at`` keeps a claim from settling a
message of the queue created again under its name (whose ids restart at 1). See
``_settle``. A row whose ``read_ct`` is at the ``integer`` limit (set by a foreign
``UPDATE``) can never be claimed again: receive and fetch pass it by and leave it in the
table (``_sql.READ_CT_LIMIT``), where ``pgmq.read`` would fail every read of the queue.
"""

from __future__ import annotations

from mqcontract.providers.pgmq._errors import (
    ArchiveMissing,
    NotifyTriggerUnavailable,
    StatementCancelled,
)
from mqcontract.providers.pgmq._install import (
    InstallResult,
    embedded_pgmq_version,
    install_pgmq,
    install_pgmq_sync,
)
from mqcontract.providers.pgmq._listener import ListenerHealth
from mqcontract.providers.pgmq._open import open_pgmq
from mqcontract.providers.pgmq._payload import ENVELOPE_KEY
from mqcontract.providers.pgmq._versions import TESTED_PGMQ_VERSIONS, UnsupportedPgmqVersion
from mqcontract.providers.pgmq.service import PgmqMessagingService

__all__ = [
    "ENVELOPE_KEY",
    "TESTED_PGMQ_VERSIONS",
    "ArchiveMissing",
    "InstallResult",
    "ListenerHealth",
    "NotifyTriggerUnavailable",
    "PgmqMessagingService",
    "StatementCancelled",
    "UnsupportedPgmqVersion",
    "embedded_pgmq_version",
    "install_pgmq",
    "install_pgmq_sync",
    "open_pgmq",
]
