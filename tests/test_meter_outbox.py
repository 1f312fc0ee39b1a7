"""The meter outbox on every backend (issue 15, item 5): a settled job's usage beyond its
reservation, for a client with a live Stripe subscription, is written as a pending report with
the settlement and sent to the fake Stripe by the sender (the real SDK) exactly once: after a
failed first attempt, with two workers sending at once, after a restart. A client without a
subscription is not billed, and its receipt says so."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import stripe

from openclaw_billing import plans
from openclaw_billing.jobs import JobStatus, MeterState, Receipt, StoredJob
from openclaw_billing.outcomes import Report
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.settings import Settings, get_settings
from openclaw_billing.store import JsonFileStore, Store
from openclaw_billing.store.capabilities import JobStorage
from openclaw_billing.stripe_billing import StripeBilling, StripeEvent, set_stripe_client
from openclaw_billing.stripe_billing.client import build_stripe_client
from openclaw_billing.stripe_billing.meter_outbox import MeterSender
from openclaw_billing.stripe_billing.meters import MeterReporter, meter_identifier
from openclaw_billing.sweeper import hold_sweeper, sweep_pass
from tests.backends import (  # noqa: F401 - the fixtures "store" and "store_url"
    add_client,
    assert_invariants,
    reopen,
    store_fixture,
    store_url_fixture,
)
from tests.fake_stripe import FakeStripe
from tests.fake_stripe_meters import METER_EVENTS_PATH
from tests.store_helpers import T0
from tests.stripe_events import new_id, subscription_event, subscription_object

EVENT_NAME = "openclaw_credits"
PRICE_PRO = "price_pro_test"
DAY = 86_400
#: When the jobs settle, and when the sender runs (Stripe's clock is a minute later).
SETTLED = T0 + timedelta(hours=1)
LATER = SETTLED + timedelta(minutes=1)
#: A job reserved at 10 credits, allowed up to 30, that measured 25: 15 beyond the reservation.
USAGE = Report(JobStatus.SUCCEEDED, usage={"tokens_out": 25_000})


def _settings(fake: FakeStripe, **extra: Any) -> dict[str, Any]:
    return {
        "STRIPE_SECRET_KEY": fake.secret_key,
        "STRIPE_API_BASE": fake.base_url,
        "STRIPE_PRICE_PRO": PRICE_PRO,
        "STRIPE_METER_EVENT_NAME": EVENT_NAME,
        "STRIPE_MAX_NETWORK_RETRIES": 0,
    } | extra


@pytest.fixture(name="fake")
def fake_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStripe]:
    """A fake Stripe whose clock stands a minute after the settlements; the SDK does not wait
    between retries; the Pro plan meters ``tokens_out`` (1 credit per 1,000)."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.0)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.0)
    metered = replace(plans.PLANS[PlanId.PRO], usage_rates={"tokens_out": 0.001})
    monkeypatch.setitem(plans.PLANS, PlanId.PRO, metered)
    with FakeStripe() as server:
        server.now = lambda: int(LATER.timestamp())
        yield server


@pytest.fixture(name="service")
def service_fixture(store: Store) -> Iterator[BillingService]:
    service = BillingService(store)
    yield service
    service.committer.close()


def _sender(service: BillingService, fake: FakeStripe, **extra: Any) -> MeterSender:
    settings = Settings(**_settings(fake, **extra))
    return MeterSender(service, MeterReporter(build_stripe_client(settings), EVENT_NAME))


def _subscribe(service: BillingService, fake: FakeStripe, status: str = "active") -> str:
    """A client on Free that subscribes to Pro, as Stripe's webhook tells the gateway (the
    subscription retrieved from the fake by the real SDK); returns its id."""
    record, _ = add_client(service.store, PlanId.FREE, now=T0 - timedelta(days=2))
    cid = record.client_id
    _set_subscription(service, fake, cid, new_id("sub_"), new_id("cus_"), status)
    return cid


def _set_subscription(
    service: BillingService, fake: FakeStripe, cid: str, sub_id: str, customer: str, status: str
) -> None:
    start = int((T0 - timedelta(days=1)).timestamp())
    sub = subscription_object(
        subscription=sub_id,
        customer=customer,
        price=PRICE_PRO,
        status=status,
        period_start=start,
        period_end=start + 30 * DAY,
        created=start,
        client_id=cid,
        plan="pro",
    )
    fake.subscriptions[sub_id] = sub
    event = subscription_event("customer.subscription.updated", sub, created=start)
    settings = Settings(**_settings(fake))
    billing = StripeBilling(service, settings, build_stripe_client(settings))
    billing.handle(StripeEvent.model_validate(event), now=T0)


