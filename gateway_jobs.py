"""The reference gateway's jobs: the job body and its answers, and the intake's pieces that
do not depend on the app: idempotency keys. The job file for a host's own store that keeps no
jobs is in ``gateway_jobfile.py`` (a store with ``JobStorage`` keeps each job with its charge
or hold). ``gateway.py`` mounts the routes that use them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from client_auth import (
    MULTI_LINE,
    ONE_LINE,
    BillingError,
    Conflict,
    QuoteId,
    ReceiptPublic,
    StoredJob,
    UtcDatetime,
)

logger = logging.getLogger("openclaw_billing.gateway")


# -- jobs -----------------------------------------------------------------------------------


class JobCreate(BaseModel):
    """The job body of the delivery summary's intake example."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "project_name": "Feature Build",
                    "description": "Add user authentication",
                    "task_type": "feature_build",
                    "priority": "P1",
                }
            ]
        },
    )

    project_name: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=ONE_LINE),
    ]
    description: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=20_000, pattern=MULTI_LINE
        ),
    ]
    task_type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,49}$")] = (
        "feature_build"
    )
    priority: Literal["P0", "P1", "P2", "P3"] = "P2"
    max_credits: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        strict=True,
        description="The most this job may be charged, in credits (null: its price).",
    )
    quote_id: QuoteId | None = Field(
        default=None,
        description="A quote from POST /api/billing/quote for this task type and priority: "
        "the job holds exactly the quoted credits (409 quote_expired once it has expired).",
    )


#: The fields of a job body kept with the job (its text; ``max_credits`` and ``quote_id`` are
#: kept in its receipt).
STORED_FIELDS = ("project_name", "description", "task_type", "priority")


def stored_fields(job: JobCreate) -> dict[str, str]:
    """What the store keeps of a job body (see ``NewJob.fields``)."""
    return {name: getattr(job, name) for name in STORED_FIELDS}


class Job(JobCreate):
    job_id: str
    client_id: str
    status: str = Field(
        default="queued",
        description="queued, running, succeeded, failed, cancelled, timed_out or expired.",
    )
    failure_class: str | None = None
    created_at: UtcDatetime
    receipt: ReceiptPublic | None = Field(
        default=None,
        description="What the job holds and, once it ended, what it was charged and why.",
    )


class JobRecord(Job):
    """A line of the job file: the job, plus what answers a retried ``Idempotency-Key``.

    Both fields are None (and left out of the line) for a job submitted without a key, so the
    lines of such jobs, and every line written before keys existed, are plain jobs. They are
    never served: routes answer with :meth:`public`.
    """

    #: SHA-256 of the canonical JSON of the validated body of a keyed submission.
    request_hash: str | None = None
    #: The credits the first answer reported (the answer a retry gets again).
    credits_remaining: int | None = None

    def public(self) -> Job:
        """The job as served (already validated: constructed without validating again)."""
        return Job.model_construct(**{name: getattr(self, name) for name in Job.model_fields})


class JobAccepted(BaseModel):
    job_id: str
    status: str
    credits_remaining: int | None = Field(description="Null on unlimited plans.")
    created_at: UtcDatetime
    job: Job


class JobList(BaseModel):
    jobs: list[Job]
    history_days: int | None = Field(description="The plan's history window; null = forever.")


def history_start(plan_history_days: int | None, now: datetime) -> datetime | None:
    return None if plan_history_days is None else now - timedelta(days=plan_history_days)


# -- idempotency ----------------------------------------------------------------------------

#: 1 to 255 printable ASCII characters, not starting or ending with a space (proxies may trim
#: those, which would silently make it another key).
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?")
#: Response header set on an answer that repeats the first one (Stripe's name for it).
REPLAYED_HEADER = "Idempotent-Replayed"
#: A keyed job charged this long ago (or 3 store lock timeouts, if longer) but still not in the
#: job file is taken to be abandoned: its request died between the charge and the queue, since
#: a live one has queued its job, or failed and refunded, by then. A retry queues the job under
#: that charge instead of being told forever that it is in progress.
MIN_ABANDONED_AFTER = timedelta(seconds=60)


class InvalidIdempotencyKey(BillingError):
    status_code = 400
    code = "invalid_idempotency_key"
    message = (
        "Idempotency-Key must be 1 to 255 printable ASCII characters, "
        "without leading or trailing spaces"
    )


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    message = (
        "This Idempotency-Key was already used with a different request body; "
        "send a new key for a new job"
    )


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"
    message = (
        "A request with this Idempotency-Key is still being processed; "
        "retry the same request shortly"
    )


def idempotent_job_id(client_id: str, key: str) -> str:
    """The job id a client's key stands for: the same key is the same job, and two clients'
    keys never meet."""
    return "idem-" + hashlib.sha256(f"{client_id}\0{key}".encode()).hexdigest()[:32]


def request_hash(body: JobCreate) -> str:
    """SHA-256 of the validated body as canonical JSON: key order, spacing, and sending a
    default explicitly do not make two bodies different."""
    canonical = json.dumps(
        body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def accepted(job: JobRecord) -> JobAccepted:
    public = job.public()
    return JobAccepted(
        job_id=job.job_id,
        status=job.status,
        credits_remaining=job.credits_remaining,
        created_at=job.created_at,
        job=public,
    )


def record_of(job: StoredJob) -> JobRecord:
    """A stored job as the gateway's job (its fields were validated on the way in)."""
    receipt = job.receipt
    values: dict[str, Any] = {
        **job.fields,
        "max_credits": None if receipt is None else receipt.max_credits,
        "job_id": job.job_id,
        "client_id": job.client_id,
        "status": job.status.value,
        "failure_class": job.failure_class,
        "receipt": ReceiptPublic.of(receipt),
        "created_at": job.created_at,
        "request_hash": job.request_hash,
        "credits_remaining": job.credits_remaining,
    }
    return JobRecord.model_construct(**values)
