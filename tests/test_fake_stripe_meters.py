"""The fake Stripe's billing meter events, driven by the real SDK: the objects it answers are
the SDK's ``MeterEvent`` (tests/stripe_contract.py), and it refuses what Stripe refuses
(tests/fake_stripe_meters.py says where each rule comes from). Its fault injection for one
path, and its connection drops, are exercised here too."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe

from tests.fake_stripe import FakeStripe
from tests.fake_stripe_meters import IDENTIFIER_WINDOW, MAX_AGE, MAX_AHEAD, METER_EVENTS_PATH
from tests.stripe_contract import check, fields
from tests.test_fake_stripe import T0, fake_fixture, no_backoff  # noqa: F401 - fixtures


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    """No retries: each call is one request. The fake's clock stands at ``T0``."""
    fake.now = lambda: T0
    return stripe.StripeClient(fake.secret_key, base_addresses={"api": fake.base_url})


def _event(**extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "event_name": "openclaw_credits",
        "payload": {"stripe_customer_id": "cus_1", "value": "7"},
        "identifier": "usage_1",
        "timestamp": T0 - 60,
    }
    return {k: v for k, v in (params | extra).items() if v is not None}


def _create(client: stripe.StripeClient, key: str | None = None, **extra: Any) -> Any:
    params: Any = _event(**extra)  # some with a required param left out
    options: Any = {"idempotency_key": key} if key else {}
    return client.v1.billing.meter_events.create(params=params, options=options)


def test_a_meter_event_is_the_sdks_meter_event(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    created = _create(client, key="k1")

    assert isinstance(created, stripe.billing.MeterEvent)
    assert (created.event_name, created.identifier) == ("openclaw_credits", "usage_1")
    assert (created.timestamp, created.created, created.livemode) == (T0 - 60, T0, False)
    assert created.payload.to_dict() == {"stripe_customer_id": "cus_1", "value": "7"}
    [kept] = fake.meter_events.events
    assert set(kept) == set(fields(stripe.billing.MeterEvent)) | {"object"}
    check(kept)  # every field the SDK declares, of its type, and no other
    [request] = fake.requests_to("post", METER_EVENTS_PATH)
    assert request.params == _event(timestamp=str(T0 - 60))  # form-encoded: strings
    assert request.idempotency_key == "k1"


def test_identifier_and_timestamp_default_as_stripes_do(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    first = _create(client, identifier=None, timestamp=None)
    second = _create(client, identifier=None, timestamp=None)

    assert first.identifier
    assert second.identifier not in ("", first.identifier)
    assert first.timestamp == T0
    for kept in fake.meter_events.events:
        check(kept, stripe.billing.MeterEvent)


def test_the_inspection_route_lists_what_was_accepted(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    _create(client, identifier="a")
    _create(client, identifier="b")

    everything = httpx.get(f"{fake.base_url}/_fake/billing/meter_events").json()
    only_b = httpx.get(f"{fake.base_url}/_fake/billing/meter_events?identifier=b").json()

    assert [e["identifier"] for e in everything["data"]] == ["a", "b"]
    assert [e["identifier"] for e in only_b["data"]] == ["b"]
    assert everything["data"] == fake.meter_events.events


@pytest.mark.parametrize("missing", ["event_name", "payload"])
def test_a_required_param_missing_is_a_400(client: stripe.StripeClient, missing: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        _create(client, **{missing: None})
    assert (caught.value.http_status, caught.value.code) == (400, "parameter_missing")
    assert caught.value.param == missing
    assert caught.value.user_message == f"Missing required param: {missing}."


def test_an_identifier_is_taken_for_24_hours(fake: FakeStripe, client: stripe.StripeClient) -> None:
    _create(client, key="k1")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        _create(client, key="k2")  # another request, the same identifier

    refused = caught.value
    assert refused.http_status == 400
    assert refused.code is None  # API v1: the message is the only marker
    assert refused.user_message == "An event already exists with identifier usage_1."
    assert (refused.headers or {}).get("stripe-should-retry") == "false"
    assert _create(client, key="k1").identifier == "usage_1"  # the first request's replay
    assert len(fake.meter_events.events) == 1

    fake.now = lambda: T0 + IDENTIFIER_WINDOW
    assert _create(client, key="k3", timestamp=T0).identifier == "usage_1"
    assert len(fake.meter_events.events) == 2


@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        (T0 - MAX_AGE, True),
        (T0 - MAX_AGE - 1, False),
        (T0 + MAX_AHEAD, True),
        (T0 + MAX_AHEAD + 1, False),
    ],
)
def test_timestamps_within_35_days_back_and_5_minutes_ahead(
    fake: FakeStripe, client: stripe.StripeClient, timestamp: int, accepted: bool
) -> None:
    if accepted:
        assert _create(client, timestamp=timestamp).timestamp == timestamp
        return
    with pytest.raises(stripe.InvalidRequestError) as caught:
        _create(client, timestamp=timestamp)
    assert (caught.value.http_status, caught.value.param) == (400, "timestamp")
    assert fake.meter_events.events == []


def test_names_and_identifiers_hold_at_most_100_characters(client: stripe.StripeClient) -> None:
    assert _create(client, identifier="i" * 100, event_name="e" * 100).identifier == "i" * 100
    for param in ("identifier", "event_name"):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            _create(client, **{param: "x" * 101})
        assert (caught.value.http_status, caught.value.param) == (400, param)


# -- faults for one path, and connection drops --------------------------------------------------


def test_a_fault_for_meter_events_leaves_other_routes_alone(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.fail_next(503, path=METER_EVENTS_PATH, stored=False)
    portal = client.v1.billing_portal.sessions.create(params={"customer": "cus_1"})
    assert portal.customer == "cus_1"
    with pytest.raises(stripe.APIError):
        _create(client)
    assert _create(client).identifier == "usage_1"


def test_a_drop_before_the_request_ran_stores_nothing(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.drop_next(path=METER_EVENTS_PATH)
    with pytest.raises(stripe.APIConnectionError):
        _create(client, key="k1")
    [request] = fake.requests_to("post", METER_EVENTS_PATH)
    assert (request.dropped, request.status) == (True, 0)
    assert fake.meter_events.events == []
    assert _create(client, key="k1").identifier == "usage_1"  # the retry runs for real


@pytest.mark.usefixtures("no_backoff")
def test_a_lost_answer_is_replayed_to_the_sdks_retry(fake: FakeStripe) -> None:
    fake.now = lambda: T0
    retrying = stripe.StripeClient(
        fake.secret_key, base_addresses={"api": fake.base_url}, max_network_retries=2
    )
    fake.drop_next(path=METER_EVENTS_PATH, executed=True)

    assert _create(retrying).identifier == "usage_1"

    first, retry = fake.requests_to("post", METER_EVENTS_PATH)
    assert (first.dropped, first.status, retry.replayed) == (True, 200, True)
    assert first.idempotency_key == retry.idempotency_key  # the SDK's own key, reused
    assert len(fake.meter_events.events) == 1
