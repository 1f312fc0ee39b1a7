"""The rules of :meth:`Store.mutate_batch`, written once for every backend that can lock, load
and write clients: lock them, and for each mutation in turn roll its client's cycle if due,
apply the change, keep the record with its audit event; then write everything kept in one
atomic step. A backend supplies only the locking, loading and writing (:meth:`_batch` and the
:class:`Staged` working set it yields).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from .. import jobs, ledger, outcomes
from ..audit import NewAuditEvent
from ..errors import BillingError, ClientNotFound, JobNotFound
from ..jobs import Charged, StoredJob
from ..models import ClientRecord, CycleSummary
from ..outcomes import Settled
from .base import (
    Charge,
    EventOutcome,
    MarkMeter,
    Mutation,
    Operation,
    Outcome,
    Settle,
    Store,
)


class Staged(Protocol):
    """One batch's clients, locked: the working copies the changes apply to, and what is kept
    of them for the batch's one write."""

    def record(self, client_id: str) -> ClientRecord | None:
        """The client's working copy, with what earlier mutations of the batch kept (the same
        object until a ``keep`` fails); None if no such client."""

    def keep(
        self,
        client_id: str,
        record: ClientRecord | None,
        event: NewAuditEvent | None,
        job: StoredJob | None = None,
        *,
        replace: bool = False,
    ) -> None:
        """Keep one mutation's work for the batch's write: the changed record (None:
        unchanged), its audit event (None: none) and the job accepted with a charge (None:
        none), or with ``replace`` the new state of a job already stored. Raises
        ``BillingError`` when the store cannot hold it (a key digest another client has, a
        record that would not load, a job on a store that keeps none): then
        nothing of this mutation is kept and :meth:`record` gives the last kept state again."""

    def stored_job(self, client_id: str, job_id: str) -> StoredJob | None:
        """The client's job stored under ``job_id`` (by the store or earlier in this batch)."""

    def active_jobs(self, client_id: str) -> int:
        """How many of the client's jobs hold credits (queued or running with an open hold),
        counting this batch's."""

    def restore(self, client_id: str) -> ClientRecord:
        """Make the client's working copy the last kept state again (a fresh copy), after a
        refused change; returns it."""


class WorkingCopies:
    """The ``record`` and ``restore`` half of :class:`Staged`: each client of a batch is
    copied from ``stored`` the first time a mutation asks for it, and again from it when a
    refusal puts the last kept state back (a backend keeps ``stored`` up to date, or
    overrides ``restore``)."""

    def __init__(self, stored: Mapping[str, ClientRecord]) -> None:
        self._stored = stored
        self._working: dict[str, ClientRecord] = {}

    def record(self, client_id: str) -> ClientRecord | None:
        working = self._working.get(client_id)
        if working is None:
            stored = self._stored.get(client_id)
            if stored is None:
                return None
            working = self._working[client_id] = stored.model_copy(deep=True)
        return working

    def restore(self, client_id: str) -> ClientRecord:
        working = self._working[client_id] = self._stored[client_id].model_copy(deep=True)
        return working


class MutatingStore(Store):
    """:meth:`Store.mutate_batch` over a backend's :meth:`_batch`."""

    @abstractmethod
    def _batch(self, client_ids: Sequence[str]) -> AbstractContextManager[Staged]:
        """Hold the locks of these clients (taken in one fixed order, so two batches never
        wait for each other); yield their working set; when the block ends normally, write all
        that was kept in one atomic step (one transaction, one file write), or raise
        ``StoreUnavailable`` having written none of it."""

    def mutate_batch(self, batch: Sequence[Operation]) -> list[Outcome[Any]]:
        resets: list[tuple[str, int | None]] = []
        with self._batch([m.client_id for m in batch]) as staged:
            outcomes = [
                self._charge(staged, op, resets)
                if isinstance(op, Charge)
                else self._settle(staged, op, resets)
                if isinstance(op, Settle | MarkMeter)
                else _apply(staged, op, resets)
                for op in batch
            ]
        for client_id, allowance in resets:  # once the batch is stored
            log_cycle_reset(client_id, allowance)
        return outcomes

    def _charge(
        self, staged: Staged, op: Charge, resets: list[tuple[str, int | None]]
    ) -> Outcome[Charged]:
        """One charge of a batch, by the rules of :func:`.jobs.accept` applied to the record
        (a backend with a faster path overrides this)."""
        accepted: list[StoredJob | None] = [None]

        def change(record: ClientRecord) -> tuple[Charged, bool]:
            stored = staged.stored_job(op.client_id, op.job_id)
            charged, accepted[0] = jobs.accept(
                record,
                op.job_id,
                op.cost,
                op.now,
                job=op.job,
                stored=stored,
                key_id=op.key_id,
                active_jobs=lambda: staged.active_jobs(op.client_id),
            )
            return charged, not charged.charge.replayed

        mutation = Mutation(op.client_id, op.now, change)
        return _apply(staged, mutation, resets, job=lambda: accepted[0])

    def _settle(
        self, staged: Staged, op: Settle | MarkMeter, resets: list[tuple[str, int | None]]
    ) -> Outcome[Settled]:
        """One move of a stored job in a batch, by :func:`move` on the whole record (a
        backend with a faster path overrides this)."""
        return move(staged, op, resets)


