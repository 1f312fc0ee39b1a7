"""Reference OpenClaw gateway: sells agent jobs through openclaw-billing.

* ``POST /api/intake``: a client submits a job with its ``X-Client-Key``; one credit is charged
  atomically under the job's id before the job is queued (no job runs unpaid). An optional
  ``Idempotency-Key`` header makes retries safe: the same key and body get the first answer
  again and are never charged twice (see :func:`intake`).
* ``GET /api/jobs``, ``GET /api/jobs/{job_id}``: the client's own jobs, within its plan's
  history window.
* ``GET /health``: liveness plus a read of the billing store.
* the billing router (``client_auth.router``): plans, usage, checkout, webhook, admin.

Run it with ``make run``, ``python gateway.py [--port N] [--workers N]`` or
``uvicorn gateway:app --workers N``. Port: ``--port``, else ``OPENCLAW_GATEWAY_PORT``, else 18789.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import re
import secrets
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response, status
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from client_auth import (
    MULTI_LINE,
    ONE_LINE,
    PLANS,
    BillingError,
    BillingService,
    BodyLimitedRoute,
    ChargeResult,
    ClientCheck,
    ConfigurationError,
    Conflict,
    CurrentClient,
    DeferredClient,
    ErrorPublic,
    EscapeControls,
    FileLock,
    JobStorage,
    NewJob,
    NotFound,
    ServiceDep,
    StoredJob,
    StoreUnavailable,
    UtcDatetime,
    append,
    appending,
    docs_router,
    ends_torn,
    get_rate_limiter,
    get_service,
    get_settings,
    install_body_limit,
    install_error_handlers,
    open_append,
    pages_router,
    private_directory,
    redact_access_log,
    run_billing,
    set_rate_limiter,
    set_service,
    utcnow,
)
from client_auth import router as client_auth_router

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


class Job(JobCreate):
    job_id: str
    client_id: str
    status: Literal["queued"] = "queued"
    created_at: UtcDatetime


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


def _history_start(plan_history_days: int | None, now: datetime) -> datetime | None:
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


def _accepted(job: JobRecord) -> JobAccepted:
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
    return _accepted(job)


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
    return _accepted(job)


def _abandoned(charge: ChargeResult, jobs: JobStore) -> bool:
    after = max(MIN_ABANDONED_AFTER, timedelta(seconds=3 * jobs.lock_timeout))
    return utcnow() - charge.charged_at >= after


router = APIRouter(route_class=BodyLimitedRoute)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorPublic} for code in codes}


@router.post(
    "/api/intake",
    status_code=status.HTTP_201_CREATED,
    tags=["jobs"],
    responses={code: {"model": ErrorPublic} for code in (400, 401, 402, 409, 429, 503)},
)
async def intake(
    body: JobCreate,
    client: DeferredClient,
    service: ServiceDep,
    jobs: JobsDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            # Documented here, checked in intake (a bad key is 400 invalid_idempotency_key).
            json_schema_extra={
                "maxLength": 255,
                "pattern": f"^{IDEMPOTENCY_KEY_PATTERN.pattern}$",
            },
            description=(
                "Optional; makes retries safe. 1-255 printable ASCII characters, unique per "
                "job (a UUID v4). The same key and body get the first answer again (and the "
                "header Idempotent-Replayed: true), never a second charge; the same key with "
                "another body is 409 idempotency_conflict; while the first request is still "
                "running, the retry waits for its answer (with a host's own store that keeps "
                "no jobs: 409 idempotency_in_progress, retry). Keys are scoped to the client "
                "and do not expire."
            ),
        ),
    ] = None,
) -> JobAccepted:
    """Submit a job. One credit is charged atomically before the job is queued; with none
    left the answer is 402 ``credit_limit_reached`` and nothing is queued.

    With an ``Idempotency-Key`` the job's id is derived from the client and the key, so the
    charge (idempotent per job id) and the queued job (one per id) happen at most once, in one
    atomic step; the stored job keeps a hash of the body and the first answer's credits to
    answer retries with."""
    if not isinstance(service.store, JobStorage):
        # A store that keeps no jobs: the job file, after the charge (see _intake).
        return await run_billing(_intake, body, client, service, jobs, response, idempotency_key)
    check = client
    verified = await check.resolve()  # 401/403/429 before anything else
    if idempotency_key is not None and not IDEMPOTENCY_KEY_PATTERN.fullmatch(idempotency_key):
        raise InvalidIdempotencyKey()
    keyed = idempotency_key is not None
    cid = verified.client_id
    job_id = idempotent_job_id(cid, idempotency_key) if idempotency_key else str(uuid.uuid4())
    body_hash = request_hash(body) if keyed else None
    job = NewJob(fields=body.model_dump(), request_hash=body_hash)
    # The charge re-checks the key in its atomic step: the check above may be a cached one.
    charge = service.charge_of(cid, job_id=job_id, job=job, key_id=check.key_id)
    charged = await service.accept(charge)
    stored = charged.job
    assert stored is not None  # a job was given: the new one or the first request's
    if charged.charge.replayed:
        if stored.request_hash != body_hash:
            raise IdempotencyConflict()
        response.headers[REPLAYED_HEADER] = "true"
    return _accepted(_record_of(stored))


def _record_of(job: StoredJob) -> JobRecord:
    """A stored job as the gateway's job (its fields were validated on the way in)."""
    values: dict[str, Any] = {
        **job.fields,
        "job_id": job.job_id,
        "client_id": job.client_id,
        "status": "queued",
        "created_at": job.created_at,
        "request_hash": job.request_hash,
        "credits_remaining": job.credits_remaining,
    }
    return JobRecord.model_construct(**values)


