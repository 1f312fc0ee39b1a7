"""Pure transitions of one client's credits and billing cycles: charge and refund a job, the
ordered refusal of a charge, credit adjustments, (de)activation, cycle start and roll-over,
plan changes. No I/O: each takes a client record and changes it in place.

Stores call these inside their atomic step (the JSON store under its file lock); the SQL
store implements the same transitions as statements, and the storage contract suite checks
that every backend agrees. Each function validates before it mutates: when it raises, the
record is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from . import cycles
from .errors import (
    BalanceTooLarge,
    BillingError,
    ClientInactive,
    ConcurrencyLimitReached,
    CreditLimitReached,
    InsufficientCredits,
    PaymentDisputed,
    PaymentPastDue,
    SubscriptionPaused,
    UnlimitedPlan,
)
from .models import ChargeResult, ClientRecord, CostEntry, CreditAdjustment, CycleSummary
from .plans import PlanId, get_plan

#: The largest credit balance: far above any plan, far below what every backend stores.
MAX_CREDIT_BALANCE = 10**12

#: Spend is money; keep it at a fixed precision so repeated sums don't drift.
SPEND_DECIMALS = 6


def cycle_allowance(record: ClientRecord) -> int | None:
    """The credits the current cycle started with."""
    if record.metadata.cycle_allowance is not None:
        return record.metadata.cycle_allowance
    return get_plan(record.plan).jobs_per_month


def credits_used(record: ClientRecord) -> int | None:
    """Credits the current cycle's jobs take, charged or held: allowance + adjustments -
    credits left (invariant I2); None on an unlimited plan. A released job takes none, and a
    job takes its price, not one credit."""
    if record.credits_remaining is None:
        return None
    adjusted = sum(a.amount for a in record.metadata.credit_adjustments)
    return (cycle_allowance(record) or 0) + adjusted - record.credits_remaining


def start_cycle(
    record: ClientRecord,
    start: datetime,
    end: datetime,
    allowance: int | None,
    now: datetime,
) -> CycleSummary:
    """Close the current cycle into a summary and start ``[start, end)`` with ``allowance``."""
    meta = record.metadata
    summary = CycleSummary(
        start=record.billing_cycle_start,
        end=record.billing_cycle_end,
        plan=record.plan,
        allowance=cycle_allowance(record),
        adjustments=meta.credit_adjustments,
        jobs=len(meta.cost_log),
        credits=sum(e.credits for e in meta.cost_log),
        spend=round(sum(e.cost for e in meta.cost_log), SPEND_DECIMALS),
        credits_left=record.credits_remaining,
        entries=meta.cost_log,
    )
    for older in meta.cycle_history:
        older.entries = []
    meta.cycle_history.append(summary)
    record.billing_cycle_start = start
    record.billing_cycle_end = end
    record.credits_remaining = allowance
    meta.cycle_allowance = allowance
    meta.cost_log = []
    meta.credit_adjustments = []
    record.updated_at = now
    return summary


def roll_cycle(record: ClientRecord, now: datetime) -> CycleSummary | None:
    """Start the cycle containing ``now`` if the stored one has ended; else do nothing.

    Returns the summary of the cycle that ended (for the log line), or None.
    """
    if not cycles.is_expired(record.billing_cycle_end, now):
        return None
    start, end = cycles.cycle_containing(record.billing_cycle_start, now)
    return start_cycle(record, start, end, get_plan(record.plan).jobs_per_month, now)


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


#: Subscription states in which a renewal is unpaid: no job runs until Stripe is paid.
UNPAID_STATUSES = frozenset({"past_due", "unpaid"})
#: Subscription states in which the subscription's plan is in force (past_due/unpaid: the plan
#: stays, but no job runs until the invoice is paid). ``trialing`` is in force: a trial grants
#: the plan's allowance for the trial period. In these states the subscription still invoices,
#: so a job's usage beyond its reservation is reported to Stripe (``outcomes.meter_report``):
#: a past-due client still owes the usage of the jobs it ran.
PLAN_IN_FORCE = frozenset({"active", "trialing", *UNPAID_STATUSES})


#: ``metadata`` key (stored as-is by every backend): ids of the open disputes of the client's
#: payments. While one is open no job runs, as while past due (see ``stripe_billing.reversals``).
OPEN_DISPUTES = "open_disputes"


def dispute_ids(extra: Mapping[str, object] | None) -> list[str]:
    """The open dispute ids in a record's extra metadata (``metadata.model_extra``)."""
    found = (extra or {}).get(OPEN_DISPUTES)
    return [d for d in found if isinstance(d, str)] if isinstance(found, list) else []


