"""SQL backend on SQLAlchemy 2 Core: SQLite (one machine) and PostgreSQL (several gateways).

* Charge is the hot path: the client's row is locked (``SELECT ... FOR UPDATE`` on
  PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` takes the write lock up front), then one conditional
  ``UPDATE ... WHERE credits_remaining > 0`` and the ledger insert commit together. ``job_id``
  is unique per client, for every cycle, not only the last two.
* The rarer primitives lock the row, load the whole record, apply the very transitions of
  :mod:`openclaw_billing.ledger` the JSON store applies, and write back what changed.
* SQLite runs in WAL mode with a busy timeout and immediate transactions, so "database is
  locked" never reaches a client; a lock still held after the timeout is a 503.
* The schema is versioned in ``openclaw_schema_version`` and created at start, under a lock so
  several workers starting together do not race.

Tables: clients, ledger (one row per charged job, with the cycle number it belongs to), credit
adjustments, cycle summaries, processed Stripe event ids, schema version.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Row,
    Select,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .. import access, ledger
from ..audit import NewAuditEvent
from ..cycles import is_expired
from ..errors import (
    BillingError,
    ClientNotFound,
    ConfigurationError,
    CreditLimitReached,
    DuplicateClient,
    KeyNotFound,
    StoreCorrupt,
    StoreUnavailable,
)
from ..models import (
    ApiKeyRecord,
    ChargeResult,
    ClientRecord,
    CostEntry,
    CreditAdjustment,
    CycleSummary,
)
from ..plans import PlanId
from . import changes
from .base import (
    EVENT_ID_RETENTION,
    EventOutcome,
    MutatingStore,
    StripeRef,
    Write,
    apply_event_change,
    log_cycle_reset,
)
from .filelock import private_directory, private_file

if TYPE_CHECKING:
    from .audit_sql import SqlAuditLog

logger = logging.getLogger("openclaw_billing.store")

#: 1: the first release. 2: several API keys per client (``openclaw_api_keys``), and each
#: client's rate-limit override and IP allowlist. 3: every column holding credits, amounts,
#: counts, Unix times or row ids is 64-bit (BIGINT; a 32-bit ``stripe_event_at`` refused
#: every Stripe event after January 2038 on PostgreSQL).
SCHEMA_VERSION = 3
SQLITE_BUSY_TIMEOUT_MS = 30_000
POOL_SIZE = 5
POOL_OVERFLOW = 5


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python, naive UTC in the database (the same on SQLite and PostgreSQL)."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


#: A 64-bit row id that autoincrements: BIGSERIAL on PostgreSQL, SQLite's INTEGER PRIMARY KEY
#: (already 64-bit; a BIGINT primary key there would not be the rowid).
RowId = BigInteger().with_variant(Integer, "sqlite")

metadata_obj = MetaData()

schema_version = Table(
    "openclaw_schema_version", metadata_obj, Column("version", Integer, nullable=False)
)
clients = Table(
    "openclaw_clients",
    metadata_obj,
    Column("seq", RowId, primary_key=True, autoincrement=True),
    Column("client_id", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("api_key_hash", String(64), nullable=False, unique=True),
    Column("api_key_prefix", String(32), nullable=False),
    Column("plan", String(16), nullable=False),
    Column("credits_remaining", BigInteger, nullable=True),
    Column("total_spent", Float, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("stripe_customer_id", String(255), nullable=True, index=True),
    Column("stripe_subscription_id", String(255), nullable=True, index=True),
    Column("billing_cycle_start", UtcDateTime, nullable=False),
    Column("billing_cycle_end", UtcDateTime, nullable=False),
    #: How many cycles have ended (= the number of summaries); ledger rows carry it.
    Column("cycle_no", BigInteger, nullable=False),
    Column("cycle_allowance", BigInteger, nullable=True),
    Column("subscription_status", String(32), nullable=True),
    Column("stripe_event_at", BigInteger, nullable=True),
    Column("metadata_extra", JSON, nullable=False),
    Column("rate_limit_per_minute", BigInteger, nullable=True),
    Column("ip_allowlist", JSON, nullable=True),
)
api_key_rows = Table(
    "openclaw_api_keys",
    metadata_obj,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("client_id", String(64), ForeignKey("openclaw_clients.client_id"), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),
    Column("prefix", String(32), nullable=False),
    Column("label", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("last_used_at", UtcDateTime, nullable=True),
    UniqueConstraint("client_id", "key_id", name="uq_openclaw_api_key_id"),
)
ledger_rows = Table(
    "openclaw_ledger",
    metadata_obj,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("client_id", String(64), ForeignKey("openclaw_clients.client_id"), nullable=False),
    Column("job_id", String(200), nullable=False),
    Column("cycle_no", BigInteger, nullable=False),
    Column("cost", Float, nullable=False),
    Column("charged_at", UtcDateTime, nullable=False),
    UniqueConstraint("client_id", "job_id", name="uq_openclaw_ledger_job"),
    Index("ix_openclaw_ledger_cycle", "client_id", "cycle_no"),
)
adjustment_rows = Table(
    "openclaw_credit_adjustments",
    metadata_obj,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("client_id", String(64), ForeignKey("openclaw_clients.client_id"), nullable=False),
    Column("cycle_no", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("timestamp", UtcDateTime, nullable=False),
    Index("ix_openclaw_adjustments_cycle", "client_id", "cycle_no"),
)
summary_rows = Table(
    "openclaw_cycle_summaries",
    metadata_obj,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("client_id", String(64), ForeignKey("openclaw_clients.client_id"), nullable=False),
    Column("cycle_no", BigInteger, nullable=False),
    Column("start", UtcDateTime, nullable=False),
    Column("end", UtcDateTime, nullable=False),
    Column("plan", String(16), nullable=False),
    Column("allowance", BigInteger, nullable=True),
    Column("adjustments", JSON, nullable=False),
    Column("jobs", BigInteger, nullable=False),
    Column("spend", Float, nullable=False),
    Column("credits_left", BigInteger, nullable=True),
    UniqueConstraint("client_id", "cycle_no", name="uq_openclaw_summary_cycle"),
)
event_rows = Table(
    "openclaw_stripe_events",
    metadata_obj,
    Column("event_id", String(255), primary_key=True),
    Column("processed_at", UtcDateTime, nullable=False, index=True),
)

_KEY_FIELDS = tuple(ApiKeyRecord.model_fields)


def _account_by_digest() -> Select[Any]:
    """Authentication's one query: the client's row with each of its keys (a result row per
    key), found by one key's digest; its cost does not depend on the client's ledger."""
    found, every = api_key_rows.alias("found"), api_key_rows.alias("every")
    return (
        select(clients, *(every.c[name].label(f"key_{name}") for name in _KEY_FIELDS))
        .join_from(found, clients, found.c.client_id == clients.c.client_id)
        .join(every, every.c.client_id == clients.c.client_id)
        .where(found.c.digest == bindparam("digest"))
        .order_by(every.c.id)
    )


# The hot path's statements, built once: constructing a statement costs more in Python than
# SQLite takes to run it.
_ACCOUNT_BY_DIGEST = _account_by_digest()
_LOCK_ROW = select(clients).where(clients.c.client_id == bindparam("b_client")).with_for_update()
_FIND_JOB = select(ledger_rows.c.cost, ledger_rows.c.charged_at).where(
    ledger_rows.c.client_id == bindparam("b_client"), ledger_rows.c.job_id == bindparam("b_job")
)
#: Charge a limited plan: one conditional UPDATE (no credit left: no row).
_TAKE_CREDIT = (
    update(clients)
    .where(clients.c.client_id == bindparam("b_client"), clients.c.credits_remaining > 0)
    .values(
        credits_remaining=clients.c.credits_remaining - 1,
        total_spent=bindparam("b_spent"),
        updated_at=bindparam("b_now"),
    )
)
#: An unlimited plan: log the spend only.
_LOG_ONLY = (
    update(clients)
    .where(clients.c.client_id == bindparam("b_client"))
    .values(total_spent=bindparam("b_spent"), updated_at=bindparam("b_now"))
)
_INSERT_LEDGER = insert(ledger_rows)

#: An arbitrary constant: the PostgreSQL advisory lock that serialises schema creation.
_SCHEMA_LOCK = 0x0C1A_B111


class SqlStore(MutatingStore):
    """SQLite (``sqlite:///path``) or PostgreSQL (``postgresql+psycopg://...``).

    A read that takes several statements (a record: its row, keys, ledger, adjustments and
    summaries; a page and its total) sees one snapshot: on SQLite a read transaction does, on
    PostgreSQL reads run REPEATABLE READ, READ ONLY (set on the connection by the driver, no
    extra round trip), where READ COMMITTED would let a charge commit between two of them."""

    audit: SqlAuditLog

    def __init__(self, url: str, *, lock_timeout: float = 10.0) -> None:
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in {"sqlite", "postgresql"}:
            raise ConfigurationError(f"Unsupported database {self.dialect!r}")
        self.location = parsed.render_as_string(hide_password=True)
        if self.dialect == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise ConfigurationError("SQLite needs a file: sqlite:///path/to/billing.db")
            _private_database(Path(parsed.database).expanduser())
            busy = max(SQLITE_BUSY_TIMEOUT_MS, int(lock_timeout * 1000))
            self._write = create_engine(parsed, connect_args={"check_same_thread": False})
            self._read = create_engine(parsed, connect_args={"check_same_thread": False})
            for engine, immediate in ((self._write, True), (self._read, False)):
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
            self._write = create_engine(
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
            self._read = self._write.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        self._lock_timeout = lock_timeout
        self._writers: threading.Lock | None = (
            threading.Lock() if self.dialect == "sqlite" else None
        )
        try:
            self._create_schema()
        except DBAPIError as exc:
            raise StoreUnavailable(
                f"Cannot open the billing database {self.location}: {type(exc.orig).__name__}"
            ) from exc
        from .audit_sql import SqlAuditLog  # imports this module's types, so not at the top

        self.audit = SqlAuditLog(self._tx, dialect=self.dialect, location=self.location)

    # -- plumbing ---------------------------------------------------------------------------

    def _create_schema(self) -> None:
        with self._write.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
            metadata_obj.create_all(conn, checkfirst=True)
            found = conn.execute(select(schema_version.c.version)).scalars().all()
            if not found:
                conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
            elif max(found) > SCHEMA_VERSION:
                raise StoreCorrupt(
                    f"The billing database {self.location} has schema version {max(found)}; "
                    f"this release reads version {SCHEMA_VERSION}"
                )
            elif max(found) < SCHEMA_VERSION:
                self._upgrade(conn, max(found))

    def _upgrade(self, conn: Connection, version: int) -> None:
        """Bring an older schema up to ``SCHEMA_VERSION``, one step at a time, in the schema
        transaction (all or nothing; other workers wait on the lock)."""
        if version < 2:
            # create_all has made openclaw_api_keys; the clients table gains two columns and
            # each client's one key becomes its first row in the keys table.
            table = clients.name
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN rate_limit_per_minute INTEGER")
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN ip_allowlist JSON")
            legacy_id = literal("key_") + func.substr(clients.c.api_key_hash, 1, 12)
            conn.execute(
                insert(api_key_rows).from_select(
                    ["client_id", "key_id", "digest", "prefix", "created_at"],
                    select(
                        clients.c.client_id,
                        legacy_id,
                        clients.c.api_key_hash,
                        clients.c.api_key_prefix,
                        clients.c.created_at,
                    ).order_by(clients.c.seq),
                )
            )
        if version < 3:
            self._widen_integers(conn)
        conn.execute(update(schema_version).values(version=SCHEMA_VERSION))
        logger.warning(
            "Upgraded the billing database %s from schema version %d to %d",
            self.location,
            version,
            SCHEMA_VERSION,
        )

    def _widen_integers(self, conn: Connection) -> None:
        """Version 3: every BIGINT column of the tables (and the sequences behind their row
        ids) was a 32-bit INTEGER before. SQLite's INTEGER is already 64-bit: nothing to do
        there but move the version."""
        if self.dialect != "postgresql":
            return
        for table in (clients, api_key_rows, ledger_rows, adjustment_rows, summary_rows):
            wide = [c for c in table.columns if isinstance(c.type, BigInteger)]
            changes = ", ".join(f'ALTER COLUMN "{c.name}" TYPE BIGINT' for c in wide)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} {changes}")
            for column in wide:
                if column.primary_key:
                    sequence = conn.execute(
                        select(func.pg_get_serial_sequence(table.name, column.name))
                    ).scalar()
                    if sequence is not None:
                        conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} AS BIGINT")

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[Connection]:
        """A transaction; database errors become ``StoreUnavailable`` (503), never a 500.

        SQLite writers of this process queue on a lock before ``BEGIN IMMEDIATE``: the
        database admits one writer, and threads that wait in the kernel are served roughly in
        order, where SQLite's busy handler would have them sleep and retry (which starves
        some of them: the long tail of latency)."""
        queue = self._writers if write else None
        if queue is not None and not queue.acquire(timeout=self._lock_timeout):
            raise StoreUnavailable()
        try:
            with (self._write if write else self._read).begin() as conn:
                yield conn
        except (BillingError, IntegrityError):
            raise
        except DBAPIError as exc:
            logger.warning("Billing database error: %s: %s", type(exc.orig).__name__, exc.orig)
            raise StoreUnavailable() from exc
        except PoolTimeout as exc:  # every pooled connection busy past the lock timeout
            logger.warning("Billing database pool exhausted: %s", exc)
            raise StoreUnavailable() from exc
        finally:
            if queue is not None:
                queue.release()

    @staticmethod
    def _lock_row(conn: Connection, client_id: str) -> Row[Any] | None:
        return conn.execute(_LOCK_ROW, {"b_client": client_id}).first()

    def _load(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[ClientRecord]:
        """Whole records for client rows (see :func:`.sql_read.load_records`)."""
        return load_records(conn, rows, self.location)

    def _record(
        self,
        r: Row[Any],
        keys: list[ApiKeyRecord],
        *,
        cost_log: list[CostEntry],
        adjustments: list[CreditAdjustment],
        history: list[CycleSummary],
    ) -> ClientRecord:
        return record_from_row(
            r,
            keys,
            cost_log=cost_log,
            adjustments=adjustments,
            history=history,
            location=self.location,
        )

    @staticmethod
    def _columns(record: ClientRecord) -> dict[str, Any]:
        meta = record.metadata
        return {
            "client_id": record.client_id,
            "name": record.name,
            "email": record.email,
            "api_key_hash": record.api_key_hash,
            "api_key_prefix": record.api_key_prefix,
            "plan": record.plan.value,
            "credits_remaining": record.credits_remaining,
            "total_spent": record.total_spent,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "active": record.active,
            "stripe_customer_id": record.stripe_customer_id,
            "stripe_subscription_id": record.stripe_subscription_id,
            "billing_cycle_start": record.billing_cycle_start,
            "billing_cycle_end": record.billing_cycle_end,
            "cycle_no": len(meta.cycle_history),
            "cycle_allowance": meta.cycle_allowance,
            "subscription_status": meta.subscription_status,
            "stripe_event_at": meta.stripe_event_at,
            "metadata_extra": dict(meta.model_extra or {}),
            "rate_limit_per_minute": record.rate_limit_per_minute,
            "ip_allowlist": list(record.ip_allowlist),
        }

    def _save(
        self,
        conn: Connection,
        before: ClientRecord,
        after: ClientRecord,
        *,
        new_record: bool = False,
    ) -> None:
        """Write back what a ledger transition changed in ``before`` to make ``after``. For a
        new (or imported) record, the newest summary's ledger entries are written too; after a
        reset they are already there, as the old cycle's rows."""
        cid = after.client_id
        conn.execute(update(clients).where(clients.c.client_id == cid).values(self._columns(after)))
        old_no, new_no = len(before.metadata.cycle_history), len(after.metadata.cycle_history)
        summaries, entries, adjustments = [], [], []
        for no in range(old_no, new_no):
            s = after.metadata.cycle_history[no]
            summaries.append(
                {
                    "client_id": cid,
                    "cycle_no": no,
                    "start": s.start,
                    "end": s.end,
                    "plan": s.plan.value,
                    "allowance": s.allowance,
                    "adjustments": [a.model_dump(mode="json") for a in s.adjustments],
                    "jobs": s.jobs,
                    "spend": s.spend,
                    "credits_left": s.credits_left,
                }
            )
            if new_record:
                entries += [_ledger_row(cid, no, e) for e in s.entries]
        same_cycle = old_no == new_no
        kept = {e.job_id for e in before.metadata.cost_log} if same_cycle else set()
        gone = kept - {e.job_id for e in after.metadata.cost_log}
        if gone:  # a refund
            conn.execute(
                delete(ledger_rows).where(
                    ledger_rows.c.client_id == cid, ledger_rows.c.job_id.in_(gone)
                )
            )
        entries += [
            _ledger_row(cid, new_no, e) for e in after.metadata.cost_log if e.job_id not in kept
        ]
        done = len(before.metadata.credit_adjustments) if same_cycle else 0
        adjustments = [
            {
                "client_id": cid,
                "cycle_no": new_no,
                "amount": a.amount,
                "reason": a.reason,
                "timestamp": a.timestamp,
            }
            for a in after.metadata.credit_adjustments[done:]
        ]
        known = {k.key_id: k for k in before.api_keys}
        new_keys = [key_row(cid, k) for k in after.api_keys if k.key_id not in known]
        for k in after.api_keys:
            if k.key_id in known and k != known[k.key_id]:
                conn.execute(
                    update(api_key_rows)
                    .where(api_key_rows.c.client_id == cid, api_key_rows.c.key_id == k.key_id)
                    .values(
                        label=k.label,
                        expires_at=k.expires_at,
                        revoked_at=k.revoked_at,
                        last_used_at=k.last_used_at,
                    )
                )
        # One batched statement per table: a 200-entry ledger is one round trip, not 200.
        for table, rows in (
            (summary_rows, summaries),
            (ledger_rows, entries),
            (adjustment_rows, adjustments),
            (api_key_rows, new_keys),
        ):
            if rows:
                conn.execute(insert(table), rows)

    @contextmanager
    def _edit(self, client_id: str) -> Iterator[tuple[ClientRecord, Write]]:
        try:
            with self._tx() as conn:
                row = self._lock_row(conn, client_id)
                if row is None:
                    raise ClientNotFound()
                [before] = self._load(conn, [row])

                def write(record: ClientRecord | None, event: NewAuditEvent | None) -> None:
                    # One transaction: the change and its audit event commit together.
                    if record is not None:
                        self._save(conn, before, record)
                    if event is not None:
                        self.audit.insert(conn, event)

                yield before.model_copy(deep=True), write
        except IntegrityError as exc:
            raise _integrity_error(exc, "This key already belongs to another client") from None

    # -- Store API ------------------------------------------------------------------------

    def create_client(self, record: ClientRecord, *, audit: NewAuditEvent | None = None) -> None:
        try:
            with self._tx() as conn:
                conn.execute(insert(clients).values(self._columns(record)))
                empty = record.model_copy(deep=True)
                empty.metadata.cost_log, empty.metadata.credit_adjustments = [], []
                empty.metadata.cycle_history = []
                empty.api_keys = []
                self._save(conn, empty, record, new_record=True)
                if audit is not None:
                    self.audit.insert(conn, audit)
        except IntegrityError as exc:
            raise _integrity_error(exc, DuplicateClient.message) from None

    def get_client(self, client_id: str) -> ClientRecord | None:
        with self._tx(write=False) as conn:
            row = conn.execute(select(clients).where(clients.c.client_id == client_id)).first()
            return self._load(conn, [row])[0] if row is not None else None

    def get_client_by_key_digest(self, digest: str, *, ledger: bool = True) -> ClientRecord | None:
        if ledger:
            with self._tx(write=False) as conn:
                by_key = api_key_rows.c.client_id == clients.c.client_id
                row = conn.execute(
                    select(clients)
                    .join(api_key_rows, by_key)
                    .where(api_key_rows.c.digest == digest)
                ).first()
                return self._load(conn, [row])[0] if row is not None else None
        with self._tx(write=False) as conn:
            rows = conn.execute(_ACCOUNT_BY_DIGEST, {"digest": digest}).all()
        if not rows:
            return None
        keys = [ApiKeyRecord(**{n: getattr(r, f"key_{n}") for n in _KEY_FIELDS}) for r in rows]
        return self._record(rows[0], keys, cost_log=[], adjustments=[], history=[])

    def touch_key(self, client_id: str, key_id: str, now: datetime) -> None:
        # One conditional UPDATE: a write at most once a minute per key, no record load.
        due = or_(
            api_key_rows.c.last_used_at.is_(None),
            api_key_rows.c.last_used_at <= now - access.KEY_TOUCH_INTERVAL,
        )
        with self._tx() as conn:
            found = conn.execute(
                update(api_key_rows)
                .where(api_key_rows.c.client_id == client_id, api_key_rows.c.key_id == key_id, due)
                .values(last_used_at=now)
            )
            if found.rowcount == 0 and self._key_missing(conn, client_id, key_id):
                raise KeyNotFound()

    @staticmethod
    def _key_missing(conn: Connection, client_id: str, key_id: str) -> bool:
        query = select(api_key_rows.c.id).where(
            api_key_rows.c.client_id == client_id, api_key_rows.c.key_id == key_id
        )
        return conn.execute(query).first() is None

    def list_clients(
        self,
        *,
        active: bool | None = None,
        plan: PlanId | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[ClientRecord], int]:
        conditions = []
        if active is not None:
            conditions.append(clients.c.active == active)
        if plan is not None:
            conditions.append(clients.c.plan == plan.value)
        with self._tx(write=False) as conn:
            total = conn.execute(select(func.count()).select_from(clients).where(*conditions))
            rows = conn.execute(
                select(clients)
                .where(*conditions)
                .order_by(clients.c.seq)
                .offset(offset)
                .limit(limit)
            ).all()
            return self._load(conn, rows), int(total.scalar_one())

    def refresh_cycle(self, client_id: str, now: datetime) -> ClientRecord:
        current = self.get_client(client_id)
        if current is not None and not is_expired(current.billing_cycle_end, now):
            return current
        return self.mutate(client_id, now, changes.read)

    def charge(self, client_id: str, job_id: str, cost: float, now: datetime) -> ChargeResult:
        with self._tx() as conn:
            row = self._lock_row(conn, client_id)
            if row is None:
                raise ClientNotFound()
            if not is_expired(row.billing_cycle_end, now):
                return self._charge_locked(conn, row, job_id, cost, now)
        # The cycle ended: roll it and charge with the shared rules, in one transaction.

        def change(record: ClientRecord) -> tuple[ChargeResult, bool]:
            existing = self._find_job(record.client_id, job_id)
            if existing is not None:
                return existing._replace(credits_remaining=record.credits_remaining), False
            result = ledger.charge(record, job_id, cost, now)
            return result, not result.replayed

        return self.mutate(client_id, now, change)

    def _find_job(self, client_id: str, job_id: str) -> ChargeResult | None:
        with self._tx(write=False) as conn:
            found = conn.execute(
                select(ledger_rows.c.cost, ledger_rows.c.charged_at).where(
                    ledger_rows.c.client_id == client_id, ledger_rows.c.job_id == job_id
                )
            ).first()
        if found is None:
            return None
        return ChargeResult(client_id, job_id, found.cost, found.charged_at, None, replayed=True)

    @staticmethod
    def _charge_locked(
        conn: Connection, row: Row[Any], job_id: str, cost: float, now: datetime
    ) -> ChargeResult:
        """The hot path, under the row lock: replay, checks, conditional UPDATE, ledger row."""
        cid = row.client_id
        existing = conn.execute(_FIND_JOB, {"b_client": cid, "b_job": job_id}).first()
        if existing is not None:
            return ChargeResult(
                cid, job_id, existing.cost, existing.charged_at, row.credits_remaining, True
            )
        refused = ledger.refusal(
            active=row.active,
            subscription_status=row.subscription_status,
            disputed=bool(ledger.dispute_ids(row.metadata_extra)),
            credits_remaining=row.credits_remaining,
        )
        if refused is not None:
            raise refused.error()
        spent = round(row.total_spent + cost, ledger.SPEND_DECIMALS)
        remaining = row.credits_remaining
        statement = _LOG_ONLY if remaining is None else _TAKE_CREDIT
        params = {"b_client": cid, "b_spent": spent, "b_now": now}
        if conn.execute(statement, params).rowcount != 1:
            raise CreditLimitReached()
        ledger_row = {
            "client_id": cid,
            "job_id": job_id,
            "cycle_no": row.cycle_no,
            "cost": cost,
            "charged_at": now,
        }
        conn.execute(_INSERT_LEDGER, ledger_row)
        return ChargeResult(
            cid, job_id, cost, now, None if remaining is None else remaining - 1, replayed=False
        )

    def find_client_by_stripe(
        self, *, customer_id: str | None = None, subscription_id: str | None = None
    ) -> ClientRecord | None:
        with self._tx(write=False) as conn:
            client_id = self._locate(conn, StripeRef(None, subscription_id, customer_id))
        return None if client_id is None else self.get_client(client_id)

    @staticmethod
    def _locate(conn: Connection, ref: StripeRef) -> str | None:
        for column, wanted in (
            (clients.c.client_id, ref.client_id),
            (clients.c.stripe_subscription_id, ref.subscription_id),
            (clients.c.stripe_customer_id, ref.customer_id),
        ):
            if wanted is None:
                continue
            found = conn.execute(
                select(clients.c.client_id).where(column == wanted).order_by(clients.c.seq)
            ).first()
            if found is not None:
                return str(found.client_id)
        return None

    def apply_stripe_event(
        self,
        event_id: str,
        ref: StripeRef,
        created: int,
        change: Callable[[ClientRecord], None],
        now: datetime,
        *,
        ordered: bool = True,
    ) -> tuple[EventOutcome, str | None]:
        reset = None
        try:
            with self._tx() as conn:
                client_id = self._locate(conn, ref)
                if client_id is None:
                    seen = conn.execute(
                        select(event_rows.c.event_id).where(event_rows.c.event_id == event_id)
                    ).first()
                    return (EventOutcome.DUPLICATE if seen else EventOutcome.UNMATCHED), None
                row = self._lock_row(conn, client_id)
                assert row is not None
                # Checked under the row lock: a concurrent delivery of the same event that got
                # the lock first has committed its id by now.
                seen = conn.execute(
                    select(event_rows.c.event_id).where(event_rows.c.event_id == event_id)
                ).first()
                if seen is not None:
                    return EventOutcome.DUPLICATE, None
                [before] = self._load(conn, [row])
                record = before.model_copy(deep=True)
                outcome, reset = apply_event_change(record, created, change, now, ordered=ordered)
                self._save(conn, before, record)
                conn.execute(
                    delete(event_rows).where(event_rows.c.processed_at < now - EVENT_ID_RETENTION)
                )
                conn.execute(insert(event_rows).values(event_id=event_id, processed_at=now))
        except IntegrityError:
            return EventOutcome.DUPLICATE, None
        if reset is not None:
            log_cycle_reset(record)
        return outcome, client_id

    def stripe_event_ids(self) -> dict[str, datetime]:
        with self._tx(write=False) as conn:
            return {r.event_id: r.processed_at for r in conn.execute(select(event_rows))}

    def import_stripe_event_ids(self, events: dict[str, datetime]) -> None:
        with self._tx() as conn:
            known = set(conn.execute(select(event_rows.c.event_id)).scalars())
            fresh = [
                {"event_id": k, "processed_at": v} for k, v in events.items() if k not in known
            ]
            if fresh:
                conn.execute(insert(event_rows), fresh)

    def check(self) -> None:
        with self._tx(write=False) as conn:
            conn.execute(select(1))

    def close(self) -> None:
        self._write.dispose()
        if self.dialect == "sqlite":  # on PostgreSQL both share the one pool
            self._read.dispose()


def _integrity_error(exc: IntegrityError, duplicate: str) -> BillingError:
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


def _ledger_row(client_id: str, cycle_no: int, entry: CostEntry) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "job_id": entry.job_id,
        "cycle_no": cycle_no,
        "cost": entry.cost,
        "charged_at": entry.timestamp,
    }


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


def key_row(client_id: str, key: ApiKeyRecord) -> dict[str, Any]:
    return {"client_id": client_id, **key.model_dump()}


# Last: it reads this module's tables (and is imported here so the methods above find it).
from .sql_read import load_records, record_from_row  # noqa: E402
