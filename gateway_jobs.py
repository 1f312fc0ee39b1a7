"""The reference gateway's jobs: the job body and its answers, and the intake's pieces that
do not depend on the app: idempotency keys, and the job file (``JobStore``) that queues jobs
for a host's own store that keeps none (a store with ``JobStorage`` keeps each job with its
charge). ``gateway.py`` mounts the routes that use them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from client_auth import (
    MULTI_LINE,
    ONE_LINE,
    BillingError,
    BillingService,
    ChargeResult,
    ClientCheck,
    Conflict,
    FileLock,
    ReceiptPublic,
    StoredJob,
    StoreUnavailable,
    UtcDatetime,
    append,
    appending,
    ends_torn,
    open_append,
    private_directory,
    utcnow,
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


class JobStore:
    """Append-only JSON Lines file of accepted jobs, shared by every worker.

    Appends are serialised by the same kind of lock file as the billing store and fsynced.
    A torn last line (a crash mid-append, never acknowledged) is skipped with a warning.
    Readers follow the file incrementally. The file holds clients' jobs: it is created with
    mode 0600 whatever the umask, and a file found with a wider mode is narrowed to 0600.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 10.0) -> None:
        self.path = Path(path).expanduser().absolute()
        private_directory(self.path.parent)
        self.lock_timeout = lock_timeout
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"), lock_timeout)
        self._read_lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self._offset = 0
        if self.path.exists():
            try:
                os.close(open_append(self.path))  # narrows an existing file's mode now
            except OSError as exc:
                raise StoreUnavailable(f"Cannot open the job file {self.path}: {exc}") from exc
        self._refresh()

    def _refresh(self) -> None:
        with self._read_lock:
            try:
                with self.path.open("rb") as handle:
                    size = os.fstat(handle.fileno()).st_size
                    if size < self._offset:  # replaced or truncated by an operator: reread
                        self._jobs, self._offset = {}, 0
                    handle.seek(self._offset)
                    chunk = handle.read()
            except FileNotFoundError:
                return
            except OSError as exc:
                raise StoreUnavailable(f"Cannot read the job file {self.path}: {exc}") from exc
            complete = chunk[: chunk.rfind(b"\n") + 1]
            for line in complete.splitlines():
                if not line.strip():
                    continue
                try:
                    job = JobRecord.model_validate_json(line)
                except ValidationError:
                    logger.warning("Skipping a torn line in %s", self.path)
                    continue
                self._jobs[job.job_id] = job
            self._offset += len(complete)

    def add(self, job: JobRecord) -> None:
        try:
            with self._lock.hold():
                self._append(job)
        except OSError as exc:
            raise StoreUnavailable(f"Cannot write the job file {self.path}: {exc}") from exc

    def add_if_absent(self, job: JobRecord) -> JobRecord | None:
        """Append ``job`` unless a job with its id is already in the file (checked under the
        lock, so of concurrent callers exactly one appends). Returns the job already there, or
        None when ``job`` was appended."""
        try:
            with self._lock.hold():
                self._refresh()
                existing = self._jobs.get(job.job_id)
                if existing is None:
                    self._append(job)
                return existing
        except OSError as exc:
            raise StoreUnavailable(f"Cannot write the job file {self.path}: {exc}") from exc

    def _append(self, job: JobRecord) -> None:
        """Append one line; the caller holds the lock."""
        # exclude_none: an unkeyed job's line stays a plain job (no idempotency fields).
        line = job.model_dump_json(exclude_none=True).encode("utf-8") + b"\n"
        with appending(self.path) as (fd, size):
            if ends_torn(fd, size):  # a torn line: end it so ours stands alone
                line = b"\n" + line
            append(fd, line)

    def get(self, job_id: str) -> JobRecord | None:
        self._refresh()
        return self._jobs.get(job_id)

    def all(self) -> list[JobRecord]:
        self._refresh()
        with self._read_lock:
            return list(self._jobs.values())

    def for_client(self, client_id: str, since: datetime | None) -> list[JobRecord]:
        self._refresh()
        with self._read_lock:  # another thread's _refresh may be adding to the dict
            jobs = list(self._jobs.values())
        return [
            job
            for job in jobs
            if job.client_id == client_id and (since is None or job.created_at >= since)
        ]


