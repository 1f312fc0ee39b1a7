"""A host gateway built as CLIENT_AUTH_INTEGRATION.md (sections 1 and 2) tells one to build it.

Served by ``uvicorn tests.host_app:app`` in ``tests/test_host_app.py``: the app, the lifespan
and the two intake routes are the guide's examples (``enqueue_job`` is the guide's "your
queue", a list here), plus routes of the host's own that fail: an unhandled exception and an
``HTTPException``, both after the client's key was checked.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from client_auth import (
    CurrentClient,
    DeferredClient,
    deduct_job_credit,
    docs_router,
    get_service,
    install_body_limit,
    install_error_handlers,
    redact_access_log,
    refund_job_credit,
)
from client_auth import router as client_auth_router

#: A secret-looking message: it must never reach a client.
BOOM = "database password is hunter2"
QUEUE: list[tuple[str, str]] = []


def enqueue_job(job_id: str, client_id: str, body: JobCreate) -> None:
    QUEUE.append((job_id, client_id))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    logging.basicConfig(level=logging.INFO)  # or your own logging setup
    redact_access_log()  # no query string (a key a client put in a URL) in the access log
    get_service()  # opens and validates the billing store now: a corrupt file stops the start
    yield


app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None)
install_error_handlers(app)  # one error shape for the whole app, your routes included
install_body_limit(app)  # 413 for a body over OPENCLAW_MAX_BODY_BYTES, before it is read
app.include_router(client_auth_router)  # /api/billing/* and /api/admin/*
app.include_router(docs_router(title="My gateway"))  # /docs and /redoc, offline


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a client cannot send its own credits or id

    project_name: str
    description: str
    task_type: str = "feature_build"
    priority: str = "P2"


@app.post("/api/intake", status_code=status.HTTP_201_CREATED)
def intake(body: JobCreate, client: CurrentClient) -> dict[str, object]:
    job_id = str(uuid.uuid4())
    # Atomic check-and-charge; raises CreditLimitReached (402) when nothing is left, and
    # PaymentPastDue (402) while the client's Stripe subscription is past due or unpaid.
    charge = deduct_job_credit(client.client_id, job_id=job_id)
    try:
        enqueue_job(job_id, client.client_id, body)  # your queue
    except Exception:
        if not charge.replayed:  # charged but not queued: give the credit back
            refund_job_credit(client.client_id, job_id)
        raise
    return {"job_id": job_id, "status": "queued", "credits_remaining": charge.credits_remaining}


@app.post("/api/deferred-intake", status_code=201)
async def deferred_intake(body: JobCreate, check: DeferredClient) -> dict[str, object]:
    def work() -> dict[str, object]:
        client = check.client()  # 401, 403 or 429 here, as with CurrentClient
        charge = deduct_job_credit(client.client_id, job_id=(job_id := str(uuid.uuid4())))
        enqueue_job(job_id, client.client_id, body)  # refund on failure, as above
        return {"job_id": job_id, "credits_remaining": charge.credits_remaining}

    return await run_in_threadpool(work)


@app.get("/api/broken")
def broken(client: CurrentClient) -> dict[str, str]:
    """A bug in the host's own route, after the key check."""
    raise RuntimeError(BOOM)


@app.get("/api/broken-without-key")
async def broken_without_key() -> dict[str, str]:
    raise ValueError(BOOM)


@app.get("/api/missing-thing")
def missing_thing(client: CurrentClient) -> dict[str, str]:
    raise HTTPException(status_code=404, detail="No such thing")
