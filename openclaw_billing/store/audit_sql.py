"""The SQL store's audit log: one append-only table, ``openclaw_audit_log``, in the same database.

* ``id`` is the table's autoincrement key (``AUTOINCREMENT`` on SQLite, so an id is never
  reused; a sequence on PostgreSQL): strictly increasing in the order rows are inserted.
* An append is one ``INSERT`` in its own transaction on the store's write engine; it is
  committed (durable: SQLite ``synchronous=FULL``, PostgreSQL commit) before it returns.
* An admin action's event is inserted by :meth:`SqlAuditLog.insert` in the transaction of the
  change itself (``SqlBatch.keep``, ``create_client``): both commit, or neither does.
* Indexes on (client_id, id), (action, id) and (at) serve the filters, newest first.
* The table is created if missing when the store opens (``checkfirst``, under the schema's
  advisory lock on PostgreSQL), independently of the store's schema version: adding it needs no
  migration step, and a database without it gains it on the next start.

Nothing here updates or deletes a row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from itertools import islice
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from ..audit import AuditEvent, AuditLog, AuditQuery, NewAuditEvent
from ..errors import StoreCorrupt, StoreUnavailable
from .sql_schema import SCHEMA_LOCK, UtcDateTime

logger = logging.getLogger("openclaw_billing.store")

#: Rows per read when streaming an export, and per batch when importing.
_BATCH = 1000

audit_metadata = MetaData()
audit_rows = Table(
    "openclaw_audit_log",
    audit_metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UtcDateTime, nullable=False),
    Column("action", String(40), nullable=False),
    Column("client_id", String(100), nullable=True),
    Column("actor", String(120), nullable=False),
    Column("source", String(100), nullable=False),
    Column("detail", JSON, nullable=False),
    Index("ix_openclaw_audit_client", "client_id", "id"),
    Index("ix_openclaw_audit_action", "action", "id"),
    Index("ix_openclaw_audit_at", "at"),
    sqlite_autoincrement=True,
)

#: Built once: constructing a statement costs more in Python than SQLite takes to run it (an
#: admin action's event, and every job's settlement's, is one).
_INSERT_EVENT = insert(audit_rows)


class Transactions(Protocol):
    """The store's transaction factory: database errors become ``StoreUnavailable``."""

    def __call__(self, *, write: bool = True) -> AbstractContextManager[Connection]: ...


def _values(event: NewAuditEvent) -> dict[str, Any]:
    return {
        "at": event.at,
        "action": event.action.value,
        "client_id": event.client_id,
        "actor": event.actor,
        "source": event.source,
        "detail": event.detail,
    }


class SqlAuditLog(AuditLog):
    def __init__(self, tx: Transactions, *, dialect: str, location: str) -> None:
        self._tx = tx
        self.location = location
        with tx() as conn:
            if dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK)))
            audit_metadata.create_all(conn, checkfirst=True)

    def _event(self, row: Row[Any]) -> AuditEvent:
        try:
            return AuditEvent(
                id=row.id,
                at=row.at,
                action=row.action,
                client_id=row.client_id,
                actor=row.actor,
                source=row.source,
                detail=row.detail,
            )
        except ValidationError as exc:
            raise StoreCorrupt(
                f"The audit log in {self.location} holds an invalid event {row.id}: "
                f"{exc.errors()[0]['msg']}"
            ) from None

    def append(self, event: NewAuditEvent) -> AuditEvent:
        with self._tx() as conn:
            return self.insert(conn, event)

    def insert(self, conn: Connection, event: NewAuditEvent) -> AuditEvent:
        """Insert ``event`` in the caller's transaction (it commits with the caller's change).
        A refused insert (a trigger, a check) is ``StoreUnavailable``: the table has no key a
        caller could collide with."""
        try:
            result = conn.execute(_INSERT_EVENT, _values(event))
        except IntegrityError as exc:
            logger.warning("The audit log refused an event: %s", type(exc.orig).__name__)
            raise StoreUnavailable() from exc
        inserted = result.inserted_primary_key
        assert inserted is not None  # a single-row INSERT always has one
        return AuditEvent(id=int(inserted[0]), **event.model_dump())

    def import_events(self, events: Iterable[NewAuditEvent]) -> int:
        count = 0
        iterator = iter(events)
        # One transaction: an import lands whole or not at all. Rows are inserted one
        # statement after another, so their ids follow the order given.
        with self._tx() as conn:
            while batch := list(islice(iterator, _BATCH)):
                conn.execute(_INSERT_EVENT, [_values(e) for e in batch])
                count += len(batch)
        return count

    def export(self) -> Iterator[AuditEvent]:
        last = 0
        while True:
            with self._tx(write=False) as conn:
                rows = conn.execute(
                    select(audit_rows)
                    .where(audit_rows.c.id > last)
                    .order_by(audit_rows.c.id)
                    .limit(_BATCH)
                ).all()
            if not rows:
                return
            for row in rows:
                yield self._event(row)
            last = rows[-1].id

    def _query(self, wanted: AuditQuery) -> tuple[list[AuditEvent], int]:
        conditions = []
        if wanted.client_id is not None:
            conditions.append(audit_rows.c.client_id == wanted.client_id)
        if wanted.action is not None:
            conditions.append(audit_rows.c.action == wanted.action.value)
        if wanted.since is not None:
            conditions.append(audit_rows.c.at >= wanted.since)
        if wanted.until is not None:
            conditions.append(audit_rows.c.at < wanted.until)
        with self._tx(write=False) as conn:
            total = conn.execute(select(func.count()).select_from(audit_rows).where(*conditions))
            rows = conn.execute(
                select(audit_rows)
                .where(*conditions)
                .order_by(audit_rows.c.id.desc())
                .offset(wanted.offset)
                .limit(wanted.limit)
            ).all()
            count = int(total.scalar_one())
        return [self._event(r) for r in rows], count
