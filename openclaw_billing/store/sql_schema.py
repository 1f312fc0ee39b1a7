"""The SQL store's schema: its tables, their version and the steps that upgrade an older one.

The schema is versioned in ``openclaw_schema_version`` and created at start, under a lock so
several workers starting together do not race (PostgreSQL: an advisory lock; SQLite: the write
transaction). An upgrade runs in that same transaction: all or nothing.

Tables: clients, ledger (one row per charged job, with the cycle number it belongs to), credit
adjustments, cycle summaries, processed Stripe event ids, schema version.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    inspect,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Dialect

from ..errors import StoreCorrupt
from .query import fold

logger = logging.getLogger("openclaw_billing.store")

#: 1: the first release. 2: several API keys per client (``openclaw_api_keys``), and each
#: client's rate-limit override and IP allowlist. 3: every column holding credits, amounts,
#: counts, Unix times or row ids is 64-bit (BIGINT; a 32-bit ``stripe_event_at`` refused
#: every Stripe event after January 2038 on PostgreSQL). 4: what the operator's reads need
#: (:mod:`.sql_query`): each client's folded name and email and the jobs of its cycle, and
#: which ledger rows a record no longer holds; with their indexes. 5: the jobs accepted with
#: their charges (a new table, which ``create_all`` adds to an older database).
SCHEMA_VERSION = 6

#: An arbitrary constant: the PostgreSQL advisory lock that serialises schema creation.
SCHEMA_LOCK = 0x0C1A_B111


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

#: Text compared by code point on every backend (SQLite's default; PostgreSQL's "C" collation).
FoldedText = Text().with_variant(Text(collation="C"), "postgresql")

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
    #: Version 4. ``query.fold`` of the name and the email: what search and the name order
    #: read, compared by code point (PostgreSQL: the "C" collation, as SQLite and Python).
    #: ``cycle_jobs``: the jobs charged in the stored cycle (its ledger rows; the charge adds
    #: one, every other write sets it from the record).
    Column("name_key", FoldedText, nullable=False),
    Column("email_key", FoldedText, nullable=False),
    Column("cycle_jobs", BigInteger, nullable=False, default=0),
    #: Version 6: the client's own cap of jobs queued or running (None: its plan's).
    Column("max_active_jobs", BigInteger, nullable=True),
    #: The name order; a search reads the second index alone; the overview counts clients by
    #: plan and standing from the third, past due and paying subscriptions from the fourth.
    #: None is on a column the charge changes.
    Index("ix_openclaw_clients_name", "name_key"),
    Index("ix_openclaw_clients_search", "name_key", "email_key", "client_id"),
    Index("ix_openclaw_clients_plan", "plan", "active"),
    Index("ix_openclaw_clients_status", "subscription_status", "plan", "stripe_subscription_id"),
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
    #: Version 4: a row of a cycle older than the previous one, which the client's record no
    #: longer holds (set when a cycle ends; kept so that a job id is never charged twice).
    Column("archived", Boolean, nullable=False, default=False),
    #: Version 6: the credits the job takes (held, or charged once settled) and whether its
    #: hold is open.
    Column("credits", BigInteger, nullable=False, default=1),
    Column("held", Boolean, nullable=False, default=False),
    UniqueConstraint("client_id", "job_id", name="uq_openclaw_ledger_job"),
    Index("ix_openclaw_ledger_cycle", "client_id", "cycle_no"),
)
#: Version 4: the jobs of a day among the rows records hold, counted from the index alone. The
#: condition is written as the queries write it (SQLite's planner matches it by its form), and
#: its column is in the index too, so that SQLite counts without reading the table.
_HELD = ~ledger_rows.c.archived
Index(
    "ix_openclaw_ledger_day",
    ledger_rows.c.charged_at,
    ledger_rows.c.archived,
    sqlite_where=_HELD,
    postgresql_where=_HELD,
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
    #: Version 6: the credits the cycle's jobs took (None: one per job).
    Column("credits", BigInteger, nullable=True),
    UniqueConstraint("client_id", "cycle_no", name="uq_openclaw_summary_cycle"),
)
#: Version 5: each job accepted with its charge, written in the charge's transaction.
job_rows = Table(
    "openclaw_jobs",
    metadata_obj,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("client_id", String(64), ForeignKey("openclaw_clients.client_id"), nullable=False),
    Column("job_id", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    #: The job's fields as a JSON object of strings.
    Column("fields", Text, nullable=False),
    Column("request_hash", String(128)),
    Column("credits_remaining", BigInteger),
    #: Version 6: where the job is, until when its hold lasts (None: no hold: a job charged
    #: at intake), and the rest of its life as JSON (receipt, failure class, usage, times).
    Column("status", String(16), nullable=False, default="queued"),
    Column("hold_until", UtcDateTime, nullable=True),
    Column("outcome", Text, nullable=True),
    #: Version 6: where the report of the job's usage to Stripe stands (the receipt's
    #: ``meter.state``, also in ``outcome``; None: nothing to report), so that the sender
    #: finds the pending ones from the index alone.
    Column("meter_state", String(16), nullable=True),
    UniqueConstraint("client_id", "job_id", name="uq_openclaw_jobs_job"),
    Index("ix_openclaw_jobs_created", "client_id", "created_at"),
    Index("ix_openclaw_jobs_status", "client_id", "status"),
    Index("ix_openclaw_jobs_hold", "status", "hold_until"),
    Index("ix_openclaw_jobs_id", "job_id"),
    Index("ix_openclaw_jobs_meter", "meter_state", "id"),
)
event_rows = Table(
    "openclaw_stripe_events",
    metadata_obj,
    Column("event_id", String(255), primary_key=True),
    Column("processed_at", UtcDateTime, nullable=False, index=True),
)


def create_schema(conn: Connection, *, dialect: str, location: str) -> None:
    """Create what is missing and bring an older schema up to ``SCHEMA_VERSION``, in the
    caller's write transaction."""
    if dialect == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK)))
    metadata_obj.create_all(conn, checkfirst=True)
    found = conn.execute(select(schema_version.c.version)).scalars().all()
    if not found:
        conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
    elif max(found) > SCHEMA_VERSION:
        raise StoreCorrupt(
            f"The billing database {location} has schema version {max(found)}; "
            f"this release reads version {SCHEMA_VERSION}"
        )
    elif max(found) < SCHEMA_VERSION:
        upgrade(conn, max(found), dialect=dialect, location=location)


