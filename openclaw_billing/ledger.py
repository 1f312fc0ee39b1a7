"""The billing rules as pure transitions of one client record.

Stores call these inside their atomic step (the JSON store under its file lock); the SQL
store implements the same transitions as statements, and the storage contract suite checks
that every backend agrees. Each function validates before it mutates: when it raises, the
record is unchanged.
"""

from __future__ import annotations

from datetime import datetime

from . import cycles
from .errors import ClientInactive, CreditLimitReached, InsufficientCredits, UnlimitedPlan
from .models import ChargeResult, ClientRecord, CostEntry, CreditAdjustment, CycleSummary
from .plans import get_plan

#: Spend is money; keep it at a fixed precision so repeated sums don't drift.
SPEND_DECIMALS = 6


def cycle_allowance(record: ClientRecord) -> int | None:
    """The credits the current cycle started with."""
    if record.metadata.cycle_allowance is not None:
        return record.metadata.cycle_allowance
    return get_plan(record.plan).jobs_per_month


def roll_cycle(record: ClientRecord, now: datetime) -> CycleSummary | None:
    """Start the cycle containing ``now`` if the stored one has ended; else do nothing.

    Returns the summary of the cycle that ended (for the log line), or None.
    """
    if not cycles.is_expired(record.billing_cycle_end, now):
        return None
    meta = record.metadata
    summary = CycleSummary(
        start=record.billing_cycle_start,
        end=record.billing_cycle_end,
        plan=record.plan,
        allowance=cycle_allowance(record),
        adjustments=meta.credit_adjustments,
        jobs=len(meta.cost_log),
        spend=round(sum(e.cost for e in meta.cost_log), SPEND_DECIMALS),
        credits_left=record.credits_remaining,
        entries=meta.cost_log,
    )
    for older in meta.cycle_history:
        older.entries = []
    meta.cycle_history.append(summary)
    start, end = cycles.cycle_containing(record.billing_cycle_start, now)
    allowance = get_plan(record.plan).jobs_per_month
    record.billing_cycle_start = start
    record.billing_cycle_end = end
    record.credits_remaining = allowance
    meta.cycle_allowance = allowance
    meta.cost_log = []
    meta.credit_adjustments = []
    record.updated_at = now
    return summary


def find_charge(record: ClientRecord, job_id: str) -> CostEntry | None:
    """The ledger entry of ``job_id`` in this cycle or the one before it, if any."""
    for entry in record.metadata.cost_log:
        if entry.job_id == job_id:
            return entry
    if record.metadata.cycle_history:
        for entry in record.metadata.cycle_history[-1].entries:
            if entry.job_id == job_id:
                return entry
    return None


def submit_refusal(record: ClientRecord) -> str | None:
    """Why a job would be refused now (after any due reset), or None if it would be accepted."""
    if not record.active:
        return "Client is inactive"
    if record.credits_remaining is not None and record.credits_remaining <= 0:
        return CreditLimitReached.message
    return None


def charge(record: ClientRecord, job_id: str, cost: float, now: datetime) -> ChargeResult:
    """Charge one credit for ``job_id`` (unlimited plans: log only). Call ``roll_cycle`` first.

    A job id already in the ledger is not charged again: its first result is returned with
    ``replayed=True``.
    """
    existing = find_charge(record, job_id)
    if existing is not None:
        return ChargeResult(
            record.client_id,
            job_id,
            existing.cost,
            existing.timestamp,
            record.credits_remaining,
            replayed=True,
        )
    if not record.active:
        raise ClientInactive()
    if record.credits_remaining is not None:
        if record.credits_remaining <= 0:
            raise CreditLimitReached()
        record.credits_remaining -= 1
    record.metadata.cost_log.append(CostEntry(timestamp=now, cost=cost, job_id=job_id))
    record.total_spent = round(record.total_spent + cost, SPEND_DECIMALS)
    record.updated_at = now
    return ChargeResult(
        record.client_id, job_id, cost, now, record.credits_remaining, replayed=False
    )


def refund(record: ClientRecord, job_id: str, now: datetime) -> bool:
    """Undo the current cycle's charge of ``job_id`` (the job could not be queued): the ledger
    entry goes, the credit and the cost come back. A job charged in an earlier cycle, or never,
    is left alone; returns whether anything was refunded."""
    log = record.metadata.cost_log
    for index, entry in enumerate(log):
        if entry.job_id == job_id:
            del log[index]
            if record.credits_remaining is not None:
                record.credits_remaining += 1
            record.total_spent = round(max(0.0, record.total_spent - entry.cost), SPEND_DECIMALS)
            record.updated_at = now
            return True
    return False


def add_credits(record: ClientRecord, amount: int, reason: str, now: datetime) -> None:
    """Add (or, when negative, remove) credits in the current cycle, with a reason."""
    if record.credits_remaining is None:
        raise UnlimitedPlan()
    if record.credits_remaining + amount < 0:
        raise InsufficientCredits()
    record.credits_remaining += amount
    record.metadata.credit_adjustments.append(
        CreditAdjustment(timestamp=now, amount=amount, reason=reason)
    )
    record.updated_at = now


def set_active(record: ClientRecord, active: bool, now: datetime) -> bool:
    """Activate or deactivate (soft delete); returns whether anything changed."""
    if record.active == active:
        return False
    record.active = active
    record.updated_at = now
    return True