def _settle(service: BillingService, cid: str, job_id: str = "j1") -> Receipt:
    """Reserve a job (10 credits, at most 30) and settle it at 25 measured credits."""
    service.reserve(cid, job_id=job_id, price=10, max_credits=30, now=T0)
    receipt = service.report_job(job_id, USAGE, client_id=cid, now=SETTLED).job.receipt
    assert receipt is not None
    return receipt


def _job(store: Store, cid: str, job_id: str = "j1") -> StoredJob:
    assert isinstance(store, JobStorage)
    job = store.get_job(cid, job_id)
    assert job is not None
    return job


def _meter(store: Store, cid: str, job_id: str = "j1") -> tuple[MeterState, int, str | None]:
    """The job's report: its state, attempts and Stripe's code."""
    receipt = _job(store, cid, job_id).receipt
    assert receipt is not None
    assert receipt.meter is not None
    return receipt.meter.state, receipt.meter.attempts, receipt.meter.code


def _pending(store: Store) -> list[str]:
    assert isinstance(store, JobStorage)
    return [job.job_id for job in store.pending_meter_reports(10)]


def _events(fake: FakeStripe) -> list[dict[str, Any]]:
    return list(fake.meter_events.events)


def test_a_subscribed_clients_overage_reaches_stripe_once(
    service: BillingService, fake: FakeStripe
) -> None:
    cid = _subscribe(service, fake)
    receipt = _settle(service, cid)
    assert (receipt.reserved, receipt.metered, receipt.charged, receipt.overage) == (10, 25, 10, 15)
    assert receipt.meter is not None
    assert receipt.meter.state is MeterState.PENDING
    assert receipt.reason == (
        "succeeded: charged; 15 credits beyond the reservation billed through Stripe"
    )
    assert _pending(service.store) == ["j1"]
    credits = service.get_client(cid, now=LATER).credits_remaining

    sent = _sender(service, fake).send_pending(now=LATER)
    again = _sender(service, fake).send_pending(now=LATER)

    assert (sent.reported, sent.pending, sent.failed) == (1, 0, 0)
    assert (again.reported, again.pending, again.failed) == (0, 0, 0)
    [event] = _events(fake)
    stored = _job(service.store, cid).receipt
    assert stored is not None
    assert stored.meter is not None
    assert event["payload"] == {"stripe_customer_id": stored.meter.customer_id, "value": "15"}
    assert event["identifier"] == meter_identifier(cid, "j1")
    assert event["timestamp"] == int(SETTLED.timestamp())
    assert len(fake.requests_to("post", METER_EVENTS_PATH)) == 1
    assert _meter(service.store, cid) == (MeterState.REPORTED, 1, None)
    assert stored.meter.reported_at == LATER
    assert _pending(service.store) == []
    assert service.get_client(cid, now=LATER).credits_remaining == credits  # marking: no credit
    assert_invariants(service.store)


@pytest.mark.parametrize("fault", ["500", "lost answer"])
def test_a_failed_first_attempt_is_sent_again_at_a_later_pass_once(
    service: BillingService, fake: FakeStripe, fault: str
) -> None:
    cid = _subscribe(service, fake)
    _settle(service, cid)
    if fault == "500":
        fake.fail_next(500, path=METER_EVENTS_PATH)
    else:  # Stripe recorded the event; its answer never came
        fake.drop_next(path=METER_EVENTS_PATH, executed=True)

    first = _sender(service, fake).send_pending(now=LATER)
    code = "api_error" if fault == "500" else None
    assert (first.reported, first.pending) == (0, 1)
    assert _meter(service.store, cid) == (MeterState.PENDING, 1, code)
    assert _pending(service.store) == ["j1"]

    second = _sender(service, fake).send_pending(now=LATER + timedelta(seconds=30))

    assert (second.reported, second.pending) == (1, 0)
    assert _meter(service.store, cid) == (MeterState.REPORTED, 2, None)
    assert [e["identifier"] for e in _events(fake)] == [meter_identifier(cid, "j1")]
    keys = [r.idempotency_key for r in fake.requests_to("post", METER_EVENTS_PATH)]
    assert len(set(keys)) == 2  # the second attempt is a new request


