"""One batch of mutations on the JSON store, under the file lock (see
:class:`~.mutating.Staged`): working copies of the clients it touches, and for each one kept,
its record and its line, rendered and checked once, so that the whole batch is one file write
and one fsync.
"""

from __future__ import annotations

from typing import Protocol

from ..audit import NewAuditEvent
from ..errors import BillingError, DuplicateClient, UnstorableChange
from ..jobs import StoredJob
from ..models import ClientRecord
from .json_format import State, record_digests
from .mutating import WorkingCopies


class Checked(Protocol):
    """Renders a record's line and parses it back: the line and the record as parsed; raises
    ``UnstorableChange`` if it would not load."""

    def __call__(self, record: ClientRecord, *, last: bool) -> tuple[bytes, ClientRecord]: ...


class JsonBatch(WorkingCopies):
    def __init__(self, state: State, checked: Checked) -> None:
        super().__init__(state.clients)
        self._state = state
        self._checked = checked
        #: Key digests that records kept in this batch hold -> their client.
        self._claimed: dict[str, str] = {}
        #: The records kept, by client (as parsed back from their lines, so later changes of
        #: the working copies cannot reach them), and their checked lines.
        self.kept: dict[str, ClientRecord] = {}
        self.lines: dict[str, bytes] = {}
        self.events: list[NewAuditEvent] = []

    @property
    def records(self) -> list[ClientRecord]:
        return list(self.kept.values())

    def keep(
        self,
        client_id: str,
        record: ClientRecord | None,
        event: NewAuditEvent | None,
        job: StoredJob | None = None,
    ) -> None:
        if job is not None:
            raise UnstorableChange("This store does not keep jobs")
        if record is not None:
            last = self._state.positions[client_id] == len(self._state.lines) - 1
            try:
                self._check_new_keys(record)
                line, parsed = self._checked(record, last=last)
            except BillingError:
                self.restore(client_id)
                raise
            self.kept[client_id], self.lines[client_id] = parsed, line
            self._claimed.update(dict.fromkeys(record_digests(record), client_id))
        if event is not None:
            self.events.append(event)

    def stored_job(self, client_id: str, job_id: str) -> StoredJob | None:
        return None

    def _check_new_keys(self, record: ClientRecord) -> None:
        """A key of ``record`` must not be another client's (digests are unique), in the file
        or in this batch."""
        for digest in record_digests(record):
            owner = self._claimed.get(digest) or self._state.by_digest.get(digest)
            if owner is not None and owner != record.client_id:
                raise DuplicateClient("This key already belongs to another client")

    def restore(self, client_id: str) -> ClientRecord:
        """The client as this batch last kept it, or as the file has it (a copy)."""
        kept = self.kept.get(client_id) or self._state.clients[client_id]
        working = self._working[client_id] = kept.model_copy(deep=True)
        return working
