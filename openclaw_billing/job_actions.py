"""Charging by outcome, as the service does it (see :mod:`.outcomes` for the rules): reserve a
job's price at intake, report where a job is (its runner, through the admin API or
``client_auth``), cancel a queued job (its client), and release the holds that outlived their
time to live (the sweeper, :mod:`.sweeper`). Each is one atomic step of the store, committed
through the worker's committer with its audit event.

A mixin of :class:`~.service.BillingService`, built on :class:`~.charges.ChargeActions`
(a reservation is a charge with a price).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from datetime import datetime
from typing import cast

from .audit import SWEEPER_ACTOR, AuditAction, NewAuditEvent, client_actor
from .charges import ChargeActions
from .cycles import resolve_now, utcnow
from .errors import AmbiguousJobId, ClientNotFound, IllegalTransition, JobNotFound
from .jobs import Charged, JobStatus, NewJob, StoredJob
from .net import UNKNOWN_ADDRESS
from .outcomes import Report, Settled
from .plans import get_plan
from .store.base import Settle
from .store.capabilities import JobStorage

logger = logging.getLogger("openclaw_billing")

#: Jobs the sweeper releases per pass (the rest wait for the next pass).
SWEEP_BATCH = 200


class JobActions(ChargeActions):
    """The job actions (``_event``, ``store`` and ``committer`` come from
    :class:`~.admin.AdminActions`; ``charge_of`` and ``settled`` from
    :class:`~.charges.ChargeActions`)."""

    def reserve(
        self,
        client_id: str,
        *,
        job_id: str | None = None,
        price: int | None = None,
        max_credits: int | None = None,
        fields: Mapping[str, str] | None = None,
        cost: float = 0.0,
        now: datetime | None = None,
        key_id: str | None = None,
    ) -> Charged:
        """Hold a job's price (``price``; None: its plan's price for a default job) until the
        job ends, and store the job with the hold, in one atomic step with the checks of a
        charge and the client's concurrency cap (``ConcurrencyLimitReached``). A job id
        reserved before answers its first result (``replayed``). ``ValueError`` for a value
        out of bounds."""
        if price is None:
            record = self.store.get_client(client_id) if isinstance(client_id, str) else None
            if record is None:
                raise ClientNotFound()
            price = get_plan(record.plan).price(None, None)
        job = NewJob(dict(fields or {}), price=price, max_credits=max_credits)
        charge = self.charge_of(client_id, job_id=job_id, cost=cost, now=now, job=job)
        return self.settled(cast(Charged, self.committer.run(charge)))

    def report_job(
        self,
        job_id: str,
        report: Report,
        *,
        client_id: str | None = None,
        now: datetime | None = None,
        source: str = UNKNOWN_ADDRESS,
    ) -> Settled:
        """Move a job (its runner's report, see :mod:`.outcomes`): ``client_id`` names whose
        job it is, else the job is found by its id alone (``AmbiguousJobId`` if several
        clients have one). Raises ``JobNotFound``, ``IllegalTransition``,
        ``InvalidRequest``."""
        at = resolve_now(now, utcnow)
        owner = client_id if client_id is not None else self._owner(job_id)
        action = AuditAction.JOB_CANCEL if report.by_client else AuditAction.JOB_OUTCOME
        op = self._settle_op(owner, job_id, report, at, action, source)
        return cast(Settled, self.committer.run(op))

    def cancel_job(
        self,
        client_id: str,
        job_id: str,
        *,
        now: datetime | None = None,
        source: str = UNKNOWN_ADDRESS,
    ) -> Settled:
        """The client cancels its queued job: its hold is released in full. A job that has
        started, or ended otherwise, is ``IllegalTransition``; cancelled twice, the second
        answer is the first."""
        report = Report(JobStatus.CANCELLED, by_client=True)
        return self.report_job(job_id, report, client_id=client_id, now=now, source=source)

    def sweep(self, *, now: datetime | None = None) -> int:
        """Expire the jobs whose hold outlived its time to live (up to ``SWEEP_BATCH``),
        releasing their holds; returns how many this call expired. Safe to run in every
        worker at once: a job ended or expired meanwhile is left as it is."""
        at = resolve_now(now, utcnow)
        store = self.store
        if not isinstance(store, JobStorage):
            return 0
        # Each worker and instance reads the same overdue list: shuffled, they start on
        # different jobs. All of them go to the committer at once, so they are stored in a
        # few batches (one transaction each, each client loaded once per batch), not one by one.
        overdue = store.expired_holds(at, SWEEP_BATCH)
        random.shuffle(overdue)
        report = Report(JobStatus.EXPIRED)
        pending = [
            self.committer.submit(
                self._settle_op(
                    job.client_id, job.job_id, report, at, AuditAction.JOB_EXPIRE, SWEEPER_ACTOR
                )
            )
            for job in overdue
        ]
        expired = 0
        for future in pending:
            try:
                settled = cast(Settled, future.result().unwrap())
            except (IllegalTransition, JobNotFound, ClientNotFound):
                continue  # ended, or expired by another worker, since it was read
            expired += settled.changed
        if expired:
            logger.warning("Released the holds of %d expired jobs", expired)
        return expired

    def _owner(self, job_id: str) -> str:
        store = self.store
        found = store.jobs_by_id(job_id) if isinstance(store, JobStorage) else []
        if not found:
            raise JobNotFound()
        if len(found) > 1:
            raise AmbiguousJobId()
        return found[0].client_id

    def _settle_op(
        self,
        client_id: str,
        job_id: str,
        report: Report,
        now: datetime,
        action: AuditAction,
        source: str,
    ) -> Settle:
        """The store operation of a job's move, with its audit event."""
        actor = client_actor(client_id) if report.by_client else self.actor
        if action is AuditAction.JOB_EXPIRE:
            actor = SWEEPER_ACTOR

        def audit(settled: Settled) -> NewAuditEvent | None:
            if not settled.changed:
                return None  # the same report again: answered, nothing happened
            return self._event(action, client_id, source, now, _facts(settled.job), actor=actor)

        return Settle(client_id, job_id, now, report, audit)


def _facts(job: StoredJob) -> dict[str, str | int | None]:
    """The audit detail of a job's move: where it is and what its hold came to."""
    receipt = job.receipt
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "failure_class": job.failure_class,
        "reserved": None if receipt is None else receipt.reserved,
        "charged": None if receipt is None else receipt.charged,
        "released": None if receipt is None else receipt.released,
    }
