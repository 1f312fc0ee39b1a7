"""Stripe for real: the official SDK over HTTP against a local fake Stripe, signed webhooks.

Scenarios: the full upgrade flow, double-click checkout, checkout refusals and failures, the
customer portal, renewal, cancellation, payment failure, duplicate and out-of-order deliveries,
and the bad deliveries of docs/ARCHITECTURE.md R16-R19 (R17 and R21 run under real uvicorn
workers in tests/test_stripe_concurrency.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from httpx import Response

from conftest import ADMIN_TOKEN, Clock
from openclaw_billing.settings import get_settings
from openclaw_billing.stripe_billing import set_stripe_client
from tests.factories import create_client, create_client_at, submit_job
from tests.fake_stripe import FakeStripe
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

WEBHOOK_SECRET = "whsec_test_openclaw_0123456789abcdef"
PRICES = {"starter": "price_starter_test", "pro": "price_pro_test"}
DAY = 86_400


def stripe_settings(fake: FakeStripe) -> dict[str, str]:
    """The gateway's Stripe settings (environment variables) for the fake Stripe ``fake``."""
    return {
        "STRIPE_SECRET_KEY": "sk_test_fake",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_PRICE_STARTER": PRICES["starter"],
        "STRIPE_PRICE_PRO": PRICES["pro"],
        "STRIPE_API_BASE": fake.base_url,
    }


def stripe_env(monkeypatch: pytest.MonkeyPatch, fake: FakeStripe) -> None:
    for name, value in stripe_settings(fake).items():
        monkeypatch.setenv(name, value)
    # The SDK sleeps at least 0.5 s before a retry; tests need not wait.
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.0)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.0)
    get_settings.cache_clear()
    set_stripe_client(None)


