"""Request and response schemas, named by role. Inputs forbid extra fields, so a client can
never set its own credits, plan or id."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

from ..errors import CreditLimitReached, PaymentPastDue, SubscriptionPaused
from ..ledger import submit_refusal
from ..models import ClientMetadata, ClientRecord, UtcDatetime
from ..plans import PLANS, Plan, PlanId

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]

#: The largest single credit adjustment; a negative amount may not take credits below zero.
MAX_CREDIT_ADJUSTMENT = 1_000_000


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorPublic(BaseModel):
    code: str = Field(examples=["invalid_api_key"])
    message: str = Field(examples=["Invalid or inactive API key"])
    detail: str = Field(description="The message again, for clients of the original module.")


class PlanPublic(BaseModel):
    id: PlanId
    name: str
    price_usd: int | None = Field(description="Monthly price; null means custom pricing.")
    price_label: str
    jobs_per_month: int | None = Field(description="Null means unlimited.")
    history_days: int | None = Field(description="Job history window; null means forever.")
    features: list[str]

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
        )


class PlansPublic(BaseModel):
    plans: list[PlanPublic]

    @classmethod
    def catalogue(cls) -> PlansPublic:
        return cls(plans=[PlanPublic.of(p) for p in PLANS.values()])


class ClientCreate(_Input):
    name: Name
    email: EmailStr
    plan: PlanId = PlanId.FREE


class CreditsAdd(_Input):
    credits: int = Field(
        ge=-MAX_CREDIT_ADJUSTMENT,
        le=MAX_CREDIT_ADJUSTMENT,
        description="Credits to add; negative to correct, never below zero. Not zero.",
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
RedirectUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2000)]


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
        data = record.model_dump(exclude={"api_key_hash", "metadata"})
        data["credits_limit"] = PLANS[record.plan].jobs_per_month
        data["subscription_status"] = record.metadata.subscription_status
        return data

    @classmethod
    def of(cls, record: ClientRecord) -> ClientPublic:
        return cls(**cls.fields_of(record))


class ClientDetail(ClientPublic):
    """One client with its current-cycle ledger, adjustments and past-cycle summaries."""

    metadata: ClientMetadata

    @classmethod
    def of(cls, record: ClientRecord) -> ClientDetail:
        return cls(**cls.fields_of(record), metadata=record.metadata)


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


_STATUS_OF_REFUSAL: dict[str | None, str] = {
    None: "active",
    CreditLimitReached.message: "limit_reached",
    PaymentPastDue.message: "past_due",
    SubscriptionPaused.message: "paused",
}


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
        'subscription\'s latest invoice is unpaid, "paused" while it is paused (no job is '
        "accepted in either case)."
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
        refusal = submit_refusal(record)
        return cls(
            client_id=record.client_id,
            name=record.name,
            plan=record.plan,
            credits_remaining=remaining,
            credits_limit=PLANS[record.plan].jobs_per_month,
            credits_used=used,
            usage_pct=pct,
            status=_STATUS_OF_REFUSAL.get(refusal, "limit_reached"),
            can_submit=refusal is None,
            subscription_status=record.metadata.subscription_status,
            billing_cycle_start=record.billing_cycle_start,
            billing_cycle_end=record.billing_cycle_end,
            total_spent=record.total_spent,
            spent_this_cycle=round(sum(e.cost for e in record.metadata.cost_log), 6),
        )


__all__ = [
    "ApiKeyCreated",
    "CheckoutPublic",
    "CheckoutRequest",
    "ClientCreate",
    "ClientDetail",
    "ClientList",
    "ClientPublic",
    "CreditsAdd",
    "ErrorPublic",
    "PlanPublic",
    "PlansPublic",
    "PortalPublic",
    "PortalRequest",
    "ReturnPublic",
    "UsagePublic",
    "WebhookAck",
]
