"""Opening the SQL store's engines: SQLite (one machine) and PostgreSQL (several gateways).

* SQLite runs in WAL mode with a busy timeout and immediate transactions, so "database is
  locked" never reaches a client; a lock still held after the timeout is a 503. It has two
  engines: writers (``BEGIN IMMEDIATE``) and readers (``BEGIN``).
* PostgreSQL has one bounded pool; reads run on it REPEATABLE READ, READ ONLY.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from ..errors import BillingError, ConfigurationError, DuplicateClient, StoreUnavailable
from .files import private_directory, private_file

logger = logging.getLogger("openclaw_billing.store")

SQLITE_BUSY_TIMEOUT_MS = 30_000
POOL_SIZE = 5
POOL_OVERFLOW = 5


def open_engines(url: str, lock_timeout: float) -> tuple[str, str, Engine, Engine]:
    """The dialect, the URL to show (no password), the write engine and the read engine."""
    parsed = make_url(url)
    dialect = parsed.get_backend_name()
    if dialect not in {"sqlite", "postgresql"}:
        raise ConfigurationError(f"Unsupported database {dialect!r}")
    location = parsed.render_as_string(hide_password=True)
    if dialect == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigurationError("SQLite needs a file: sqlite:///path/to/billing.db")
        _private_database(Path(parsed.database).expanduser())
        busy = max(SQLITE_BUSY_TIMEOUT_MS, int(lock_timeout * 1000))
        write = create_engine(parsed, connect_args={"check_same_thread": False})
        read = create_engine(parsed, connect_args={"check_same_thread": False})
        for engine, immediate in ((write, True), (read, False)):
            _configure_sqlite(engine, busy_ms=busy, immediate=immediate)
    else:
        lock_ms = max(1, int(lock_timeout * 1000))
        # Requests queue for one of these (bounded by the lock timeout) rather than each
        # holding a server connection while it waits for a busy client row: workers x 10
        # must stay below the server's max_connections (100 by default).
        # lock_timeout once per connection (libpq options), kept with any options the URL
        # already carries (a search_path, say), not one extra round trip per transaction.
        given = parsed.query.get("options") or ()
        options = " ".join(
            [*([given] if isinstance(given, str) else given), f"-c lock_timeout={lock_ms}"]
        )
        parsed = parsed.difference_update_query(["options"])
        write = create_engine(
            parsed,
            connect_args={"options": options},
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
            pool_timeout=lock_timeout,
            # Not pool_pre_ping: that is one more round trip on every checkout. A
            # connection the server dropped fails its transaction with a 503 and is
            # discarded; connections are also renewed every half hour.
            pool_recycle=1800,
        )
        read = write.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return dialect, location, write, read


def _private_database(path: Path) -> None:
    """A new SQLite database file is made 0600 in a 0700 directory before SQLite opens it (it
    would make it 0644); its -wal and -shm files take the database file's mode."""
    try:
        private_directory(path.parent)
        private_file(path)
    except OSError as exc:
        raise StoreUnavailable(f"Cannot create the SQLite database {path}: {exc}") from exc


def _configure_sqlite(engine: Engine, *, busy_ms: int, immediate: bool) -> None:
    """WAL, a busy timeout, full sync, foreign keys; writers take the lock at BEGIN."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event (below) own the transaction, not pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def integrity_error(exc: IntegrityError, duplicate: str) -> BillingError:
    """A unique key taken (an id or a key digest that exists) is ``DuplicateClient``; any
    other refused write (a check or a trigger of the operator's) is ``StoreUnavailable``."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "23505" or (
        getattr(orig, "sqlite_errorname", None)
        in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY")
    ):
        return DuplicateClient(duplicate)
    logger.warning("Billing database refused a write: %s: %s", type(orig).__name__, orig)
    return StoreUnavailable()
