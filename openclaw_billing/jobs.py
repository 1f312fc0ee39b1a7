"""A job accepted with its charge: one decision, one durable write.

A gateway that queues a job hands its fields to the charge (:class:`NewJob`); the store
writes the charge and the job in the same atomic step (one transaction on SQL, one journal
write on the JSON store), so a crash can never leave a charge without its job or a job
without its charge, and nothing has to be refunded when a job file cannot be written.

:func:`accept` is the rule, once, for every backend that applies it to a record; the SQL
store's statements ask the same questions in the same order (the contract suite checks they
agree):

1. a job already stored under this id for this client is the first answer again (a retry),
   whatever cycle it was charged in: nothing is charged;
2. the key the request was authenticated with must still be usable (a key revoked or expired
   since a cached check is refused here, inside the atomic step);
3. the charge itself (:func:`.ledger.charge`): a job id charged before is replayed and not
   charged again; a job then given is stored under that first charge;
4. the job is stored with the charge's time and the credits its answer reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from . import ledger
from .errors import InvalidApiKey
from .models import ChargeResult, ClientRecord, Int64, UtcDatetime
from .plans import MAX_JOB_CREDITS, get_plan

#: Bounds of what a job may carry: a few named text fields (the gateway's job body).
MAX_JOB_FIELDS = 16
MAX_FIELD_NAME_LENGTH = 50
#: Of all the fields' names and values together, in characters.
MAX_JOB_SIZE = 64 * 1024
#: What no job text may hold: NUL (PostgreSQL cannot store it) and lone surrogates (not valid
#: Unicode: no backend can write them as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class JobStatus(StrEnum):
    """Where a job is in its life (transitions: :mod:`openclaw_billing.outcomes`)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    EXPIRED = "expired"

    @property
    def open(self) -> bool:
        """Queued or running: the job holds credits and counts against the concurrency cap."""
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)


#: Credits as a job's receipt counts them.
Credits = Annotated[int, Field(ge=0, le=2**62)]
#: Measured usage: a few named counters (tokens in, tokens out ...).
MAX_USAGE_ITEMS = 16
USAGE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,49}$"
UsageName = Annotated[str, Field(pattern=USAGE_NAME_PATTERN)]
Usage = Annotated[dict[UsageName, Credits], Field(max_length=MAX_USAGE_ITEMS)]


class MeterState(StrEnum):
    """Where a job's usage beyond its reservation stands with Stripe (the decision:
    :func:`openclaw_billing.outcomes.meter_report`; the sender:
    :mod:`openclaw_billing.stripe_billing.meter_outbox`)."""

    #: To be sent as a billing meter event: the outbox, written with the settlement.
    PENDING = "pending"
    #: Stripe holds the meter event: it goes on the customer's invoice.
    REPORTED = "reported"
    #: Stripe refused it for good, it is too old to send, or Stripe may already hold it and
    #: no longer tells a resend apart (``code`` says which): an operator's matter.
    FAILED = "failed"
    #: The client had no live Stripe subscription when the job settled: nothing is billed.
    NOT_BILLED = "not_billed"


#: The most unanswered attempts a report keeps apart (more are folded into the earliest).
MAX_SENDING = 8
#: The code of a report no longer sent because Stripe may hold it already and would no longer
#: refuse it as a duplicate (the rule: :mod:`openclaw_billing.stripe_billing.meter_outbox`).
UNCONFIRMED = "unconfirmed"
#: Stripe refuses an event whose identifier it recorded within the last 24 hours, and only
#: then ("a rolling period of at least 24 hours").
DEDUP_WINDOW = timedelta(hours=24)
#: Kept under that window: it covers the request's own time from the check to Stripe (at most
#: ``STRIPE_TIMEOUT_SECONDS``, 120) and the workers' clocks against each other and Stripe's
#: (kept in step by NTP: the margin does not cover a clock an hour off).
DEDUP_MARGIN = timedelta(hours=1)
#: How long after an attempt Stripe may have recorded unconfirmed a report is sent again.
RESEND_WITHIN = DEDUP_WINDOW - DEDUP_MARGIN


def past_resend_window(doubt_since: datetime | None, at: datetime) -> bool:
    """Whether a report in doubt since ``doubt_since`` (its earliest attempt Stripe may hold
    unconfirmed; None: none) may no longer be sent at ``at``: :data:`RESEND_WITHIN` passed."""
    return doubt_since is not None and at - doubt_since >= RESEND_WITHIN


