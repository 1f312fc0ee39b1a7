"""Charging by outcome on every backend (issue 15): a reservation holds a job's price, the
runner's report settles it by the plan's policy, a client cancels its queued job, the sweeper
expires holds that outlived their time to live, and the concurrency cap is checked in the
reservation's atomic step. Every scenario ends with the ledger invariants."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from openclaw_billing import plans
from openclaw_billing.errors import (
    ConcurrencyLimitReached,
    CreditLimitReached,
    IllegalTransition,
    InvalidRequest,
    JobNotFound,
    QuoteExpired,
)
from openclaw_billing.jobs import JobStatus
from openclaw_billing.outcomes import Report
from openclaw_billing.plans import PlanId
from openclaw_billing.quotes import QUOTE_TTL
from openclaw_billing.service import BillingService
from openclaw_billing.settings import get_settings
from openclaw_billing.store import Store
from openclaw_billing.store.capabilities import JobStorage
from tests.backends import (  # noqa: F401 - the fixtures "store" and "store_url"
    add_client,
    assert_invariants,
    reopen,
    store_fixture,
    store_url_fixture,
)
from tests.store_helpers import T0

FAILED_INFRA = Report(JobStatus.FAILED, "infrastructure")
FAILED_CLIENT = Report(JobStatus.FAILED, "client_error")


@pytest.fixture(name="service")
def service_fixture(store: Store) -> Iterator[BillingService]:
    service = BillingService(store)
    yield service
    service.committer.close()


def _client(service: BillingService, plan: PlanId = PlanId.PRO) -> str:
    record, _ = add_client(service.store, plan)
    return record.client_id


def _credits(service: BillingService, client_id: str) -> tuple[int | None, int]:
    """The client's credits left and held now."""
    record = service.get_client(client_id, now=T0)
    held = sum(e.credits for e in record.metadata.cost_log if e.held)
    return record.credits_remaining, held


def test_an_infrastructure_failure_gives_the_credit_back(service: BillingService) -> None:
    cid = _client(service)
    charged = service.reserve(cid, job_id="j1", price=3, now=T0)
    assert charged.charge.credits_remaining == 197
    assert charged.job is not None
    assert charged.job.holding
    assert charged.job.receipt is not None
    assert charged.job.receipt.reserved == 3
    assert _credits(service, cid) == (197, 3)
    settled = service.report_job("j1", FAILED_INFRA, now=T0 + timedelta(minutes=5))
    receipt = settled.job.receipt
    assert settled.job.status == "failed"
    assert settled.job.failure_class == "infrastructure"
    assert receipt is not None
    assert (receipt.charged, receipt.released) == (0, 3)
    assert receipt.reason == "failed (infrastructure): released in full"
    assert _credits(service, cid) == (200, 0)
    assert isinstance(service.store, JobStorage)
    assert service.store.get_job(cid, "j1") == settled.job
    assert_invariants(service.store)


def test_a_client_error_is_charged_and_a_success_too(service: BillingService) -> None:
    cid = _client(service)
    service.reserve(cid, job_id="bad", price=2, now=T0)
    service.reserve(cid, job_id="good", price=2, now=T0)
    service.report_job("good", Report(JobStatus.RUNNING), now=T0)
    bad = service.report_job("bad", FAILED_CLIENT, now=T0).job.receipt
    good = service.report_job("good", Report(JobStatus.SUCCEEDED), now=T0).job.receipt
    assert bad is not None
    assert (bad.charged, bad.released) == (2, 0)
    assert good is not None
    assert (good.charged, good.released, good.reason) == (
        2,
        0,
        "succeeded: charged",
    )
    assert _credits(service, cid) == (196, 0)
    assert_invariants(service.store)


