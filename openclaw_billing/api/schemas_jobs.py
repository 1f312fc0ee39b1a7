"""The bodies and answers of charging by outcome: a runner's report of a job, and a job's
state and receipt as the runner, the client and the console read it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from ..jobs import MAX_USAGE_ITEMS, USAGE_NAME_PATTERN, Credits, Receipt, StoredJob, UsageName
from ..models import UtcDatetime
from ..outcomes import Settled
from .schemas import ONE_LINE, StrictInput

#: Measured usage as a body carries it: its JSON schema says what pydantic checks (a bounded
#: number of names of the usage pattern, each a whole number in range).
UsageBody = Annotated[
    dict[UsageName, Credits],
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_USAGE_ITEMS,
            "propertyNames": {"pattern": USAGE_NAME_PATTERN},
            "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 2**62},
        }
    ),
]


class OutcomeReport(StrictInput):
    """What the operator's job runner reports of a job: where it is now."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "failed", "failure_class": "infrastructure"},
                {"status": "succeeded", "usage": {"tokens_in": 1200, "tokens_out": 800}},
            ]
        }
    )

    status: Literal["running", "succeeded", "failed", "cancelled", "timed_out"] = Field(
        description="The job's new status. An ended job (all but running) settles its hold."
    )
    failure_class: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,49}$")] | None = Field(
        default=None,
        description="For failed only: infrastructure (the hold is released) or client_error "
        "(charged), as the plan's outcome policy says.",
    )
    usage: UsageBody | None = Field(
        default=None,
        max_length=MAX_USAGE_ITEMS,
        description="What the job measured (for example tokens_in, tokens_out): whole "
        "numbers. A plan that meters it settles the job at its metered cost.",
    )
    client_id: Annotated[str, Field(min_length=1, max_length=100, pattern=ONE_LINE)] | None = Field(
        default=None,
        description="Whose job it is; needed only when several clients have a job with "
        "this id (409 ambiguous_job_id).",
    )


class ReceiptPublic(BaseModel):
    """What a job reserved and what it came to."""

    reserved: int = Field(description="Credits held at intake.")
    hold_until: UtcDatetime = Field(description="When an unsettled hold is released.")
    max_credits: int | None
    charged: int | None = Field(description="Once settled: credits charged; null while held.")
    released: int | None = Field(description="Once settled: credits given back.")
    metered: int | None = Field(description="Credits the measured usage came to, if metered.")
    overage: int | None = Field(description="Metered credits beyond the reservation.")
    reason: str | None
    settled_at: UtcDatetime | None

    @classmethod
    def of(cls, receipt: Receipt | None) -> ReceiptPublic | None:
        return None if receipt is None else cls(**receipt.model_dump())


class JobStatePublic(BaseModel):
    """A job's state and receipt (``receipt`` null: a job charged at intake, before charging
    by outcome)."""

    job_id: str
    client_id: str
    status: str
    failure_class: str | None
    usage: dict[str, int] | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    ended_at: UtcDatetime | None
    receipt: ReceiptPublic | None
    changed: bool = Field(description="False when this report was already applied.")

    @classmethod
    def of(cls, settled: Settled) -> JobStatePublic:
        return cls.of_job(settled.job, changed=settled.changed)

    @classmethod
    def of_job(cls, job: StoredJob, *, changed: bool = False) -> JobStatePublic:
        return cls(
            job_id=job.job_id,
            client_id=job.client_id,
            status=job.status.value,
            failure_class=job.failure_class,
            usage=job.usage,
            created_at=job.created_at,
            started_at=job.started_at,
            ended_at=job.ended_at,
            receipt=ReceiptPublic.of(job.receipt),
            changed=changed,
        )
