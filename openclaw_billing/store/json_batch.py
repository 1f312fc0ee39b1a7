"""One write to the JSON store, under the file lock (see :class:`~.mutating.Staged`): working
copies of the clients it touches, and for each change kept, its journal line, rendered and
checked once (parsed back as a reader parses it), so that the whole batch is one append and
one fsync. A charge is kept as a delta (:meth:`JsonBatch.charge`), and so is a job's move
(:meth:`JsonBatch.settle`): their lines do not grow with the client's history; other changes
keep the record whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .. import cycles, jobs, ledger, outcomes
from ..audit import NewAuditEvent
from ..errors import (
    BillingError,
    ClientNotFound,
    DuplicateClient,
    JobNotFound,
    UnstorableChange,
)
from ..jobs import Charged, StoredJob
from ..models import ChargeResult, ClientRecord
from ..outcomes import Settled
from .base import Charge, MarkMeter, Outcome, Settle
from .json_format import client_line, job_body, record_digests
from .json_journal import (
    charge_entry,
    charge_of,
    events_entry,
    job_entry,
    record_entry,
    settle_entry,
    settle_of,
)
from .json_state import State, checked_job, checked_record, closed_hold
from .mutating import move


class JsonBatch:
    def __init__(self, state: State) -> None:
        self.state = state
        self._working: dict[str, ClientRecord] = {}
        #: Journal payloads, in order (the frame is added at the commit).
        self.entries: list[bytes] = []
        #: The last kept state of each client changed, never changed afterwards, and its
        #: snapshot line (None: a charge changed it, rendered at the next compaction).
        self.kept: dict[str, ClientRecord] = {}
        self.lines: dict[str, bytes | None] = {}
        #: Jobs kept, in order, each with whether it replaces a stored one.
        self.jobs: list[tuple[StoredJob, bool]] = []
        self._job_index: dict[tuple[str, str], StoredJob] = {}
        #: Each client's jobs kept by this batch, by id (what it changed of the holds).
        self._client_index: dict[str, dict[str, StoredJob]] = {}
        self.events: list[NewAuditEvent] = []
        #: Stripe event ids to add, and the horizon before which the known ones are forgotten.
        self.stripe: tuple[dict[str, str], str | None] | None = None
        #: Key digests that records kept in this batch hold -> their client.
        self._claimed: dict[str, str] = {}

    @property
    def empty(self) -> bool:
        return not self.entries and not self.events

    # -- Staged --------------------------------------------------------------------------------

    def record(self, client_id: str) -> ClientRecord | None:
        working = self._working.get(client_id)
        if working is None:
            base = self.kept.get(client_id) or self.state.clients.get(client_id)
            if base is None:
                return None
            working = self._working[client_id] = base.model_copy(deep=True)
        return working

    def restore(self, client_id: str) -> ClientRecord:
        """The client as this batch last kept it, or as the store has it (a copy)."""
        base = self.kept.get(client_id) or self.state.clients[client_id]
        working = self._working[client_id] = base.model_copy(deep=True)
        return working

    def keep(
        self,
        client_id: str,
        record: ClientRecord | None,
        event: NewAuditEvent | None,
        job: StoredJob | None = None,
        *,
        replace: bool = False,
    ) -> None:
        try:
            # Both checked before either is kept: a mutation is kept whole or not at all.
            whole = None if record is None else self._checked(record)
            alone = None if job is None else self._checked_job(job, replace=replace)
        except BillingError:
            if client_id in self.kept or client_id in self.state.clients:
                self.restore(client_id)  # else a new client: nothing of it was kept
            raise
        if whole is not None:
            entry, line, parsed = whole
            self.entries.append(entry)
            # The parsed copy: later changes of the working copy cannot reach it.
            self.kept[client_id], self.lines[client_id] = parsed, line
            self._claimed.update(dict.fromkeys(record_digests(parsed), client_id))
        if alone is not None:
            self.entries.append(alone[0])
            self._add_job(alone[1], replace=replace)
        if event is not None:
            self.events.append(event)

    def stored_job(self, client_id: str, job_id: str) -> StoredJob | None:
        key = (client_id, job_id)
        return self._job_index.get(key) or self.state.jobs.get(key)

    def active_jobs(self, client_id: str) -> int:
        return self.state.active_jobs(client_id, self._client_index.get(client_id, {}).values())

    # -- a charge, as a delta ------------------------------------------------------------------

    def charge(self, op: Charge, resets: list[tuple[str, int | None]]) -> Outcome[Charged]:
        """One charge by the rules of :func:`openclaw_billing.jobs.accept`. A due cycle roll
        is kept first, whole (kept even if the charge is refused); the charge is kept as a
        ``c`` line, with its job."""
        cid = op.client_id
        record = self._shallow(cid, op.now)
        if record is None:
            return Outcome(error=ClientNotFound())
        if ledger.roll_cycle(record, op.now) is not None:
            try:
                self.keep(cid, record, None)
            except BillingError as exc:
                return Outcome(error=exc)
            resets.append((cid, record.metadata.cycle_allowance))
        try:
            charged, job = jobs.accept(
                record,
                op.job_id,
                op.cost,
                op.now,
                job=op.job,
                stored=self.stored_job(cid, op.job_id),
                key_id=op.key_id,
                active_jobs=lambda: self.active_jobs(cid),
            )
            if not charged.charge.replayed:
                self._keep_charge(record, charged.charge, job, jobs.reservation(op.job))
            elif job is not None:  # a job for an id charged earlier: stored under that charge
                self.keep(cid, None, None, job)
        except BillingError as exc:
            self.restore(cid)
            return Outcome(error=exc)
        return Outcome(charged)

    def _shallow(self, client_id: str, now: datetime) -> ClientRecord | None:
        """The working copy a charge or a job's move changes. A charge only sets the record's
        counters and appends to its ledger; a settlement sets the counters and replaces one
        entry of the ledger or of the newest summary's (``outcomes.settle_hold``). So this
        copies the record, its ledger's list and the newest summary with its entries' list,
        not the entries (a deep copy costs 70 us per charge, and 800 us with 100 entries in
        the cycle). A cycle due to roll changes the history in place: that copy is deep.
        The caller drops the copy once its change is kept (:meth:`_keep_charge`,
        :meth:`settle`): a later change of the client works on a deep copy."""
        working = self._working.get(client_id)
        if working is not None:
            return working
        base = self.kept.get(client_id) or self.state.clients.get(client_id)
        if base is None:
            return None
        if cycles.is_expired(base.billing_cycle_end, now):
            return self.record(client_id)
        meta = base.metadata
        history = list(meta.cycle_history)
        if history:
            history[-1] = history[-1].model_copy(update={"entries": list(history[-1].entries)})
        copied = {"cost_log": list(meta.cost_log), "cycle_history": history}
        working = self._working[client_id] = base.model_copy(
            update={"metadata": meta.model_copy(update=copied)}
        )
        return working

    # -- a job's move, as a delta --------------------------------------------------------------

    def settle(
        self, op: Settle | MarkMeter, resets: list[tuple[str, int | None]]
    ) -> Outcome[Settled]:
        """One move of a stored job by the rules of :func:`openclaw_billing.outcomes.apply`,
        on a shallow working copy (:meth:`_shallow`), kept as an ``s`` line: the job whole,
        the client's credits and spend after it (:meth:`_keep_move`). A meter mark (the job
        alone), and a move whose client's cycle is due to roll (the roll changes the history:
        the record is kept whole), go by the rules every backend shares (:func:`.mutating.move`)."""
        cid = op.client_id
        fresh = cid not in self._working
        record = self._shallow(cid, op.now)
        try:
            if (
                isinstance(op, Settle)
                and record is not None
                and not cycles.is_expired(record.billing_cycle_end, op.now)
            ):
                return self._move(record, op)
            return move(self, op, resets)
        finally:
            if fresh:  # what was kept is in self.kept; a later change copies that
                self._working.pop(cid, None)

    def _move(self, record: ClientRecord, op: Settle) -> Outcome[Settled]:
        """The move on ``record`` (its cycle current). Refused, or not storable, nothing of it
        is kept, and the working copy is dropped: a later change copies the last kept state."""
        stored = self.stored_job(op.client_id, op.job_id)
        try:
            if stored is None:
                raise JobNotFound()
            settled = outcomes.apply(record, stored, op.report, op.now)
        except BillingError as exc:
            self._working.pop(op.client_id, None)
            return Outcome(error=exc)
        # Outside the try: an audit that fails is a bug, and stores none of the batch.
        event = None if op.audit is None else op.audit(settled)
        if settled.changed:
            try:
                self._keep_move(record, stored, settled.job)
            except BillingError as exc:
                self._working.pop(op.client_id, None)
                return Outcome(error=exc)
        if event is not None:
            self.events.append(event)
        return Outcome(settled)

    def _keep_move(self, record: ClientRecord, stored: StoredJob, job: StoredJob) -> None:
        """Keep a move as an ``s`` line, checked as a reader parses it. The record is kept as
        the working copy is when the move closed the job's hold (the replay closes it again),
        and left as it was otherwise (the rules change it only then)."""
        cid = record.client_id
        left, spent = record.credits_remaining, record.total_spent
        try:
            entry = settle_entry(cid, left, spent, job_body(job))
        except ValueError:  # UnicodeEncodeError: a lone surrogate
            raise UnstorableChange() from None
        back = settle_of(_loads(entry))
        if back is None or back != (cid, left, spent, job):
            raise UnstorableChange()
        self.entries.append(entry)
        if closed_hold(stored, job) is not None:
            # As for a charge: no reader has the working copy; a later change copies it.
            self.kept[cid], self.lines[cid] = record, None
            self._working.pop(cid, None)
        self._add_job(back.job, replace=True)

    def _keep_charge(
        self,
        record: ClientRecord,
        result: ChargeResult,
        job: StoredJob | None,
        reserved: int | None,
    ) -> None:
        cid = record.client_id
        try:
            entry = charge_entry(
                cid,
                result.job_id,
                result.cost,
                result.charged_at,
                result.credits_remaining,
                job,
                credits=1 if reserved is None else reserved,
                held=reserved is not None,
            )
        except ValueError:  # UnicodeEncodeError: a lone surrogate
            raise UnstorableChange() from None
        back = charge_of(_loads(entry))
        expected = (cid, result.job_id, result.cost, result.charged_at, result.credits_remaining)
        if back is None or tuple(back)[:5] != expected or back.job != job:
            raise UnstorableChange()
        self.entries.append(entry)
        # The working copy is kept as it is (no reader has it); the next change of this
        # client in the batch works on a copy of it.
        self.kept[cid], self.lines[cid] = record, None
        del self._working[cid]
        if back.job is not None:
            self._add_job(back.job)

    # -- other writes --------------------------------------------------------------------------

    def put(self, record: ClientRecord) -> None:
        """Keep a whole record (created or changed outside :meth:`keep`)."""
        self.keep(record.client_id, record, None)

    def add_jobs(self, stored: Iterable[StoredJob]) -> int:
        """Keep the jobs whose client exists and that are not stored yet (the first of the
        same id wins); returns how many."""
        count = 0
        for job in stored:
            if job.client_id in self.state.clients and not self.stored_job(
                job.client_id, job.job_id
            ):
                entry, parsed = self._checked_job(job)
                self.entries.append(entry)
                self._add_job(parsed)
                count += 1
        return count

    def add_stripe_events(self, add: dict[str, str], horizon: str | None) -> None:
        try:
            self.entries.append(events_entry(add, horizon))
        except ValueError:
            raise UnstorableChange() from None
        self.stripe = (add, horizon)

    def install(self, state: State) -> None:
        """Put what this batch kept in the state, once its lines are written: the very objects
        a replay of the lines builds."""
        for cid, record in self.kept.items():
            state.put(record, self.lines[cid])
        for job, replace in self.jobs:
            (state.replace_job if replace else state.add_job)(job)
        if self.stripe is not None:
            state.add_events(*self.stripe)

    # -- checks --------------------------------------------------------------------------------

    def _checked(self, record: ClientRecord) -> tuple[bytes, bytes, ClientRecord]:
        """A record's ``r`` line, its snapshot line, and the record as parsed back. A key of
        the record must not be another client's (digests are unique), in the store or in this
        batch."""
        for digest in record_digests(record):
            owner = self._claimed.get(digest) or self.state.by_digest.get(digest)
            if owner is not None and owner != record.client_id:
                raise DuplicateClient("This key already belongs to another client")
        body, parsed = checked_record(record)
        return record_entry(body), client_line(record.client_id, body), parsed

    @staticmethod
    def _checked_job(job: StoredJob, *, replace: bool = False) -> tuple[bytes, StoredJob]:
        body, parsed = checked_job(job)
        return job_entry(body, replace=replace), parsed

    def _add_job(self, job: StoredJob, *, replace: bool = False) -> None:
        self.jobs.append((job, replace))
        self._job_index[(job.client_id, job.job_id)] = job
        self._client_index.setdefault(job.client_id, {})[job.job_id] = job


def _loads(raw: bytes) -> dict[str, Any]:
    doc = json.loads(raw)
    return doc if isinstance(doc, dict) else {}