async def get_jobs(request: Request) -> JobStore:
    jobs: JobStore = request.app.state.jobs
    return jobs


JobsDep = Annotated[JobStore, Depends(get_jobs)]


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


def _replay(job: JobRecord, body_hash: str, response: Response) -> JobAccepted:
    """The first answer for this key again, if the body is the same."""
    if job.request_hash != body_hash:
        raise IdempotencyConflict()
    response.headers[REPLAYED_HEADER] = "true"
    return accepted(job)


def _intake_keyed(
    body: JobCreate,
    client_id: str,
    key: str,
    service: BillingService,
    jobs: JobStore,
    response: Response,
    key_id: str,
) -> JobAccepted:
    job_id = idempotent_job_id(client_id, key)
    body_hash = request_hash(body)
    # The job file is the record of answers: look there first, so a retry is never charged,
    # however many cycles later it comes (the ledger forgets a job id after two cycles).
    existing = jobs.get(job_id)
    if existing is not None:
        return _replay(existing, body_hash, response)
    charge = service.charge(client_id, job_id=job_id, key_id=key_id)
    if charge.replayed:
        # Charged by another request with this key that has not queued the job yet (or
        # has just queued it, or died in between).
        existing = jobs.get(job_id)
        if existing is not None:
            return _replay(existing, body_hash, response)
        if not _abandoned(charge, jobs):
            raise IdempotencyInProgress()
    job = JobRecord(
        **body.model_dump(),
        job_id=job_id,
        client_id=client_id,
        created_at=charge.charged_at,
        request_hash=body_hash,
        credits_remaining=charge.credits_remaining,
    )
    try:
        existing = jobs.add_if_absent(job)
    except StoreUnavailable:
        if not charge.replayed:  # charged but not queued: give the credit back
            service.refund(client_id, job_id)
        raise
    if existing is not None:  # another request queued it first
        if not charge.replayed:
            service.refund(client_id, job_id)
        return _replay(existing, body_hash, response)
    if charge.replayed:
        logger.warning("Queued abandoned job %s for %s under its earlier charge", job_id, client_id)
    return accepted(job)


def _abandoned(charge: ChargeResult, jobs: JobStore) -> bool:
    after = max(MIN_ABANDONED_AFTER, timedelta(seconds=3 * jobs.lock_timeout))
    return utcnow() - charge.charged_at >= after


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


def intake_with_job_file(
    body: JobCreate,
    check: ClientCheck,
    service: BillingService,
    jobs: JobStore,
    response: Response,
    idempotency_key: str | None,
) -> JobAccepted:
    client = check.client()  # 401/403/429 as with CurrentClient, before anything else
    if idempotency_key is not None:
        if not IDEMPOTENCY_KEY_PATTERN.fullmatch(idempotency_key):
            raise InvalidIdempotencyKey()
        return _intake_keyed(
            body, client.client_id, idempotency_key, service, jobs, response, check.key_id
        )
    job_id = str(uuid.uuid4())
    charge = service.charge(client.client_id, job_id=job_id, key_id=check.key_id)
    job = JobRecord(
        **body.model_dump(), job_id=job_id, client_id=client.client_id, created_at=charge.charged_at
    )
    try:
        jobs.add(job)
    except StoreUnavailable:
        # Charged but not queued: give the credit back, so a client never pays for nothing.
        if not charge.replayed:
            service.refund(client.client_id, job_id)
        raise
    return JobAccepted(
        job_id=job_id,
        status=job.status,
        credits_remaining=charge.credits_remaining,
        created_at=job.created_at,
        job=job.public(),
    )
