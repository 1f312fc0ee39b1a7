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
``identifier`` is one per job (:func:`.meters.meter_identifier`) and Stripe refuses a second
event with an identifier it recorded (the second send is ``already_reported``); the marks are
idempotent and never count an attempt twice.

Stripe refuses such a duplicate only within 24 hours of the first event
(:data:`openclaw_billing.jobs.DEDUP_WINDOW`), so a report is never sent again once that window
may have passed since an attempt Stripe may have recorded without saying so. Before each
attempt is sent, its start is written on the report (``meter.sending``: a failed write sends
nothing); its answer takes it out again, into ``meter.unconfirmed_since`` (the earliest kept)
when Stripe may hold the event (:func:`.meters.maybe_recorded`: no answer once the request may
have gone out, a 409, a 5xx). An attempt never answered in the store (a crash, the store down
when the answer came, "reported" included) stays in ``sending``. The earliest of these
(``doubt_since``) starts the clock: from :data:`openclaw_billing.jobs.RESEND_WITHIN` (23 hours,
an hour below Stripe's window) after it, the report is no longer sent but marked ``failed``
with the code ``unconfirmed`` (also instead of ``too_old``), logged with the event's
identifier, and shown on the console's job receipt: an operator looks the identifier up in
Stripe and bills it by hand only if Stripe lacks it. The window is checked three times: on the
report the pass read, again in the store's step that records the attempt's start (on the
report as it stands then: another worker's attempt may have come since), and on the clock just
before the request goes out (a worker that stalled in between sends nothing). The margin
assumes the workers' clocks agree (NTP); it does not cover a clock an hour off. A report whose
attempts Stripe certainly never got (a connection refused, a 429) is sent again for the 35
days, as before.

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
from ..jobs import UNCONFIRMED, MeterState, StoredJob, past_resend_window
from ..outcomes import MeterMark, Settled
from ..service import BillingService
from ..settings import Settings
from ..store.base import MarkMeter
from ..store.capabilities import JobStorage
from .meters import MeterOutcome, MeterReporter, UsageReport, meter_identifier

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


def mark_of(report: UsageReport, attempt: int, started: datetime) -> MeterMark:
    """The mark of attempt ``attempt``, started at ``started``, from what Stripe answered it."""
    state = _STATE_AFTER[report.outcome]
    code = None if state is MeterState.REPORTED else report.code
    return MeterMark(attempt, state, code, started, maybe_recorded=report.maybe_recorded)


def _tell_failed(job: StoredJob, code: str | None, attempt: int, doubt: datetime | None) -> None:
    if code == UNCONFIRMED:
        logger.warning(
            "Usage of job %s of %s no longer sent to Stripe: Stripe may hold it already (an "
            "attempt at %s was not confirmed) and no longer refuses a resend; check Stripe's "
            "meter events for the identifier %s before billing it by hand",
            job.job_id,
            job.client_id,
            doubt.isoformat() if doubt else "?",
            meter_identifier(job.client_id, job.job_id),
        )
        return
    logger.warning(
        "Usage of job %s of %s not reported to Stripe: %s (attempt %d)",
        job.job_id,
        job.client_id,
        code,
        attempt,
    )


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
        if now is not None:
            resolve_now(now)  # a time without a zone is refused before anything is sent
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
                done.count(self._send(job, now))
            if len(batch) < METER_BATCH or not fresh or done.pending > waiting:
                # All sent, or Stripe asks to wait: the next pass goes on. A report is tried
                # at most once a pass, so a pass ends whatever the store answers.
                return done

    def _send(self, job: StoredJob, now: datetime | None) -> MeterState:
        """One attempt at one report, marked in the store; the state it is left in."""
        receipt = job.receipt
        assert receipt is not None  # the store lists only jobs with a pending report
        meter = receipt.meter
        assert meter is not None
        attempt = meter.attempts + 1
        started = resolve_now(now, utcnow)  # read for each report: a pass may take a while
        at, credits, customer = receipt.settled_at, receipt.overage, meter.customer_id
        if at is None or credits is None or customer is None:
            return self._mark(job, MeterMark(attempt, MeterState.FAILED, INVALID), started)
        doubt = meter.doubt_since
        if past_resend_window(doubt, started):
            return self._mark(job, MeterMark(attempt, MeterState.FAILED, UNCONFIRMED), started)
        if started - at > MAX_AGE:
            return self._mark(job, MeterMark(attempt, MeterState.FAILED, TOO_OLD), started)
        sending = MeterMark(attempt, MeterState.PENDING, started_at=started, answered=False)
        # The store checks the window again on the report as it stands (another worker's
        # attempt may have come since this pass read it): past it, this mark is "unconfirmed".
        current = self._record(job, sending, started)
        if current is not MeterState.PENDING:  # marked meanwhile by another worker, or gone
            return current or MeterState.FAILED
        if past_resend_window(doubt or started, resolve_now(now, utcnow)):
            # The worker stalled since (a paused VM, a long wait on the store): not sent.
            late = MeterMark(attempt, MeterState.FAILED, UNCONFIRMED, started_at=started)
            return self._mark(job, late, started)
        try:
            report = self.reporter.report_usage(
                job.client_id, job.job_id, customer, credits, at, attempt=attempt
            )
        except ValueError:  # refused before anything was sent
            invalid = MeterMark(attempt, MeterState.FAILED, INVALID, started_at=started)
            return self._mark(job, invalid, started)
        return self._mark(job, mark_of(report, attempt, started), started)

    def _record(self, job: StoredJob, mark: MeterMark, now: datetime) -> MeterState | None:
        """Write the mark; the report's state after it (None: the job is gone)."""
        op = MarkMeter(job.client_id, job.job_id, now, mark)
        try:
            settled = cast(Settled, self.service.committer.run(op))
        except (JobNotFound, ClientNotFound):  # not expected: jobs and clients are kept
            logger.error("The report of job %s of %s is gone", job.job_id, job.client_id)
            return None
        receipt = settled.job.receipt
        meter = None if receipt is None else receipt.meter
        if settled.changed and meter is not None and meter.state is MeterState.FAILED:
            _tell_failed(job, meter.code, meter.attempts, meter.doubt_since)
        return None if meter is None else meter.state

    def _mark(self, job: StoredJob, mark: MeterMark, now: datetime) -> MeterState:
        """Write what an attempt came to; the state it makes of the report."""
        return MeterState.FAILED if self._record(job, mark, now) is None else mark.state

    def _tell_unconfigured(self, count: int) -> None:
        if not self._told_unconfigured:
            self._told_unconfigured = True
            logger.warning(
                "Usage is not reported to Stripe (set STRIPE_METER_EVENT_NAME and "
                "STRIPE_SECRET_KEY): %s job reports wait to be sent",
                f"{count}+" if count >= METER_BATCH else count,
            )
