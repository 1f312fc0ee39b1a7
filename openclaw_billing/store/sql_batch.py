"""One batch of mutations on the SQL store, in one transaction under the clients' row locks
(see :class:`~.mutating.Staged`). Each mutation's write runs in a savepoint: a refused one (a
key digest another client has, an audit event the database refuses) is undone alone, and the
batch's other changes commit together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from ..audit import NewAuditEvent
from ..errors import BillingError
from ..models import ClientRecord
from .audit_sql import SqlAuditLog
from .mutating import WorkingCopies
from .sql_engine import integrity_error
from .sql_write import save


class SqlBatch(WorkingCopies):
    def __init__(
        self,
        conn: Connection,
        stored: dict[str, ClientRecord],
        audit: SqlAuditLog,
        client_ids: Sequence[str],
    ) -> None:
        #: ``stored``: each client as the transaction holds it now (what a write is compared
        #: with), updated as mutations are kept.
        super().__init__(stored)
        self._kept = stored
        self._conn = conn
        self._audit = audit
        #: Mutations of each client still to come: only then is a kept state copied.
        self._left = Counter(client_ids)

    def record(self, client_id: str) -> ClientRecord | None:
        self._left[client_id] -= 1
        return super().record(client_id)

    def keep(
        self, client_id: str, record: ClientRecord | None, event: NewAuditEvent | None
    ) -> None:
        again = self._left[client_id] > 0
        try:
            with self._conn.begin_nested():  # undone alone if refused
                if record is not None:
                    save(self._conn, self._kept[client_id], record)
                if event is not None:
                    self._audit.insert(self._conn, event)
        except (IntegrityError, BillingError) as exc:
            if again:
                self.restore(client_id)
            if isinstance(exc, IntegrityError):
                raise integrity_error(exc, "This key already belongs to another client") from None
            raise
        if record is not None:
            self._kept[client_id] = record.model_copy(deep=True) if again else record
