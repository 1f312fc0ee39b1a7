"""Charging by outcome: the rules, once, for every backend.

A job is reserved at intake (its price held, see :func:`openclaw_billing.jobs.accept`), then
its runner reports where it is (:class:`Report`). The legal moves::

    queued  -> running, succeeded, failed, cancelled, timed_out, expired
    running -> succeeded, failed, cancelled, timed_out, expired

An ended job (every status but ``queued`` and ``running``) moves no more. The same report
again is answered with the job as it stands and changes nothing, so a runner may retry a
report whose answer it lost; another end for an ended job is an :class:`IllegalTransition`.

When a job ends its hold is settled by the plan's outcome policy
(:meth:`openclaw_billing.plans.Plan.settlement`): released in full, or charged. A charge is
the metered cost of the reported usage if the plan meters it (else the reservation), never
more than the reservation nor the job's ``max_credits``; measured credits beyond the
reservation are the job's ``overage`` (reported to Stripe for a subscribed client, never
taken from the allowance). The receipt on the job says what was reserved, charged and
released, and why.

Whether the overage is reported is decided with the settlement (:func:`meter_report`) and
written on the receipt in the same atomic step: the receipt's ``meter`` is the outbox, so a
report can never be lost between the settlement and its sending. The sender
(:mod:`openclaw_billing.stripe_billing.meter_outbox`) then marks what each attempt came to
(:func:`mark_meter`), changing nothing but the receipt's ``meter``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from . import ledger
from .errors import IllegalTransition, InvalidRequest
from .jobs import (
    MAX_SENDING,
    UNCONFIRMED,
    JobStatus,
    MeterReport,
    MeterState,
    Receipt,
    StoredJob,
    Usage,
    past_resend_window,
)
from .models import ClientRecord
from .plans import (
    CANCELLED_AFTER_START,
    CANCELLED_BEFORE_START,
    EXPIRED,
    FAILED_PREFIX,
    SUCCEEDED,
    TIMED_OUT,
    Plan,
    Settlement,
    get_plan,
)

_ENDS = frozenset(JobStatus) - {JobStatus.QUEUED, JobStatus.RUNNING}
LEGAL: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: _ENDS | {JobStatus.RUNNING},
    JobStatus.RUNNING: _ENDS,
}


@dataclass(frozen=True)
class Report:
    """What a runner (or the client, or the sweeper) says of a job: its new ``status``, for
    ``failed`` the ``failure_class``, and optionally the measured ``usage``."""

    status: JobStatus
    failure_class: str | None = None
    usage: Usage | None = None
    #: Reported by the job's client: it may only cancel a queued job.
    by_client: bool = False


class Settled:
    """What a report came to: the job as it stands after it, and whether it changed."""

    __slots__ = ("changed", "job")

    def __init__(self, job: StoredJob, changed: bool) -> None:
        self.job = job
        self.changed = changed


def failure_classes(plan: Plan) -> list[str]:
    """The failure classes the plan's policy names (what a runner may report)."""
    return sorted(
        k[len(FAILURE_PREFIX) :] for k in plan.outcome_policy if k.startswith(FAILED_PREFIX)
    )


FAILURE_PREFIX = FAILED_PREFIX


def check(report: Report, plan: Plan) -> None:
    """Refuse a report that cannot be right whatever the job (``InvalidRequest``)."""
    if report.status is JobStatus.FAILED:
        known = failure_classes(plan)
        if report.failure_class not in known:
            raise InvalidRequest(f"A failed job needs a failure_class, one of: {', '.join(known)}")
    elif report.failure_class is not None:
        raise InvalidRequest("failure_class is only for a failed job")


def end_of(job: StoredJob, report: Report) -> str:
    """The policy's name of how the job ends (see ``plans.DEFAULT_POLICY``)."""
    status = report.status
    if status is JobStatus.FAILED:
        return f"{FAILED_PREFIX}{report.failure_class}"
    if status is JobStatus.CANCELLED:
        return CANCELLED_BEFORE_START if job.status is JobStatus.QUEUED else CANCELLED_AFTER_START
    return {
        JobStatus.SUCCEEDED: SUCCEEDED,
        JobStatus.TIMED_OUT: TIMED_OUT,
        JobStatus.EXPIRED: EXPIRED,
    }[status]


_WHY = {
    SUCCEEDED: "succeeded",
    CANCELLED_BEFORE_START: "cancelled before it started",
    CANCELLED_AFTER_START: "cancelled while running",
    TIMED_OUT: "timed out",
    EXPIRED: "not settled within its hold's time to live",
}


