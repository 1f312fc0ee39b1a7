"""The contract's functions for charging by outcome, as a host gateway calls them through
``client_auth`` (the process's default service over the configured store)."""

from __future__ import annotations

import pytest

from client_auth import (
    ConcurrencyLimitReached,
    IllegalTransition,
    JobNotFound,
    cancel_queued_job,
    deduct_job_credit,
    report_job_outcome,
    reserve_job_credit,
)
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService


def test_a_host_reserves_reports_and_cancels(service: BillingService) -> None:
    record, _ = service.create_client(name="H", email="h@acmecorp.com", plan=PlanId.STARTER)
    cid = record.client_id
    held = reserve_job_credit(cid, "h1", price=2)
    assert held.charge.credits_remaining == 48
    assert held.job is not None
    assert held.job.holding
    assert reserve_job_credit(cid, "h1", price=2).charge.replayed
    reserve_job_credit(cid, "h2")
    with pytest.raises(ConcurrencyLimitReached):  # starter: 2 at once
        reserve_job_credit(cid, "h3")
    ended = report_job_outcome("h1", "failed", failure_class="infrastructure")
    assert ended.receipt is not None
    assert (ended.receipt.charged, ended.receipt.released) == (0, 2)
    assert cancel_queued_job(cid, "h2").status == "cancelled"
    with pytest.raises(IllegalTransition):
        cancel_queued_job(cid, "h1")
    with pytest.raises(JobNotFound):
        report_job_outcome("never", "succeeded")
    # deduct_job_credit keeps its contract: one credit at once, no hold, no cap.
    for n in range(3):
        assert not deduct_job_credit(cid, f"plain-{n}").replayed
    assert service.get_client(cid).credits_remaining == 47
