"""The fake Stripe server and the event builders, exercised with the real stripe-python SDK."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import stripe
from stripe.params.checkout import SessionCreateParams

from tests.fake_stripe import API_VERSION, FakeStripe, decode_params
from tests.stripe_events import (
    checkout_session_completed,
    invoice_event,
    invoice_object,
    new_id,
    signed,
    signed_payload,
    subscription_event,
    subscription_object,
    unknown_event,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_test_" + "0123456789abcdef" * 2
T0 = 1_800_000_000
MONTH = 30 * 24 * 3600


@pytest.fixture(name="fake")
def fake_fixture() -> Iterator[FakeStripe]:
    """A fake Stripe of its own (no gateway)."""
    with FakeStripe() as server:
        yield server


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(
        fake.secret_key, base_addresses={"api": fake.base_url}, max_network_retries=2
    )


def a_subscription(**fields: Any) -> dict[str, Any]:
    """A subscription object: ``sub_1`` of ``cus_1`` on ``price_pro``, active for the month
    from ``T0``, of ``client_1`` on ``pro``; ``fields`` change any of it."""
    defaults: dict[str, Any] = {
        "subscription": "sub_1",
        "customer": "cus_1",
        "price": "price_pro",
        "status": "active",
        "period_start": T0,
        "period_end": T0 + MONTH,
        "created": T0,
        "client_id": "client_1",
        "plan": "pro",
    }
    return subscription_object(**(defaults | fields))


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK sleeps >= HTTPClient.INITIAL_DELAY (0.5 s) before each retry; make it 0."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.0)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.0)


def checkout_params(**overrides: Any) -> SessionCreateParams:
    params: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": "price_pro", "quantity": 1}],
        "customer_email": "ada@example.test",
        "client_reference_id": "client_123",
        "success_url": "https://app.example.test/billing/success",
        "cancel_url": "https://app.example.test/billing/cancel",
        "metadata": {"client_id": "client_123", "plan": "pro"},
        "subscription_data": {"metadata": {"client_id": "client_123", "plan": "pro"}},
    }
    params.update(overrides)
    return cast(SessionCreateParams, params)


# --- the fake server with the SDK ---------------------------------------------------------------


def test_checkout_session_create(fake: FakeStripe, client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(
        params=checkout_params(), options={"idempotency_key": "k1"}
    )

    assert isinstance(session, stripe.checkout.Session)
    assert re.fullmatch(r"cs_test_[0-9a-f]{24}", session.id)
    assert session.url == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert session.mode == "subscription"
    assert session.status == "open"
    assert session.payment_status == "unpaid"
    assert session.customer is None
    assert session.subscription is None
    assert session.client_reference_id == "client_123"
    assert session.metadata is not None
    assert session.metadata["client_id"] == "client_123"
    assert fake.checkout_sessions[session.id]["customer_email"] == "ada@example.test"

    [request] = fake.requests_to("post", "/v1/checkout/sessions")
    # what was sent, form-decoded: every value a string
    assert request.params == {
        **checkout_params(),
        "line_items": [{"price": "price_pro", "quantity": "1"}],
    }
    assert request.idempotency_key == "k1"
    assert not request.replayed
    assert request.status == 200
    assert request.headers["authorization"] == "Bearer sk_test_fake"
    assert request.headers["stripe-version"] == API_VERSION == stripe.api_version
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"


def test_same_idempotency_key_replays_the_stored_response(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    first = client.v1.checkout.sessions.create(
        params=checkout_params(), options={"idempotency_key": "k1"}
    )
    second = client.v1.checkout.sessions.create(
        params=checkout_params(), options={"idempotency_key": "k1"}
    )

    assert second.id == first.id
    assert second.url == first.url
    assert [r.replayed for r in fake.requests] == [False, True]
    assert len(fake.checkout_sessions) == 1
    assert second.last_response is not None
    assert second.last_response.headers["Idempotent-Replayed"] == "true"


def test_idempotency_key_reused_with_other_params(client: stripe.StripeClient) -> None:
    client.v1.checkout.sessions.create(params=checkout_params(), options={"idempotency_key": "k1"})
    with pytest.raises(stripe.IdempotencyError) as caught:
        client.v1.checkout.sessions.create(
            params=checkout_params(client_reference_id="other"),
            options={"idempotency_key": "k1"},
        )
    assert caught.value.http_status == 400


def test_sdk_sends_its_own_idempotency_key_on_every_post(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    client.v1.checkout.sessions.create(params=checkout_params())
    client.v1.checkout.sessions.create(params=checkout_params())
    keys = [r.idempotency_key for r in fake.requests]
    assert all(keys)
    assert keys[0] != keys[1]
    assert not any(r.replayed for r in fake.requests)


@pytest.mark.usefixtures("no_backoff")
def test_one_500_is_retried_with_the_same_idempotency_key(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.fail_next(500, stored=False)  # failed before Stripe executed anything
    session = client.v1.checkout.sessions.create(params=checkout_params())

    first, second = fake.requests
    assert (first.status, second.status) == (500, 200)
    assert first.idempotency_key == second.idempotency_key is not None
    assert not second.replayed
    assert list(fake.checkout_sessions) == [session.id]


@pytest.mark.usefixtures("no_backoff")
def test_persistent_500_raises_api_error_after_three_attempts(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.fail_next(500, message="Stripe is down", count=10)
    with pytest.raises(stripe.APIError) as caught:
        client.v1.checkout.sessions.create(params=checkout_params())
    assert caught.value.http_status == 500
    assert caught.value.user_message == "Stripe is down"
    assert len(fake.requests) == 3  # max_network_retries=2: one try + two retries


@pytest.mark.usefixtures("no_backoff")
def test_409_is_retried_and_400_is_not(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.fail_next(409, error_type="invalid_request_error", code="lock_timeout")
    client.v1.checkout.sessions.create(params=checkout_params())
    assert [r.status for r in fake.requests] == [409, 200]

    fake.fail_next(400, error_type="invalid_request_error", message="nope")
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.create(params=checkout_params())
    assert [r.status for r in fake.requests] == [409, 200, 400]


@pytest.mark.usefixtures("no_backoff")
def test_stripe_should_retry_header_overrides_the_status(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.fail_next(503, should_retry=False)
    with pytest.raises(stripe.APIError):
        client.v1.checkout.sessions.create(params=checkout_params())
    assert len(fake.requests) == 1

    fake.fail_next(400, error_type="invalid_request_error", should_retry=True)
    client.v1.checkout.sessions.create(params=checkout_params())
    assert [r.status for r in fake.requests] == [503, 400, 200]


def test_retry_backoff_is_at_least_half_a_second(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.fail_next(500, stored=False)
    started = time.monotonic()
    client.v1.checkout.sessions.create(params=checkout_params())
    assert time.monotonic() - started >= 0.5
    assert len(fake.requests) == 2


def test_a_bad_key_raises_authentication_error(fake: FakeStripe) -> None:
    for key in ("sk_live_123456789", "pk_test_123", "nonsense"):
        bad = stripe.StripeClient(key, base_addresses={"api": fake.base_url}, max_network_retries=2)
        with pytest.raises(stripe.AuthenticationError) as caught:
            bad.v1.checkout.sessions.create(params=checkout_params())
        assert caught.value.http_status == 401
    assert [r.status for r in fake.requests] == [401, 401, 401]  # never retried
    restricted = stripe.StripeClient("rk_test_abc", base_addresses={"api": fake.base_url})
    restricted.v1.checkout.sessions.create(params=checkout_params())


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"payment_method_types": ["card"]}, "payment_method_types"),
        ({"mode": None}, "mode"),
        ({"line_items": None}, "line_items"),
        ({"customer": "cus_123"}, "customer_email"),
        ({"line_items": [{"price": "price_pro"}]}, "line_items[0][quantity]"),
    ],
)
def test_checkout_validation(
    fake: FakeStripe, client: stripe.StripeClient, overrides: dict[str, Any], param: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(
            params=checkout_params(**overrides), options={"idempotency_key": "k"}
        )
    assert caught.value.http_status == 400
    assert caught.value.param == param
    # Stripe keeps no idempotent result for a request that failed validation.
    client.v1.checkout.sessions.create(params=checkout_params(), options={"idempotency_key": "k"})
    assert [r.status for r in fake.requests] == [400, 200]


def test_checkout_with_customer_and_known_prices(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.prices = {"price_pro"}
    session = client.v1.checkout.sessions.create(
        params=checkout_params(customer="cus_123", customer_email=None)
    )
    assert session.customer == "cus_123"
    assert session.customer_email is None
    with pytest.raises(stripe.InvalidRequestError, match="No such price"):
        client.v1.checkout.sessions.create(
            params=checkout_params(line_items=[{"price": "price_gone", "quantity": 1}])
        )
    retrieved = client.v1.checkout.sessions.retrieve(session.id)
    assert retrieved.id == session.id


def test_the_hosted_checkout_page_pays_once_and_returns_to_the_success_url(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    success = "https://app.example.test/billing/success?session_id={CHECKOUT_SESSION_ID}"
    session = client.v1.checkout.sessions.create(params=checkout_params(success_url=success))
    assert session.url is not None
    page_url = session.url.replace("https://checkout.stripe.com", fake.base_url)
    page = httpx.get(page_url)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert 'data-price="price_pro"' in page.text
    assert f'<form method="post" action="/c/pay/{session.id}">' in page.text
    assert '<a href="https://app.example.test/billing/cancel">Back</a>' in page.text

    for _ in range(2):  # paying twice (a double click) pays once
        paid = httpx.post(page_url)
        assert paid.status_code == 303
        assert paid.headers["location"] == success.replace("{CHECKOUT_SESSION_ID}", session.id)
    assert fake.checkout_sessions[session.id]["status"] == "complete"
    assert len(fake.subscriptions) == 1
    assert sorted(e["type"] for e in fake.events.values()) == [
        "checkout.session.completed",
        "customer.subscription.created",
    ]
    done = httpx.get(page_url).text
    assert "This checkout is complete." in done
    assert "<form" not in done
    assert httpx.get(f"{fake.base_url}/c/pay/cs_test_unknown").status_code == 404
    assert fake.requests_to("GET", "/c/") == []  # a browser's page, not a request to the API


def test_billing_portal_session(fake: FakeStripe, client: stripe.StripeClient) -> None:
    portal = client.v1.billing_portal.sessions.create(
        params={"customer": "cus_123", "return_url": "https://app.example.test/account"}
    )
    assert isinstance(portal, stripe.billing_portal.Session)
    assert re.fullmatch(r"bps_[0-9a-f]{24}", portal.id)
    assert portal.url == f"https://billing.stripe.com/p/session/{portal.id}"
    assert portal.customer == "cus_123"
    assert portal.return_url == "https://app.example.test/account"
    assert portal.livemode is False
    [request] = fake.requests_to("POST", "/v1/billing_portal/")
    assert request.params == {
        "customer": "cus_123",
        "return_url": "https://app.example.test/account",
    }

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing_portal.sessions.create(params={"return_url": "https://x.test"})
    assert caught.value.param == "customer"


def test_retrieve_subscription(fake: FakeStripe, client: stripe.StripeClient) -> None:
    sub_id = new_id("sub_")
    fake.subscriptions[sub_id] = a_subscription(subscription=sub_id, customer="cus_123")
    sub = client.v1.subscriptions.retrieve(sub_id)

    assert isinstance(sub, stripe.Subscription)
    assert sub.status == "active"
    assert sub.items.data[0].price.id == "price_pro"
    assert sub.items.data[0].current_period_end == T0 + MONTH
    assert sub["items"]["data"][0]["current_period_start"] == T0
    assert sub.metadata["plan"] == "pro"
    [request] = fake.requests_to("GET", "/v1/subscriptions/")
    assert request.path == f"/v1/subscriptions/{sub_id}"
    assert request.idempotency_key is None

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.retrieve("sub_missing")
    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"


def test_get_params_come_from_the_query_string(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.subscriptions["sub_1"] = a_subscription()
    client.v1.subscriptions.retrieve("sub_1", params={"expand": ["customer", "latest_invoice"]})
    assert fake.requests[0].params == {"expand": ["customer", "latest_invoice"]}


def test_unknown_route_is_404(fake: FakeStripe, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError, match="Unrecognized request URL") as caught:
        client.v1.customers.delete("cus_123")
    assert caught.value.http_status == 404
    assert fake.requests[0].path == "/v1/customers/cus_123"


def test_delay_makes_the_client_time_out(fake: FakeStripe) -> None:
    http_client = stripe.RequestsClient(timeout=0.2)
    slow = stripe.StripeClient(
        fake.secret_key, base_addresses={"api": fake.base_url}, http_client=http_client
    )
    fake.delay(5)
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        slow.v1.billing_portal.sessions.create(params={"customer": "cus_1"})
    assert time.monotonic() - started < 2
    cast(Callable[[], None], http_client.close)()  # untyped in the SDK
    fake.delay(0)


# stripe's HTTPXClient passes a str body as httpx ``data=``, which httpx 0.28 deprecates; with
# warnings as errors the SDK reports it as APIConnectionError("A DeprecationWarning was raised").
@pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")
@pytest.mark.usefixtures("no_backoff")
def test_async_calls_work_with_the_httpx_warning_filtered(fake: FakeStripe) -> None:
    http_client = stripe.HTTPXClient()
    async_client = stripe.StripeClient(
        fake.secret_key,
        base_addresses={"api": fake.base_url},
        max_network_retries=2,
        http_client=http_client,
    )

    async def scenario() -> str:
        try:
            fake.fail_next(500, stored=False)
            portal = await async_client.v1.billing_portal.sessions.create_async(
                params={"customer": "cus_1"}
            )
            return portal.customer
        finally:
            await cast(Callable[[], Awaitable[None]], http_client.close_async)()

    assert asyncio.run(scenario()) == "cus_1"
    assert [r.status for r in fake.requests] == [500, 200]


def test_decode_params() -> None:
    pairs = [
        ("line_items[0][price]", "p"),
        ("line_items[0][quantity]", "1"),
        ("line_items[1][price]", "q"),
        ("metadata[client_id]", "x"),
        ("metadata[empty]", ""),
        ("subscription_data[metadata][plan]", "pro"),
        ("expand[]", "a"),
        ("expand[]", "b"),
        ("flag", "true"),
    ]
    assert decode_params(pairs) == {
        "line_items": [{"price": "p", "quantity": "1"}, {"price": "q"}],
        "metadata": {"client_id": "x", "empty": ""},
        "subscription_data": {"metadata": {"plan": "pro"}},
        "expand": ["a", "b"],
        "flag": "true",
    }


def test_standalone_server_prints_requests() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_stripe", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", banner)
        assert match, banner
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=5)
        conn.request("GET", "/v1/nowhere", headers={"Authorization": "Bearer sk_test_x"})
        response = conn.getresponse()
        assert response.status == 404
        assert json.loads(response.read())["error"]["type"] == "invalid_request_error"
        conn.close()
    finally:
        # SIGTERM, not SIGINT: a suite started in the background ignores SIGINT, and so would
        # the server. SIGKILL if it does not stop; the session's process guard checks.
        proc.terminate()
        try:
            _out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert proc.returncode == 0
    assert "GET /v1/nowhere -> 404" in err


# --- event builders and signatures --------------------------------------------------------------


def test_signed_event_verifies_and_a_changed_byte_does_not() -> None:
    event = unknown_event(created=T0)
    payload, headers = signed(event, SECRET)
    assert headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", headers["Stripe-Signature"])

    parsed = stripe.Webhook.construct_event(
        payload, headers["Stripe-Signature"], SECRET, tolerance=300
    )
    assert isinstance(parsed, stripe.Event)
    assert parsed.id == event["id"]

    tampered = payload.replace(b'"livemode": false', b'"livemode": falsE', 1)
    assert len(tampered) == len(payload)
    assert tampered != payload
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, headers["Stripe-Signature"], SECRET, tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            payload, headers["Stripe-Signature"], SECRET + "x", tolerance=300
        )


def test_signature_timestamps() -> None:
    event = unknown_event(created=T0)
    old_payload, old_headers = signed(event, SECRET, timestamp=int(time.time()) - 301)
    assert old_headers["Stripe-Signature"].startswith(f"t={int(time.time()) - 301},")
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(
            old_payload, old_headers["Stripe-Signature"], SECRET, tolerance=300
        )
    # The SDK does not reject timestamps from the future: the webhook handler must.
    future_payload, future_headers = signed(event, SECRET, timestamp=int(time.time()) + 3600)
    stripe.Webhook.construct_event(
        future_payload, future_headers["Stripe-Signature"], SECRET, tolerance=300
    )


def test_signing_bytes_silently_gives_a_wrong_signature() -> None:
    body = json.dumps(unknown_event(created=T0))
    good = stripe.WebhookSignature.generate_signature_header(body, SECRET, timestamp=T0)
    wrong = stripe.WebhookSignature.generate_signature_header(
        body.encode(),  # type: ignore[arg-type]  # the mistake under test
        SECRET,
        timestamp=T0,
    )
    assert good != wrong


def test_signed_payload_signs_invalid_json() -> None:
    payload, headers = signed_payload("{not json", SECRET)
    stripe.WebhookSignature.verify_header(payload, headers["Stripe-Signature"], SECRET, 300)
    with pytest.raises(ValueError):  # noqa: PT011 - json's error is a ValueError
        stripe.Webhook.construct_event(payload, headers["Stripe-Signature"], SECRET)


def _roundtrip(event: dict[str, Any]) -> stripe.Event:
    payload, headers = signed(event, SECRET)
    parsed = stripe.Webhook.construct_event(
        payload, headers["Stripe-Signature"], SECRET, tolerance=300
    )
    assert isinstance(parsed, stripe.Event)
    again = stripe.Event.construct_from(json.loads(payload), "sk_test_fake")
    # for_json: the SDK turns decimal_string fields (unit_amount_decimal) into Decimal.
    assert again.to_dict(for_json=True) == parsed.to_dict(for_json=True) == event
    assert parsed.api_version == API_VERSION
    assert parsed.livemode is False
    assert parsed.pending_webhooks == 1
    assert parsed.request is not None
    assert parsed.request.id is None
    return parsed


def test_checkout_session_completed_event() -> None:
    event = _roundtrip(
        checkout_session_completed(
            client_id="client_123",
            customer="cus_123",
            subscription="sub_123",
            plan="pro",
            created=T0,
            event_id="evt_fixed",
        )
    )
    assert event.id == "evt_fixed"
    assert event.type == "checkout.session.completed"
    assert event.created == T0
    session = event.data.object
    assert isinstance(session, stripe.checkout.Session)
    assert session.client_reference_id == "client_123"
    assert session.customer == "cus_123"
    assert session.subscription == "sub_123"
    assert session.mode == "subscription"
    assert session.payment_status == "paid"
    assert session.status == "complete"
    assert session.metadata is not None
    assert session.metadata["plan"] == "pro"
    assert "client_id" in session.metadata
    with pytest.raises(AttributeError, match="not a dict"):
        # The v15+ trap, and mypy won't flag it: Event.data.object is typed
        # UntypedStripeObject[Any], whose __getattr__ accepts any name.
        session.get("customer")


@pytest.mark.parametrize(
    ("type_", "status"),
    [
        ("customer.subscription.created", "incomplete"),
        ("customer.subscription.updated", "active"),
        ("customer.subscription.deleted", "canceled"),
    ],
)
def test_subscription_events(type_: Any, status: str) -> None:
    obj = a_subscription(
        subscription="sub_123", customer="cus_123", status=status, client_id="client_123"
    )
    event = _roundtrip(subscription_event(type_, obj, created=T0 + 5))
    assert event.type == type_
    sub = event.data.object
    assert isinstance(sub, stripe.Subscription)
    assert sub.status == status
    assert sub.customer == "cus_123"
    assert sub.cancel_at_period_end is False
    assert sub.items.data[0].price.id == "price_pro"
    assert sub.items.data[0].current_period_start == T0
    assert event.data.object["items"]["data"][0]["current_period_end"] == T0 + MONTH
    assert sub.metadata == {"client_id": "client_123", "plan": "pro"} or sub.metadata.to_dict() == {
        "client_id": "client_123",
        "plan": "pro",
    }
    assert "current_period_end" not in sub  # not top level in this API version
    assert (sub.ended_at is not None) == (status == "canceled")


def test_subscription_event_without_metadata_and_with_previous_attributes() -> None:
    obj = a_subscription(
        price="price_starter", client_id=None, plan=None, cancel_at_period_end=True
    )
    event = _roundtrip(
        subscription_event(
            "customer.subscription.updated",
            obj,
            created=T0,
            previous_attributes={"cancel_at_period_end": False},
        )
    )
    sub = event.data.object
    assert sub.metadata.to_dict() == {}
    assert sub.cancel_at_period_end is True
    assert sub.cancel_at == T0 + MONTH
    assert event.data.previous_attributes is not None
    assert event.data.previous_attributes["cancel_at_period_end"] is False
    with pytest.raises(ValueError, match="not a subscription event type"):
        subscription_event("invoice.paid", obj, created=T0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("type_", "status", "paid"),
    [("invoice.paid", "paid", 2000), ("invoice.payment_failed", "open", 0)],
)
def test_invoice_events(type_: Any, status: str, paid: int) -> None:
    obj = invoice_object(
        subscription="sub_123",
        customer="cus_123",
        period_start=T0 + MONTH,
        period_end=T0 + 2 * MONTH,
        created=T0 + MONTH + 60,
        paid=type_ == "invoice.paid",
        client_id="client_123",
        plan="pro",
    )
    event = _roundtrip(invoice_event(type_, obj, created=T0 + MONTH + 60))
    invoice = event.data.object
    assert isinstance(invoice, stripe.Invoice)
    assert invoice.status == status
    assert invoice.amount_paid == paid
    assert invoice.amount_due == 2000
    assert invoice.billing_reason == "subscription_cycle"
    assert invoice.customer == "cus_123"
    assert invoice.parent is not None
    details = invoice.parent.subscription_details
    assert details is not None
    assert details.subscription == "sub_123"
    assert details.metadata is not None
    assert details.metadata["client_id"] == "client_123"
    assert invoice.lines.data[0].period.start == T0 + MONTH
    assert invoice["lines"]["data"][0]["period"]["end"] == T0 + 2 * MONTH
    assert "subscription" not in invoice  # moved under parent in this API version
    assert invoice.lines.data[0].pricing is not None
    assert invoice.lines.data[0].pricing.unit_amount_decimal == Decimal("2000")  # not "2000"
    # Stripe's invoice-level period is the previous one: handlers must use the line's.
    assert invoice.period_end == T0 + MONTH


def test_unknown_event() -> None:
    event = _roundtrip(unknown_event("customer.updated", created=T0))
    assert event.type == "customer.updated"
    assert isinstance(event.data.object, stripe.Customer)
    assert unknown_event(created=T0)["type"] == "customer.created"
