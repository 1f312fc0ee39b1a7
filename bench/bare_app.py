"""The baseline: ``POST /api/intake`` and ``GET /api/jobs`` of the same shape as the gateway's,
without billing.

* ``POST /api/intake``: same request body (``gateway_jobs.JobCreate``), same ``X-Client-Key``
  header, same ``201`` answer (``gateway_jobs.JobAccepted``, with a job id, the job and a
  credits count), a sync route run in the thread pool like the gateway's, but no
  authentication, no charge and no storage.
* ``GET /api/jobs``: reads the ``X-Client-Key`` header and answers a ``gateway_jobs.JobList`` of
  ``JOBS_PER_CLIENT`` jobs (as many as each benchmarked client holds when the bench reads its
  list) with a pro plan's history window, from a sync route; no authentication, no store.

The models are imported from the gateway, so validation and serialisation cost exactly the
same. Run it like the gateway, from the repository root::

    uvicorn bench.bare_app:app --workers N
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import FastAPI, Header, status

from bench.http1 import JOB_BODY, JOBS_PER_CLIENT
from gateway_jobs import Job, JobAccepted, JobCreate, JobList
from openclaw_billing.cycles import utcnow
from openclaw_billing.plans import PLANS, PlanId

#: What the gateway's answer carries for a pro client with plenty of credits left.
CREDITS_REMAINING = 999_999
#: The benchmarked clients' plan (``bench/seed.py``): its history window is in the job list.
HISTORY_DAYS = PLANS[PlanId.PRO].history_days

app = FastAPI(title="bare intake (benchmark baseline)")


@app.post("/api/intake", status_code=status.HTTP_201_CREATED)
def intake(
    body: JobCreate,
    x_client_key: Annotated[str, Header(alias="X-Client-Key", max_length=512)],
) -> JobAccepted:
    """Accept the job as the gateway would, minus auth, charge and storage."""
    now = utcnow()
    job = Job(
        **body.model_dump(), job_id=str(uuid.uuid4()), client_id=str(uuid.uuid4()), created_at=now
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
        )
        for _ in range(JOBS_PER_CLIENT)
    ]
    return JobList(jobs=jobs, history_days=HISTORY_DAYS)
