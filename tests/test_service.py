"""Service-level rules and their log lines."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from client_auth import deduct_job_credit, refund_job_credit
from conftest import Clock
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.settings import Settings


def test_a_reset_triggered_by_a_charge_logs_the_new_allowance(
    service: BillingService, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    record, _ = service.create_client(name="A", email="a@acmecorp.com", plan=PlanId.PRO)
    service.charge(record.client_id, job_id="before")
    clock.advance(days=30)
    with caplog.at_level(logging.INFO, logger="openclaw_billing"):
        result = service.charge(record.client_id, job_id="after")
    assert result.credits_remaining == 199
    resets = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Reset")]
    assert resets == [f"Reset monthly credits for {record.client_id}: 200 jobs"]


def test_unlimited_jobs_are_logged_without_claiming_a_deduction(
    service: BillingService, caplog: pytest.LogCaptureFixture
) -> None:
    record, _ = service.create_client(name="E", email="e@acmecorp.com", plan=PlanId.ENTERPRISE)
    with caplog.at_level(logging.INFO, logger="openclaw_billing"):
        result = service.charge(record.client_id, job_id="j1", cost=2.5)
    assert result.credits_remaining is None
    messages = [r.getMessage() for r in caplog.records]
    assert f"Logged job for {record.client_id} (unlimited plan): job submission j1" in messages
    assert not any(m.startswith("Deducted credit") for m in messages)


def test_refund_job_credit_gives_back_the_credit_and_cost_once(service: BillingService) -> None:
    record, _ = service.create_client(name="R", email="r@acmecorp.com", plan=PlanId.FREE)
    deduct_job_credit(record.client_id, job_id="j1", cost=1.25)
    assert refund_job_credit(record.client_id, "j1") is True
    assert refund_job_credit(record.client_id, "j1") is False
    assert refund_job_credit(record.client_id, "never-charged") is False
    after = service.get_client(record.client_id)
    assert after.credits_remaining == 5
    assert after.total_spent == 0
    assert after.metadata.cost_log == []


def test_a_refund_does_not_reach_into_a_finished_cycle(
    service: BillingService, clock: Clock
) -> None:
    record, _ = service.create_client(name="R", email="r@acmecorp.com", plan=PlanId.FREE)
    service.charge(record.client_id, job_id="old")
    clock.advance(days=31)
    assert service.refund(record.client_id, "old") is False
    assert service.get_client(record.client_id).credits_remaining == 5


@pytest.mark.parametrize(("job_id", "cost"), [("", 0.0), ("x" * 201, 0.0), ("j", -1.0)])
def test_charge_refuses_bad_arguments(service: BillingService, job_id: str, cost: float) -> None:
    record, _ = service.create_client(name="B", email="b@acmecorp.com", plan=PlanId.FREE)
    with pytest.raises(ValueError, match=r"job_id|cost"):
        service.charge(record.client_id, job_id=job_id, cost=cost)
    with pytest.raises(ValueError, match="cost"):
        service.charge(record.client_id, job_id="nan", cost=float("nan"))
    assert service.get_client(record.client_id).credits_remaining == 5


def test_a_rejected_admin_token_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCLAW_ADMIN_TOKEN", "short-secret")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "short-secret" not in str(raised.value)


def test_a_long_idle_client_resets_once_to_the_current_cycle(
    service: BillingService, clock: Clock
) -> None:
    record, _ = service.create_client(name="I", email="i@acmecorp.com", plan=PlanId.STARTER)
    created = record.created_at
    clock.advance(days=200)
    after = service.get_client(record.client_id)
    assert after.billing_cycle_start == created + timedelta(days=180)
    assert len(after.metadata.cycle_history) == 1
    assert after.credits_remaining == 50


def test_every_action_refuses_a_now_without_a_time_zone(service: BillingService) -> None:
    """A host or test clock without a time zone is refused where it is given (``ValueError``,
    one rule: ``cycles.resolve_now``), not compared with stored times later, and changes
    nothing."""
    record, _ = service.create_client(name="N", email="n@acmecorp.com", plan=PlanId.FREE)
    cid = record.client_id
    naive = datetime(2026, 1, 1, 12, 0)
    actions: list[Callable[[], object]] = [
        lambda: service.get_client(cid, now=naive),
        lambda: service.can_submit(record, now=naive),
        lambda: service.charge(cid, job_id="j1", now=naive),
        lambda: service.refund(cid, "j1", now=naive),
        lambda: service.add_credits(cid, 5, "gift", now=naive),
        lambda: service.set_active(cid, False, now=naive),
    ]
    for action in actions:
        with pytest.raises(ValueError, match="time zone"):
            action()
    after = service.get_client(cid)
    assert (after.credits_remaining, after.active, after.metadata.cost_log) == (5, True, [])