def open_disputes(record: ClientRecord) -> list[str]:
    return dispute_ids(record.metadata.model_extra)


class Refusal(StrEnum):
    """Every reason a job is refused, in the order the rules are checked: the first that
    applies is the answer. This is the only place the rule is written: ``charge`` (every
    backend's), ``can_submit_job`` and the usage view's ``status`` all read it, so rewording an
    error message changes no status. The value is the usage view's ``status``."""

    INACTIVE = "inactive"
    PAST_DUE = "past_due"
    DISPUTED = "disputed"
    PAUSED = "paused"
    LIMIT_REACHED = "limit_reached"
    #: Queued plus running jobs at the client's cap (never the usage view's status: it is
    #: decided with the jobs, in the charge's atomic step).
    AT_CONCURRENCY_CAP = "at_concurrency_cap"

    @property
    def error(self) -> type[BillingError]:
        """What a charge refused for this reason raises."""
        return _REFUSAL_ERRORS[self]

    @property
    def reason(self) -> str:
        """The advisory reason of ``can_submit_job`` (an inactive client's key is refused as
        unknown over HTTP, but the host asking about its own client is told why)."""
        return "Client is inactive" if self is Refusal.INACTIVE else self.error.message


_REFUSAL_ERRORS: dict[Refusal, type[BillingError]] = {
    Refusal.INACTIVE: ClientInactive,
    Refusal.PAST_DUE: PaymentPastDue,
    Refusal.DISPUTED: PaymentDisputed,
    Refusal.PAUSED: SubscriptionPaused,
    Refusal.LIMIT_REACHED: CreditLimitReached,
    Refusal.AT_CONCURRENCY_CAP: ConcurrencyLimitReached,
}


def refusal(
    *,
    active: bool,
    subscription_status: str | None,
    disputed: bool,
    credits_remaining: int | None,
    price: int = 1,
    active_jobs: int = 0,
    cap: int | None = None,
) -> Refusal | None:
    """Why a job would be refused, or None if it would be accepted. Written over the few
    fields it reads so that the SQL store's charge path, which has a row rather than a
    record, asks the same function (call ``roll_cycle`` first: a due reset changes credits).
    ``price``: the credits the job takes; ``active_jobs``: the client's open holds, against
    its concurrency ``cap`` (None: no cap)."""
    if not active:
        return Refusal.INACTIVE
    if subscription_status in UNPAID_STATUSES:
        return Refusal.PAST_DUE
    if disputed:
        return Refusal.DISPUTED
    if subscription_status == "paused":
        return Refusal.PAUSED
    if credits_remaining is not None and credits_remaining < max(price, 1):
        return Refusal.LIMIT_REACHED
    if cap is not None and active_jobs >= cap:
        return Refusal.AT_CONCURRENCY_CAP
    return None


def concurrency_cap(plan: PlanId | str, override: int | None) -> int | None:
    """How many jobs a client may have queued or running: its own cap, else its plan's."""
    return override if override is not None else get_plan(plan).max_active_jobs


def open_holds(record: ClientRecord) -> int:
    """How many of the client's jobs hold credits now (queued or running, hold not settled),
    read from its ledger without asking the store: the held entries of this cycle and of the
    one before it (a hold taken before a reset stays there until its job ends, see
    :func:`.outcomes.settle_hold`). A hold that outlives two cycle starts (its summary's
    entries are dropped) is no longer seen here: a store that keeps jobs is asked instead
    (``JobStorage.active_jobs``, what its reservation step counts); this count is for a store
    that keeps none (a host's own), and for a view given no store's count."""
    history = record.metadata.cycle_history[-1:]
    entries = [*record.metadata.cost_log, *(e for summary in history for e in summary.entries)]
    return sum(1 for entry in entries if entry.held)


def refusal_of(
    record: ClientRecord, *, price: int = 1, active_jobs: int = 0, cap: int | None = None
) -> Refusal | None:
    """:func:`refusal` of a whole record (``price``, ``active_jobs``, ``cap``: as there)."""
    return refusal(
        active=record.active,
        subscription_status=record.metadata.subscription_status,
        disputed=bool(open_disputes(record)),
        credits_remaining=record.credits_remaining,
        price=price,
        active_jobs=active_jobs,
        cap=cap,
    )


