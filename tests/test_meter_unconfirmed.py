"""The meter outbox never bills a job twice (openclaw_billing/stripe_billing/meter_outbox.py),
on every backend, with the fake Stripe and the sender's clock: Stripe refuses a resent event as
a duplicate only within 24 hours of the first, so a report an attempt may have reached Stripe
with (its answer lost, a 5xx, its mark never written) is sent again only within
``RESEND_WITHIN`` (23 hours) of that attempt, then marked failed ``unconfirmed`` for an
operator, and logged. A report Stripe certainly never got (a connection refused) is sent again
for as long as before (35 days)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pytest

from openclaw_billing.errors import StoreUnavailable
from openclaw_billing.jobs import RESEND_WITHIN, MeterState
from openclaw_billing.outcomes import MeterMark
from openclaw_billing.service import BillingService
from openclaw_billing.store.base import MarkMeter
from openclaw_billing.stripe_billing.meter_outbox import MeterSender
from openclaw_billing.stripe_billing.meters import meter_identifier
from tests.backends import store_fixture, store_url_fixture  # noqa: F401 - "store"
from tests.fake_stripe import FakeStripe
from tests.fake_stripe_meters import METER_EVENTS_PATH
from tests.test_meter_outbox import (  # noqa: F401 - the fixtures "fake" and "service"
    LATER,
    _events,
    _job,
    _meter,
    _sender,
    _settle,
    _subscribe,
    fake_fixture,
    service_fixture,
)

#: A day and a minute after the first attempt: the fake Stripe (like Stripe) has forgotten the
#: identifier, so a resend would be recorded as a second event.
NEXT_DAY = LATER + timedelta(days=1, minutes=1)


def _at(fake: FakeStripe, when: datetime) -> datetime:
    """Stripe's clock (the fake's) set to ``when``; returns it, the sender's time."""
    fake.now = lambda: int(when.timestamp())
    return when


@pytest.fixture(name="stripe_down")
def stripe_down_fixture(
    service: BillingService, fake: FakeStripe, free_tcp_port: int
) -> MeterSender:
    """A sender whose Stripe refuses every connection (nothing listens on its port)."""
    return _sender(service, fake, STRIPE_API_BASE=f"http://127.0.0.1:{free_tcp_port}")


def _settled(service: BillingService, fake: FakeStripe) -> str:
    """A subscribed client's job settled with a report pending; the client's id."""
    cid = _subscribe(service, fake)
    _settle(service, cid)
    return cid


def _lose_answer(fake: FakeStripe, fault: str) -> None:
    if fault == "lost answer":  # Stripe recorded the event; its answer never came
        fake.drop_next(path=METER_EVENTS_PATH, executed=True)
    else:  # Stripe calls a 500's result indeterminate
        fake.fail_next(500, path=METER_EVENTS_PATH)


