"""Request and response schemas, named by role: the types every schema shares (one-line text,
times in the accepted window, email), the error shape, and the public and client-facing
schemas. The admin API's schemas are in :mod:`.schemas_admin`. Inputs forbid extra fields, so
a client can never set its own credits, plan or id."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)

from ..cycles import as_utc
from ..ledger import concurrency_cap, open_holds, refusal_of
from ..models import ClientRecord, UtcDatetime
from ..plans import DEFAULT_POLICY, PLANS, Plan, PlanId, Settlement
from ..quotes import (
    DEFAULT_PRIORITY,
    DEFAULT_TASK_TYPE,
    QUOTE_TTL,
    TASK_TYPE_PATTERN,
    Priority,
    Quote,
)
from ..safetext import CONTROLS, ONE_LINE, is_one_line

# Single-line text follows safetext.ONE_LINE (no controls, line breaks or bidi overrides). Lone
# surrogates never get this far: pydantic refuses a string that is not valid Unicode.
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=ONE_LINE),
]

#: Every time a request gives (a key's expiry, the audit log's ``since`` and ``until``) is in
#: this window, in UTC: far beyond any real use, and every backend stores it and can add a
#: billing cycle or a grace period to it.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _bounded_utc(value: datetime) -> datetime:
    # A time without a zone (a query parameter) is UTC. Converting can overflow: a valid
    # "9999-12-31T23:59:59-23:59" is in the year 10000 in UTC.
    try:
        utc: datetime | None = as_utc(value)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_TIME <= utc <= LATEST_TIME:
        raise ValueError(
            f"must be between {EARLIEST_TIME.isoformat()} and {LATEST_TIME.isoformat()} in UTC"
        )
    return utc


def _iso_text(value: object) -> object:
    # pydantic reads a number (or a numeric string) as Unix time; the schema says ISO 8601.
    if not isinstance(value, str | datetime) or (
        isinstance(value, str) and not re.match(r"\d{4}-\d{2}-\d{2}", value)
    ):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2026-01-31T00:00:00Z")
    return value


#: A date-time in a body: ISO 8601 with a zone, in the time window, returned in UTC.
Instant = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_bounded_utc)]
#: A date-time given as ISO 8601 text (a query parameter), never as Unix seconds; UTC if no
#: zone; in the time window, returned in UTC.
IsoDatetime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_bounded_utc)]
Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=ONE_LINE),
]


def _one_line(value: str) -> str:
    if not is_one_line(value):
        raise ValueError("must be one line without control characters")
    return value


#: RFC 5321's limit on a whole address; email-validator refuses controls and line breaks, and
#: the one-line rule is checked again on the address it returns.
Email = Annotated[EmailStr, Field(max_length=254), AfterValidator(_one_line)]


class StrictInput(BaseModel):
    """A request body: an unknown field is refused, so a client can never set its own
    credits, plan or id. Each one carries a valid example (``json_schema_extra``), shown in
    the OpenAPI document and sent by the tests that cover every route."""

    model_config = ConfigDict(extra="forbid")


class ErrorPublic(BaseModel):
    code: str = Field(examples=["invalid_api_key"])
    message: str = Field(examples=["Invalid or inactive API key"])
    detail: str = Field(description="The message again, for clients of the original module.")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="Where: body, query, path or header, then names.")
    msg: str
    type: str


class ValidationErrorPublic(ErrorPublic):
    """422 ``validation_error``: the one error shape plus where and what."""

    code: str = Field(examples=["validation_error"])
    message: str = Field(examples=["Request validation failed"])
    errors: list[ValidationIssue]


class JobPricesPublic(BaseModel):
    """A job's price in credits on a plan: its task type's price (``default`` for a type not
    listed) plus its priority's surcharge (0 for a priority not listed), at least 1."""

    default: int = Field(description="The price of a job whose task type is not listed.")
    task_types: dict[str, int] = Field(description="Prices by task type.")
    priority_surcharges: dict[str, int] = Field(description="Credits added by priority (P0-P3).")

    @classmethod
    def of(cls, plan: Plan) -> JobPricesPublic:
        prices = plan.task_prices
        return cls(
            default=plan.default_price,
            task_types={name: price for name, price in prices.items() if name != "*"},
            priority_surcharges=dict(plan.priority_surcharges),
        )