class MeterReport(BaseModel):
    """A settled job's report of its ``overage`` to Stripe (see :class:`MeterState`): the
    credits are the receipt's ``overage``, dated at its ``settled_at``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: MeterState
    #: The client's Stripe customer when the job settled (None when not billed).
    customer_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    #: Attempts sent so far (each a new Idempotency-Key; the event's identifier stays one).
    attempts: Annotated[int, Field(ge=0, le=2**31)] = 0
    #: Stripe's error code of the last refusal (or error type), or ``too_old``.
    code: Annotated[str, Field(max_length=100)] | None = None
    #: When the sender learnt that Stripe holds the event.
    reported_at: UtcDatetime | None = None
    #: When the earliest attempt started that Stripe may have recorded though no answer said
    #: so (its answer lost, or a 409 or 5xx): resending is safe only within Stripe's
    #: de-duplication window from then (see :mod:`openclaw_billing.stripe_billing.meter_outbox`).
    unconfirmed_since: UtcDatetime | None = None
    #: When each attempt sent and not yet answered started: recorded before it is sent, so an
    #: answer never written (a crash, the store down) still counts as unconfirmed.
    sending: Annotated[tuple[UtcDatetime, ...], Field(max_length=MAX_SENDING)] = ()

    @property
    def unconfirmed(self) -> bool:
        """Failed as :data:`UNCONFIRMED`: for an operator to check at Stripe, not to resend."""
        return self.state is MeterState.FAILED and self.code == UNCONFIRMED

    @property
    def doubt_since(self) -> datetime | None:
        """When the earliest attempt started that may have reached Stripe unconfirmed (None:
        every attempt so far certainly did not, or none was sent)."""
        starts = [*self.sending, *([self.unconfirmed_since] if self.unconfirmed_since else [])]
        return min(starts, default=None)


class Receipt(BaseModel):
    """What a job reserved at intake and what it came to: the client's receipt. While the
    hold is open only ``reserved``, ``hold_until`` and ``max_credits`` are set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Credits held at intake (the job's price, at most its ``max_credits``).
    reserved: Credits
    #: When the hold is released if the job has not ended (the plan's time to live).
    hold_until: UtcDatetime
    #: The most the client allowed this job to be charged (None: its price).
    max_credits: Credits | None = None
    #: Once settled: credits charged and released (``charged + released == reserved``) ...
    charged: Credits | None = None
    released: Credits | None = None
    #: ... the credits the measured usage came to (None: not metered) ...
    metered: Credits | None = None
    #: ... of which beyond the reservation (billed through Stripe, not the allowance) ...
    overage: Credits | None = None
    #: ... and why, in words the client reads.
    reason: str | None = None
    settled_at: UtcDatetime | None = None
    #: The overage's report to Stripe (None: no overage).
    meter: MeterReport | None = None

    @property
    def held(self) -> bool:
        return self.charged is None


class StoredJob(BaseModel):
    """A job as the store keeps it (and every backend gives it back)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str
    job_id: str
    created_at: UtcDatetime
    fields: dict[str, str] = Field(default_factory=dict)
    #: What answers a retry: a digest of the request that queued it (None: not given) ...
    request_hash: str | None = None
    #: ... and the credits its first answer reported (None on unlimited plans).
    credits_remaining: Int64 | None = None
    status: JobStatus = JobStatus.QUEUED
    #: Its hold and settlement; None for a job charged at intake (before charging by outcome).
    receipt: Receipt | None = None
    #: For a failed job: the runner's class of failure (``infrastructure``, ``client_error``).
    failure_class: str | None = None
    #: What the runner measured, as it reported it.
    usage: Usage | None = None
    started_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None

    @property
    def holding(self) -> bool:
        """Whether the job holds credits now (open, with a hold not settled)."""
        return self.status.open and self.receipt is not None and self.receipt.held


@dataclass(frozen=True)
class NewJob:
    """A job to store with its charge: its fields and, for idempotent submissions, the hash
    of the request (so a retry with another body can be told apart). Checked when made: a
    value out of bounds, a NUL character or a lone surrogate raises ``ValueError`` (here, in
    the caller's own request, rather than in the batch its charge is committed with)."""

    fields: Mapping[str, str]
    request_hash: str | None = None
    #: The credits to hold until the job ends (None: charge one credit now, no hold) ...
    price: int | None = None
    #: ... and the most the client allows it to be charged (None: its price) ...
    max_credits: int | None = None
    #: ... and how long its hold lasts (None: its plan's ``hold_ttl``; the service sets it
    #: from ``OPENCLAW_HOLD_TTL_SECONDS``).
    hold_ttl: timedelta | None = None

    def __post_init__(self) -> None:
        for name in ("price", "max_credits"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 1 <= value <= MAX_JOB_CREDITS):
                raise ValueError(f"{name} is a whole number of credits, 1 to {MAX_JOB_CREDITS}")
        for name in ("max_credits", "hold_ttl"):
            if getattr(self, name) is not None and self.price is None:
                raise ValueError(f"{name} is for a job reserved at intake (with a price)")
        if self.hold_ttl is not None and (
            not isinstance(self.hold_ttl, timedelta) or self.hold_ttl <= timedelta(0)
        ):
            raise ValueError("hold_ttl is a positive timedelta")
        if len(self.fields) > MAX_JOB_FIELDS:
            raise ValueError(f"a job has at most {MAX_JOB_FIELDS} fields")
        size = 0
        for name, value in self.fields.items():
            if not isinstance(name, str) or not 0 < len(name) <= MAX_FIELD_NAME_LENGTH:
                raise ValueError(f"a job field name is 1 to {MAX_FIELD_NAME_LENGTH} characters")
            if not isinstance(value, str):
                raise ValueError("a job field's value is text")
            if _UNSTORABLE.search(name) or _UNSTORABLE.search(value):
                raise ValueError("a job's field names and values hold no NUL or lone surrogate")
            size += len(name) + len(value)
        if size > MAX_JOB_SIZE:
            raise ValueError(f"a job's fields hold at most {MAX_JOB_SIZE} characters")
        if self.request_hash is not None:
            if not isinstance(self.request_hash, str) or not 0 < len(self.request_hash) <= 128:
                raise ValueError("request_hash is 1 to 128 characters")
            if _UNSTORABLE.search(self.request_hash):
                raise ValueError("request_hash holds no NUL or lone surrogate")


class Charged(NamedTuple):
    """What a charge came to: the contract's result, and the job stored with it (the new one,
    or the one stored by the first request for a retry; None when no job was given and none
    is stored)."""

    charge: ChargeResult
    job: StoredJob | None


def replayed(record: ClientRecord, job: StoredJob) -> Charged:
    """The first answer again for a job already stored (rule 1)."""
    entry = ledger.find_charge(record, job.job_id)
    cost, at = (entry.cost, entry.timestamp) if entry is not None else (0.0, job.created_at)
    result = ChargeResult(
        record.client_id, job.job_id, cost, at, record.credits_remaining, replayed=True
    )
    return Charged(result, job)


def check_key(record: ClientRecord, key_id: str | None, now: datetime) -> None:
    """Rule 2: raise ``InvalidApiKey`` unless the key ``key_id`` (None: not checked) is one of
    the client's and usable now."""
    if key_id is None:
        return
    key = next((k for k in record.api_keys if k.key_id == key_id), None)
    if key is None or not key.usable(now):
        raise InvalidApiKey()


def reservation(job: NewJob | None) -> int | None:
    """The credits a job holds at intake: its price, at most its ``max_credits`` (None: the
    job is charged one credit at once, as before charging by outcome)."""
    if job is None or job.price is None:
        return None
    return job.price if job.max_credits is None else min(job.price, job.max_credits)


def new_job(client_id: str, job_id: str, job: NewJob, charge: ChargeResult, plan: str) -> StoredJob:
    """Rule 4: the job as stored with its charge (and its hold, when it was reserved: until
    the job's ``hold_ttl`` if it has one, else the ``plan``'s time to live)."""
    reserved = reservation(job)
    receipt = None
    if reserved is not None:
        ttl = job.hold_ttl if job.hold_ttl is not None else get_plan(plan).hold_ttl
        receipt = Receipt(
            reserved=reserved,
            hold_until=charge.charged_at + ttl,
            max_credits=job.max_credits,
        )
    return StoredJob(
        client_id=client_id,
        job_id=job_id,
        created_at=charge.charged_at,
        fields=dict(job.fields),
        request_hash=job.request_hash,
        credits_remaining=charge.credits_remaining,
        receipt=receipt,
    )


def accept(
    record: ClientRecord,
    job_id: str,
    cost: float,
    now: datetime,
    *,
    job: NewJob | None,
    stored: StoredJob | None,
    key_id: str | None,
    active_jobs: Callable[[], int] = lambda: 0,
) -> tuple[Charged, StoredJob | None]:
    """The rules above, on a locked record whose cycle is rolled; ``stored``: the job already
    stored under ``job_id`` for this client, if any; ``active_jobs``: how many of the
    client's jobs hold credits now (asked only for a reservation). Returns what the charge
    came to and the job to store with it (None: none). Raises the refusal, having changed
    nothing."""
    if stored is not None:
        return replayed(record, stored), None
    check_key(record, key_id, now)
    reserved = reservation(job)
    if reserved is None:
        result = ledger.charge(record, job_id, cost, now)
    else:
        result = ledger.charge(
            record, job_id, cost, now, credits=reserved, held=True, active_jobs=active_jobs()
        )
    if job is None:
        return Charged(result, None), None
    kept = new_job(record.client_id, job_id, job, result, record.plan)
    return Charged(result, kept), kept