@pytest.mark.parametrize("fault", ["lost answer", "500"])
def test_a_report_stripe_may_hold_is_not_resent_after_the_window(
    service: BillingService,
    fake: FakeStripe,
    stripe_down: MeterSender,
    fault: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cid = _settled(service, fake)
    _lose_answer(fake, fault)
    assert _sender(service, fake).send_pending(now=_at(fake, LATER)).pending == 1
    recorded = len(_events(fake))
    # Stripe down for a day: refused connections count attempts but change nothing else.
    assert stripe_down.send_pending(now=LATER + timedelta(hours=1)).pending == 1
    assert _meter(service.store, cid) == (MeterState.PENDING, 2, None)

    with caplog.at_level(logging.WARNING, "openclaw_billing.stripe"):
        late = _sender(service, fake).send_pending(now=_at(fake, NEXT_DAY))

    assert late.failed == 1
    assert len(_events(fake)) == recorded  # nothing more reached Stripe
    assert len(fake.requests_to("post", METER_EVENTS_PATH)) == 1
    assert _meter(service.store, cid) == (MeterState.FAILED, 3, "unconfirmed")
    receipt = _job(service.store, cid).receipt
    assert receipt is not None
    assert receipt.meter is not None
    assert receipt.meter.unconfirmed
    assert receipt.meter.unconfirmed_since == LATER
    [told] = [r.getMessage() for r in caplog.records if "no longer sent" in r.getMessage()]
    assert meter_identifier(cid, "j1") in told
    assert LATER.isoformat() in told
    assert stripe_down.send_pending(now=NEXT_DAY).failed == 0  # not pending any more


def test_within_the_window_a_resend_is_one_event(
    service: BillingService, fake: FakeStripe, stripe_down: MeterSender
) -> None:
    cid = _settled(service, fake)
    _lose_answer(fake, "lost answer")
    _sender(service, fake).send_pending(now=_at(fake, LATER))
    stripe_down.send_pending(now=LATER + timedelta(hours=1))

    almost = LATER + RESEND_WITHIN - timedelta(minutes=1)
    assert _sender(service, fake).send_pending(now=_at(fake, almost)).reported == 1

    assert [e["identifier"] for e in _events(fake)] == [meter_identifier(cid, "j1")]
    assert _meter(service.store, cid) == (MeterState.REPORTED, 3, None)
    receipt = _job(service.store, cid).receipt
    assert receipt is not None
    assert receipt.meter is not None
    assert (receipt.meter.unconfirmed_since, receipt.meter.sending) == (None, ())


@pytest.mark.parametrize("days", [1, 34])
def test_a_report_stripe_never_got_is_sent_for_as_long_as_before(
    service: BillingService, fake: FakeStripe, stripe_down: MeterSender, days: int
) -> None:
    cid = _settled(service, fake)
    assert stripe_down.send_pending(now=LATER).pending == 1
    fake.fail_next(429, error_type="invalid_request_error", code="rate_limit", stored=False)
    assert _sender(service, fake).send_pending(now=_at(fake, LATER + timedelta(hours=2))).pending

    resent = _sender(service, fake).send_pending(now=_at(fake, LATER + timedelta(days=days)))

    assert resent.reported == 1
    assert _meter(service.store, cid) == (MeterState.REPORTED, 3, None)
    assert len(_events(fake)) == 1


def test_a_report_whose_mark_was_never_written_is_not_resent_after_the_window(
    service: BillingService, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stripe recorded the event and said so, but the store took no mark of it for a day."""
    cid = _settled(service, fake)
    run = service.committer.run

    def store_down_after_sending(op: Any) -> Any:
        if isinstance(op, MarkMeter) and getattr(op.mark, "answered", True):
            raise StoreUnavailable()
        return run(op)

    monkeypatch.setattr(service.committer, "run", store_down_after_sending)
    with pytest.raises(StoreUnavailable):
        _sender(service, fake).send_pending(now=_at(fake, LATER))
    monkeypatch.setattr(service.committer, "run", run)
    assert len(_events(fake)) == 1

    assert _sender(service, fake).send_pending(now=_at(fake, NEXT_DAY)).failed == 1

    assert len(_events(fake)) == 1
    assert _meter(service.store, cid) == (MeterState.FAILED, 1, "unconfirmed")


def test_a_report_stripe_may_hold_is_unconfirmed_rather_than_too_old(
    service: BillingService, fake: FakeStripe
) -> None:
    """After 35 days too: ``too_old`` would tell an operator Stripe never got it."""
    cid = _settled(service, fake)
    fake.fail_next(503, path=METER_EVENTS_PATH)
    _sender(service, fake).send_pending(now=LATER)
    assert _sender(service, fake).send_pending(now=LATER + timedelta(days=36)).failed == 1
    assert _meter(service.store, cid) == (MeterState.FAILED, 2, "unconfirmed")


def test_the_store_refuses_an_attempt_past_the_window_of_the_report_as_it_stands(
    service: BillingService, fake: FakeStripe
) -> None:
    """A pass that read the report before another worker's unconfirmed attempt was recorded
    cannot start a new attempt past that attempt's window: the store's step that records the
    start marks the report unconfirmed instead, and nothing is sent."""
    cid = _settled(service, fake)
    _lose_answer(fake, "lost answer")
    _sender(service, fake).send_pending(now=_at(fake, LATER))  # in doubt since LATER
    late = LATER + RESEND_WITHIN
    start = MeterMark(2, MeterState.PENDING, started_at=late, answered=False)
    [outcome] = service.store.mutate_batch([MarkMeter(cid, "j1", late, start)])
    assert outcome.unwrap().changed
    assert _meter(service.store, cid) == (MeterState.FAILED, 2, "unconfirmed")
    assert len(fake.requests_to("post", METER_EVENTS_PATH)) == 1


def test_a_worker_that_stalls_before_sending_past_the_window_sends_nothing(
    service: BillingService, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window is read on the clock again just before the request goes out: a worker that
    checked in time, then stalled (a paused VM, a long wait on the store), sends nothing."""
    cid = _settled(service, fake)
    _lose_answer(fake, "lost answer")
    _sender(service, fake).send_pending(now=_at(fake, LATER))
    readings = iter([LATER + RESEND_WITHIN - timedelta(minutes=5), LATER + RESEND_WITHIN])
    monkeypatch.setattr(
        "openclaw_billing.stripe_billing.meter_outbox.utcnow", lambda: next(readings)
    )
    _at(fake, NEXT_DAY)

    assert _sender(service, fake).send_pending().failed == 1

    assert len(fake.requests_to("post", METER_EVENTS_PATH)) == 1  # the first attempt only
    assert len(_events(fake)) == 1
    assert _meter(service.store, cid) == (MeterState.FAILED, 2, "unconfirmed")
    receipt = _job(service.store, cid).receipt
    assert receipt is not None
    assert receipt.meter is not None
    assert receipt.meter.sending == ()  # the stalled attempt was never sent