def test_the_same_report_again_changes_nothing_and_another_end_is_refused(
    service: BillingService,
) -> None:
    cid = _client(service)
    service.reserve(cid, job_id="j1", now=T0)
    first = service.report_job("j1", Report(JobStatus.SUCCEEDED), now=T0)
    again = service.report_job("j1", Report(JobStatus.SUCCEEDED), now=T0 + timedelta(hours=1))
    assert first.changed
    assert not again.changed
    assert again.job == first.job
    with pytest.raises(IllegalTransition):
        service.report_job("j1", FAILED_INFRA, now=T0)
    with pytest.raises(IllegalTransition):
        service.report_job("j1", Report(JobStatus.RUNNING), now=T0)
    with pytest.raises(InvalidRequest):
        service.report_job("j1", Report(JobStatus.FAILED, "gremlins"), now=T0)
    with pytest.raises(JobNotFound):
        service.report_job("nope", Report(JobStatus.SUCCEEDED), now=T0)
    assert _credits(service, cid) == (199, 0)
    events = service.audit_events()[0]
    assert [e.action for e in events if e.action.startswith("job.")] == ["job.outcome"]


def test_a_client_cancels_only_a_queued_job(service: BillingService) -> None:
    cid = _client(service, PlanId.STARTER)
    service.reserve(cid, job_id="q", now=T0)
    service.reserve(cid, job_id="r", now=T0)
    service.report_job("r", Report(JobStatus.RUNNING), now=T0)
    cancelled = service.cancel_job(cid, "q", now=T0).job
    assert cancelled.status == "cancelled"
    assert cancelled.receipt is not None
    assert cancelled.receipt.released == 1
    assert not service.cancel_job(cid, "q", now=T0).changed  # twice: the first answer
    with pytest.raises(IllegalTransition):
        service.cancel_job(cid, "r", now=T0)
    with pytest.raises(JobNotFound):
        service.cancel_job(_client(service), "r", now=T0)  # another client's job
    # The operator may cancel a running job: charged by the default policy.
    ended = service.report_job("r", Report(JobStatus.CANCELLED), now=T0).job.receipt
    assert ended is not None
    assert ended.charged == 1
    assert _credits(service, cid) == (49, 0)
    assert_invariants(service.store)


