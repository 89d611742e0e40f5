"""mqcontract provider on SQLite: queues in one database file, no server needed."""

from __future__ import annotations

__version__ = "0.1.0"

from .service import SqliteQueue, open_sqlite_queue
from .settings import SqliteSettings, load_settings

__all__ = ["SqliteQueue", "SqliteSettings", "__version__", "load_settings", "open_sqlite_queue"]
