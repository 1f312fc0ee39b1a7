"""The contract's functions for charging by outcome, as ``client_auth`` exports them: reserve
a job's price, report where a job is, cancel a queued job. Each is one call of the process's
default service (:func:`.service.get_service`), like ``deduct_job_credit``; the actions
themselves are :class:`.job_actions.JobActions`, and the rules :mod:`.outcomes`.

A module of its own because the service is built on the job actions: the functions that call
the service cannot live beside them without an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping

from .jobs import Charged, JobStatus, StoredJob
from .outcomes import Report
from .service import get_service


def reserve_job_credit(
    client_id: str,
    job_id: str | None = None,
    *,
    price: int | None = None,
    max_credits: int | None = None,
    cost: float = 0.0,
) -> Charged:
    """Hold a job's price (None: the plan's price of a default job) until it ends, atomically
    with the checks of ``deduct_job_credit`` and the client's concurrency cap; the job is
    stored with its hold. Raises as ``deduct_job_credit`` does, and
    ``ConcurrencyLimitReached``. A job id reserved before answers its first result."""
    return get_service().reserve(
        client_id, job_id=job_id, price=price, max_credits=max_credits, cost=cost
    )


def report_job_outcome(
    job_id: str,
    status: JobStatus | str,
    *,
    failure_class: str | None = None,
    usage: Mapping[str, int] | None = None,
    client_id: str | None = None,
) -> StoredJob:
    """Report where a job is (``running``) or how it ended; an end settles its hold by the
    plan's outcome policy. Returns the job with its receipt. Raises ``JobNotFound``,
    ``IllegalTransition``, ``InvalidRequest``, ``AmbiguousJobId``."""
    report = Report(JobStatus(status), failure_class, None if usage is None else dict(usage))
    return get_service().report_job(job_id, report, client_id=client_id).job


def cancel_queued_job(client_id: str, job_id: str) -> StoredJob:
    """Cancel the client's queued job (it will not run): its hold is released in full."""
    return get_service().cancel_job(client_id, job_id).job
