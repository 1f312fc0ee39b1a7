"""The embedded default store: a JSON snapshot and an append-only journal beside it.

Protocol (see docs/ARCHITECTURE.md, "Storage protocols"):

* the state is the snapshot (``<file>``, one JSON document laid out one client per line and one
  job per line, :mod:`.json_format`) with its journal replayed on top (``<file>.journal-<n>``,
  one checksummed JSON line per change, :mod:`.json_journal`);
* every write runs under :class:`FileLock` (threads and processes): it first reads what other
  workers appended since it last looked, so no update is ever lost, then appends its batch's
  lines with one ``write`` and one ``fsync``. A charge is a small delta (client, job id, cost,
  time, credits left, and the job accepted with it, in the same line), and so is a job's move
  (the job, its client's credits and spend after it), so their cost grows neither with the
  number of clients nor with the client's history; other changes write the changed record
  whole. Everything a batch writes is checked first by parsing it back as a
  reader would: nothing the store accepts can make it fail to load;
* a worker catches up by reading only the journal's bytes after the point it has applied
  (``stat`` tells whether there are any); reads are then served from memory. A write cut short
  by a crash leaves a torn last batch: it is ignored, and the next writer cuts it off. Damage
  anywhere else (a line that fails its checksum or does not parse, followed by a complete
  batch) stops the store with :class:`StoreCorrupt` naming the file;
* once the journal outgrows the snapshot (within bounds, :data:`.json_replica.COMPACT_MIN` and
  ``COMPACT_MAX``), the writer compacts: the state is written as the next generation's
  snapshot (temp file, fsync, ``os.replace``, fsync of the directory), its journal is started
  (a header line naming the snapshot), and the journals before the previous one are removed. A
  crash at any step leaves the old snapshot with its journal or the new one (with its journal,
  or none yet): the same state, nothing lost or applied twice. Another worker that has read
  the old journal to the point the new snapshot names takes it without parsing it;
* temp files left by a crash are swept when the store is opened;
* an admin action's audit event is written in the same journal write as its change (its
  batch's ``a`` line, the store's outbox, with the id the audit log will give it), and only
  then appended to the audit log (``<file>.audit.jsonl``), under the log's lock held across
  both writes. Events of the outbox that the log lacks (a crash between the two writes, a
  failed append) are appended before any append or read of the log, and when the store is
  opened, by id, so none is lost or written twice (see :mod:`.audit_json`). A charge carries no
  event: it never touches the log;
* a file that does not parse or validate raises :class:`StoreCorrupt` naming the file, and is
  never overwritten;
* a file of the previous release (one document, no journal) loads as a snapshot without a
  journal, and one in the original module's format (plaintext ``api_key``) loads, its keys
  keep working; the first write compacts either into this format (the original after a backup
  copy is made).

The store keeps the jobs accepted with their charges (:class:`~.capabilities.JobStorage`), in
memory by client and id, in the journal's lines and in the snapshot.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import cast

from .. import access
from ..audit import AuditEvent, NewAuditEvent
from ..errors import ClientNotFound, DuplicateClient, StoreUnavailable
from ..jobs import Charged, StoredJob
from ..models import ClientRecord
from ..outcomes import Settled
from .audit_json import JsonAuditLog, audit_path
from .base import (
    EVENT_ID_RETENTION,
    Charge,
    EventOutcome,
    MarkMeter,
    Outcome,
    Settle,
    StripeRef,
)
from .capabilities import MAX_SAME_ID
from .filelock import FileLock
from .files import private_directory
from .json_batch import JsonBatch
from .json_format import record_digests
from .json_journal import audit_entry
from .json_query import overview_of, select_clients
from .json_replica import Replica
from .json_state import State
from .mutating import MutatingStore, Staged, apply_event_change, log_cycle_reset
from .query import FIRST_PAGE, ClientQuery, StoreOverview
from .sessions_json import JsonSessionStore, sessions_path

logger = logging.getLogger("openclaw_billing.store")


class JsonFileStore(MutatingStore):
    audit: JsonAuditLog

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 10.0) -> None:
        self.path = Path(path).expanduser().absolute()
        self.location = f"json://{self.path}"
        try:
            private_directory(self.path.parent)
        except OSError as exc:
            raise StoreUnavailable(
                f"Cannot create the store directory {self.path.parent}: {exc}"
            ) from exc
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"), lock_timeout)
        self._replica = Replica(self.path, self._lock)
        self.audit = JsonAuditLog(
            audit_path(self.path), lock_timeout=lock_timeout, outbox=self._outbox
        )
        self.sessions = JsonSessionStore(sessions_path(self.path), lock_timeout=lock_timeout)
        with self._lock.hold():
            self._sweep_temp_files()
            self._replica.open()
        try:  # events a crash left in the outbox; a log that cannot take them now gets them later
            self.audit.catch_up()
        except StoreUnavailable as exc:
            logger.warning("The audit log could not be brought up to date at start: %s", exc)

    def _sweep_temp_files(self) -> None:
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with suppress(FileNotFoundError):
                stale.unlink()
                logger.warning("Removed a temp file left by an interrupted write: %s", stale)

    def _outbox(self) -> tuple[AuditEvent, ...]:
        """The outbox as committed (for the audit log; never takes the store's lock)."""
        with self._replica.reading(escalate=False) as state:
            return state.outbox

    def _reading(self) -> AbstractContextManager[State]:
        return self._replica.reading()

    # -- writing -----------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[JsonBatch]:
        """One write: the file lock, the state caught up, a batch to fill; once the block ends
        normally, the batch is written (one journal append) and put in the state."""
        with self._lock.hold(), self._replica.writer() as state:
            batch = JsonBatch(state)
            yield batch
            if batch.empty:
                return
            if not batch.events:
                self._replica.commit(batch.entries, batch.install)
                return
            # Audit events go into the batch's outbox line, numbered by the audit log, whose
            # lock is held from before the numbering until the log has them.
            with self.audit.reserve() as first_id:
                outbox = tuple(
                    AuditEvent(id=first_id + n, **event.model_dump())
                    for n, event in enumerate(batch.events)
                )

                def install(state: State) -> None:
                    batch.install(state)
                    state.outbox = outbox

                self._replica.commit([*batch.entries, audit_entry(outbox)], install)

    def _batch(self, client_ids: Sequence[str]) -> AbstractContextManager[Staged]:
        # One lock for the whole store: the batch's clients are locked together.
        return self._write()

    def _charge(
        self, staged: Staged, op: Charge, resets: list[tuple[str, int | None]]
    ) -> Outcome[Charged]:
        return cast(JsonBatch, staged).charge(op, resets)

    def _settle(
        self, staged: Staged, op: Settle | MarkMeter, resets: list[tuple[str, int | None]]
    ) -> Outcome[Settled]:
        return cast(JsonBatch, staged).settle(op, resets)

    def compact(self) -> None:
        """Compact now: the state becomes the snapshot of a new generation, with an empty
        journal (a copy into a fresh file uses it, so the snapshot alone holds the store)."""
        with self._lock.hold(), self._replica.writer():
            self._replica.compact()

    # -- Store API ---------------------------------------------------------------------------

    def create_client(self, record: ClientRecord, *, audit: NewAuditEvent | None = None) -> None:
        with self._write() as batch:
            if record.client_id in batch.state.clients or any(
                d in batch.state.by_digest for d in record_digests(record)
            ):
                raise DuplicateClient()
            batch.put(record.model_copy(deep=True))
            if audit is not None:
                batch.events.append(audit)

    def get_client(self, client_id: str) -> ClientRecord | None:
        with self._reading() as state:
            record = state.clients.get(client_id)
        return None if record is None else record.model_copy(deep=True)

    def get_client_by_key_digest(self, digest: str, *, ledger: bool = True) -> ClientRecord | None:
        with self._reading() as state:
            client_id = state.by_digest.get(digest)
            record = None if client_id is None else state.clients.get(client_id)
        if record is None:
            return None
        if ledger:
            return record.model_copy(deep=True)
        # Without the ledger: a copy whose cost does not grow with the client's usage.
        empty: dict[str, object] = {"cost_log": [], "credit_adjustments": [], "cycle_history": []}
        light = record.model_copy(update={"metadata": record.metadata.model_copy(update=empty)})
        return light.model_copy(deep=True)

    def list_clients(self, query: ClientQuery = FIRST_PAGE) -> tuple[list[ClientRecord], int]:
        with self._reading() as state:
            page, total = select_clients(state.clients.values(), query)
        return [r.model_copy(deep=True) for r in page], total

    def overview(self, now: datetime) -> StoreOverview:
        with self._reading() as state:
            records = list(state.clients.values())
        return overview_of(records, now)

    def touch_key(self, client_id: str, key_id: str, now: datetime) -> None:
        # A note of use, not an access to the account: no cycle roll, no updated_at.
        with self._write() as batch:
            record = batch.record(client_id)
            if record is None:
                raise ClientNotFound()
            if access.touch_key(record, key_id, now):
                batch.put(record)

    def find_client_by_stripe(
        self, *, customer_id: str | None = None, subscription_id: str | None = None
    ) -> ClientRecord | None:
        with self._reading() as state:
            client_id = _locate(state, StripeRef(None, subscription_id, customer_id))
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
        with self._write() as batch:
            if event_id in batch.state.events:
                return EventOutcome.DUPLICATE, None
            client_id = _locate(batch.state, ref)
            if client_id is None:
                return EventOutcome.UNMATCHED, None
            record = batch.record(client_id)
            assert record is not None
            outcome, reset = apply_event_change(record, created, change, now, ordered=ordered)
            batch.put(record)
            horizon = (now - EVENT_ID_RETENTION).isoformat()
            batch.add_stripe_events({event_id: now.isoformat()}, horizon)
        if reset is not None:
            log_cycle_reset(client_id, record.metadata.cycle_allowance)
        return outcome, client_id

    def stripe_event_ids(self) -> dict[str, datetime]:
        with self._reading() as state:
            events = dict(state.events)
        return {k: datetime.fromisoformat(v) for k, v in events.items()}

    def import_stripe_event_ids(self, events: dict[str, datetime]) -> None:
        with self._write() as batch:
            known = batch.state.events
            add = {k: v.isoformat() for k, v in events.items() if k not in known}
            if not add:
                return
            if not batch.state.clients:
                raise ClientNotFound("Import clients before their Stripe event ids")
            batch.add_stripe_events(add, None)

    def check(self) -> None:
        with self._reading():
            pass

    # -- jobs (JobStorage) -------------------------------------------------------------------

    def get_job(self, client_id: str, job_id: str) -> StoredJob | None:
        with self._reading() as state:
            job = state.jobs.get((client_id, job_id))
        return None if job is None else job.model_copy(deep=True)

    def client_jobs(self, client_id: str, since: datetime | None = None) -> list[StoredJob]:
        with self._reading() as state:
            found = list(state.client_jobs.get(client_id, {}).values())
        if since is not None:
            found = [job for job in found if job.created_at >= since]
        found.sort(key=lambda job: job.created_at)  # stable: stored order among equals
        return [job.model_copy(deep=True) for job in found]

    def active_jobs(self, client_id: str) -> int:
        with self._reading() as state:
            return state.active_jobs(client_id)

    def jobs_by_id(self, job_id: str) -> list[StoredJob]:
        with self._reading() as state:
            found = state.holders(job_id, MAX_SAME_ID)
        return [job.model_copy(deep=True) for job in found]

    def expired_holds(self, now: datetime, limit: int) -> list[StoredJob]:
        with self._reading() as state:
            overdue = [
                job
                for holds in state.holds.values()
                for job in holds.values()
                if job.receipt is not None and job.receipt.hold_until < now
            ]
        overdue.sort(key=lambda job: job.receipt.hold_until if job.receipt else now)
        return [job.model_copy(deep=True) for job in overdue[:limit]]

    def pending_meter_reports(self, limit: int) -> list[StoredJob]:
        with self._reading() as state:
            pending = list(itertools.islice(state.meters.values(), max(limit, 0)))
        return [job.model_copy(deep=True) for job in pending]

    def import_jobs(self, jobs: Sequence[StoredJob]) -> int:
        with self._write() as batch:
            return batch.add_jobs(jobs)


def _locate(state: State, ref: StripeRef) -> str | None:
    if ref.client_id is not None and ref.client_id in state.clients:
        return ref.client_id
    for attr, wanted in (
        ("stripe_subscription_id", ref.subscription_id),
        ("stripe_customer_id", ref.customer_id),
    ):
        if wanted is None:
            continue
        for record in state.clients.values():
            if getattr(record, attr) == wanted:
                return record.client_id
    return None
