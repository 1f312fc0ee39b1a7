"""The stored client record: the delivery summary's record, field for field, except that the
plaintext ``api_key`` is replaced by ``api_key_hash`` (SHA-256 hex) and ``api_key_prefix``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from .plans import PlanId


def _as_utc(value: datetime) -> datetime:
    # Files written by the original module carry "+00:00"; a naive time can only mean UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


#: Timezone-aware UTC, written as ISO 8601 with "+00:00" as in the summary.
UtcDatetime = Annotated[
    datetime,
    AfterValidator(_as_utc),
    PlainSerializer(lambda d: d.isoformat(), return_type=str, when_used="json"),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class CostEntry(_Model):
    """One charged job in the current cycle's ledger (``metadata.cost_log``)."""

    timestamp: UtcDatetime
    cost: float = Field(ge=0)
    job_id: str


class CreditAdjustment(_Model):
    """An admin credit adjustment in the current cycle (``metadata.credit_adjustments``)."""

    timestamp: UtcDatetime
    amount: int
    reason: str


class CycleSummary(_Model):
    """A finished billing cycle, kept so the store stays bounded (``metadata.cycle_history``).

    ``allowance + sum(adjustments) - jobs == credits_left`` for limited plans. The newest
    summary also keeps that cycle's ledger ``entries``, so a retried job id from just before a
    reset is still recognised and never charged twice; older summaries drop them.
    """

    start: UtcDatetime
    end: UtcDatetime
    plan: PlanId
    allowance: int | None
    adjustments: list[CreditAdjustment] = Field(default_factory=list)
    jobs: int = Field(ge=0)
    spend: float = Field(ge=0)
    credits_left: int | None
    entries: list[CostEntry] = Field(default_factory=list)


class ClientMetadata(BaseModel):
    """Free-form bag of the summary's record; the keys below are the module's own."""

    model_config = ConfigDict(extra="allow")

    credit_adjustments: list[CreditAdjustment] = Field(default_factory=list)
    cost_log: list[CostEntry] = Field(default_factory=list)
    cycle_history: list[CycleSummary] = Field(default_factory=list)
    #: Credits the current cycle started with (the plan's allowance at the reset).
    cycle_allowance: int | None = None
    #: The Stripe subscription's status (active, past_due, canceled, ...), if any.
    subscription_status: str | None = None
    #: ``created`` (unix seconds) of the newest Stripe event applied: an older event that
    #: arrives late never overwrites newer state.
    stripe_event_at: int | None = None


class ClientRecord(_Model):
    client_id: str = Field(min_length=1)
    name: str
    email: str
    api_key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    api_key_prefix: str
    plan: PlanId
    #: None for unlimited plans (enterprise), which are never decremented.
    credits_remaining: int | None
    total_spent: float = Field(ge=0)
    created_at: UtcDatetime
    updated_at: UtcDatetime
    active: bool
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    billing_cycle_start: UtcDatetime
    billing_cycle_end: UtcDatetime
    metadata: ClientMetadata = Field(default_factory=ClientMetadata)


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
