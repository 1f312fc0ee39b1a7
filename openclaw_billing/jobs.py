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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from . import ledger
from .errors import InvalidApiKey
from .models import ChargeResult, ClientRecord, Int64, UtcDatetime

#: Bounds of what a job may carry: a few named text fields (the gateway's job body).
MAX_JOB_FIELDS = 16
MAX_FIELD_NAME_LENGTH = 50
#: Of all the fields' names and values together, in characters.
MAX_JOB_SIZE = 64 * 1024
#: What no job text may hold: NUL (PostgreSQL cannot store it) and lone surrogates (not valid
#: Unicode: no backend can write them as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


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


@dataclass(frozen=True)
class NewJob:
    """A job to store with its charge: its fields and, for idempotent submissions, the hash
    of the request (so a retry with another body can be told apart). Checked when made: a
    value out of bounds, a NUL character or a lone surrogate raises ``ValueError`` (here, in
    the caller's own request, rather than in the batch its charge is committed with)."""

    fields: Mapping[str, str]
    request_hash: str | None = None

    def __post_init__(self) -> None:
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


def new_job(client_id: str, job_id: str, job: NewJob, charge: ChargeResult) -> StoredJob:
    """Rule 4: the job as stored with its charge."""
    return StoredJob(
        client_id=client_id,
        job_id=job_id,
        created_at=charge.charged_at,
        fields=dict(job.fields),
        request_hash=job.request_hash,
        credits_remaining=charge.credits_remaining,
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
) -> tuple[Charged, StoredJob | None]:
    """The rules above, on a locked record whose cycle is rolled; ``stored``: the job already
    stored under ``job_id`` for this client, if any. Returns what the charge came to and the
    job to store with it (None: none). Raises the refusal, having changed nothing."""
    if stored is not None:
        return replayed(record, stored), None
    check_key(record, key_id, now)
    result = ledger.charge(record, job_id, cost, now)
    if job is None:
        return Charged(result, None), None
    kept = new_job(record.client_id, job_id, job, result)
    return Charged(result, kept), kept