def charge(
    record: ClientRecord,
    job_id: str,
    cost: float,
    now: datetime,
    *,
    credits: int = 1,
    held: bool = False,
    active_jobs: int = 0,
) -> ChargeResult:
    """Charge ``credits`` for ``job_id`` (unlimited plans: log only); ``held``: as a hold, to
    be settled when the job ends. Call ``roll_cycle`` first. ``active_jobs``: the client's
    open holds, checked against its concurrency cap.

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
    cap = concurrency_cap(record.plan, record.max_active_jobs) if held else None
    refused = refusal_of(record, price=credits, active_jobs=active_jobs, cap=cap)
    if refused is not None:
        raise refused.error()
    return book_charge(record, job_id, cost, now, credits=credits, held=held)


def book_charge(
    record: ClientRecord,
    job_id: str,
    cost: float,
    now: datetime,
    *,
    credits: int = 1,
    held: bool = False,
) -> ChargeResult:
    """What an accepted charge does to the record, with no check: :func:`charge` once it has
    decided, and a journal replaying a charge decided before (the JSON store)."""
    if record.credits_remaining is not None:
        record.credits_remaining -= credits
    entry = CostEntry(timestamp=now, cost=cost, job_id=job_id, credits=credits, held=held)
    record.metadata.cost_log.append(entry)
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
        if entry.job_id == job_id and not entry.held:  # a hold is settled, not refunded
            del log[index]
            if record.credits_remaining is not None:
                record.credits_remaining += entry.credits
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
    if record.credits_remaining + amount > MAX_CREDIT_BALANCE:
        raise BalanceTooLarge(f"An adjustment may not take credits above {MAX_CREDIT_BALANCE:,}")
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


# -- subscription transitions (driven by verified Stripe events) ------------------------------

#: A cycle that started this close before a paid period's start already serves that period
#: (the 30-day fallback reset got there first): it is re-aligned, not granted again.
ALIGN_SLACK = timedelta(days=7)


def align_to_period(
    record: ClientRecord, start: datetime, end: datetime, now: datetime
) -> CycleSummary | None:
    """Make the current cycle the paid period ``[start, end)``.

    * the same period, or one that ended before this cycle began: nothing changes;
    * a cycle that already serves the period (started from ``start - ALIGN_SLACK`` on): only
      its boundaries move, its credits stay;
    * otherwise a new cycle starts with the plan's allowance (returns the old one's summary).
    """
    if (record.billing_cycle_start, record.billing_cycle_end) == (start, end):
        return None
    if end <= record.billing_cycle_start:
        return None
    if record.billing_cycle_start >= start - ALIGN_SLACK:
        record.billing_cycle_start = start
        record.billing_cycle_end = end
        record.updated_at = now
        return None
    return start_cycle(record, start, end, get_plan(record.plan).jobs_per_month, now)


def change_plan(
    record: ClientRecord, plan: PlanId, start: datetime, end: datetime, now: datetime
) -> CycleSummary | None:
    """Move to ``plan`` for the paid period ``[start, end)``; takes effect at once.

    A new period (a first subscription, say) starts a new cycle with the new plan's full
    allowance; unused credits of the old cycle do not carry over. Within the period the cycle
    is already aligned to (a prorated upgrade or downgrade of the same subscription) the
    difference of the allowances is applied as a credit adjustment, never below zero, so the
    jobs already run this cycle still count.
    """
    if plan == record.plan:
        return align_to_period(record, start, end, now)
    old_plan, new_allowance = record.plan, get_plan(plan).jobs_per_month
    same_period = record.billing_cycle_start == start
    if not same_period or record.credits_remaining is None or new_allowance is None:
        summary = start_cycle(record, start, end, new_allowance, now)  # closed under old_plan
        record.plan = plan
        return summary
    record.plan = plan
    old_allowance = get_plan(old_plan).jobs_per_month or 0
    delta = max(new_allowance - old_allowance, -record.credits_remaining)
    record.credits_remaining += delta
    record.metadata.credit_adjustments.append(
        CreditAdjustment(
            timestamp=now, amount=delta, reason=f"plan change {old_plan.value} -> {plan.value}"
        )
    )
    record.billing_cycle_start, record.billing_cycle_end = start, end
    record.updated_at = now
    return None


def return_to_free(record: ClientRecord, now: datetime) -> CycleSummary | None:
    """The subscription ended: back to the free plan, with a fresh free cycle from now."""
    record.stripe_subscription_id = None
    if record.plan == PlanId.FREE:
        return None
    start, end = cycles.first_cycle(now)
    summary = start_cycle(record, start, end, get_plan(PlanId.FREE).jobs_per_month, now)
    record.plan = PlanId.FREE  # after the old cycle was closed under the paid plan
    return summary
