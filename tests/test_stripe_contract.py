"""The fake Stripe cannot drift from Stripe: every object it serves and every event the builders
make is checked against the stripe SDK's own definitions for the pinned API version
(tests/stripe_contract.py), and the fake behaves as Stripe does where the code depends on it."""

from __future__ import annotations

import copy
from typing import Any, get_args

import httpx
import pytest
import stripe

from tests.fake_stripe import FakeStripe
from tests.stripe_contract import check, violations
from tests.stripe_events import (
    DisputeEventType,
    SubscriptionStatus,
    charge_object,
    charge_refunded_event,
    checkout_session_completed,
    customer_deleted_event,
    customer_object,
    dispute_event,
    dispute_object,
    invoice_event,
    invoice_object,
    invoice_payment_object,
    subscription_event,
    unknown_event,
)
from tests.test_fake_stripe import MONTH, T0, a_subscription, fake_fixture  # noqa: F401 - fixture

#: Every status the builders can make (the pinned version's eight).
STATUSES = list(get_args(SubscriptionStatus))


def _charge(**extra: Any) -> dict[str, Any]:
    return charge_object("ch_1", customer="cus_1", payment_intent="pi_1", created=T0, **extra)


def _dispute(status: str) -> dict[str, Any]:
    return dispute_object("dp_1", charge="ch_1", payment_intent="pi_1", status=status, created=T0)


_DISPUTES: list[tuple[DisputeEventType, str]] = [
    ("charge.dispute.created", "needs_response"),
    ("charge.dispute.updated", "under_review"),
    ("charge.dispute.closed", "won"),
    ("charge.dispute.closed", "lost"),
]

EVENTS: dict[str, dict[str, Any]] = {
    "checkout.session.completed": checkout_session_completed(
        client_id="c", customer="cus_1", subscription="sub_1", plan="pro", created=T0
    ),
    "checkout.session.completed, null metadata": checkout_session_completed(
        client_id="c",
        customer="cus_1",
        subscription="sub_1",
        plan="pro",
        created=T0,
        null_metadata=True,
        customer_email="a@example.test",
    ),
    **{
        f"customer.subscription.updated, {status}": subscription_event(
            "customer.subscription.updated",
            a_subscription(status=status, cancel_at_period_end=status == "active"),
            created=T0,
            previous_attributes={"status": "incomplete"},
        )
        for status in STATUSES
    },
    **{
        f"{type_}, {reason}": invoice_event(
            type_,
            invoice_object(
                subscription="sub_1",
                customer="cus_1",
                period_start=T0,
                period_end=T0 + MONTH,
                created=T0,
                paid=type_ == "invoice.paid",
                billing_reason=reason,
                null_metadata=reason == "subscription_create",
            ),
            created=T0,
        )
        for type_ in ("invoice.paid", "invoice.payment_failed")
        for reason in ("subscription_create", "subscription_cycle")
    },
    "customer.created": unknown_event(created=T0),
    "customer.deleted": customer_deleted_event("cus_1", created=T0),
    "charge.refunded": charge_refunded_event(_charge(amount_refunded=2000), created=T0),
    **{
        f"{type_}, {status}": dispute_event(type_, _dispute(status), created=T0)
        for type_, status in _DISPUTES
    },
}


@pytest.mark.parametrize("name", list(EVENTS))
def test_every_built_event_matches_the_sdk(name: str) -> None:
    check(EVENTS[name], stripe.Event)


@pytest.mark.parametrize(
    "obj",
    [
        a_subscription(),
        invoice_object(
            subscription="sub_1", customer="cus_1", period_start=T0, period_end=T0, created=T0
        ),
        customer_object("cus_1", created=T0),
        _charge(),
        _dispute("won"),
        invoice_payment_object(invoice="in_1", payment_intent="pi_1", created=T0),
    ],
    ids=lambda o: o["object"],
)
def test_every_built_object_matches_the_sdk(obj: dict[str, Any]) -> None:
    check(obj)


# -- the check itself finds drift -------------------------------------------------------------


def _drifted(change: Any) -> list[str]:
    obj = copy.deepcopy(a_subscription())
    change(obj)
    return violations(obj, stripe.Subscription)


@pytest.mark.parametrize(
    ("change", "found"),
    [
        # a field where an older API version kept it
        (lambda o: o.update(current_period_end=T0), "$.current_period_end: not a field"),
        (lambda o: o.pop("cancel_at_period_end"), "$.cancel_at_period_end: required"),
        (lambda o: o.update(customer=None), "$.customer: null, but not nullable"),
        (lambda o: o.update(created="yesterday"), "$.created: 'yesterday' is not a int"),
        (
            lambda o: o["items"]["data"][0]["price"].update(unit_amount="2000"),
            "$.items.data[0].price.unit_amount",
        ),
        (lambda o: o["items"]["data"][0].update(period={}), "$.items.data[0].period: not a"),
        (lambda o: o["items"].update(data={}), "$.items.data: expected a list"),
        (lambda o: o.update(collection_method="by_pigeon"), None),  # Literal | str: open
        (lambda o: o.update(object="subscriptions"), "$.object: 'subscriptions' is not one"),
    ],
)
def test_the_check_finds_drift(change: Any, found: str | None) -> None:
    problems = _drifted(change)
    if found is None:
        assert problems == []
    else:
        assert any(p.startswith(found) for p in problems), problems


