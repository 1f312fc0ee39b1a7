"""The baseline: ``POST /api/intake`` of the same shape as the gateway's, without billing.

Same request body (``gateway.JobCreate``), same ``X-Client-Key`` header, same ``201`` answer
(``gateway.JobAccepted``, with a job id, the job and a credits count), a sync route run in the
thread pool like the gateway's, but no authentication, no charge and no job file. The models
are imported from the gateway, so validation and serialisation cost exactly the same.

Run it like the gateway, from the repository root::

    uvicorn bench.bare_app:app --workers N
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import FastAPI, Header, status

from gateway import Job, JobAccepted, JobCreate
from openclaw_billing.cycles import utcnow

#: What the gateway's answer carries for a pro client with plenty of credits left.
CREDITS_REMAINING = 999_999

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
