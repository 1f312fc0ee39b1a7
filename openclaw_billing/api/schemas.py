"""Request and response schemas, named by role. Inputs forbid extra fields, so a client can
never set its own credits, plan or id."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
)

from ..access import MAX_ALLOWLIST_ENTRIES, MAX_ROTATION_GRACE
from ..audit import AuditEvent
from ..cycles import as_utc, utcnow
from ..ledger import refusal_of
from ..models import ApiKeyRecord, ClientMetadata, ClientRecord, UtcDatetime
from ..plans import PLANS, Plan, PlanId
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

#: The largest single credit adjustment; a negative amount may not take credits below zero.
MAX_CREDIT_ADJUSTMENT = 1_000_000


class _Input(BaseModel):
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

    @classmethod
    def of(cls, plan: Plan) -> PlanPublic:
        return cls(
            id=plan.id,
            name=plan.name,
            price_usd=plan.price_usd,
            price_label=plan.price_label,
            jobs_per_month=plan.jobs_per_month,
            history_days=plan.history_days,
            features=list(plan.features),
            requests_per_minute=plan.requests_per_minute,
        )


class PlansPublic(BaseModel):
    plans: list[PlanPublic]

    @classmethod
    def catalogue(cls) -> PlansPublic:
        return cls(plans=[PlanPublic.of(p) for p in PLANS.values()])


class ClientCreate(_Input):
    name: Name
    email: Email
    plan: PlanId = PlanId.FREE


class CreditsAdd(_Input):
    credits: int = Field(
        ge=-MAX_CREDIT_ADJUSTMENT,
        le=MAX_CREDIT_ADJUSTMENT,
        # A JSON integer only: not true (1), "5" or 5.0.
        strict=True,
        json_schema_extra={"not": {"const": 0}},
        description="Credits to add, -1,000,000 to 1,000,000 and not zero; a negative amount "
        "corrects and may not take the balance below zero (409 insufficient_credits).",
    )
    reason: Reason

    @field_validator("credits")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("credits must not be zero")
        return value


#: Stripe substitutes ``{CHECKOUT_SESSION_ID}`` in these, so they are checked as text (a URL
#: type would percent-encode the braces).
RedirectUrl = Annotated[
    str, StringConstraints(pattern=rf"^https?://[^\s{CONTROLS}]+$", max_length=2000)
]


class CheckoutRequest(_Input):
    plan: PlanId
    success_url: RedirectUrl | None = None
    cancel_url: RedirectUrl | None = None


class CheckoutPublic(BaseModel):
    checkout_url: str = Field(description="Send the client's browser here to pay.")
    session_id: str


class PortalRequest(_Input):
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


class ClientPublic(BaseModel):
    """A client as admins see it: never the key, only its display prefix."""

    client_id: str
    name: str
    email: str
    api_key_prefix: str
    plan: PlanId
    credits_remaining: int | None
    credits_limit: int | None
    total_spent: float
    created_at: UtcDatetime
    updated_at: UtcDatetime
    active: bool
    stripe_customer_id: str | None
    stripe_subscription_id: str | None
    subscription_status: str | None
    billing_cycle_start: UtcDatetime
    billing_cycle_end: UtcDatetime

    @classmethod
    def fields_of(cls, record: ClientRecord) -> dict[str, Any]:
        data = record.model_dump(
            exclude={
                "api_key_hash",
                "metadata",
                "api_keys",
                "rate_limit_per_minute",
                "ip_allowlist",
            }
        )
        data["credits_limit"] = PLANS[record.plan].jobs_per_month
        data["subscription_status"] = record.metadata.subscription_status
        return data

    @classmethod
    def of(cls, record: ClientRecord) -> ClientPublic:
        return cls(**cls.fields_of(record))


class ApiKeyPublic(BaseModel):
    """One of a client's keys as admins see it: never the key or its digest."""

    key_id: str
    prefix: str = Field(description="The key's first characters, for telling keys apart.")
    label: str | None
    status: Literal["active", "expired", "revoked"]
    created_at: UtcDatetime
    expires_at: UtcDatetime | None = Field(
        description="When the key stops working (set by an expiry or a rotation's grace)."
    )
    revoked_at: UtcDatetime | None
    last_used_at: UtcDatetime | None = Field(description="Updated at most once a minute.")

    @classmethod
    def of(cls, key: ApiKeyRecord, now: datetime | None = None) -> ApiKeyPublic:
        now = now or utcnow()
        status: Literal["active", "expired", "revoked"] = (
            "revoked" if key.revoked_at is not None else "active" if key.usable(now) else "expired"
        )
        return cls(**key.model_dump(exclude={"digest"}), status=status)