def apply(record: ClientRecord, job: StoredJob, report: Report, now: datetime) -> Settled:
    """The report applied to ``job`` of the locked ``record`` (its cycle rolled): the record's
    ledger is changed in place when a hold is settled. Raises ``IllegalTransition`` or
    ``InvalidRequest`` having changed nothing."""
    plan = get_plan(record.plan)
    check(report, plan)
    if report.by_client and job.status not in (JobStatus.QUEUED, JobStatus.CANCELLED):
        raise IllegalTransition(f"Only a queued job can be cancelled; this one is {job.status}")
    if report.status is job.status:
        if job.status.open or job.failure_class == report.failure_class:
            return Settled(job, False)  # the same report again
        raise IllegalTransition(f"The job already failed as {job.failure_class}")
    if report.status not in LEGAL.get(job.status, frozenset()):
        raise IllegalTransition(f"A {job.status.value} job cannot become {report.status.value}")
    usage = report.usage if report.usage is not None else job.usage
    if report.status is JobStatus.RUNNING:
        moved = {"status": report.status, "started_at": now, "usage": usage}
        return Settled(job.model_copy(update=moved), True)
    end = end_of(job, report)
    receipt = job.receipt
    if receipt is not None and receipt.held:
        receipt = settle(record, job.job_id, receipt, plan, end, usage or {}, now)
    ended = {
        "status": report.status,
        "failure_class": report.failure_class,
        "usage": usage,
        "ended_at": now,
        "receipt": receipt,
    }
    return Settled(job.model_copy(update=ended), True)


def settle(
    record: ClientRecord,
    job_id: str,
    receipt: Receipt,
    plan: Plan,
    end: str,
    usage: Usage,
    now: datetime,
) -> Receipt:
    """Close the hold by the plan's policy for ``end``: the receipt of the settlement."""
    metered = plan.metered_credits(usage) if usage else None
    cap = (
        receipt.reserved
        if receipt.max_credits is None
        else min(receipt.reserved, receipt.max_credits)
    )
    overage = 0
    if plan.settlement(end) is Settlement.RELEASE:
        charged = 0
    elif metered is None:
        charged = cap
    else:
        charged = min(metered, cap)
        ceiling = metered if receipt.max_credits is None else min(metered, receipt.max_credits)
        overage = max(0, ceiling - receipt.reserved)
    held = settle_hold(record, job_id, charged, now)
    why = _WHY.get(end) or f"failed ({end[len(FAILED_PREFIX) :]})"
    if charged == 0:
        reason = f"{why}: released in full"
    elif metered is not None and charged < receipt.reserved:
        reason = f"{why}: charged the metered cost, the rest released"
    else:
        reason = f"{why}: charged"
    if (held is None or not held[1]) and charged < receipt.reserved:
        reason += " (the hold's cycle had ended: nothing to give back)"
    meter = meter_report(record, overage)
    if meter is not None:
        billed = "billed through Stripe" if meter.state is MeterState.PENDING else _NOT_BILLED
        reason += f"; {overage} credits beyond the reservation {billed}"
    return receipt.model_copy(
        update={
            "charged": charged,
            "released": receipt.reserved - charged,
            "metered": metered,
            "overage": overage or None,
            "reason": reason,
            "settled_at": now,
            "meter": meter,
        }
    )


_NOT_BILLED = "not billed (no live Stripe subscription)"


def meter_report(record: ClientRecord, overage: int) -> MeterReport | None:
    """Whether a job's ``overage`` is to be reported to Stripe, decided as its hold is settled
    (None: no overage). It is when the client has a Stripe customer and a subscription whose
    plan is in force (``ledger.PLAN_IN_FORCE``: past due and unpaid included, since such a
    subscription still invoices and the usage was consumed): a pending report for that
    customer. Otherwise nothing is billed, and the receipt says so."""
    if overage <= 0:
        return None
    if (
        record.stripe_customer_id
        and record.stripe_subscription_id
        and record.metadata.subscription_status in ledger.PLAN_IN_FORCE
    ):
        return MeterReport(state=MeterState.PENDING, customer_id=record.stripe_customer_id)
    return MeterReport(state=MeterState.NOT_BILLED)


@dataclass(frozen=True)
class MeterMark:
    """What attempt number ``attempt`` to send a job's report came to: ``reported`` (Stripe
    holds the event), ``pending`` (try again later) or ``failed`` (refused for good), with
    Stripe's error ``code``. ``started_at`` is when the attempt started (None: nothing was
    sent), recorded before it is sent by a mark with ``answered`` False; its answer's mark
    says whether Stripe may hold the event though it did not say so (``maybe_recorded``)."""

    attempt: int
    state: MeterState
    code: str | None = None
    started_at: datetime | None = None
    answered: bool = True
    maybe_recorded: bool = False

    def __post_init__(self) -> None:
        if self.state is MeterState.NOT_BILLED or self.attempt < 1:
            raise ValueError("a mark is an attempt (from 1) that reported, failed or is pending")
        if not self.answered and (self.state is not MeterState.PENDING or not self.started_at):
            raise ValueError("an attempt about to be sent is pending, with its start")


