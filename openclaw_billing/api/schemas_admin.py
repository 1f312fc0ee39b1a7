"""The admin API's schemas: clients, their keys, plan and access policy, and the audit log.
Inputs forbid extra fields (:class:`.schemas.StrictInput`); outputs never carry a key's
digest, and a plaintext key only in the one response that issues it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from ..access import MAX_ALLOWLIST_ENTRIES, MAX_ROTATION_GRACE
from ..audit import AuditEvent
from ..cycles import resolve_now, utcnow
from ..ledger import concurrency_cap, open_holds
from ..models import ApiKeyRecord, ClientMetadata, ClientRecord, UtcDatetime
from ..plans import PLANS, PlanId
from ..safetext import ONE_LINE
from .schemas import ActiveJobs, ActiveJobsLimit, Email, Instant, Name, Reason, StrictInput

#: The largest single credit adjustment; a negative amount may not take credits below zero.
MAX_CREDIT_ADJUSTMENT = 1_000_000


class ClientCreate(StrictInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "Acme Corp", "email": "api@acmecorp.com", "plan": "pro"}]
        }
    )

    name: Name
    email: Email
    plan: PlanId = PlanId.FREE


class CreditsAdd(StrictInput):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"credits": 50, "reason": "Q1 promotional credit"}]}
    )

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
        now = resolve_now(now, utcnow)
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
    max_active_jobs: int | None = Field(description="Override; null: the plan's cap.")
    active_jobs: ActiveJobs
    active_jobs_limit: ActiveJobsLimit

    @classmethod
    def of(cls, record: ClientRecord, active_jobs: int | None = None) -> ClientDetail:
        """``active_jobs``: as :meth:`.schemas.UsagePublic.of` takes it."""
        return cls(
            **cls.fields_of(record),
            metadata=record.metadata,
            api_keys=[ApiKeyPublic.of(k) for k in record.api_keys],
            rate_limit_per_minute=record.rate_limit_per_minute,
            ip_allowlist=record.ip_allowlist,
            active_jobs=open_holds(record) if active_jobs is None else active_jobs,
            active_jobs_limit=concurrency_cap(record.plan, record.max_active_jobs),
        )


Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=ONE_LINE),
]
#: An IP address or CIDR, IPv4 or IPv6 (validated again when applied).
Network = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=2, max_length=49, pattern=ONE_LINE)
]


class KeyCreate(StrictInput):
    model_config = ConfigDict(json_schema_extra={"examples": [{"label": "ci"}]})

    label: Label | None = None
    expires_at: Instant | None = Field(
        default=None, description="When the key stops working (ISO 8601 with a zone); in future."
    )


class KeyRotate(StrictInput):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"grace_seconds": 3600, "label": "ci-2"}]}
    )

    grace_seconds: int = Field(
        ge=0,
        le=int(MAX_ROTATION_GRACE.total_seconds()),
        strict=True,
        description="How long the old key keeps working (0: it stops at once; at most 30 days).",
    )
    label: Label | None = None


class KeyExpiry(StrictInput):
    model_config = ConfigDict(json_schema_extra={"examples": [{"expires_at": None}]})

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


class PlanChange(StrictInput):
    model_config = ConfigDict(json_schema_extra={"examples": [{"plan": "starter"}]})

    plan: PlanId


class PolicyUpdate(StrictInput):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"rate_limit_per_minute": None, "ip_allowlist": []}]}
    )

    rate_limit_per_minute: int | None = Field(
        ge=1, le=1_000_000, strict=True, description="Requests per minute; null: the plan's limit."
    )
    ip_allowlist: list[Network] = Field(
        max_length=MAX_ALLOWLIST_ENTRIES,
        description="IPs or CIDRs (IPv4 and IPv6) the client may call from; empty allows all.",
    )
    max_active_jobs: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        strict=True,
        description="Jobs queued or running at once; null: the plan's cap (free 1, starter 2, "
        "pro 5, enterprise none); left out: unchanged.",
    )


class PolicyPublic(BaseModel):
    client_id: str
    rate_limit_per_minute: int | None
    ip_allowlist: list[str]
    max_active_jobs: int | None = Field(description="The client's own cap; null: the plan's.")


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


class AuditPage(BaseModel):
    """A page of the audit log, newest first; ``total`` counts every event that matches."""

    events: list[AuditEvent]
    total: int
    offset: int
    limit: int


__all__ = [
    "MAX_CREDIT_ADJUSTMENT",
    "ApiKeyCreated",
    "ApiKeyPublic",
    "AuditPage",
    "ClientCreate",
    "ClientDetail",
    "ClientList",
    "ClientPublic",
    "CreditsAdd",
    "KeyCreate",
    "KeyExpiry",
    "KeyIssued",
    "KeyList",
    "KeyRotate",
    "PlanChange",
    "PolicyPublic",
    "PolicyUpdate",
]