def _intake(
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


@router.get("/api/jobs", tags=["jobs"], responses=_errors(401, 429, 503))
def list_jobs(client: CurrentClient, service: ServiceDep, jobs: JobsDep) -> JobList:
    """The calling client's jobs within its plan's history window, oldest first."""
    days = PLANS[client.plan].history_days
    since = _history_start(days, utcnow())
    listed = (
        [_record_of(job) for job in service.store.client_jobs(client.client_id, since)]
        if isinstance(service.store, JobStorage)
        else jobs.for_client(client.client_id, since)
    )
    return JobList(jobs=[job.public() for job in listed], history_days=days)


@router.get("/api/jobs/{job_id}", tags=["jobs"], responses=_errors(401, 404, 429, 503))
def get_job(
    job_id: Annotated[str, PathParam(max_length=100, pattern=ONE_LINE)],
    client: CurrentClient,
    service: ServiceDep,
    jobs: JobsDep,
) -> Job:
    """One of the calling client's jobs; another client's job is simply not found."""
    if isinstance(service.store, JobStorage):
        stored = service.store.get_job(client.client_id, job_id)
        job = None if stored is None else _record_of(stored)
    else:
        job = jobs.get(job_id)
    since = _history_start(PLANS[client.plan].history_days, utcnow())
    if job is None or job.client_id != client.client_id or (since and job.created_at < since):
        raise NotFound("Job not found")
    return job.public()


@router.get("/health", tags=["health"], responses=_errors(503))
def health(service: ServiceDep) -> dict[str, str]:
    """Liveness, and a read of the billing store (503 if it cannot be read)."""
    service.store.check()
    return {"status": "ok"}


# -- the app --------------------------------------------------------------------------------


def _configure_logging() -> None:
    billing = logging.getLogger("openclaw_billing")
    if billing.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    handler.addFilter(EscapeControls())  # any logger's record that reaches it, escaped
    billing.addHandler(handler)
    billing.setLevel(logging.INFO)


#: What stops the start: invalid settings, a store that cannot be opened (damaged, an
#: unsupported URL, an unreachable database), an unusable rate-limit storage.
STARTUP_ERRORS = (ValidationError, StoreUnavailable, ConfigurationError)
#: ``app.state`` attribute holding the reason the lifespan refused to start, if it did.
_REFUSED_STATE = "startup_refused"


def _open_billing() -> None:
    """Open what the gateway needs before it serves: the settings, the billing store (a
    corrupt file or an unsupported URL stops the start here) and the rate-limit storage.
    Raises one of :data:`STARTUP_ERRORS`; :func:`refusal` words it for the operator."""
    get_settings()
    get_service()
    get_rate_limiter()


def refusal(exc: Exception) -> str:
    """The one line that says why the start was refused (never a traceback)."""
    if isinstance(exc, ValidationError):
        return "Invalid settings: " + "; ".join(e["msg"] for e in exc.errors(include_input=False))
    return exc.message if isinstance(exc, BillingError) else str(exc)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    _configure_logging()
    redact_access_log()  # after uvicorn configured logging, in every worker
    setattr(app.state, _REFUSED_STATE, None)
    try:
        _open_billing()
    except STARTUP_ERRORS as exc:
        reason = refusal(exc)
        logger.critical("Refusing to start: %s", reason)
        setattr(app.state, _REFUSED_STATE, reason)
        raise  # as it is: a host or a test that runs the lifespan sees the real error
    settings = get_settings()
    app.state.jobs = JobStore(settings.jobs_file, lock_timeout=settings.store_lock_timeout)
    _import_job_file(get_service().store, app.state.jobs)
    if settings.admin_token is None:
        logger.warning("OPENCLAW_ADMIN_TOKEN is not set: admin routes answer 503")
    # What start-up loaded (the JSON store's clients, the app) lives as long as the worker:
    # left out of the garbage collector's full passes, which otherwise walk all of it (37 to
    # 60 ms with 1,000 clients in the JSON store, a pause every request then waits for).
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _import_job_file(store: object, jobs: JobStore) -> None:
    """A store that keeps the jobs with their charges takes over the job file of an earlier
    release: its jobs are imported (once each, however many workers start), then served from
    the store."""
    if not isinstance(store, JobStorage):
        return
    fields = set(JobCreate.model_fields)
    found = [
        StoredJob(
            client_id=job.client_id,
            job_id=job.job_id,
            created_at=job.created_at,
            fields={name: value for name, value in job.model_dump().items() if name in fields},
            request_hash=job.request_hash,
            credits_remaining=job.credits_remaining,
        )
        for job in jobs.all()
    ]
    if found and (imported := store.import_jobs(found)):
        logger.warning("Imported %d jobs from the job file %s into the store", imported, jobs.path)


class QuietStartupRefusal:
    """A start refused by the lifespan ends with its one clear line, not a traceback.

    Starlette reports a lifespan exception to the server as ``lifespan.startup.failed`` with
    the formatted traceback as its message, which uvicorn logs. When the lifespan refused the
    start itself (already logged as ``Refusing to start: ...``), that message is emptied;
    uvicorn then logs "Application startup failed. Exiting." and exits with status 3, and
    does not log the exception that follows. Any other failure keeps its traceback."""

    def __init__(self, app: ASGIApp, owner: FastAPI) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet_send(message: Message) -> None:
            refused = getattr(self.owner.state, _REFUSED_STATE, None)
            if message["type"] == "lifespan.startup.failed" and refused is not None:
                message = {"type": "lifespan.startup.failed", "message": ""}
            await send(message)

        await self.app(scope, receive, quiet_send)


def create_app() -> FastAPI:
    title = "OpenClaw gateway"
    # /docs and /redoc from files shipped in the package: they work on an offline host.
    app = FastAPI(title=title, version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    install_body_limit(app)  # 413 before a large body is read (OPENCLAW_MAX_BODY_BYTES)
    app.add_middleware(QuietStartupRefusal, owner=app)
    app.include_router(client_auth_router)
    app.include_router(router)
    app.include_router(docs_router(title=title))
    app.include_router(pages_router)  # the console and the portal
    return app


app = create_app()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default OPENCLAW_GATEWAY_PORT or 18789)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args(argv)
    if not os.environ.get("OPENCLAW_ADMIN_TOKEN", "").strip():
        token = secrets.token_urlsafe(32)
        os.environ["OPENCLAW_ADMIN_TOKEN"] = token
        print(
            "OPENCLAW_ADMIN_TOKEN was not set; generated one for this run (shown once):\n\n"
            f"    export OPENCLAW_ADMIN_TOKEN={token}\n\n"
            "Set it yourself to keep the same token across restarts.",
            flush=True,
        )
    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "\n".join(f"  {e['msg']}" for e in exc.errors(include_input=False))
        print(f"Invalid settings:\n{problems}", file=sys.stderr)
        return 2
    # Open the store here too, once, before any worker starts: a refused start is one clear
    # line and status 1, rather than every worker failing (and being restarted) in turn.
    try:
        _open_billing()
    except STARTUP_ERRORS as exc:
        print(f"Refusing to start: {refusal(exc)}", file=sys.stderr)
        return 1
    finally:
        set_service(None)  # the workers open their own; this process serves nothing
        set_rate_limiter(None)
    port = args.port or settings.gateway_port
    uvicorn.run("gateway:app", host=args.host, port=port, workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
