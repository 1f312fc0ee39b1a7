"""The reference gateway's job file: for a host's own store that keeps no jobs (a store with
``JobStorage`` keeps each job with its charge, in one atomic step), accepted jobs are queued
in an append-only JSON Lines file shared by every worker, after their charge; and the intake
that uses it (idempotency keys included). ``gateway.py`` mounts the routes that use it.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request, Response
from pydantic import ValidationError

from client_auth import (
    BillingService,
    ChargeResult,
    ClientCheck,
    FileLock,
    StoreUnavailable,
    append,
    appending,
    ends_torn,
    open_append,
    private_directory,
    utcnow,
)
from gateway_jobs import (
    IDEMPOTENCY_KEY_PATTERN,
    MIN_ABANDONED_AFTER,
    REPLAYED_HEADER,
    IdempotencyConflict,
    IdempotencyInProgress,
    InvalidIdempotencyKey,
    JobAccepted,
    JobCreate,
    JobRecord,
    accepted,
    idempotent_job_id,
    request_hash,
)

logger = logging.getLogger("openclaw_billing.gateway")


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