class ClientDetail(ClientPublic):
    """One client with its current-cycle ledger, adjustments and past-cycle summaries, its keys
    and its access policy."""

    metadata: ClientMetadata
    api_keys: list[ApiKeyPublic]
    rate_limit_per_minute: int | None = Field(description="Override; null: the plan's limit.")
    ip_allowlist: list[str] = Field(description="Allowed networks; empty allows any address.")

    @classmethod
    def of(cls, record: ClientRecord) -> ClientDetail:
        return cls(
            **cls.fields_of(record),
            metadata=record.metadata,
            api_keys=[ApiKeyPublic.of(k) for k in record.api_keys],
            rate_limit_per_minute=record.rate_limit_per_minute,
            ip_allowlist=record.ip_allowlist,
        )


Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=ONE_LINE),
]
#: An IP address or CIDR, IPv4 or IPv6 (validated again when applied).
Network = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=2, max_length=49, pattern=ONE_LINE)
]


class KeyCreate(_Input):
    label: Label | None = None
    expires_at: Instant | None = Field(
        default=None, description="When the key stops working (ISO 8601 with a zone); in future."
    )


class KeyRotate(_Input):
    grace_seconds: int = Field(
        ge=0,
        le=int(MAX_ROTATION_GRACE.total_seconds()),
        strict=True,
        description="How long the old key keeps working (0: it stops at once; at most 30 days).",
    )
    label: Label | None = None


class KeyExpiry(_Input):
    expires_at: Instant | None = Field(
        description="When the key stops working (in the future), or null for never."
    )


class KeyIssued(ApiKeyPublic):
    """A new key: the only time the plaintext is ever shown."""

    client_id: str
    api_key: str = Field(description="Shown once. Store it now: it cannot be recovered.")


class KeyList(BaseModel):
    client_id: str
    keys: list[ApiKeyPublic]


class PlanChange(_Input):
    plan: PlanId


class PolicyUpdate(_Input):
    rate_limit_per_minute: int | None = Field(
        ge=1, le=1_000_000, strict=True, description="Requests per minute; null: the plan's limit."
    )
    ip_allowlist: list[Network] = Field(
        max_length=MAX_ALLOWLIST_ENTRIES,
        description="IPs or CIDRs (IPv4 and IPv6) the client may call from; empty allows all.",
    )


class PolicyPublic(BaseModel):
    client_id: str
    rate_limit_per_minute: int | None
    ip_allowlist: list[str]


class ApiKeyCreated(ClientPublic):
    """The create response: the only time the plaintext key is ever shown."""

    api_key: str = Field(description="Shown once. Store it now: it cannot be recovered.")

    @classmethod
    def with_key(cls, record: ClientRecord, api_key: str) -> ApiKeyCreated:
        return cls(**cls.fields_of(record), api_key=api_key)


class ClientList(BaseModel):
    clients: list[ClientPublic]
    total: int
    offset: int
    limit: int


class UsagePublic(BaseModel):
    client_id: str
    name: str
    plan: PlanId
    credits_remaining: int | None = Field(description="Null on unlimited plans.")
    credits_limit: int | None = Field(description="The plan's jobs per cycle; null = unlimited.")
    credits_used: int = Field(description="Jobs charged in the current cycle.")
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

    @classmethod
    def of(cls, record: ClientRecord) -> UsagePublic:
        used = len(record.metadata.cost_log)
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
            usage_pct=pct,
            status="active" if refused is None else refused.value,
            can_submit=refused is None,
            subscription_status=record.metadata.subscription_status,
            billing_cycle_start=record.billing_cycle_start,
            billing_cycle_end=record.billing_cycle_end,
            total_spent=record.total_spent,
            spent_this_cycle=round(sum(e.cost for e in record.metadata.cost_log), 6),
        )


class AuditPage(BaseModel):
    """A page of the audit log, newest first; ``total`` counts every event that matches."""

    events: list[AuditEvent]
    total: int
    offset: int
    limit: int


__all__ = [
    "ONE_LINE",
    "ApiKeyCreated",
    "ApiKeyPublic",
    "AuditPage",
    "CheckoutPublic",
    "CheckoutRequest",
    "ClientCreate",
    "ClientDetail",
    "ClientList",
    "ClientPublic",
    "CreditsAdd",
    "ErrorPublic",
    "IsoDatetime",
    "KeyCreate",
    "KeyExpiry",
    "KeyIssued",
    "KeyList",
    "KeyRotate",
    "PlanChange",
    "PlanPublic",
    "PlansPublic",
    "PolicyPublic",
    "PolicyUpdate",
    "PortalPublic",
    "PortalRequest",
    "ReturnPublic",
    "UsagePublic",
    "ValidationErrorPublic",
    "ValidationIssue",
    "WebhookAck",
]