def upgrade(conn: Connection, version: int, *, dialect: str, location: str) -> None:
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
        widen_integers(conn, dialect=dialect)
    if version < 4:
        add_query_columns(conn)
    if version < 6:
        add_outcome_columns(conn)
    conn.execute(update(schema_version).values(version=SCHEMA_VERSION))
    logger.warning(
        "Upgraded the billing database %s from schema version %d to %d",
        location,
        version,
        SCHEMA_VERSION,
    )


def widen_integers(conn: Connection, *, dialect: str) -> None:
    """Version 3: every BIGINT column of the tables (and the sequences behind their row
    ids) was a 32-bit INTEGER before. SQLite's INTEGER is already 64-bit: nothing to do
    there but move the version."""
    if dialect != "postgresql":
        return
    for table in (clients, api_key_rows, ledger_rows, adjustment_rows, summary_rows):
        # The columns a later version adds are not there yet (they come 64-bit).
        there = {column["name"] for column in inspect(conn).get_columns(table.name)}
        wide = [c for c in table.columns if isinstance(c.type, BigInteger) and c.name in there]
        changes = ", ".join(f'ALTER COLUMN "{c.name}" TYPE BIGINT' for c in wide)
        conn.exec_driver_sql(f"ALTER TABLE {table.name} {changes}")
        for column in wide:
            if column.primary_key:
                sequence = conn.execute(
                    select(func.pg_get_serial_sequence(table.name, column.name))
                ).scalar()
                if sequence is not None:
                    conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} AS BIGINT")


def add_query_columns(conn: Connection) -> None:
    """Version 4: the clients' folded name and email (computed here by the same
    :func:`.query.fold` every write uses, not by the database's own case rules) and the jobs of
    their stored cycle; the ledger rows older than the previous cycle marked archived; the
    indexes of the operator's reads."""
    added = (
        (clients.c.name_key, "''"),
        (clients.c.email_key, "''"),
        (clients.c.cycle_jobs, "0"),
        (ledger_rows.c.archived, "false"),
    )
    for column, default in added:
        kind = column.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(
            f"ALTER TABLE {column.table.name} ADD COLUMN {column.name} {kind} "
            f"NOT NULL DEFAULT {default}"
        )
    rows = conn.execute(select(clients.c.seq, clients.c.name, clients.c.email)).all()
    if rows:
        conn.execute(
            update(clients)
            .where(clients.c.seq == bindparam("b_seq"))
            .values(name_key=bindparam("b_name"), email_key=bindparam("b_email")),
            [{"b_seq": r.seq, "b_name": fold(r.name), "b_email": fold(r.email)} for r in rows],
        )
    own = ledger_rows.c.client_id == clients.c.client_id
    conn.execute(
        update(clients).values(
            cycle_jobs=select(func.count())
            .where(own, ledger_rows.c.cycle_no == clients.c.cycle_no)
            .scalar_subquery()
        )
    )
    conn.execute(
        update(ledger_rows)
        .where(ledger_rows.c.cycle_no < select(clients.c.cycle_no - 1).where(own).scalar_subquery())
        .values(archived=True)
    )
    for index in (*clients.indexes, *ledger_rows.indexes):
        index.create(conn, checkfirst=True)


def add_outcome_columns(conn: Connection) -> None:
    """Version 6: charging by outcome. The jobs' status, hold and outcome (a job stored before
    has no hold: it was charged at intake) and the state of their usage's report to Stripe
    (none before), the ledger's credits per job (one each before) and open holds, the
    summaries' credits, the clients' own concurrency caps; the jobs' indexes.
    A column already there (the jobs table made by this very upgrade) is left as it is."""
    added = (
        (clients.c.max_active_jobs, None),
        (ledger_rows.c.credits, "1"),
        (ledger_rows.c.held, "false"),
        (summary_rows.c.credits, None),
        (job_rows.c.status, "'queued'"),
        (job_rows.c.hold_until, None),
        (job_rows.c.outcome, None),
        (job_rows.c.meter_state, None),
    )
    there = {
        table.name: {c["name"] for c in inspect(conn).get_columns(table.name)}
        for table in (clients, ledger_rows, summary_rows, job_rows)
    }
    for column, default in added:
        if column.name in there[column.table.name]:
            continue
        kind = column.type.compile(dialect=conn.dialect)
        rule = "" if default is None else f" NOT NULL DEFAULT {default}"
        conn.exec_driver_sql(
            f"ALTER TABLE {column.table.name} ADD COLUMN {column.name} {kind}{rule}"
        )
    for index in job_rows.indexes:
        index.create(conn, checkfirst=True)