def test_metered_usage_settles_within_the_reservation_and_max_credits(
    service: BillingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    metered = replace(plans.PLANS[PlanId.PRO], usage_rates={"tokens_out": 0.001})
    monkeypatch.setitem(plans.PLANS, PlanId.PRO, metered)
    cid = _client(service)
    service.reserve(cid, job_id="small", price=10, now=T0)
    service.reserve(cid, job_id="big", price=10, max_credits=8, now=T0)
    small = service.report_job(
        "small", Report(JobStatus.SUCCEEDED, usage={"tokens_out": 2500}), now=T0
    ).job.receipt
    assert small is not None
    assert (small.metered, small.charged, small.released, small.overage) == (3, 3, 7, None)
    big = service.report_job(
        "big", Report(JobStatus.SUCCEEDED, usage={"tokens_out": 50_000}), now=T0
    ).job.receipt
    # Reserved at most max_credits (8); 50 measured: 8 charged, nothing over the cap billed.
    assert big is not None
    assert (big.reserved, big.metered, big.charged) == (8, 50, 8)
    assert big.overage is None
    assert _credits(service, cid) == (200 - 3 - 8, 0)
    assert_invariants(service.store)


def test_the_concurrency_cap_is_checked_with_the_reservation(service: BillingService) -> None:
    cid = _client(service, PlanId.STARTER)  # cap 2
    service.reserve(cid, job_id="a", now=T0)
    service.reserve(cid, job_id="b", now=T0)
    with pytest.raises(ConcurrencyLimitReached) as refused:
        service.reserve(cid, job_id="c", now=T0)
    assert refused.value.headers == {"Retry-After": "30"}
    assert service.reserve(cid, job_id="a", now=T0).charge.replayed  # a retry is no new job
    service.report_job("a", Report(JobStatus.SUCCEEDED), now=T0)
    service.reserve(cid, job_id="c", now=T0)  # a place was freed
    service.charge(cid, job_id="plain", now=T0)  # a charge holds nothing, and is not capped
    assert _credits(service, cid) == (46, 2)
    assert_invariants(service.store)


def test_a_hold_needs_its_whole_price(service: BillingService) -> None:
    cid = _client(service, PlanId.FREE)
    service.reserve(cid, job_id="a", price=4, now=T0)
    service.report_job("a", Report(JobStatus.SUCCEEDED), now=T0)
    with pytest.raises(CreditLimitReached):
        service.reserve(cid, job_id="b", price=2, now=T0)
    service.reserve(cid, job_id="b", price=1, now=T0)
    assert _credits(service, cid) == (0, 1)


def test_expired_holds_are_released_by_any_worker_once(
    service: BillingService, store_url: str
) -> None:
    cid = _client(service, PlanId.PRO)
    for n in range(3):
        service.reserve(cid, job_id=f"j{n}", price=2, now=T0)
    service.report_job("j0", Report(JobStatus.RUNNING), now=T0)
    service.report_job("j2", Report(JobStatus.SUCCEEDED), now=T0)
    ttl = plans.PLANS[PlanId.PRO].hold_ttl
    assert service.sweep(now=T0 + ttl - timedelta(seconds=1)) == 0
    later = T0 + ttl + timedelta(seconds=1)
    with reopen(store_url) as other_store:
        other = BillingService(other_store)
        try:
            assert other.sweep(now=later) + service.sweep(now=later) == 2
            assert other.sweep(now=later) == 0
        finally:
            other.committer.close()
    assert isinstance(service.store, JobStorage)
    assert service.store.expired_holds(later, 10) == []
    expired = service.store.get_job(cid, "j1")
    assert expired is not None
    assert expired.status == "expired"
    assert expired.receipt is not None
    assert expired.receipt.released == 2
    assert _credits(service, cid) == (198, 0)
    with pytest.raises(IllegalTransition):  # the runner's late report of an expired job
        service.report_job("j0", Report(JobStatus.SUCCEEDED), now=later)
    assert_invariants(service.store)


def test_a_hold_taken_before_the_cycle_rolled_gives_nothing_back(
    service: BillingService,
) -> None:
    cid = _client(service, PlanId.STARTER)
    service.reserve(cid, job_id="late", now=T0)
    rolled = T0 + timedelta(days=31)
    receipt = service.report_job("late", FAILED_INFRA, now=rolled).job.receipt
    assert receipt is not None
    assert receipt.released == 1
    assert receipt.reason is not None
    assert "cycle had ended" in receipt.reason
    assert service.get_client(cid, now=rolled).credits_remaining == 50
    assert_invariants(service.store)


def test_a_quote_is_honoured_and_a_stale_one_refused(
    service: BillingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On every backend: the quoted price is what the reservation holds, even after the price
    table changed; past its time the quote is refused and nothing is held."""
    monkeypatch.setenv("OPENCLAW_SESSION_SECRET", "a-quote-signing-secret-for-this-test-only")
    get_settings.cache_clear()
    priced = replace(plans.PLANS[PlanId.PRO], task_prices={"research": 4})
    monkeypatch.setitem(plans.PLANS, PlanId.PRO, priced)
    cid = _client(service)
    record = service.get_client(cid, now=T0)
    quote = service.quote(record, "research", "P2", now=T0)
    monkeypatch.setitem(plans.PLANS, PlanId.PRO, replace(priced, task_prices={}))
    price = service.honour_quote(quote.quote_id, cid, "research", "P2", now=T0)
    held = service.reserve(cid, job_id="quoted", price=price, now=T0)
    assert held.job is not None
    assert held.job.receipt is not None
    assert held.job.receipt.reserved == 4
    with pytest.raises(QuoteExpired):
        service.honour_quote(quote.quote_id, cid, "research", "P2", now=T0 + QUOTE_TTL)
    assert _credits(service, cid) == (196, 4)
    get_settings.cache_clear()