def test_two_workers_sending_at_once_make_one_event(
    service: BillingService, fake: FakeStripe, store_url: str
) -> None:
    cid = _subscribe(service, fake)
    _settle(service, cid)
    fake.delay(1.0)  # both requests are in flight together
    with reopen(store_url) as other_store:
        other = BillingService(other_store)
        try:
            senders = [_sender(service, fake), _sender(other, fake)]
            start = threading.Barrier(2)

            def send(sender: MeterSender) -> None:
                start.wait(timeout=10)
                sender.send_pending(now=LATER)

            threads = [threading.Thread(target=send, args=(s,)) for s in senders]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert _meter(other_store, cid) == (MeterState.REPORTED, 1, None)
        finally:
            other.committer.close()
    assert len(fake.requests_to("post", METER_EVENTS_PATH)) == 2
    assert [e["identifier"] for e in _events(fake)] == [meter_identifier(cid, "j1")]
    assert _meter(service.store, cid) == (MeterState.REPORTED, 1, None)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("past_due", MeterState.PENDING),  # a renewal unpaid: the usage is still owed
        ("unpaid", MeterState.PENDING),
        ("paused", MeterState.NOT_BILLED),  # a paused subscription invoices nothing
    ],
)
def test_a_subscription_that_is_no_longer_active_when_the_job_ends(
    service: BillingService, fake: FakeStripe, status: str, state: MeterState
) -> None:
    cid = _subscribe(service, fake)
    record = service.get_client(cid, now=T0)
    assert record.stripe_subscription_id is not None
    assert record.stripe_customer_id is not None
    service.reserve(cid, job_id="j1", price=10, max_credits=30, now=T0)
    sub_id, customer = record.stripe_subscription_id, record.stripe_customer_id
    _set_subscription(service, fake, cid, sub_id, customer, status)
    service.report_job("j1", USAGE, client_id=cid, now=SETTLED)

    assert _meter(service.store, cid)[0] is state
    _sender(service, fake).send_pending(now=LATER)
    assert len(_events(fake)) == (1 if state is MeterState.PENDING else 0)


def test_a_client_without_a_subscription_is_not_billed(
    service: BillingService, fake: FakeStripe
) -> None:
    record, _ = add_client(service.store, PlanId.PRO, now=T0)
    receipt = _settle(service, record.client_id)

    assert receipt.overage == 15
    assert receipt.meter is not None
    assert (receipt.meter.state, receipt.meter.customer_id) == (MeterState.NOT_BILLED, None)
    assert receipt.reason is not None
    assert receipt.reason.endswith(
        "15 credits beyond the reservation not billed (no live Stripe subscription)"
    )
    assert _pending(service.store) == []
    assert _sender(service, fake).send_pending(now=LATER).reported == 0
    assert fake.requests_to("post", METER_EVENTS_PATH) == []


def test_a_job_within_its_reservation_has_nothing_to_report(
    service: BillingService, fake: FakeStripe
) -> None:
    cid = _subscribe(service, fake)
    service.reserve(cid, job_id="j1", price=10, max_credits=30, now=T0)
    small = Report(JobStatus.SUCCEEDED, usage={"tokens_out": 4_000})
    receipt = service.report_job("j1", small, now=SETTLED).job.receipt
    assert receipt is not None
    assert (receipt.charged, receipt.overage, receipt.meter) == (4, None, None)
    assert _pending(service.store) == []


def test_a_pending_report_survives_a_restart(
    store_url: str, store: Store, fake: FakeStripe
) -> None:
    service = BillingService(store)
    cid = _subscribe(service, fake)
    _settle(service, cid)
    if isinstance(store, JsonFileStore):
        store.compact()  # the report is in the snapshot now, not only in the journal
    service.close()  # the worker stops before any pass sent it
    with reopen(store_url) as restarted:
        after = BillingService(restarted)
        try:
            assert _pending(restarted) == ["j1"]
            assert _sender(after, fake).send_pending(now=LATER).reported == 1
            assert _pending(restarted) == []
        finally:
            after.committer.close()
    with reopen(store_url) as again:
        assert _meter(again, cid) == (MeterState.REPORTED, 1, None)
    assert len(_events(fake)) == 1