def move(
    staged: Staged, op: Settle | MarkMeter, resets: list[tuple[str, int | None]]
) -> Outcome[Settled]:
    """One move of a stored job in a batch: a report, by the rules of :func:`.outcomes.apply`
    applied to the record and the job, or a meter mark, by :func:`.outcomes.mark_meter`
    applied to the job alone (the record is left as it is). A job that did not change stores
    nothing but its audit event. The client's cycle is rolled first if due, as for every
    mutation (kept even if the move is refused)."""
    moved: list[StoredJob | None] = [None]

    def change(record: ClientRecord) -> tuple[Settled, bool]:
        stored = staged.stored_job(op.client_id, op.job_id)
        if stored is None:
            raise JobNotFound()
        if isinstance(op, MarkMeter):
            settled = outcomes.mark_meter(stored, op.mark, op.now)
        else:
            settled = outcomes.apply(record, stored, op.report, op.now)
        moved[0] = settled.job if settled.changed else None
        return settled, settled.changed and isinstance(op, Settle)

    audit = op.audit if isinstance(op, Settle) else None
    mutation = Mutation(op.client_id, op.now, change, audit)
    return _apply(staged, mutation, resets, job=lambda: moved[0], replace=True)


def _apply(
    staged: Staged,
    mutation: Mutation[Any],
    resets: list[tuple[str, int | None]],
    *,
    job: Callable[[], StoredJob | None] = lambda: None,
    replace: bool = False,
) -> Outcome[Any]:
    record = staged.record(mutation.client_id)
    if record is None:
        return Outcome(error=ClientNotFound())
    reset = ledger.roll_cycle(record, mutation.now)
    dirty = reset is not None
    event: NewAuditEvent | None = None
    result: Any = None
    error: BillingError | None = None
    try:
        result, changed = mutation.change(record)
    except BillingError as exc:
        # Refused: nothing of the change is kept, even if it had begun (changes should
        # validate first); a due reset still is.
        error = exc
        record = staged.restore(mutation.client_id)
        reset = ledger.roll_cycle(record, mutation.now)
        dirty = reset is not None
    else:
        dirty = dirty or changed
        # Outside the try: an audit that fails is a bug, and stores none of the batch.
        event = None if mutation.audit is None else mutation.audit(result)
    kept_job = None if error is not None else job()
    if dirty or event is not None or kept_job is not None:
        try:
            staged.keep(
                mutation.client_id, record if dirty else None, event, kept_job, replace=replace
            )
        except BillingError as exc:
            return Outcome(error=exc)
    if reset is not None:
        resets.append((record.client_id, record.metadata.cycle_allowance))
    return Outcome(error=error) if error is not None else Outcome(result)


def apply_event_change(
    record: ClientRecord,
    created: int,
    change: Callable[[ClientRecord], None],
    now: datetime,
    *,
    ordered: bool = True,
) -> tuple[EventOutcome, CycleSummary | None]:
    """The rules of ``Store.apply_stripe_event`` once the client is locked and the event id is
    known to be new: roll the cycle if due, then apply ``change`` unless the event is ordered
    and older than the newest one applied (``STALE``). Returns the outcome and the reset, if
    any."""
    reset = ledger.roll_cycle(record, now)
    last = record.metadata.stripe_event_at
    if ordered and last is not None and created < last:
        return EventOutcome.STALE, reset
    change(record)
    record.metadata.stripe_event_at = created if last is None else max(last, created)
    return EventOutcome.APPLIED, reset


def log_cycle_reset(client_id: str, allowance: int | None) -> None:
    """The summary's log line for a cycle reset (``allowance``: what the new cycle started
    with), written once per reset by every backend."""
    jobs = "unlimited" if allowance is None else allowance
    logging.getLogger("openclaw_billing").info(
        "Reset monthly credits for %s: %s jobs", client_id, jobs
    )