def mark_meter(job: StoredJob, mark: MeterMark, now: datetime) -> Settled:
    """The job with its report marked (only the receipt's ``meter`` changes; credits never).

    Idempotent, and safe for workers that sent the same report at once: the attempts counted
    are the highest attempt marked, not a sum. ``reported`` is final (Stripe holds the event,
    whatever another attempt said); ``failed`` gives way only to ``reported``; a report not
    pending, or no report, is left as it is. ``changed`` is False when nothing moved.

    An attempt about to be sent adds its start to the report's ``sending``; its answer takes
    it out again, into ``unconfirmed_since`` (the earliest kept) when Stripe may hold the
    event, so the report's ``doubt_since`` never forgets an attempt Stripe may have recorded."""
    receipt = job.receipt
    meter = None if receipt is None else receipt.meter
    if receipt is None or meter is None or meter.state not in _MARKABLE[mark.state]:
        return Settled(job, False)
    attempts = max(meter.attempts, mark.attempt)
    started = mark.started_at
    if not mark.answered and started and past_resend_window(meter.doubt_since, started):
        # An attempt Stripe may hold is older than the resend window allows (another
        # worker's, recorded since the sender read the report): not sent, for an operator.
        update: dict[str, object] = {
            "state": MeterState.FAILED,
            "attempts": attempts,
            "code": UNCONFIRMED,
        }
    elif not mark.answered:
        update = _doubt(meter, add=mark.started_at)
    elif mark.state is MeterState.REPORTED:
        update = {
            "state": mark.state,
            "attempts": attempts,
            "code": None,
            "reported_at": now,
            "unconfirmed_since": None,
            "sending": (),
        }
    else:
        update = _doubt(meter, answered=mark.started_at, maybe=mark.maybe_recorded)
        if mark.attempt >= meter.attempts:  # else a late answer: the later attempt's stands
            update |= {"state": mark.state, "attempts": attempts, "code": mark.code}
    moved = MeterReport.model_validate(meter.model_dump() | update)
    if moved == meter:
        return Settled(job, False)
    new_receipt = receipt.model_copy(update={"meter": moved})
    return Settled(job.model_copy(update={"receipt": new_receipt}), True)


def _doubt(
    meter: MeterReport,
    *,
    add: datetime | None = None,
    answered: datetime | None = None,
    maybe: bool = False,
) -> dict[str, object]:
    """The report's ``sending`` with the start ``add`` added, or the start ``answered`` taken
    out (into ``unconfirmed_since`` when ``maybe``); beyond ``MAX_SENDING`` starts, the
    earliest are folded into ``unconfirmed_since`` (an attempt kept in doubt, never lost)."""
    sending = set(meter.sending) | ({add} if add else set())
    unconfirmed = [meter.unconfirmed_since] if meter.unconfirmed_since else []
    if answered is not None:
        sending.discard(answered)
        unconfirmed += [answered] if maybe else []
    ordered = sorted(sending)
    unconfirmed += ordered[: max(0, len(ordered) - MAX_SENDING)]
    return {
        "sending": tuple(ordered[-MAX_SENDING:]),
        "unconfirmed_since": min(unconfirmed, default=None),
    }


#: The reports each mark may move: a pending one always; a failed one only to reported.
_MARKABLE: dict[MeterState, frozenset[MeterState]] = {
    MeterState.REPORTED: frozenset({MeterState.PENDING, MeterState.FAILED}),
    MeterState.PENDING: frozenset({MeterState.PENDING}),
    MeterState.FAILED: frozenset({MeterState.PENDING}),
}


def settle_hold(
    record: ClientRecord, job_id: str, charged: int, now: datetime
) -> tuple[int, bool] | None:
    """Close the hold of ``job_id`` at ``charged`` credits (at most what it holds): the rest
    goes back to the client, and with nothing charged, so does its cost. Returns the credits
    the hold held and whether the difference went back (not when the hold was taken in a cycle
    that has since ended: that cycle's credits are gone with it, and the new one started
    full), or None when the ledger holds no open hold for the job."""
    log = record.metadata.cost_log
    for index, entry in enumerate(log):
        if entry.job_id == job_id and entry.held:
            charged = min(charged, entry.credits)
            if record.credits_remaining is not None:
                record.credits_remaining += entry.credits - charged
            if charged == 0 and entry.cost:
                record.total_spent = round(
                    max(0.0, record.total_spent - entry.cost), ledger.SPEND_DECIMALS
                )
            log[index] = entry.model_copy(update={"credits": charged, "held": False})
            record.updated_at = now
            return entry.credits, True
    for summary in record.metadata.cycle_history[-1:]:
        for index, entry in enumerate(summary.entries):
            if entry.job_id == job_id and entry.held:
                closed = {"credits": min(charged, entry.credits), "held": False}
                summary.entries[index] = entry.model_copy(update=closed)
                record.updated_at = now
                return entry.credits, False
    return None
