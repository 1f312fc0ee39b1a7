"""The stored client record: the delivery summary's record, field for field, except that the
plaintext ``api_key`` is replaced by ``api_key_hash`` (SHA-256 hex) and ``api_key_prefix``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, model_validator

from .cycles import as_utc
from .plans import PlanId


def _as_utc(value: datetime) -> datetime:
    # Files written by the original module carry "+00:00"; a naive time can only mean UTC.
    try:
        return as_utc(value)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is in the year 10000 in UTC
        raise ValueError("is outside the years 1 to 9999 in UTC") from None


#: Timezone-aware UTC, written as ISO 8601 with "+00:00" as in the summary.
UtcDatetime = Annotated[
    datetime,
    AfterValidator(_as_utc),
    PlainSerializer(lambda d: d.isoformat(), return_type=str, when_used="json"),
]


#: An integer every backend stores (a SQL BIGINT): credits, amounts, counts, Unix times.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
#: Money: finite and never negative (JSON and the HTTP answers have no NaN or infinity).
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class CostEntry(_Model):
    """One charged job in the current cycle's ledger (``metadata.cost_log``)."""

    timestamp: UtcDatetime
    cost: Money
    job_id: str
    #: Credits this job takes: its price while held, what it was charged once settled.
    credits: Int64 = Field(default=1, ge=0)
    #: True while the job's hold is open (reserved at intake, not settled yet).
    held: bool = False


class CreditAdjustment(_Model):
    """An admin credit adjustment in the current cycle (``metadata.credit_adjustments``)."""

    timestamp: UtcDatetime
    amount: Int64
    reason: str


class CycleSummary(_Model):
    """A finished billing cycle, kept so the store stays bounded (``metadata.cycle_history``).

    ``allowance + sum(adjustments) - credits == credits_left`` for limited plans (``credits``:
    what the cycle's jobs took; ``jobs`` for summaries written before jobs had prices). The newest
    summary also keeps that cycle's ledger ``entries``, so a retried job id from just before a
    reset is still recognised and never charged twice; older summaries drop them.
    """

    start: UtcDatetime
    end: UtcDatetime
    plan: PlanId
    allowance: Int64 | None
    adjustments: list[CreditAdjustment] = Field(default_factory=list)
    jobs: Int64 = Field(ge=0)
    #: Credits the cycle's jobs took (held or charged when it closed); None: one per job.
    credits: Int64 | None = None
    spend: Money
    credits_left: Int64 | None
    entries: list[CostEntry] = Field(default_factory=list)


class ClientMetadata(BaseModel):
    """Free-form bag of the summary's record; the keys below are the module's own."""

    model_config = ConfigDict(extra="allow")

    credit_adjustments: list[CreditAdjustment] = Field(default_factory=list)
    cost_log: list[CostEntry] = Field(default_factory=list)
    cycle_history: list[CycleSummary] = Field(default_factory=list)
    #: Credits the current cycle started with (the plan's allowance at the reset).
    cycle_allowance: Int64 | None = None
    #: The Stripe subscription's status (active, past_due, canceled, ...), if any.
    subscription_status: str | None = None
    #: ``created`` (unix seconds) of the newest Stripe event applied: an older event that
    #: arrives late never overwrites newer state.
    stripe_event_at: Int64 | None = None


class ApiKeyRecord(_Model):
    """One of a client's API keys. Only the digest is stored; the key is shown once.

    A key works while it is not revoked and not past ``expires_at``. A rotation sets the old
    key's ``expires_at`` to the end of its grace period."""

    key_id: str = Field(pattern=r"^key_[0-9a-f]{12}$")
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    prefix: str
    label: str | None = None
    created_at: UtcDatetime
    expires_at: UtcDatetime | None = None
    revoked_at: UtcDatetime | None = None
    #: Updated at most once a minute per key (``KEY_TOUCH_INTERVAL``), not on every request.
    last_used_at: UtcDatetime | None = None

    def usable(self, now: datetime) -> bool:
        return key_usable(self.revoked_at, self.expires_at, now)


def key_usable(revoked_at: datetime | None, expires_at: datetime | None, now: datetime) -> bool:
    """Whether a key works at ``now``: not revoked and not past its expiry (the one rule; the
    SQL store's charge asks it of the key's columns)."""
    return revoked_at is None and (expires_at is None or now < expires_at)


def legacy_key_id(digest: str) -> str:
    """The id of a client's original key (records written before several keys per client)."""
    return f"key_{digest[:12]}"


class ClientRecord(_Model):
    client_id: str = Field(min_length=1)
    name: str
    email: str
    api_key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    api_key_prefix: str
    plan: PlanId
    #: None for unlimited plans (enterprise), which are never decremented.
    credits_remaining: Int64 | None
    total_spent: Money
    created_at: UtcDatetime
    updated_at: UtcDatetime
    active: bool
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    billing_cycle_start: UtcDatetime
    billing_cycle_end: UtcDatetime
    metadata: ClientMetadata = Field(default_factory=ClientMetadata)
    #: Every key of the client, newest last; ``api_key_hash``/``api_key_prefix`` above are the
    #: newest key's (the summary's single-key record). Filled from them for older records.
    api_keys: list[ApiKeyRecord] = Field(default_factory=list)
    #: Requests per minute on intake and the billing routes; None: the plan's limit.
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    #: Jobs queued or running at once; None: the plan's cap.
    max_active_jobs: int | None = Field(default=None, ge=1, le=1_000_000)
    #: IPs/CIDRs the client's requests may come from; empty allows every address.
    ip_allowlist: list[str] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _fill_keys(self) -> ClientRecord:
        if self.api_keys:
            if self.key_by_digest(self.api_key_hash) is None:
                raise ValueError("api_key_hash is not the digest of any of the client's api_keys")
            if len({k.key_id for k in self.api_keys}) != len(self.api_keys):
                raise ValueError("api_keys holds a key_id twice")
        else:
            self.api_keys.append(
                ApiKeyRecord(
                    key_id=legacy_key_id(self.api_key_hash),
                    digest=self.api_key_hash,
                    prefix=self.api_key_prefix,
                    created_at=self.created_at,
                )
            )
        return self

    def key_by_digest(self, digest: str) -> ApiKeyRecord | None:
        return next((k for k in self.api_keys if k.digest == digest), None)


class ChargeResult(NamedTuple):
    """What ``deduct_job_credit`` returns: the first result again for a retried job id."""

    client_id: str
    job_id: str
    cost: float
    charged_at: datetime
    #: Credits left after the charge (now, for a replay); None on unlimited plans.
    credits_remaining: int | None
    #: True when this job id had already been charged and nothing was charged again.
    replayed: bool


class SubmitDecision(NamedTuple):
    """Advisory answer of ``can_submit_job``: unpacks as ``allowed, reason``."""

    allowed: bool
    reason: str | None


def dump_record(record: ClientRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")
