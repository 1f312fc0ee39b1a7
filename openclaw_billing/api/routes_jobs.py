"""The routes of charging by outcome: the operator's runner reports a job's progress and end
(admin token), and a client cancels its own queued job (client key). Both are one atomic step
of the store with their audit event (see :mod:`openclaw_billing.job_actions`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from ..jobs import JobStatus
from ..outcomes import Report
from .bodylimit import BodyLimitedRoute
from .deps import AdminAuth, ClientAddress, CurrentClient, ServiceDep
from .schemas import ONE_LINE, ErrorPublic
from .schemas_jobs import JobStatePublic, OutcomeReport

JobId = Annotated[str, Path(min_length=1, max_length=200, pattern=ONE_LINE)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorPublic} for code in codes}


client_jobs_router = APIRouter(
    prefix="/api/jobs",
    tags=["jobs"],
    route_class=BodyLimitedRoute,
    responses=_errors(401, 429),
)
admin_jobs_router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    route_class=BodyLimitedRoute,
    dependencies=[AdminAuth],
    responses=_errors(401, 429, 503),
)


@client_jobs_router.post("/{job_id}/cancel", responses=_errors(404, 409, 503))
def cancel_job(
    job_id: JobId, client: CurrentClient, service: ServiceDep, source: ClientAddress
) -> JobStatePublic:
    """Cancel one of your queued jobs: its hold is released in full. A job already running
    or ended is 409 ``illegal_transition``; cancelling twice answers the first result again
    (``changed: false``)."""
    settled = service.cancel_job(client.client_id, job_id, source=source)
    return JobStatePublic.of(settled)


@admin_jobs_router.post("/jobs/{job_id}/outcome", responses=_errors(404, 409, 422))
def report_outcome(
    job_id: JobId, body: OutcomeReport, service: ServiceDep, source: ClientAddress
) -> JobStatePublic:
    """The job runner reports a job's progress (``running``) or end. An end settles the job's
    hold by the plan's outcome policy: released in full for an infrastructure failure, a
    timeout or a cancel before start; charged (its metered cost, at most its reservation and
    its ``max_credits``) otherwise. The same report again changes nothing (``changed:
    false``); another end for an ended job is 409 ``illegal_transition``."""
    report = Report(JobStatus(body.status), body.failure_class, body.usage)
    settled = service.report_job(job_id, report, client_id=body.client_id, source=source)
    return JobStatePublic.of(settled)