class PlanPublic(BaseModel):
    id: PlanId
    name: str
    price_usd: int | None = Field(description="Monthly price; null means custom pricing.")
    price_label: str
    jobs_per_month: int | None = Field(description="Null means unlimited.")
    history_days: int | None = Field(description="Job history window; null means forever.")
    features: list[str]
    requests_per_minute: int = Field(
        description="Default rate limit of a client on this plan (an admin may override it)."
    )
    max_active_jobs: int | None = Field(
        description="Jobs a client may have queued or running at once; null means no cap (an "
        "admin may set a client's own)."
    )
    hold_ttl_seconds: int = Field(
        description="How long a job's price is held: a job not ended by then expires and its "
        "hold is released (OPENCLAW_HOLD_TTL_SECONDS, when set, for every plan)."
    )
    job_prices: JobPricesPublic
    outcome_policy: dict[str, Settlement] = Field(
        description="What each end of a job does with its hold: charge, or release in full."
    )
    usage_rates: dict[str, float] = Field(
        description="Credits per unit of measured usage, by name; empty: a job is charged "
        "the price it holds."
    )

    @classmethod
    def of(cls, plan: Plan, hold_ttl: timedelta | None = None) -> PlanPublic:
        """``hold_ttl``: the time to live set for every plan, if any (else the plan's)."""
        ends = {**DEFAULT_POLICY, **plan.outcome_policy}
        return cls(
            id=plan.id,
            name=plan.name,
            price_usd=plan.price_usd,
            price_label=plan.price_label,
            jobs_per_month=plan.jobs_per_month,
            history_days=plan.history_days,
            features=list(plan.features),
            requests_per_minute=plan.requests_per_minute,
            max_active_jobs=plan.max_active_jobs,
            hold_ttl_seconds=int((hold_ttl or plan.hold_ttl).total_seconds()),
            job_prices=JobPricesPublic.of(plan),
            outcome_policy={end: plan.settlement(end) for end in ends},
            usage_rates=dict(plan.usage_rates),
        )


class PlansPublic(BaseModel):
    plans: list[PlanPublic]

    @classmethod
    def catalogue(cls, hold_ttl: timedelta | None = None) -> PlansPublic:
        return cls(plans=[PlanPublic.of(p, hold_ttl) for p in PLANS.values()])


#: A client's jobs that hold credits now, and how many may (usage and the admin's detail).
ActiveJobs = Annotated[
    int,
    Field(
        description="Jobs queued or running now, their price held: what the concurrency cap counts."
    ),
]
ActiveJobsLimit = Annotated[
    int | None,
    Field(
        description="Jobs that may be queued or running at once: the client's own cap, else "
        "its plan's; null means no cap."
    ),
]


#: Stripe substitutes ``{CHECKOUT_SESSION_ID}`` in these, so they are checked as text (a URL
#: type would percent-encode the braces).
RedirectUrl = Annotated[
    str, StringConstraints(pattern=rf"^https?://[^\s{CONTROLS}]+$", max_length=2000)
]


class CheckoutRequest(StrictInput):
    model_config = ConfigDict(json_schema_extra={"examples": [{"plan": "starter"}]})

    plan: PlanId
    success_url: RedirectUrl | None = None
    cancel_url: RedirectUrl | None = None


class CheckoutPublic(BaseModel):
    checkout_url: str = Field(description="Send the client's browser here to pay.")
    session_id: str


class PortalRequest(StrictInput):
    model_config = ConfigDict(json_schema_extra={"examples": [{}]})

    return_url: RedirectUrl | None = None


class PortalPublic(BaseModel):
    portal_url: str = Field(description="Stripe's customer portal: cards, invoices, cancel.")


class WebhookAck(BaseModel):
    received: bool
    event_id: str
    outcome: str = Field(description="applied, duplicate, stale, unmatched or ignored")


class ReturnPublic(BaseModel):
    message: str

    @classmethod
    def for_query(cls, checkout: str | None) -> ReturnPublic:
        if checkout == "cancel":
            return cls(message="Checkout was cancelled; nothing was charged. You can close this.")
        return cls(
            message="Thank you. Your plan changes as soon as Stripe confirms the payment; "
            "GET /api/billing/usage shows it."
        )