@pytest.fixture(name="fake")
def fake_fixture(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        stripe_env(monkeypatch, server)
        yield server


@pytest.fixture(name="now")
def now_fixture(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The billing clock, starting at the real time (webhook signatures use real time)."""
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    for target in (
        "openclaw_billing.service",
        "openclaw_billing.charges",
        "openclaw_billing.stripe_billing.webhook",
        "openclaw_billing.stripe_billing.checkout",
        "gateway",
    ):
        monkeypatch.setattr(f"{target}.utcnow", clock)
    return clock


class World:
    """The fake Stripe's state plus signed deliveries to the gateway."""

    def __init__(self, http: TestClient, fake: FakeStripe) -> None:
        self.http = http
        self.fake = fake
        self.created = int(time.time()) - 60

    def tick(self) -> int:
        self.created += 1
        return self.created

    def subscribe(
        self,
        client_id: str,
        plan: str,
        *,
        start: int | None = None,
        end: int | None = None,
        status: str = "active",
        subscription: str | None = None,
        customer: str | None = None,
    ) -> dict[str, Any]:
        """Set Stripe's current state of a subscription (by default a new one whose 30-day
        period starts now); returns the object."""
        start = int(time.time()) if start is None else start
        end = start + 30 * DAY if end is None else end
        obj = subscription_object(
            subscription=subscription or new_id("sub_"),
            customer=customer or new_id("cus_"),
            price=PRICES[plan],
            status=status,
            period_start=start,
            period_end=end,
            created=self.tick(),
            client_id=client_id,
            plan=plan,
        )
        self.fake.subscriptions[obj["id"]] = obj
        return obj

    def renewed(self, sub: dict[str, Any], *, days: int = 31) -> dict[str, Any]:
        """``sub`` as Stripe has it once its next period (``days`` long) has started."""
        start = sub["items"]["data"][0]["current_period_end"]
        meta = sub["metadata"]
        return self.subscribe(
            meta["client_id"],
            meta["plan"],
            start=start,
            end=start + days * DAY,
            subscription=sub["id"],
            customer=sub["customer"],
        )

    def set_status(self, sub: dict[str, Any], status: str) -> Response:
        """Stripe changes ``sub``'s status and delivers the event it sends for that:
        ``customer.subscription.deleted`` when it is canceled, else ``updated``."""
        sub["status"] = status
        ended = status == "canceled"
        type_ = f"customer.subscription.{'deleted' if ended else 'updated'}"
        return self.deliver(self.sub_event(type_, sub))

    def sub_event(self, type_: Any, obj: dict[str, Any], created: int | None = None) -> Any:
        """An event of ``obj`` as it is now (Stripe, the fake, has the object itself)."""
        return subscription_event(type_, obj, created=created or self.tick())

    def invoice(
        self, type_: Any, obj: dict[str, Any], *, reason: str = "subscription_cycle", **extra: Any
    ) -> Any:
        """An invoice event of ``obj``'s current period; Stripe (the fake) has the invoice."""
        item = obj["items"]["data"][0]
        invoice = invoice_object(
            subscription=obj["id"],
            customer=obj["customer"],
            period_start=item["current_period_start"],
            period_end=item["current_period_end"],
            created=self.tick(),
            paid=type_ == "invoice.paid",
            billing_reason=reason,
            client_id=obj["metadata"].get("client_id"),
            plan=obj["metadata"].get("plan"),
            price=item["price"]["id"],
            **extra,
        )
        self.fake.invoices[invoice["id"]] = invoice
        return invoice_event(type_, invoice, created=invoice["created"])

    def completed(self, client_id: str, sub: dict[str, Any], plan: str, **extra: Any) -> Any:
        """checkout.session.completed for ``sub``; Stripe (the fake) has the session."""
        event = checkout_session_completed(
            client_id=client_id,
            customer=sub["customer"],
            subscription=sub["id"],
            plan=plan,
            created=self.tick(),
            **extra,
        )
        self.fake.checkout_sessions[event["data"]["object"]["id"]] = event["data"]["object"]
        return event

    def deliver(self, event: dict[str, Any], **sign: Any) -> Response:
        payload, headers = signed(event, WEBHOOK_SECRET, **sign)
        response: Response = self.http.post(
            "/api/billing/webhook", content=payload, headers=headers
        )
        return response

    def usage(self, key: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(
            "/api/billing/usage", headers={"X-Client-Key": key}
        ).json()
        return body

    def detail(self, client_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(
            f"/api/admin/clients/{client_id}", headers={"X-Auth-Token": ADMIN_TOKEN}
        ).json()
        return body


@pytest.fixture(name="world")
def world_fixture(fake: FakeStripe, http: TestClient) -> World:
    return World(http, fake)


def checkout(http: TestClient, key: str, plan: str, **extra: Any) -> Response:
    response: Response = http.post(
        "/api/billing/checkout", headers={"X-Client-Key": key}, json={"plan": plan, **extra}
    )
    return response


def upgrade(world: World, client: dict[str, Any], plan: str = "pro") -> dict[str, Any]:
    """Checkout completed and the subscription created, as Stripe delivers them."""
    sub = world.subscribe(client["client_id"], plan)
    done = world.completed(client["client_id"], sub, plan)
    assert world.deliver(done).status_code == 200
    assert world.deliver(world.sub_event("customer.subscription.created", sub)).status_code == 200
    return sub


# -- checkout -------------------------------------------------------------------------------


def test_full_upgrade_flow_free_to_pro(world: World, http: TestClient, fake: FakeStripe) -> None:
    client = create_client(http, "free", email="buyer@acmecorp.com")
    response = checkout(http, client["api_key"], "pro")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["checkout_url"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    assert body["session_id"].startswith("cs_test_")

    [sent] = fake.requests_to("POST", "/v1/checkout/sessions")
    assert sent.params["mode"] == "subscription"
    assert sent.params["line_items"] == [{"price": PRICES["pro"], "quantity": "1"}]
    assert sent.params["client_reference_id"] == client["client_id"]
    assert sent.params["customer_email"] == "buyer@acmecorp.com"
    assert "customer" not in sent.params
    assert "payment_method_types" not in sent.params
    meta = {"client_id": client["client_id"], "plan": "pro"}
    assert sent.params["metadata"] == meta
    assert sent.params["subscription_data"] == {"metadata": meta}
    assert sent.params["success_url"].endswith(
        "/api/billing/return?checkout=success&session_id={CHECKOUT_SESSION_ID}"
    )
    assert sent.idempotency_key is not None
    assert sent.headers["authorization"] == "Bearer sk_test_fake"

    sub = upgrade(world, client)
    usage = world.usage(client["api_key"])
    assert usage["plan"] == "pro"
    assert usage["credits_remaining"] == 200
    assert usage["credits_limit"] == 200
    assert usage["subscription_status"] == "active"
    detail = world.detail(client["client_id"])
    assert detail["stripe_customer_id"] == sub["customer"]
    assert detail["stripe_subscription_id"] == sub["id"]
    period = sub["items"]["data"][0]
    assert (
        detail["billing_cycle_start"]
        == datetime.fromtimestamp(period["current_period_start"], UTC).isoformat()
    )
    accepted = submit_job(http, client["api_key"])
    assert accepted.status_code == 201
    assert accepted.json()["credits_remaining"] == 199


def test_a_double_click_makes_one_checkout_session(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    first = checkout(http, client["api_key"], "starter").json()
    second = checkout(http, client["api_key"], "starter").json()
    assert first == second
    sent = fake.requests_to("POST", "/v1/checkout/sessions")
    assert [r.replayed for r in sent] == [False, True]
    assert len(fake.checkout_sessions) == 1


def test_checkout_reuses_the_stripe_customer(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client, "starter")
    world.set_status(sub, "canceled")  # a former subscriber comes back: same Stripe customer
    assert checkout(http, client["api_key"], "pro").status_code == 200
    sent = fake.requests_to("POST", "/v1/checkout/sessions")[-1]
    assert sent.params["customer"] == sub["customer"]
    assert "customer_email" not in sent.params


@pytest.mark.parametrize(
    ("current", "wanted", "status", "code"),
    [
        ("free", "enterprise", 422, "plan_not_purchasable"),
        ("pro", "free", 422, "plan_not_purchasable"),
        ("pro", "pro", 409, "already_on_plan"),
        ("free", "platinum", 422, "validation_error"),
    ],
)
def test_checkout_refusals(
    world: World,
    http: TestClient,
    fake: FakeStripe,
    current: str,
    wanted: str,
    status: int,
    code: str,
) -> None:
    client = create_client(http, current)
    response = checkout(http, client["api_key"], wanted)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert fake.requests == []


def test_checkout_rejects_non_http_redirects(world: World, http: TestClient) -> None:
    client = create_client(http, "free")
    response = checkout(http, client["api_key"], "pro", success_url="javascript:alert(1)")
    assert response.status_code == 422


def test_a_stripe_hiccup_is_retried(world: World, http: TestClient, fake: FakeStripe) -> None:
    client = create_client(http, "free")
    fake.fail_next(500, stored=False)  # failed before Stripe executed anything
    assert checkout(http, client["api_key"], "pro").status_code == 200
    sent = fake.requests_to("POST", "/v1/checkout/sessions")
    assert [r.status for r in sent] == [500, 200]
    assert sent[0].idempotency_key == sent[1].idempotency_key


def test_an_error_stripe_replays_is_not_pinned_by_its_idempotency_key(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    """Stripe keeps a 5xx for its idempotency key and replays it: the SDK's own retries get
    the replay, so a new attempt needs a new key, also when the client retries after a 502."""
    client = create_client(http, "free")
    fake.fail_next(500)
    assert checkout(http, client["api_key"], "pro").status_code == 502
    first = fake.requests_to("POST", "/v1/checkout/sessions")
    assert [r.replayed for r in first] == [False, True, True, True]
    retried = checkout(http, client["api_key"], "pro")  # within the 10-minute window
    assert retried.status_code == 200, retried.text
    sent = fake.requests_to("POST", "/v1/checkout/sessions")[len(first) :]
    # the key that failed replays its error; the next key makes a new attempt
    assert [(r.status, r.replayed) for r in sent] == [(500, True), (200, False)]
    keys = {r.idempotency_key for r in fake.requests_to("POST", "/v1/checkout/sessions")}
    assert len(keys) == 2
    # and a double click after that success is still the same session
    assert checkout(http, client["api_key"], "pro").json() == retried.json()


def test_a_stripe_outage_is_a_502(world: World, http: TestClient, fake: FakeStripe) -> None:
    client = create_client(http, "free")
    fake.fail_next(500, count=4, message="boom sk_test_fake", stored=False)
    response = checkout(http, client["api_key"], "pro")
    assert response.status_code == 502
    assert response.json() == {
        "code": "stripe_error",
        "message": "The request to Stripe failed; try again shortly",
        "detail": "The request to Stripe failed; try again shortly",
    }
    assert len(fake.requests_to("POST", "/v1/checkout/sessions")) == 4


def test_a_missing_price_is_not_configured(
    world: World, http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRIPE_PRICE_STARTER")
    get_settings.cache_clear()
    client = create_client(http, "free")
    response = checkout(http, client["api_key"], "starter")
    assert response.status_code == 503
    assert response.json()["code"] == "stripe_not_configured"


# -- portal ---------------------------------------------------------------------------------


def test_portal_needs_a_stripe_customer_then_answers_a_url(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    headers = {"X-Client-Key": client["api_key"]}
    refused = http.post("/api/billing/portal", headers=headers)
    assert refused.status_code == 409
    assert refused.json()["code"] == "no_stripe_customer"
    sub = upgrade(world, client)
    response = http.post("/api/billing/portal", headers=headers)
    assert response.status_code == 200
    assert response.json()["portal_url"].startswith("https://billing.stripe.com/p/session/")
    [sent] = fake.requests_to("POST", "/v1/billing_portal/sessions")
    assert sent.params["customer"] == sub["customer"]
    assert sent.params["return_url"].endswith("/api/billing/return?portal=done")


# -- lifecycle events -----------------------------------------------------------------------


def test_renewal_starts_a_new_cycle_aligned_to_the_paid_period(
    world: World, http: TestClient, fake: FakeStripe, now: Clock
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client)
    for _ in range(10):
        assert submit_job(http, client["api_key"]).status_code == 201
    old_end = sub["items"]["data"][0]["current_period_end"]
    renewed = world.renewed(sub)
    now.now = datetime.fromtimestamp(old_end + 3600, UTC)
    response = world.deliver(world.invoice("invoice.paid", renewed))
    assert response.json()["outcome"] == "applied"
    detail = world.detail(client["client_id"])
    assert detail["credits_remaining"] == 200
    assert detail["billing_cycle_start"] == datetime.fromtimestamp(old_end, UTC).isoformat()
    assert (
        detail["billing_cycle_end"] == datetime.fromtimestamp(old_end + 31 * DAY, UTC).isoformat()
    )
    assert detail["metadata"]["cycle_history"][-1]["jobs"] == 10


def test_a_fallback_reset_before_the_invoice_is_not_granted_twice(
    world: World, http: TestClient, fake: FakeStripe, now: Clock
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client)
    old_end = sub["items"]["data"][0]["current_period_end"]
    now.now = datetime.fromtimestamp(old_end + 60, UTC)
    # The period ended and Stripe has not charged yet: the 30-day fallback starts a cycle.
    assert submit_job(http, client["api_key"]).json()["credits_remaining"] == 199
    renewed = world.renewed(sub)
    world.deliver(world.invoice("invoice.paid", renewed))
    detail = world.detail(client["client_id"])
    assert detail["credits_remaining"] == 199  # re-aligned, not granted again
    assert (
        detail["billing_cycle_end"] == datetime.fromtimestamp(old_end + 31 * DAY, UTC).isoformat()
    )


def test_cancellation_returns_the_client_to_free(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client)
    world.set_status(sub, "canceled")
    usage = world.usage(client["api_key"])
    assert usage["plan"] == "free"
    assert usage["credits_remaining"] == 5
    assert usage["subscription_status"] == "canceled"
    assert world.detail(client["client_id"])["stripe_subscription_id"] is None


def test_payment_failure_blocks_jobs_until_the_invoice_is_paid(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client)
    sub["status"] = "past_due"
    world.deliver(world.invoice("invoice.payment_failed", sub))
    usage = world.usage(client["api_key"])
    assert usage["status"] == "past_due"
    assert usage["subscription_status"] == "past_due"
    assert usage["can_submit"] is False
    refused = submit_job(http, client["api_key"])
    assert refused.status_code == 402
    assert refused.json()["code"] == "payment_past_due"
    sub["status"] = "active"
    world.deliver(world.invoice("invoice.paid", sub))
    assert submit_job(http, client["api_key"]).status_code == 201


def test_an_upgrade_within_the_period_grants_the_difference(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client, "starter")
    for _ in range(3):
        submit_job(http, client["api_key"])
    assert world.usage(client["api_key"])["credits_remaining"] == 47
    item = sub["items"]["data"][0]
    item["price"]["id"] = PRICES["pro"]
    world.deliver(world.sub_event("customer.subscription.updated", sub))
    detail = world.detail(client["client_id"])
    assert detail["plan"] == "pro"
    assert detail["credits_remaining"] == 197  # 47 + (200 - 50)
    [grant] = detail["metadata"]["credit_adjustments"]
    assert grant["amount"] == 150
    assert grant["reason"] == "plan change starter -> pro"


# -- exactly once, in any order -------------------------------------------------------------


def test_replayed_deliveries_change_nothing(
    world: World, http: TestClient, fake: FakeStripe, store_path: Path
) -> None:
    client = create_client(http, "free")
    sub = world.subscribe(client["client_id"], "pro")
    event = world.sub_event("customer.subscription.created", sub)
    assert world.deliver(event).json()["outcome"] == "applied"
    submit_job(http, client["api_key"])
    before = store_path.read_bytes()
    for _ in range(3):
        response = world.deliver(event)
        assert response.status_code == 200
        assert response.json()["outcome"] == "duplicate"
    assert store_path.read_bytes() == before
    assert world.usage(client["api_key"])["credits_remaining"] == 199


def test_an_older_event_never_overwrites_newer_state(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    sub = world.subscribe(client["client_id"], "starter")
    older = world.sub_event("customer.subscription.created", sub)
    sub["status"] = "canceled"
    newer = world.sub_event("customer.subscription.deleted", sub)
    assert world.deliver(newer).json()["outcome"] == "applied"
    assert world.deliver(older).json()["outcome"] == "stale"
    usage = world.usage(client["api_key"])
    assert usage["plan"] == "free"
    assert usage["subscription_status"] == "canceled"


def test_events_arriving_in_reverse_converge_to_stripes_state(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    """invoice.paid before subscription.created, and checkout completion last."""
    client = create_client(http, "free")
    sub = world.subscribe(client["client_id"], "pro")
    created = world.sub_event("customer.subscription.created", sub)
    paid = world.invoice("invoice.paid", sub, reason="subscription_create")
    done = world.completed(client["client_id"], sub, "pro")
    for event in (paid, created, done):
        assert world.deliver(event).status_code == 200
    usage = world.usage(client["api_key"])
    assert (usage["plan"], usage["credits_remaining"]) == ("pro", 200)
    assert len(world.detail(client["client_id"])["metadata"]["cycle_history"]) == 1


# -- bad deliveries (R16, R19) --------------------------------------------------------------


def test_r16_only_the_valid_delivery_changes_state(
    world: World, http: TestClient, fake: FakeStripe, store_path: Path
) -> None:
    client = create_client(http, "free")
    sub = world.subscribe(client["client_id"], "pro")
    event = world.sub_event("customer.subscription.created", sub)
    payload, headers = signed(event, WEBHOOK_SECRET)
    stamp = int(time.time())
    tampered = payload.replace(b'"active"', b'"activf"')
    reserialised = json.dumps(json.loads(payload), indent=2).encode()
    bad: dict[str, tuple[bytes, dict[str, str]]] = {
        "one byte changed": (tampered, headers),
        "wrong secret": signed(event, "whsec_wrong_secret_0123456789"),
        "no header": (payload, {"Content-Type": "application/json"}),
        "garbage header": (payload, {"Stripe-Signature": "nonsense"}),
        "stale": signed(event, WEBHOOK_SECRET, timestamp=stamp - 330),
        "future": signed(event, WEBHOOK_SECRET, timestamp=stamp + 330),
        "re-serialised body": (reserialised, headers),
        "live event on a test key": signed(event | {"livemode": True}, WEBHOOK_SECRET),
        "signed non-JSON": signed_payload("not json{", WEBHOOK_SECRET),
        "signed JSON that is no event": signed_payload('{"hello": 1}', WEBHOOK_SECRET),
    }
    before = store_path.read_bytes()
    for label, (body, hdrs) in bad.items():
        response = http.post("/api/billing/webhook", content=body, headers=hdrs)
        assert response.status_code == 400, label
        assert response.json()["code"] in {
            "invalid_signature",
            "invalid_payload",
            "livemode_mismatch",
        }, label
    assert store_path.read_bytes() == before
    ok = http.post("/api/billing/webhook", content=payload, headers=headers)
    assert ok.status_code == 200
    assert world.usage(client["api_key"])["plan"] == "pro"


def test_r19_unknown_event_types_are_acknowledged_and_change_nothing(
    world: World, http: TestClient, store_path: Path
) -> None:
    create_client(http, "free")
    before = store_path.read_bytes()
    for type_ in ("customer.created", "customer.updated", "payment_intent.succeeded"):
        response = world.deliver(unknown_event(type_, created=world.tick()))
        assert response.status_code == 200
        assert response.json()["outcome"] == "ignored"
    assert store_path.read_bytes() == before


def test_events_for_no_known_client_are_acknowledged(world: World, http: TestClient) -> None:
    sub = world.subscribe("no-such-client", "pro")
    response = world.deliver(world.sub_event("customer.subscription.created", sub))
    assert response.status_code == 200
    assert response.json()["outcome"] == "unmatched"


def test_webhook_without_a_secret_is_503(
    world: World, http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
    get_settings.cache_clear()
    response = world.deliver(unknown_event(created=world.tick()))
    assert response.status_code == 503
    assert response.json()["code"] == "stripe_not_configured"


def test_an_oversized_webhook_is_413(world: World, http: TestClient) -> None:
    payload, headers = signed_payload("x" * 1_000_001, WEBHOOK_SECRET)
    response = http.post("/api/billing/webhook", content=payload, headers=headers)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_the_return_page_answers(http: TestClient) -> None:
    response = http.get("/api/billing/return", params={"checkout": "success"})
    assert response.status_code == 200
    assert "Stripe" in response.json()["message"]


@pytest.mark.parametrize(("ahead", "accepted"), [(0, True), (300, True), (301, False)])
def test_future_timestamps_are_refused_past_the_tolerance(
    fake: FakeStripe, service: Any, ahead: int, accepted: bool
) -> None:
    from openclaw_billing.errors import InvalidSignature
    from openclaw_billing.stripe_billing import StripeBilling

    billing = StripeBilling(service, get_settings(), None)
    now = int(time.time())
    body, headers = signed(unknown_event(created=now), WEBHOOK_SECRET, timestamp=now + ahead)
    if accepted:
        assert billing.verify(body, headers["Stripe-Signature"], now=now).type == "customer.created"
    else:
        with pytest.raises(InvalidSignature, match="future"):
            billing.verify(body, headers["Stripe-Signature"], now=now)


def test_the_fake_simulates_payment_and_delivers_signed_events(tmp_path: Path) -> None:
    """The offline loop the docs describe: checkout, pay at the fake, webhooks arrive."""
    from tests.server import running_gateway

    with (
        FakeStripe() as fake,
        running_gateway(tmp_path, extra_env=stripe_settings(fake)) as base,
    ):
        fake.webhook_url, fake.webhook_secret = f"{base}/api/billing/webhook", WEBHOOK_SECRET
        import httpx

        client = create_client_at(base, "free")
        key = {"X-Client-Key": client["api_key"]}
        session = httpx.post(f"{base}/api/billing/checkout", headers=key, json={"plan": "pro"})
        paid = httpx.post(
            f"{fake.base_url}/_fake/checkout/sessions/{session.json()['session_id']}/pay"
        )
        assert len(paid.json()["events"]) == 2
        deadline = time.monotonic() + 10
        while len(fake.deliveries) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(status for _, status in fake.deliveries) == [200, 200]
        usage = httpx.get(f"{base}/api/billing/usage", headers=key).json()
    assert (usage["plan"], usage["credits_remaining"]) == ("pro", 200)


# -- regressions found while documenting ----------------------------------------------------


def test_checkout_completion_retried_after_stripe_fails_still_syncs_the_plan(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    sub = world.subscribe(client["client_id"], "pro")
    done = world.completed(client["client_id"], sub, "pro")
    fake.fail_next(500, count=3)
    assert world.deliver(done).status_code == 502  # Stripe will redeliver
    assert world.usage(client["api_key"])["plan"] == "free"
    redelivered = world.deliver(done)
    assert redelivered.json()["outcome"] == "applied"
    usage = world.usage(client["api_key"])
    assert (usage["plan"], usage["credits_remaining"]) == ("pro", 200)


def test_a_subscribed_client_changes_plan_in_the_portal_not_a_second_checkout(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    upgrade(world, client, "starter")
    response = checkout(http, client["api_key"], "pro")
    assert response.status_code == 409
    assert response.json()["code"] == "subscription_exists"
    assert len(fake.requests_to("POST", "/v1/checkout/sessions")) == 0


def test_an_old_subscription_ending_leaves_the_current_one_alone(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    start = int(time.time())
    old = world.subscribe(client["client_id"], "starter", start=start)
    world.deliver(world.sub_event("customer.subscription.created", old))
    new = world.subscribe(client["client_id"], "pro", start=start + 60)
    world.deliver(world.sub_event("customer.subscription.created", new))
    world.set_status(old, "canceled")
    usage = world.usage(client["api_key"])
    assert (usage["plan"], usage["subscription_status"]) == ("pro", "active")
    assert world.detail(client["client_id"])["stripe_subscription_id"] == new["id"]


def test_a_paused_subscription_accepts_no_jobs(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client)
    world.set_status(sub, "paused")
    usage = world.usage(client["api_key"])
    assert (usage["status"], usage["can_submit"]) == ("paused", False)
    refused = submit_job(http, client["api_key"])
    assert refused.status_code == 402
    assert refused.json()["code"] == "subscription_paused"


def test_closed_cycles_keep_the_plan_they_ran_under(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client, "starter")
    world.set_status(sub, "canceled")
    history = world.detail(client["client_id"])["metadata"]["cycle_history"]
    assert [(c["plan"], c["allowance"]) for c in history] == [("free", 5), ("starter", 50)]


def test_the_portal_says_not_configured_before_anything_else(
    http: TestClient, monkeypatch: pytest.MonkeyPatch, env: Path
) -> None:
    client = create_client(http, "free")
    response = http.post("/api/billing/portal", headers={"X-Client-Key": client["api_key"]})
    assert response.status_code == 503
    assert response.json()["code"] == "stripe_not_configured"


def test_the_return_page_after_a_cancelled_checkout(http: TestClient) -> None:
    response = http.get("/api/billing/return", params={"checkout": "cancel"})
    assert "cancelled" in response.json()["message"]