# -- every object the fake serves -------------------------------------------------------------


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    """No retries: each call is one request (what the replay test counts)."""
    return stripe.StripeClient(fake.secret_key, base_addresses={"api": fake.base_url})


def _get(fake: FakeStripe, path: str) -> dict[str, Any]:
    response = httpx.get(
        fake.base_url + path, headers={"Authorization": f"Bearer {fake.secret_key}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _checkout(client: stripe.StripeClient, **extra: Any) -> stripe.checkout.Session:
    params: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": "price_pro", "quantity": 1}],
        "client_reference_id": "client_1",
        "success_url": "https://app.example.test/ok",
        "cancel_url": "https://app.example.test/cancel",
    }
    return client.v1.checkout.sessions.create(params=params | extra)  # type: ignore[arg-type]


def test_every_object_the_fake_serves_matches_the_sdk(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    created = _checkout(client, customer_email="a@example.test", metadata={"plan": "pro"})
    bare = _checkout(client, customer="cus_1")  # no metadata given
    paid = fake.pay(fake.checkout_sessions[created.id], {"line_items": [{"price": "p"}]})
    portal = client.v1.billing_portal.sessions.create(params={"customer": "cus_1"})
    metered = client.v1.billing.meter_events.create(
        params={"event_name": "e", "payload": {"stripe_customer_id": "cus_1", "value": "1"}}
    )
    sub = fake.checkout_sessions[created.id]["subscription"]
    customer = fake.checkout_sessions[created.id]["customer"]
    fake.invoices["in_1"] = invoice_object(
        subscription=sub, customer=customer, period_start=T0, period_end=T0 + MONTH, created=T0
    )
    fake.charges["ch_1"] = _charge()
    fake.disputes["dp_1"] = _dispute("needs_response")
    fake.invoice_payments.append(
        invoice_payment_object(invoice="in_1", payment_intent="pi_1", created=T0)
    )
    fake.deleted_customers.add("cus_gone")
    served = {
        "checkout.session": [
            _get(fake, f"/v1/checkout/sessions/{created.id}"),
            _get(fake, f"/v1/checkout/sessions/{bare.id}"),
        ],
        "billing_portal.session": [fake.portal_sessions[portal.id]],
        "billing.meter_event": fake.meter_events.listed(metered.identifier),
        "subscription": [_get(fake, f"/v1/subscriptions/{sub}")],
        "invoice": [_get(fake, "/v1/invoices/in_1")],
        "customer": [_get(fake, f"/v1/customers/{customer}"), _get(fake, "/v1/customers/cus_gone")],
        "charge": [_get(fake, "/v1/charges/ch_1")],
        "dispute": [_get(fake, "/v1/disputes/dp_1")],
        "invoice_payment": _get(fake, "/v1/invoice_payments?payment[payment_intent]=pi_1")["data"],
    }
    for name, objects in served.items():
        assert objects, name
        for obj in objects:
            assert obj["object"] == name
            check(obj)
    for event in paid:
        check(event, stripe.Event)


# -- the fake behaves as Stripe does ----------------------------------------------------------


def test_a_deleted_customer_is_no_such_customer(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.deleted_customers.add("cus_gone")
    with pytest.raises(stripe.InvalidRequestError) as at_checkout:
        _checkout(client, customer="cus_gone")
    with pytest.raises(stripe.InvalidRequestError) as at_portal:
        client.v1.billing_portal.sessions.create(params={"customer": "cus_gone"})
    for caught in (at_checkout.value, at_portal.value):
        assert (caught.http_status, caught.code) == (400, "resource_missing")
        assert caught.param == "customer"
        assert "No such customer: 'cus_gone'" in str(caught.user_message)
    retrieved = client.v1.customers.retrieve("cus_gone")
    assert retrieved.deleted is True


def test_a_5xx_is_replayed_for_its_idempotency_key(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.fail_next(500)
    for _ in range(2):
        with pytest.raises(stripe.APIError) as caught:
            client.v1.checkout.sessions.create(
                params={"mode": "payment"}, options={"idempotency_key": "k5"}
            )
        assert caught.value.http_status == 500
    assert [r.replayed for r in fake.requests] == [False, True]
    assert _checkout(client).id  # another key runs for real


def test_the_portal_without_a_configuration_is_refused(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.portal_configured = False
    with pytest.raises(stripe.InvalidRequestError, match="default configuration") as caught:
        client.v1.billing_portal.sessions.create(params={"customer": "cus_1"})
    assert caught.value.http_status == 400
    configured = client.v1.billing_portal.sessions.create(
        params={"customer": "cus_1", "configuration": "bpc_1"}
    )
    assert configured.configuration == "bpc_1"
