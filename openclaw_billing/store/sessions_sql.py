"""The SQL store's sessions: the ``openclaw_sessions`` table (digests only), created beside
the store's tables when the store is opened. Each operation is one short transaction."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import (
    Column,
    Connection,
    Index,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
)

from ..sessions import MAX_SESSIONS_PER_SUBJECT, Session, SessionKind, SessionStore
from .audit_sql import Transactions
from .sql_engine import logger
from .sql_schema import SCHEMA_LOCK, UtcDateTime

session_metadata = MetaData()
session_rows = Table(
    "openclaw_sessions",
    session_metadata,
    Column("digest", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("binding", String(64), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_openclaw_sessions_subject", "kind", "subject", "created_at"),
    Index("ix_openclaw_sessions_expiry", "expires_at"),
)


class SqlSessionStore(SessionStore):
    def __init__(self, tx: Transactions, *, dialect: str) -> None:
        self._tx = tx
        with tx() as conn:
            if dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK)))
            session_metadata.create_all(conn, checkfirst=True)

    def create(self, session: Session, now: datetime) -> None:
        with self._tx() as conn:
            conn.execute(delete(session_rows).where(session_rows.c.expires_at <= now))
            self._trim(conn, session.kind, session.subject)
            conn.execute(insert(session_rows).values(session.model_dump()))

    @staticmethod
    def _trim(conn: Connection, kind: SessionKind, subject: str) -> None:
        """Leave room for one more session of the subject under the cap."""
        mine = (
            select(session_rows.c.digest)
            .where(session_rows.c.kind == kind.value, session_rows.c.subject == subject)
            .order_by(session_rows.c.created_at.desc(), session_rows.c.digest)
            .offset(MAX_SESSIONS_PER_SUBJECT - 1)
        )
        oldest = conn.execute(mine).scalars().all()
        if oldest:
            conn.execute(delete(session_rows).where(session_rows.c.digest.in_(oldest)))

    def get(self, digest: str, now: datetime) -> Session | None:
        with self._tx(write=False) as conn:
            row = conn.execute(select(session_rows).where(session_rows.c.digest == digest)).first()
        if row is None:
            return None
        try:
            session = Session.model_validate(dict(row._mapping))
        except ValidationError:  # a row edited by hand: no session, never a 500
            logger.warning("Ignoring an invalid row of openclaw_sessions")
            return None
        return session if session.live(now) else None

    def end(self, digest: str) -> None:
        with self._tx() as conn:
            conn.execute(delete(session_rows).where(session_rows.c.digest == digest))

    def end_subject(self, kind: SessionKind, subject: str) -> int:
        with self._tx() as conn:
            result = conn.execute(
                delete(session_rows).where(
                    session_rows.c.kind == kind.value, session_rows.c.subject == subject
                )
            )
            return int(result.rowcount)
