"""The meter outbox's sender: settled jobs' usage beyond their reservation, sent to Stripe.

A job's report is written with its settlement, in the same atomic step, as its receipt's
``meter`` (``pending``; the decision: :func:`openclaw_billing.outcomes.meter_report`), so it is
never lost. :meth:`MeterSender.send_pending` sends the pending ones (the store's
``JobStorage.pending_meter_reports``), each with :meth:`.meters.MeterReporter.report_usage`
dated at the job's settlement, and marks what each attempt came to in the store
(:class:`~openclaw_billing.store.base.MarkMeter`: one atomic step that changes the receipt's
``meter`` alone, never a credit):

* ``reported`` or ``already_reported``: marked ``reported``;
* ``retry_later`` (no answer, 409, 429, 5xx): left ``pending`` with the attempt counted, so
  the next pass sends the next attempt (a new ``Idempotency-Key``, as :mod:`.meters` requires);
* ``failed`` (refused for good): marked ``failed`` with Stripe's error code, and logged;
* a report whose settlement lies further back than Stripe accepts (:data:`MAX_AGE`, 35 days):
  marked ``failed`` with the code ``too_old``, and logged, without sending it.

Every worker's sweeper runs a pass after sweeping (:mod:`openclaw_billing.sweeper`), so reports
left pending because Stripe was down, or because the worker crashed between sending and
marking, are sent at later passes: that is the reconciliation. Several workers may send the
same pending report at once, or again after a crash: that is safe, because the meter event's
``identifier`` is one per job (:func:`.meters.meter_identifier`) and Stripe records an
identifier once within 24 hours (the second send is ``already_reported``); the marks are
idempotent and never count an attempt twice. A report sent and then left unmarked for more
than those 24 hours (the store unwritable all that time) could be recorded twice: the one
window this cannot close.

Without ``STRIPE_METER_EVENT_NAME`` or ``STRIPE_SECRET_KEY`` nothing is sent: the reports stay
pending (sent once reporting is configured, within the 35 days) and the sender logs that once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from ..cycles import resolve_now, utcnow
from ..errors import ClientNotFound, JobNotFound
from ..jobs import MeterState, StoredJob
from ..outcomes import MeterMark, Settled
from ..service import BillingService
from ..settings import Settings
from ..store.base import MarkMeter
from ..store.capabilities import JobStorage
from .meters import MeterOutcome, MeterReporter, UsageReport

logger = logging.getLogger("openclaw_billing.stripe")

#: Reports read per batch; a pass takes batches until one is not full, or leaves a report
#: pending, or holds only reports the pass already tried.
METER_BATCH = 100
#: Stripe refuses a meter event dated more than 35 days back.
MAX_AGE = timedelta(days=35)
#: The code of a report marked failed because it can no longer be sent.
TOO_OLD = "too_old"
#: The code of a report that cannot be sent as it is stored (a bug: never expected).
INVALID = "invalid_report"

#: What each outcome of an attempt makes of the report.
_STATE_AFTER = {
    MeterOutcome.REPORTED: MeterState.REPORTED,
    MeterOutcome.ALREADY_REPORTED: MeterState.REPORTED,
    MeterOutcome.RETRY_LATER: MeterState.PENDING,
    MeterOutcome.FAILED: MeterState.FAILED,
}


def mark_of(report: UsageReport, attempt: int) -> MeterMark:
    """The mark of attempt ``attempt``, from what Stripe answered it."""
    state = _STATE_AFTER[report.outcome]
    return MeterMark(attempt, state, None if state is MeterState.REPORTED else report.code)


@dataclass
class MeterPass:
    """What one pass did: reports marked reported, left pending, and marked failed."""

    reported: int = 0
    pending: int = 0
    failed: int = 0

    def count(self, state: MeterState) -> None:
        if state is MeterState.REPORTED:
            self.reported += 1
        elif state is MeterState.PENDING:
            self.pending += 1
        else:
            self.failed += 1


class MeterSender:
    """Sends a worker's share of the meter outbox (see the module docstring). One per worker
    (its sweeper keeps it), so "not configured" is logged once per worker."""

    def __init__(self, service: BillingService, reporter: MeterReporter) -> None:
        self.service = service
        self.reporter = reporter
        self._told_unconfigured = False

    @classmethod
    def from_settings(cls, service: BillingService, settings: Settings) -> MeterSender:
        return cls(service, MeterReporter.from_settings(settings))

    def send_pending(self, *, now: datetime | None = None) -> MeterPass:
        """Send the pending reports (see the module docstring); returns what the pass did.
        Raises ``StoreUnavailable`` when the store cannot be read or a mark written (the
        reports stay pending: the next pass sends them again, safely)."""
        at = resolve_now(now, utcnow)
        store = self.service.store
        done = MeterPass()
        if not isinstance(store, JobStorage):
            return done
        sent: set[tuple[str, str]] = set()
        while True:
            batch = store.pending_meter_reports(METER_BATCH)
            if batch and not self.reporter.configured:
                self._tell_unconfigured(len(batch))
                return done
            fresh = [job for job in batch if (job.client_id, job.job_id) not in sent]
            waiting = done.pending
            for job in fresh:
                sent.add((job.client_id, job.job_id))
                done.count(self._send(job, at))
            if len(batch) < METER_BATCH or not fresh or done.pending > waiting:
                # All sent, or Stripe asks to wait: the next pass goes on. A report is tried
                # at most once a pass, so a pass ends whatever the store answers.
                return done

    def _send(self, job: StoredJob, now: datetime) -> MeterState:
        """One attempt at one report, marked in the store; the state it is left in."""
        receipt = job.receipt
        assert receipt is not None  # the store lists only jobs with a pending report
        meter = receipt.meter
        assert meter is not None
        attempt = meter.attempts + 1
        at, credits, customer = receipt.settled_at, receipt.overage, meter.customer_id
        if at is None or credits is None or customer is None:
            return self._mark(job, MeterMark(attempt, MeterState.FAILED, INVALID), now)
        if now - at > MAX_AGE:
            return self._mark(job, MeterMark(attempt, MeterState.FAILED, TOO_OLD), now)
        try:
            report = self.reporter.report_usage(
                job.client_id, job.job_id, customer, credits, at, attempt=attempt
            )
        except ValueError:
            return self._mark(job, MeterMark(attempt, MeterState.FAILED, INVALID), now)
        return self._mark(job, mark_of(report, attempt), now)

    def _mark(self, job: StoredJob, mark: MeterMark, now: datetime) -> MeterState:
        op = MarkMeter(job.client_id, job.job_id, now, mark)
        try:
            settled = cast(Settled, self.service.committer.run(op))
        except (JobNotFound, ClientNotFound):  # not expected: jobs and clients are kept
            logger.error("The report of job %s of %s is gone", job.job_id, job.client_id)
            return MeterState.FAILED
        if mark.state is MeterState.FAILED and settled.changed:
            logger.warning(
                "Usage of job %s of %s not reported to Stripe: %s (attempt %d)",
                job.job_id,
                job.client_id,
                mark.code,
                mark.attempt,
            )
        return mark.state

    def _tell_unconfigured(self, count: int) -> None:
        if not self._told_unconfigured:
            self._told_unconfigured = True
            logger.warning(
                "Usage is not reported to Stripe (set STRIPE_METER_EVENT_NAME and "
                "STRIPE_SECRET_KEY): %s job reports wait to be sent",
                f"{count}+" if count >= METER_BATCH else count,
            )
