"""SQL backend on SQLAlchemy 2 Core: SQLite (one machine) and PostgreSQL (several gateways).

* Charge is the hot path: the client's row is locked (``SELECT ... FOR UPDATE`` on
  PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` takes the write lock up front), then one conditional
  ``UPDATE ... WHERE credits_remaining > 0`` and the ledger insert commit together. ``job_id``
  is unique per client, for every cycle, not only the last two.
* A job's move (``Settle``, ``MarkMeter``) works on the locked row too, the job's row and its
  ledger row (:mod:`.sql_settle`), deciding by the rules of :mod:`openclaw_billing.outcomes`.
* The rarer primitives lock the row, load the whole record, apply the very transitions of
  :mod:`openclaw_billing.ledger` the JSON store applies, and write back what changed.
* SQLite runs in WAL mode with a busy timeout and immediate transactions, so "database is
  locked" never reaches a client; a lock still held after the timeout is a 503.
* The schema and its upgrades are in :mod:`.sql_schema`, the engines in :mod:`.sql_engine`,
  reading a record in :mod:`.sql_read` and writing one back in :mod:`.sql_write`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Row, delete, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .. import access
from ..audit import NewAuditEvent
from ..errors import (
    BillingError,
    ClientNotFound,
    DuplicateClient,
    KeyNotFound,
    StoreUnavailable,
)
from ..jobs import Charged, StoredJob
from ..models import ClientRecord
from ..outcomes import Settled
from . import sql_charge, sql_query
from .audit_sql import SqlAuditLog
from .base import (
    EVENT_ID_RETENTION,
    Charge,
    EventOutcome,
    MarkMeter,
    Outcome,
    Settle,
    StripeRef,
)
from .mutating import MutatingStore, Staged, apply_event_change, log_cycle_reset
from .query import FIRST_PAGE, ClientQuery, StoreOverview
from .sessions_sql import SqlSessionStore
from .sql_batch import SqlBatch
from .sql_charge import charge_locked, client_jobs, find_job, import_jobs, lock_row
from .sql_engine import integrity_error, logger, open_engines
from .sql_read import key_missing, load_account, load_records, locate
from .sql_schema import (
    api_key_rows,
    clients,
    create_schema,
    event_rows,
)
from .sql_settle import move_on_row
from .sql_write import columns, save


class SqlStore(MutatingStore):
    """SQLite (``sqlite:///path``) or PostgreSQL (``postgresql+psycopg://...``).

    A read that takes several statements (a record: its row, keys, ledger, adjustments and
    summaries; a page and its total) sees one snapshot: on SQLite a read transaction does, on
    PostgreSQL reads run REPEATABLE READ, READ ONLY (set on the connection by the driver, no
    extra round trip), where READ COMMITTED would let a charge commit between two of them."""

    audit: SqlAuditLog

    def __init__(self, url: str, *, lock_timeout: float = 10.0) -> None:
        self.dialect, self.location, self._write, self._read = open_engines(url, lock_timeout)
        self._lock_timeout = lock_timeout
        self._writers: threading.Lock | None = (
            threading.Lock() if self.dialect == "sqlite" else None
        )
        try:
            with self._write.begin() as conn:
                create_schema(conn, dialect=self.dialect, location=self.location)
        except DBAPIError as exc:
            raise StoreUnavailable(
                f"Cannot open the billing database {self.location}: {type(exc.orig).__name__}"
            ) from exc
        self.audit = SqlAuditLog(self._tx, dialect=self.dialect, location=self.location)
        self.sessions = SqlSessionStore(self._tx, dialect=self.dialect)

    # -- plumbing ---------------------------------------------------------------------------

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
        return lock_row(conn, client_id)

    def _load(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[ClientRecord]:
        """Whole records for client rows (see :func:`.sql_read.load_records`)."""
        return load_records(conn, rows, self.location)

    @contextmanager
    def _batch(self, client_ids: Sequence[str]) -> Iterator[Staged]:
        try:
            with self._tx() as conn:
                yield SqlBatch(conn, self._load, self.audit, client_ids)
        except IntegrityError as exc:
            raise integrity_error(exc, "This key already belongs to another client") from None

    def _charge(
        self, staged: Staged, op: Charge, resets: list[tuple[str, int | None]]
    ) -> Outcome[Charged]:
        # The ledger table, not the record, says whether the id was ever charged.
        batch = cast(SqlBatch, staged)
        row = batch.current_row(op.client_id, op.now, resets)
        if row is None:
            return Outcome(error=ClientNotFound())
        try:
            charged = charge_locked(batch.conn, row, op)
        except BillingError as exc:  # decided before anything was written
            batch.done(op.client_id, wrote=False)
            return Outcome(error=exc)
        batch.done(op.client_id, wrote=True)
        return Outcome(charged)

    def _settle(
        self, staged: Staged, op: Settle | MarkMeter, resets: list[tuple[str, int | None]]
    ) -> Outcome[Settled]:
        # On the locked row, the job's row and its ledger row (see .sql_settle).
        batch = cast(SqlBatch, staged)
        row = batch.current_row(op.client_id, op.now, resets)
        if row is None:
            return Outcome(error=ClientNotFound())
        try:
            settled, writes = move_on_row(batch.conn, row, op, self.location)
        except BillingError as exc:  # decided before anything was written
            batch.done(op.client_id, wrote=False)
            return Outcome(error=exc)
        # Outside the try, as for every mutation: an audit that fails is a bug.
        audit = op.audit if isinstance(op, Settle) else None
        event = None if audit is None else audit(settled)
        try:
            batch.write(op.client_id, writes, event)
        except BillingError as exc:
            return Outcome(error=exc)
        return Outcome(settled)

    # -- Store API ------------------------------------------------------------------------

    def create_client(self, record: ClientRecord, *, audit: NewAuditEvent | None = None) -> None:
        try:
            with self._tx() as conn:
                conn.execute(insert(clients).values(columns(record)))
                empty = record.model_copy(deep=True)
                empty.metadata.cost_log, empty.metadata.credit_adjustments = [], []
                empty.metadata.cycle_history = []
                empty.api_keys = []
                save(conn, empty, record, new_record=True)
                if audit is not None:
                    self.audit.insert(conn, audit)
        except IntegrityError as exc:
            raise integrity_error(exc, DuplicateClient.message) from None

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
            return load_account(conn, digest, self.location)

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
            if found.rowcount == 0 and key_missing(conn, client_id, key_id):
                raise KeyNotFound()

    def list_clients(self, query: ClientQuery = FIRST_PAGE) -> tuple[list[ClientRecord], int]:
        with self._tx(write=False) as conn:
            rows, total = sql_query.page(conn, query)
            return self._load(conn, rows), total

    def overview(self, now: datetime) -> StoreOverview:
        with self._tx(write=False) as conn:
            return sql_query.overview(conn, now, self.location)

    # -- jobs (JobStorage) -------------------------------------------------------------------

    def get_job(self, client_id: str, job_id: str) -> StoredJob | None:
        with self._tx(write=False) as conn:
            return find_job(conn, client_id, job_id)

    def client_jobs(self, client_id: str, since: datetime | None = None) -> list[StoredJob]:
        with self._tx(write=False) as conn:
            return client_jobs(conn, client_id, since)

    def active_jobs(self, client_id: str) -> int:
        with self._tx(write=False) as conn:
            return sql_charge.active_jobs(conn, client_id)

    def jobs_by_id(self, job_id: str) -> list[StoredJob]:
        with self._tx(write=False) as conn:
            return sql_charge.jobs_by_id(conn, job_id)

    def expired_holds(self, now: datetime, limit: int) -> list[StoredJob]:
        with self._tx(write=False) as conn:
            return sql_charge.expired_holds(conn, now, limit)

    def pending_meter_reports(self, limit: int) -> list[StoredJob]:
        with self._tx(write=False) as conn:
            return sql_charge.pending_meter_reports(conn, limit)

    def import_jobs(self, jobs: Sequence[StoredJob]) -> int:
        with self._tx() as conn:
            return import_jobs(conn, jobs)

    def find_client_by_stripe(
        self, *, customer_id: str | None = None, subscription_id: str | None = None
    ) -> ClientRecord | None:
        with self._tx(write=False) as conn:
            client_id = locate(conn, StripeRef(None, subscription_id, customer_id))
        return None if client_id is None else self.get_client(client_id)

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
                client_id = locate(conn, ref)
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
                save(conn, before, record)
                conn.execute(
                    delete(event_rows).where(event_rows.c.processed_at < now - EVENT_ID_RETENTION)
                )
                conn.execute(insert(event_rows).values(event_id=event_id, processed_at=now))
        except IntegrityError:
            return EventOutcome.DUPLICATE, None
        if reset is not None:
            log_cycle_reset(client_id, record.metadata.cycle_allowance)
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
