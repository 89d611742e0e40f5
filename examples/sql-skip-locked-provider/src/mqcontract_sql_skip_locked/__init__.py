"""A plain SQL table queue (``SELECT … FOR UPDATE SKIP LOCKED``) for mqcontract, in two
dialects: ``sql-postgres`` (asyncpg) and ``sql-mariadb`` (aiomysql).

The queue logic is shared (:mod:`.service`); each dialect's SQL lives in its own module
(:mod:`._postgres`, :mod:`._mariadb`). ``open_sql_postgres`` and ``open_sql_mariadb`` are
the factories registered under the ``mqcontract.providers`` entry point; the harnesses for
the suite live in :mod:`.harness`.
"""

from __future__ import annotations

from mqcontract_sql_skip_locked._config import MARIADB, POSTGRES, SqlQueueConfig, load_settings
from mqcontract_sql_skip_locked.connect import (
    connect_sql_mariadb,
    connect_sql_postgres,
    open_sql_mariadb,
    open_sql_postgres,
)
from mqcontract_sql_skip_locked.service import (
    MariaDbQueueService,
    PostgresQueueService,
    SqlQueueService,
)

__version__ = "0.1.0"

__all__ = [
    "MARIADB",
    "POSTGRES",
    "MariaDbQueueService",
    "PostgresQueueService",
    "SqlQueueConfig",
    "SqlQueueService",
    "connect_sql_mariadb",
    "connect_sql_postgres",
    "load_settings",
    "open_sql_mariadb",
    "open_sql_postgres",
]
