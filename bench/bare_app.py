"""The baseline: ``POST /api/intake``, ``GET /api/jobs`` and the runner's outcome report of the
same shape as the gateway's, without billing.

* ``POST /api/intake``: same request body (``gateway_jobs.JobCreate``), same ``X-Client-Key``
  header, same ``201`` answer (``gateway_jobs.JobAccepted``, with a job id, the job with its
  receipt of an open hold and a credits count), a sync route run in the thread pool like the
  gateway's, but no authentication, no reservation and no storage.
* ``GET /api/jobs``: reads the ``X-Client-Key`` header and answers a ``gateway_jobs.JobList`` of
  ``JOBS_PER_CLIENT`` jobs (as many as each benchmarked client holds when the bench reads its
  list, each with its receipt) with a pro plan's history window, from a sync route; no
  authentication, no store.
* ``POST /api/admin/jobs/{job_id}/outcome``: the same path parameter, ``X-Auth-Token`` header
  (checked against ``OPENCLAW_ADMIN_TOKEN`` as the gateway checks it, constant-time; 401 if
  it differs), body (``OutcomeReport``) and answer (``JobStatePublic``, the job ended with its
  settled receipt), from a sync route; no job is looked up, moved or settled, and nothing is
  audited or stored.

The models are imported from the gateway, so validation and serialisation cost exactly the
same. Run it like the gateway, from the repository root::

    uvicorn bench.bare_app:app --workers N
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, status

from bench.http1 import ADMIN_TOKEN_HEADER, JOB_BODY, JOBS_PER_CLIENT
from gateway_jobs import Job, JobAccepted, JobCreate, JobList
from openclaw_billing.api.routes_jobs import JobId
from openclaw_billing.api.schemas_jobs import JobStatePublic, OutcomeReport, ReceiptPublic
from openclaw_billing.cycles import utcnow
from openclaw_billing.keys import secret_matches
from openclaw_billing.plans import PLANS, PlanId

#: What the gateway's answer carries for a benchmarked client (``bench/seed.py``: a pro client
#: with a billion credits, as many digits as it has left during a run).
CREDITS_REMAINING = 999_999_999
#: The benchmarked clients' plan (``bench/seed.py``): its history window is in the job list,
#: its price of the benchmark's job and its hold's time to live in the receipts.
PLAN = PLANS[PlanId.PRO]
HISTORY_DAYS = PLAN.history_days
PRICE = PLAN.price(JOB_BODY["task_type"], JOB_BODY["priority"])
#: The token the bench starts every server with (``bench/procs.py``).
ADMIN_TOKEN = os.environ.get("OPENCLAW_ADMIN_TOKEN", "")

app = FastAPI(title="bare intake (benchmark baseline)")


def _held(now: datetime) -> ReceiptPublic:
    """An open hold's receipt, as intake answers it."""
    return ReceiptPublic.model_construct(
        reserved=PRICE,
        hold_until=now + PLAN.hold_ttl,
        max_credits=None,
        charged=None,
        released=None,
        metered=None,
        overage=None,
        reason=None,
        settled_at=None,
    )


@app.post("/api/intake", status_code=status.HTTP_201_CREATED)
def intake(
    body: JobCreate,
    x_client_key: Annotated[str, Header(alias="X-Client-Key", max_length=512)],
) -> JobAccepted:
    """Accept the job as the gateway would, minus auth, charge and storage."""
    now = utcnow()
    job = Job(
        **body.model_dump(),
        job_id=str(uuid.uuid4()),
        client_id=str(uuid.uuid4()),
        created_at=now,
        receipt=_held(now),
    )
    return JobAccepted(
        job_id=job.job_id,
        status=job.status,
        credits_remaining=CREDITS_REMAINING,
        created_at=now,
        job=job,
    )


@app.get("/api/jobs")
def list_jobs(
    x_client_key: Annotated[str, Header(alias="X-Client-Key", max_length=512)],
) -> JobList:
    """A client's job list as the gateway answers it, minus auth and the store's read."""
    client_id, now = str(uuid.uuid4()), utcnow()
    jobs = [
        Job.model_construct(
            **JOB_BODY,
            job_id=str(uuid.uuid4()),
            client_id=client_id,
            status="queued",
            created_at=now,
            receipt=_held(now),
        )
        for _ in range(JOBS_PER_CLIENT)
    ]
    return JobList(jobs=jobs, history_days=HISTORY_DAYS)


@app.post("/api/admin/jobs/{job_id}/outcome")
def report_outcome(
    job_id: JobId,
    body: OutcomeReport,
    x_auth_token: Annotated[str | None, Header(alias=ADMIN_TOKEN_HEADER)] = None,
) -> JobStatePublic:
    """The runner's report, answered as the gateway answers a settled job, minus the job's
    lookup, its move, its settlement and its audit event."""
    if not secret_matches(x_auth_token, ADMIN_TOKEN):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid admin token")
    now = utcnow()
    held = _held(now)
    receipt = held.model_copy(
        update={
            "charged": PRICE,
            "released": 0,
            "reason": f"{body.status}: charged",
            "settled_at": now,
        }
    )
    return JobStatePublic(
        job_id=job_id,
        client_id=str(uuid.uuid4()),
        status=body.status,
        failure_class=body.failure_class,
        usage=body.usage,
        created_at=now,
        started_at=None,
        ended_at=now,
        receipt=receipt,
        changed=True,
    )