def test_a_refusal_is_marked_failed_with_stripes_code_and_not_sent_again(
    service: BillingService, fake: FakeStripe, caplog: pytest.LogCaptureFixture
) -> None:
    cid = _subscribe(service, fake)
    _settle(service, cid)
    fake.fail_next(
        400, error_type="invalid_request_error", code="resource_missing", path=METER_EVENTS_PATH
    )
    with caplog.at_level(logging.WARNING, "openclaw_billing.stripe"):
        first = _sender(service, fake).send_pending(now=LATER)
    assert first.failed == 1
    assert _meter(service.store, cid) == (MeterState.FAILED, 1, "resource_missing")
    assert any("resource_missing (attempt 1)" in r.getMessage() for r in caplog.records)
    assert _sender(service, fake).send_pending(now=LATER).failed == 0
    assert len(fake.requests_to("post", METER_EVENTS_PATH)) == 1
    assert _events(fake) == []


def test_a_report_older_than_stripe_accepts_is_marked_too_old(
    service: BillingService, fake: FakeStripe
) -> None:
    """Stripe turned the reports away (or reporting was not configured) for more than 35
    days. (A report Stripe may hold is marked ``unconfirmed`` instead: test_meter_unconfirmed.)"""
    cid = _subscribe(service, fake)
    _settle(service, cid)
    fake.fail_next(429, error_type="invalid_request_error", code="rate_limit", stored=False)
    assert _sender(service, fake).send_pending(now=LATER).pending == 1
    late = SETTLED + timedelta(days=35, seconds=1)
    assert _sender(service, fake).send_pending(now=late).failed == 1
    assert _meter(service.store, cid) == (MeterState.FAILED, 2, "too_old")
    assert len(fake.requests_to("post", METER_EVENTS_PATH)) == 1
    assert _events(fake) == []


def test_without_a_meter_reports_wait_and_the_sender_says_so_once(
    service: BillingService, fake: FakeStripe, caplog: pytest.LogCaptureFixture
) -> None:
    cid = _subscribe(service, fake)
    _settle(service, cid)
    unconfigured = MeterSender(service, MeterReporter(None, None))
    with caplog.at_level(logging.WARNING, "openclaw_billing.stripe"):
        unconfigured.send_pending(now=LATER)
        unconfigured.send_pending(now=LATER)
    told = [r for r in caplog.records if "not reported to Stripe" in r.getMessage()]
    assert len(told) == 1
    assert "1 job reports wait" in told[0].getMessage()
    assert _meter(service.store, cid) == (MeterState.PENDING, 0, None)
    assert _sender(service, fake).send_pending(now=LATER).reported == 1  # once configured


def test_a_pass_sends_batch_after_batch(
    service: BillingService, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("openclaw_billing.stripe_billing.meter_outbox.METER_BATCH", 2)
    cid = _subscribe(service, fake)
    for n in range(5):
        _settle(service, cid, f"j{n}")
    assert isinstance(service.store, JobStorage)
    assert [j.job_id for j in service.store.pending_meter_reports(3)] == ["j0", "j1", "j2"]

    assert _sender(service, fake).send_pending(now=LATER).reported == 5
    assert sorted(e["identifier"] for e in _events(fake)) == sorted(
        meter_identifier(cid, f"j{n}") for n in range(5)
    )


def test_the_sweepers_pass_sends_the_outbox(
    service: BillingService, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = _subscribe(service, fake)
    _settle(service, cid)
    monkeypatch.setattr("openclaw_billing.stripe_billing.meter_outbox.utcnow", lambda: LATER)
    sweep_pass(service, _sender(service, fake))
    assert _meter(service.store, cid)[0] is MeterState.REPORTED
    assert len(_events(fake)) == 1


def test_the_hold_sweeper_reports_usage_from_the_settings(
    service: BillingService, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background task every worker runs, configured by the environment alone."""
    for name, value in _settings(fake).items():
        monkeypatch.setenv(name, str(value))
    get_settings.cache_clear()
    set_stripe_client(None)
    cid = _subscribe(service, fake)
    _settle(service, cid, "j1")
    monkeypatch.setattr("openclaw_billing.stripe_billing.meter_outbox.utcnow", lambda: LATER)

    async def run() -> None:
        async with hold_sweeper(service=lambda: service, interval=0.01):
            for _ in range(500):
                await asyncio.sleep(0.01)
                if _events(fake):
                    return

    try:
        asyncio.run(run())
    finally:
        get_settings.cache_clear()
        set_stripe_client(None)
    assert _meter(service.store, cid)[0] is MeterState.REPORTED
    assert len(_events(fake)) == 1