class QuoteRequest(StrictInput):
    """A job body. Its task type and priority set the price; its other fields are accepted
    (within their bounds) and ignored, so a client can ask the price of the very body it
    will submit. Any other field is refused, as everywhere."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"task_type": "feature_build", "priority": "P1"}]}
    )

    project_name: str | None = Field(default=None, max_length=200, description="Ignored.")
    description: str | None = Field(default=None, max_length=20_000, description="Ignored.")
    task_type: Annotated[str, StringConstraints(pattern=TASK_TYPE_PATTERN)] = DEFAULT_TASK_TYPE
    priority: Priority = DEFAULT_PRIORITY


class QuotePublic(BaseModel):
    quote_id: str = Field(
        description="Binds this client, task type, priority and price until expires_at."
    )
    credits: int = Field(description="The job's price in credits on the client's plan.")
    task_type: str
    priority: Priority
    plan: PlanId = Field(description="The plan the job is priced by.")
    expires_at: UtcDatetime = Field(
        description=f"The quote is honoured before this time ({QUOTE_TTL} after the quote, "
        "to the second)."
    )

    @classmethod
    def of(cls, quote: Quote, plan: PlanId) -> QuotePublic:
        return cls(**dataclasses.asdict(quote), plan=plan)


class UsagePublic(BaseModel):
    client_id: str
    name: str
    plan: PlanId
    credits_remaining: int | None = Field(description="Null on unlimited plans.")
    credits_limit: int | None = Field(description="The plan's jobs per cycle; null = unlimited.")
    credits_used: int = Field(
        description="Credits taken in the current cycle: charged, and held by jobs not ended."
    )
    credits_reserved: int = Field(
        description="Of credits_used, held by jobs not ended yet (given back if the job fails "
        "for a reason the plan does not charge, or its hold expires)."
    )
    usage_pct: float | None = Field(
        description="Share of this cycle's credits used, in percent; null on unlimited plans."
    )
    status: str = Field(
        description='"active"; "limit_reached" when no credit is left; "past_due" when the '
        'subscription\'s latest invoice is unpaid, "disputed" while a payment of it is '
        'disputed, "paused" while it is paused (no job is accepted in these cases).'
    )
    can_submit: bool
    subscription_status: str | None = Field(
        description="The Stripe subscription's status (active, past_due, ...); null if none."
    )
    billing_cycle_start: UtcDatetime
    billing_cycle_end: UtcDatetime
    total_spent: float
    spent_this_cycle: float
    active_jobs: ActiveJobs
    active_jobs_limit: ActiveJobsLimit

    @classmethod
    def of(cls, record: ClientRecord, active_jobs: int | None = None) -> UsagePublic:
        """``active_jobs``: the service's count (``BillingService.active_jobs``); None: the
        ledger's (:func:`.ledger.open_holds`)."""
        used = sum(e.credits for e in record.metadata.cost_log)
        reserved = sum(e.credits for e in record.metadata.cost_log if e.held)
        remaining = record.credits_remaining
        pct = None if remaining is None else round(100 * used / max(1, used + remaining), 2)
        refused = refusal_of(record)
        return cls(
            client_id=record.client_id,
            name=record.name,
            plan=record.plan,
            credits_remaining=remaining,
            credits_limit=PLANS[record.plan].jobs_per_month,
            credits_used=used,
            credits_reserved=reserved,
            usage_pct=pct,
            status="active" if refused is None else refused.value,
            can_submit=refused is None,
            subscription_status=record.metadata.subscription_status,
            billing_cycle_start=record.billing_cycle_start,
            billing_cycle_end=record.billing_cycle_end,
            total_spent=record.total_spent,
            spent_this_cycle=round(sum(e.cost for e in record.metadata.cost_log), 6),
            active_jobs=open_holds(record) if active_jobs is None else active_jobs,
            active_jobs_limit=concurrency_cap(record.plan, record.max_active_jobs),
        )


__all__ = [
    "ONE_LINE",
    "ActiveJobs",
    "ActiveJobsLimit",
    "CheckoutPublic",
    "CheckoutRequest",
    "Email",
    "ErrorPublic",
    "Instant",
    "IsoDatetime",
    "JobPricesPublic",
    "Name",
    "PlanPublic",
    "PlansPublic",
    "PortalPublic",
    "PortalRequest",
    "QuotePublic",
    "QuoteRequest",
    "Reason",
    "RedirectUrl",
    "ReturnPublic",
    "StrictInput",
    "UsagePublic",
    "ValidationErrorPublic",
    "ValidationIssue",
    "WebhookAck",
]
