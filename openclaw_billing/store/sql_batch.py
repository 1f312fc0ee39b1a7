"""One batch of mutations and charges on the SQL store, in one transaction under the clients'
row locks (see :class:`~.mutating.Staged`).

The rows are locked first, in one order (by id), so two batches never wait for each other;
a whole record is loaded only for a mutation that needs it (a charge works on the row, see
:mod:`.sql_charge`, and so does a job's move, see :mod:`.sql_settle`). Each mutation's write
runs in a savepoint: a refused one (a key digest another client has, an audit event the
database refuses) is undone alone, and the batch's other changes commit together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Executable

from .. import cycles, ledger
from ..audit import NewAuditEvent
from ..errors import BillingError
from ..jobs import StoredJob
from ..models import ClientRecord
from . import sql_charge
from .audit_sql import SqlAuditLog
from .mutating import WorkingCopies
from .sql_charge import find_job, job_values
from .sql_engine import integrity_error
from .sql_schema import job_rows
from .sql_write import save

Loader = Callable[[Connection, Sequence[Row[Any]]], list[ClientRecord]]
#: One statement to run, with its parameters.
Write = tuple[Executable, dict[str, Any]]


class SqlBatch(WorkingCopies):
    def __init__(
        self,
        conn: Connection,
        load: Loader,
        audit: SqlAuditLog,
        client_ids: Sequence[str],
    ) -> None:
        #: ``stored``: each client loaded so far as the transaction holds it now (what a
        #: write is compared with), updated as mutations are kept.
        self._kept: dict[str, ClientRecord] = {}
        super().__init__(self._kept)
        self.conn = conn
        self._load = load
        self._audit = audit
        #: Mutations of each client still to come: only then is a kept state copied.
        self._left = Counter(client_ids)
        #: Each client's row as locked (None: no such client), until a charge changes it.
        self._rows: dict[str, Row[Any] | None] = {}
        for cid in sorted(set(client_ids)):
            self._rows[cid] = sql_charge.lock_row(conn, cid)

    def row(self, client_id: str) -> Row[Any] | None:
        """The client's row as it stands in the transaction now."""
        if client_id not in self._rows:
            self._rows[client_id] = sql_charge.lock_row(self.conn, client_id)
        return self._rows[client_id]

    def current_row(
        self, client_id: str, now: datetime, resets: list[tuple[str, int | None]]
    ) -> Row[Any] | None:
        """The client's locked row for a mutation done on it (a charge, a settlement), its
        cycle current: an ended cycle is rolled first with the shared rules, on the whole
        record, and kept even if the mutation is then refused (the reset noted in
        ``resets``). None: no such client (the mutation is :meth:`done`)."""
        row = self.row(client_id)
        if row is None:
            self.done(client_id, wrote=False)
            return None
        if not cycles.is_expired(row.billing_cycle_end, now):
            return row
        resets.append((client_id, self.roll(client_id, now)))
        row = self.row(client_id)
        assert row is not None  # locked by this transaction
        return row

    def done(self, client_id: str, *, wrote: bool) -> None:
        """A mutation of the client on its row (a charge, a settlement) is done; if it
        ``wrote`` the client's rows, read them again when next needed."""
        self._left[client_id] -= 1
        if not wrote:
            return
        self._rows.pop(client_id, None)
        self._kept.pop(client_id, None)
        self._working.pop(client_id, None)

    def write(
        self, client_id: str, statements: Sequence[Write], event: NewAuditEvent | None
    ) -> None:
        """Keep one mutation done on the client's row (see :meth:`done`): run its
        ``statements`` and insert its audit ``event`` in a savepoint, as :meth:`keep` writes a
        record: a write the database refuses is undone alone and raised as a
        ``BillingError``."""
        wrote = bool(statements) or event is not None
        try:
            if wrote:
                with self.conn.begin_nested():
                    for statement, values in statements:
                        self.conn.execute(statement, values)
                    if event is not None:
                        self._audit.insert(self.conn, event)
        except IntegrityError as exc:
            raise integrity_error(exc, "This key already belongs to another client") from None
        finally:
            self.done(client_id, wrote=wrote)

    def roll(self, client_id: str, now: datetime) -> int | None:
        """Start the client's current cycle (its stored one has ended) and keep it, for a
        charge that follows; returns the new cycle's allowance."""
        record = self.record(client_id)
        assert record is not None  # called with a locked row
        self._left[client_id] += 1  # the charge that follows is still to come
        ledger.roll_cycle(record, now)
        self.keep(client_id, record, None)
        return record.metadata.cycle_allowance

    def record(self, client_id: str) -> ClientRecord | None:
        self._left[client_id] -= 1
        if client_id not in self._kept:
            row = self.row(client_id)
            if row is None:
                return None
            [self._kept[client_id]] = self._load(self.conn, [row])
        return super().record(client_id)

    def stored_job(self, client_id: str, job_id: str) -> StoredJob | None:
        return find_job(self.conn, client_id, job_id)

    def active_jobs(self, client_id: str) -> int:
        return sql_charge.active_jobs(self.conn, client_id)

    def keep(
        self,
        client_id: str,
        record: ClientRecord | None,
        event: NewAuditEvent | None,
        job: StoredJob | None = None,
        *,
        replace: bool = False,
    ) -> None:
        again = self._left[client_id] > 0
        try:
            with self.conn.begin_nested():  # undone alone if refused
                if record is not None:
                    save(self.conn, self._kept[client_id], record)
                if event is not None:
                    self._audit.insert(self.conn, event)
                if job is not None and replace:
                    sql_charge.update_job(self.conn, job)
                elif job is not None:
                    self.conn.execute(job_rows.insert(), job_values(job))
        except (IntegrityError, BillingError) as exc:
            if again:
                self.restore(client_id)
            if isinstance(exc, IntegrityError):
                raise integrity_error(exc, "This key already belongs to another client") from None
            raise
        if record is not None:
            self._rows.pop(client_id, None)  # its row changed: read it again if needed
            self._kept[client_id] = record.model_copy(deep=True) if again else record
