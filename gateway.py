"""Reference OpenClaw gateway: sells agent jobs through openclaw-billing.

* ``POST /api/intake``: a client submits a job with its ``X-Client-Key``; the job's price (or
  its quote's) is held atomically under the job's id, within the client's concurrency cap,
  before the job is queued (no job runs unpaid); the runner's report of the job's end settles
  it (``POST /api/admin/jobs/{job_id}/outcome``, in the billing router). An optional
  ``Idempotency-Key`` header makes retries safe: the same key and body get the first answer
  again and are never charged twice (see :func:`intake`).
* ``GET /api/jobs``, ``GET /api/jobs/{job_id}``: the client's own jobs, within its plan's
  history window, with their status and receipt.
* ``GET /health``: liveness plus a read of the billing store.
* the billing router (``client_auth.router``): plans, usage, checkout, webhook, admin.

Run it with ``make run``, ``python gateway.py [--port N] [--workers N]`` or
``uvicorn gateway:app --workers N``. Port: ``--port``, else ``OPENCLAW_GATEWAY_PORT``, else 18789.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, FastAPI, Header, Response, status
from fastapi import Path as PathParam
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from client_auth import (
    ONE_LINE,
    PLANS,
    BillingError,
    BodyLimitedRoute,
    ConfigurationError,
    CurrentClient,
    DeferredClient,
    ErrorPublic,
    EscapeControls,
    JobStorage,
    NewJob,
    NotFound,
    ServiceDep,
    StoredJob,
    StoreUnavailable,
    docs_router,
    get_rate_limiter,
    get_service,
    get_settings,
    hold_sweeper,
    install_body_limit,
    install_error_handlers,
    pages_router,
    redact_access_log,
    run_billing,
    set_rate_limiter,
    set_service,
    utcnow,
)
from client_auth import router as client_auth_router
from gateway_jobfile import JobsDep, JobStore, intake_with_job_file
from gateway_jobs import (
    IDEMPOTENCY_KEY_PATTERN,
    REPLAYED_HEADER,
    IdempotencyConflict,
    InvalidIdempotencyKey,
    Job,
    JobAccepted,
    JobCreate,
    JobList,
    accepted,
    history_start,
    idempotent_job_id,
    record_of,
    request_hash,
    stored_fields,
)

logger = logging.getLogger("openclaw_billing.gateway")


router = APIRouter(route_class=BodyLimitedRoute)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorPublic} for code in codes}


@router.post(
    "/api/intake",
    status_code=status.HTTP_201_CREATED,
    tags=["jobs"],
    responses={code: {"model": ErrorPublic} for code in (400, 401, 402, 409, 422, 429, 503)},
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
    """Submit a job. Its price (the plan's for its task type and priority, or the quote's
    with ``quote_id``; at most ``max_credits``) is held atomically before the job is queued,
    and settled when the job's runner reports its end: charged, or given back. With fewer
    credits left than the price the answer is 402 ``credit_limit_reached``; with as many jobs
    queued or running as the client's cap, 429 ``concurrency_limit_reached``; nothing is
    queued then.

    With an ``Idempotency-Key`` the job's id is derived from the client and the key, so the
    charge (idempotent per job id) and the queued job (one per id) happen at most once, in one
    atomic step; the stored job keeps a hash of the body and the first answer's credits to
    answer retries with."""
    if not isinstance(service.store, JobStorage):
        # A store that keeps no jobs: the job file, after the charge (see intake_with_job_file).
        return await run_billing(
            intake_with_job_file, body, client, service, jobs, response, idempotency_key
        )
    check = client
    verified = await check.resolve()  # 401/403/429 before anything else
    if idempotency_key is not None and not IDEMPOTENCY_KEY_PATTERN.fullmatch(idempotency_key):
        raise InvalidIdempotencyKey()
    keyed = idempotency_key is not None
    cid = verified.client_id
    job_id = idempotent_job_id(cid, idempotency_key) if idempotency_key else str(uuid.uuid4())
    body_hash = request_hash(body) if keyed else None
    if body.quote_id is None:
        price = PLANS[verified.plan].price(body.task_type, body.priority)
    else:
        price = service.honour_quote(body.quote_id, cid, body.task_type, body.priority)
    job = NewJob(
        stored_fields(body), request_hash=body_hash, price=price, max_credits=body.max_credits
    )
    # The charge re-checks the key in its atomic step: the check above may be a cached one.
    charge = service.charge_of(cid, job_id=job_id, job=job, key_id=check.key_id)
    charged = await service.accept(charge)
    stored = charged.job
    assert stored is not None  # a job was given: the new one or the first request's
    if charged.charge.replayed:
        if stored.request_hash != body_hash:
            raise IdempotencyConflict()
        response.headers[REPLAYED_HEADER] = "true"
    return accepted(record_of(stored))


@router.get("/api/jobs", tags=["jobs"], responses=_errors(401, 429, 503))
def list_jobs(client: CurrentClient, service: ServiceDep, jobs: JobsDep) -> JobList:
    """The calling client's jobs within its plan's history window, oldest first."""
    days = PLANS[client.plan].history_days
    since = history_start(days, utcnow())
    listed = (
        [record_of(job) for job in service.store.client_jobs(client.client_id, since)]
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
        job = None if stored is None else record_of(stored)
    else:
        job = jobs.get(job_id)
    since = history_start(PLANS[client.plan].history_days, utcnow())
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
        async with hold_sweeper():
            yield
    finally:
        gc.unfreeze()


def _import_job_file(store: object, jobs: JobStore) -> None:
    """A store that keeps the jobs with their charges takes over the job file of an earlier
    release: its jobs are imported (once each, however many workers start), then served from
    the store."""
    if not isinstance(store, JobStorage):
        return
    found = [
        StoredJob(
            client_id=job.client_id,
            job_id=job.job_id,
            created_at=job.created_at,
            fields=stored_fields(job),
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
