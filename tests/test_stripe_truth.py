"""Stripe is the source of truth, not the event (issue 11, item 3), and time values and nesting
bounded at the webhook's edge (item 1). The real SDK against the fake Stripe, signed webhooks,
one test per documented rule (docs/STRIPE.md)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Clock
from openclaw_billing import ledger
from openclaw_billing.errors import PaymentDisputed
from openclaw_billing.plans import PlanId
from openclaw_billing.store import Store
from openclaw_billing.store.base import EventOutcome, StripeRef
from openclaw_billing.stripe_billing.reversals import revoke_period, set_dispute
from tests.backends import add_client, reopen, store_fixture, store_url_fixture  # noqa: F401
from tests.factories import create_client, submit_job
from tests.fake_stripe import FakeStripe
from tests.stripe_events import (
    charge_object,
    charge_refunded_event,
    customer_deleted_event,
    dispute_event,
    dispute_object,
    invoice_payment_object,
    new_id,
    signed_payload,
    subscription_object,
    unknown_event,
)
from tests.test_stripe import (  # noqa: F401 - fixtures
    DAY,
    PRICES,
    WEBHOOK_SECRET,
    World,
    checkout,
    fake_fixture,
    now_fixture,
    upgrade,
    world_fixture,
)


def other_price_subscription(
    world: World, sub: dict[str, Any], price: str, *, status: str = "active"
) -> dict[str, Any]:
    """A second subscription of the same customer, for a product that is not a plan."""
    item = sub["items"]["data"][0]
    obj = subscription_object(
        subscription=new_id("sub_"),
        customer=sub["customer"],
        price=price,
        status=status,
        period_start=item["current_period_start"],
        period_end=item["current_period_end"],
        created=world.tick(),
    )
    world.fake.subscriptions[obj["id"]] = obj
    return obj


# -- whose subscription it is -----------------------------------------------------------------


def test_event_metadata_naming_another_client_moves_no_one_else(
    world: World, http: TestClient
) -> None:
    a = create_client(http, "free", email="a@acmecorp.com")
    b = create_client(http, "free", email="b@acmecorp.com")
    sub = upgrade(world, a, "starter")
    event = world.sub_event("customer.subscription.updated", sub)
    event["data"]["object"]["metadata"]["client_id"] = b["client_id"]  # the payload's copy
    event["data"]["object"]["items"]["data"][0]["price"]["id"] = PRICES["pro"]
    assert world.deliver(event).json()["outcome"] == "applied"
    assert world.usage(b["api_key"])["plan"] == "free"
    assert world.detail(b["client_id"])["stripe_subscription_id"] is None
    assert world.usage(a["api_key"])["plan"] == "starter"  # Stripe's price, not the payload's


# -- only subscriptions of the client's plans -------------------------------------------------


def test_another_products_subscription_cancelled_leaves_the_plan(
    world: World, http: TestClient
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client, "pro")
    other = other_price_subscription(world, sub, "price_some_other_product")
    created = world.deliver(world.sub_event("customer.subscription.created", other))
    assert created.json()["outcome"] == "ignored"
    assert world.set_status(other, "canceled").status_code == 200
    usage = world.usage(client["api_key"])
    assert (usage["plan"], usage["credits_remaining"]) == ("pro", 200)
    assert world.detail(client["client_id"])["stripe_subscription_id"] == sub["id"]


def test_an_enterprise_client_billed_on_a_custom_price_stays_enterprise(
    world: World, http: TestClient
) -> None:
    client = create_client(http, "enterprise")
    start = int(time.time())
    custom = subscription_object(
        subscription=new_id("sub_"),
        customer=new_id("cus_"),
        price="price_enterprise_custom_deal",
        status="active",
        period_start=start,
        period_end=start + 30 * DAY,
        created=world.tick(),
        client_id=client["client_id"],
    )
    world.fake.subscriptions[custom["id"]] = custom
    for type_ in ("customer.subscription.created", "customer.subscription.deleted"):
        custom["status"] = "canceled" if type_.endswith("deleted") else "active"
        assert world.deliver(world.sub_event(type_, custom)).status_code == 200
        assert world.usage(client["api_key"])["plan"] == "enterprise"
    world.deliver(world.invoice("invoice.paid", custom))
    assert world.usage(client["api_key"])["plan"] == "enterprise"


def test_every_item_counts_and_unknown_prices_are_ignored(world: World, http: TestClient) -> None:
    client = create_client(http, "free")
    start = int(time.time())
    sub = world.subscribe(client["client_id"], "pro", start=start)
    items = sub["items"]["data"]
    addon = subscription_object(
        subscription=sub["id"],
        customer=sub["customer"],
        price="price_addon_support",
        status="active",
        period_start=start,
        period_end=start + 30 * DAY,
        created=world.tick(),
    )["items"]["data"][0]
    sub["items"]["data"] = [addon, *items]  # the plan is not the first item
    sub["items"]["total_count"] = 2
    assert world.deliver(world.sub_event("customer.subscription.created", sub)).status_code == 200
    usage = world.usage(client["api_key"])
    assert (usage["plan"], usage["credits_remaining"]) == ("pro", 200)


# -- renewals and trials ----------------------------------------------------------------------


def pro_client_about_to_renew(
    world: World, http: TestClient
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A Pro client that ran 5 jobs, its subscription as Stripe has it once the next period
    started, and the end of the period it paid."""
    client = create_client(http, "free")
    sub = upgrade(world, client, "pro")
    for _ in range(5):
        assert submit_job(http, client["api_key"]).status_code == 201
    old_end: int = sub["items"]["data"][0]["current_period_end"]
    renewed = world.renewed(sub)
    return client, renewed, old_end


def test_a_renewal_grants_credits_on_invoice_paid_not_on_the_update_before_it(
    world: World, http: TestClient, now: Clock
) -> None:
    client, renewed, old_end = pro_client_about_to_renew(world, http)
    now.now = datetime.fromtimestamp(old_end - 60, UTC)  # Stripe advances the period early
    world.deliver(world.sub_event("customer.subscription.updated", renewed))
    before = world.detail(client["client_id"])
    assert before["credits_remaining"] == 195  # not paid yet: nothing granted
    now.now = datetime.fromtimestamp(old_end + 3600, UTC)
    assert world.deliver(world.invoice("invoice.paid", renewed)).json()["outcome"] == "applied"
    after = world.detail(client["client_id"])
    assert after["credits_remaining"] == 200
    assert after["billing_cycle_start"] == datetime.fromtimestamp(old_end, UTC).isoformat()


def test_a_late_invoice_paid_still_grants_the_period_it_paid(
    world: World, http: TestClient, now: Clock
) -> None:
    """An invoice is acted on as Stripe has it now: a delivery that arrives after a newer
    event of the client (Stripe retries for days) still grants the paid period, never
    ``stale``."""
    client, renewed, old_end = pro_client_about_to_renew(world, http)
    now.now = datetime.fromtimestamp(old_end - 60, UTC)  # before the fallback reset
    paid = world.invoice("invoice.paid", renewed)  # created first, delivered last
    world.deliver(world.sub_event("customer.subscription.updated", renewed))
    assert world.detail(client["client_id"])["credits_remaining"] == 195
    assert world.deliver(paid).json()["outcome"] == "applied"
    after = world.detail(client["client_id"])
    assert after["credits_remaining"] == 200
    assert after["billing_cycle_start"] == datetime.fromtimestamp(old_end, UTC).isoformat()
    assert after["metadata"]["stripe_event_at"] > paid["created"]  # the clock never goes back


def test_a_trial_grants_the_plan_for_the_trial_period_and_paying_renews_it(
    world: World, http: TestClient, now: Clock
) -> None:
    client = create_client(http, "free")
    start = int(time.time())
    trial_end = start + 14 * DAY
    sub = world.subscribe(
        client["client_id"], "starter", start=start, end=trial_end, status="trialing"
    )
    world.deliver(world.sub_event("customer.subscription.created", sub))
    usage = world.usage(client["api_key"])
    assert (usage["plan"], usage["credits_remaining"], usage["can_submit"]) == (
        "starter",
        50,
        True,
    )
    assert usage["billing_cycle_end"] == datetime.fromtimestamp(trial_end, UTC).isoformat()
    assert submit_job(http, client["api_key"]).status_code == 201
    # the trial ends: Stripe starts the first paid period, then charges for it
    paid = world.renewed(sub, days=30)
    now.now = datetime.fromtimestamp(trial_end - 60, UTC)
    world.deliver(world.sub_event("customer.subscription.updated", paid))
    assert world.usage(client["api_key"])["credits_remaining"] == 49
    now.now = datetime.fromtimestamp(trial_end + 3600, UTC)
    world.deliver(world.invoice("invoice.paid", paid))
    assert world.usage(client["api_key"])["credits_remaining"] == 50


# -- deleted customers ------------------------------------------------------------------------


def test_customer_deleted_unlinks_so_checkout_makes_a_new_customer(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free", email="gone@acmecorp.com")
    sub = upgrade(world, client, "starter")
    fake.deleted_customers.add(sub["customer"])
    sub["status"] = "canceled"  # Stripe cancels the subscriptions of a deleted customer
    event = customer_deleted_event(sub["customer"], created=world.tick())
    assert world.deliver(event).json()["outcome"] == "applied"
    detail = world.detail(client["client_id"])
    assert (detail["stripe_customer_id"], detail["plan"]) == (None, "free")
    response = checkout(http, client["api_key"], "pro")
    assert response.status_code == 200, response.text
    sent = fake.requests_to("POST", "/v1/checkout/sessions")[-1]
    assert sent.params["customer_email"] == "gone@acmecorp.com"
    assert "customer" not in sent.params


def test_no_such_customer_at_checkout_relinks_instead_of_a_502(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    """A switch from test to live keys: Stripe has none of the stored customers."""
    client = create_client(http, "free")
    sub = upgrade(world, client, "starter")
    world.set_status(sub, "canceled")
    fake.deleted_customers.add(sub["customer"])
    first = checkout(http, client["api_key"], "pro")
    assert first.status_code == 200, first.text
    assert world.detail(client["client_id"])["stripe_customer_id"] is None
    again = checkout(http, client["api_key"], "pro")
    assert again.json() == first.json()  # still one session for a double click
    sent = fake.requests_to("POST", "/v1/checkout/sessions")
    assert [r.params.get("customer") for r in sent] == [sub["customer"], None, None]


def test_no_such_customer_at_the_portal_unlinks_it(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client, "pro")
    fake.deleted_customers.add(sub["customer"])
    headers = {"X-Client-Key": client["api_key"]}
    response = http.post("/api/billing/portal", headers=headers)
    assert response.status_code == 409
    assert response.json()["code"] == "no_stripe_customer"
    detail = world.detail(client["client_id"])
    assert (detail["stripe_customer_id"], detail["stripe_subscription_id"]) == (None, None)
    assert detail["plan"] == "free"  # its subscriptions went with the customer
    assert checkout(http, client["api_key"], "pro").status_code == 200
    # the event clock did not move: a real event created just before is still applied
    sub["customer"] = new_id("cus_")
    assert world.deliver(world.sub_event("customer.subscription.updated", sub)).json()[
        "outcome"
    ] in {"applied"}


def test_a_portal_without_configuration_is_not_configured(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    upgrade(world, client, "pro")
    fake.portal_configured = False
    response = http.post("/api/billing/portal", headers={"X-Client-Key": client["api_key"]})
    assert response.status_code == 503
    assert response.json()["code"] == "stripe_not_configured"
    assert "portal" in response.json()["message"]


# -- refunds and disputes ---------------------------------------------------------------------


def paid_charge(world: World, sub: dict[str, Any], **charge: Any) -> dict[str, Any]:
    """The charge that paid ``sub``'s current period, with its invoice, as Stripe has them."""
    invoice = world.invoice("invoice.paid", sub, reason="subscription_create")["data"]["object"]
    intent = new_id("pi_")
    world.fake.invoice_payments.append(
        invoice_payment_object(invoice=invoice["id"], payment_intent=intent, created=world.tick())
    )
    obj = charge_object(
        new_id("ch_"),
        customer=sub["customer"],
        payment_intent=intent,
        created=world.tick(),
        **charge,
    )
    world.fake.charges[obj["id"]] = obj
    return obj


def dispute(world: World, charge: dict[str, Any], status: str, type_: Any) -> Any:
    obj = dispute_object(
        "dp_" + charge["id"][3:],
        charge=charge["id"],
        payment_intent=charge["payment_intent"],
        status=status,
        created=world.tick(),
    )
    world.fake.disputes[obj["id"]] = obj
    return world.deliver(dispute_event(type_, obj, created=world.tick()))


def test_a_dispute_opened_blocks_jobs_and_won_unblocks(world: World, http: TestClient) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client, "pro")
    charge = paid_charge(world, sub)
    assert dispute(world, charge, "needs_response", "charge.dispute.created").status_code == 200
    usage = world.usage(client["api_key"])
    assert (usage["status"], usage["can_submit"], usage["plan"]) == ("disputed", False, "pro")
    refused = submit_job(http, client["api_key"])
    assert (refused.status_code, refused.json()["code"]) == (402, "payment_disputed")
    dispute(world, charge, "won", "charge.dispute.closed")
    usage = world.usage(client["api_key"])
    assert (usage["status"], usage["plan"], usage["credits_remaining"]) == ("active", "pro", 200)
    assert submit_job(http, client["api_key"]).status_code == 201


def test_a_dispute_delivered_after_a_newer_event_still_blocks(
    world: World, http: TestClient
) -> None:
    """The dispute is read from Stripe when its event arrives, so a late delivery is acted on
    (a stale rule would let the client keep running jobs on money that is being taken back)."""
    client = create_client(http, "free")
    sub = upgrade(world, client, "pro")
    charge = paid_charge(world, sub)
    obj = dispute_object(
        "dp_" + charge["id"][3:],
        charge=charge["id"],
        payment_intent=charge["payment_intent"],
        status="needs_response",
        created=world.tick(),
    )
    world.fake.disputes[obj["id"]] = obj
    late = dispute_event("charge.dispute.created", obj, created=world.tick())
    assert world.deliver(world.sub_event("customer.subscription.updated", sub)).status_code == 200
    assert world.deliver(late).json()["outcome"] == "applied"
    refused = submit_job(http, client["api_key"])
    assert (refused.status_code, refused.json()["code"]) == (402, "payment_disputed")


def test_a_dispute_lost_returns_the_client_to_free(world: World, http: TestClient) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client, "pro")
    charge = paid_charge(world, sub)
    dispute(world, charge, "needs_response", "charge.dispute.created")
    dispute(world, charge, "lost", "charge.dispute.closed")
    usage = world.usage(client["api_key"])
    assert (usage["plan"], usage["credits_remaining"], usage["can_submit"]) == ("free", 5, True)
    # a later event of the same period grants nothing again
    world.deliver(world.sub_event("customer.subscription.updated", sub))
    assert world.usage(client["api_key"])["plan"] == "free"


def test_a_full_refund_of_the_current_period_returns_the_client_to_free(
    world: World, http: TestClient
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client, "pro")
    charge = paid_charge(world, sub, amount_refunded=500)
    partial = world.deliver(charge_refunded_event(charge, created=world.tick()))
    assert partial.json()["outcome"] == "ignored"  # a partial refund changes nothing
    assert world.usage(client["api_key"])["plan"] == "pro"
    charge.update(amount_refunded=2000, refunded=True)  # then refunded in full
    # the payload's copy names another customer: it is not read, Stripe's charge is
    event = charge_refunded_event({**charge, "customer": new_id("cus_")}, created=world.tick())
    assert world.deliver(event).json()["outcome"] == "applied"
    usage = world.usage(client["api_key"])
    assert (usage["plan"], usage["credits_remaining"]) == ("free", 5)


# -- nullable fields --------------------------------------------------------------------------


def test_null_metadata_on_sessions_and_invoices_is_accepted(world: World, http: TestClient) -> None:
    client = create_client(http, "free")
    sub = world.subscribe(client["client_id"], "pro")
    paid = world.invoice("invoice.paid", sub, reason="subscription_create", null_metadata=True)
    assert world.deliver(paid).json()["outcome"] == "applied"
    done = world.completed(client["client_id"], sub, "pro", null_metadata=True)
    assert world.deliver(done).json()["outcome"] == "applied"
    assert world.usage(client["api_key"])["plan"] == "pro"


# -- bounded at the edge (item 1) -------------------------------------------------------------


def test_an_event_created_in_the_future_is_refused_and_later_events_apply(
    world: World, http: TestClient
) -> None:
    client = create_client(http, "free")
    sub = world.subscribe(client["client_id"], "pro")
    for created in (int(time.time()) + 10 * 365 * DAY, 2**63, -1, 10**20):
        response = world.deliver(world.sub_event("customer.subscription.created", sub, created))
        assert response.status_code == 400, created
        assert response.json()["code"] in {"event_from_the_future", "invalid_payload"}
    future = world.deliver(
        world.sub_event("customer.subscription.created", sub, int(time.time()) + 3600)
    )
    assert future.json()["code"] == "event_from_the_future"
    assert (
        world.deliver(world.sub_event("customer.subscription.created", sub)).json()["outcome"]
        == "applied"
    )


def test_an_event_dated_just_ahead_never_makes_the_real_ones_stale(
    world: World, http: TestClient
) -> None:
    """Within the 300 s the gateway allows, an event dated ahead is applied, but the client's
    event clock stops at the gateway's own time: the real event that follows (the
    subscription ending) is applied, not answered ``stale``."""
    client = create_client(http, "free")
    sub = upgrade(world, client, "starter")
    ahead = world.sub_event("customer.subscription.updated", sub, int(time.time()) + 290)
    assert world.deliver(ahead).json()["outcome"] == "applied"
    sub["status"] = "canceled"  # then Stripe ends it: the real event is dated now
    ended = world.sub_event("customer.subscription.deleted", sub, int(time.time()))
    assert world.deliver(ended).json()["outcome"] == "applied"
    usage = world.usage(client["api_key"])
    assert (usage["plan"], usage["subscription_status"]) == ("free", "canceled")


@pytest.mark.parametrize("extra", ["t=\u00b2", "t=\u00b9", "t=\u0663", "t=" + "9" * 40])
def test_a_signature_with_an_odd_extra_timestamp_is_a_400(
    world: World, http: TestClient, extra: str
) -> None:
    """The SDK reads the first ``t=``; a second one that only looks numeric (superscripts,
    other scripts' digits, 40 digits) is refused, never a 500."""
    client = create_client(http, "free")
    sub = world.subscribe(client["client_id"], "pro", start=int(time.time()), end=2 * 10**9)
    payload = json.dumps(world.sub_event("customer.subscription.created", sub))
    body, headers = signed_payload(payload, WEBHOOK_SECRET)
    value = extra.encode().decode("unicode_escape")
    headers["Stripe-Signature"] += f",{value}"
    response = http.post(
        "/api/billing/webhook",
        content=body,
        headers={k: v.encode() for k, v in headers.items()},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_signature"


@pytest.mark.parametrize("status", ["active\u0000", "active\u2028", "Active", "x" * 65, ""])
def test_a_status_stripe_never_sends_is_a_400_before_any_store(
    world: World, http: TestClient, status: str
) -> None:
    """Statuses are Stripe's enum values (a newer version's value is accepted if it looks like
    one); anything else, a NUL above all (PostgreSQL refuses it: a 503 for ever), is a 400
    and nothing is stored."""
    client = create_client(http, "free")
    sub = upgrade(world, client, "starter")
    response = world.set_status(sub, status.encode().decode("unicode_escape"))
    assert (response.status_code, response.json()["code"]) == (400, "invalid_payload")
    assert world.usage(client["api_key"])["subscription_status"] == "active"
    assert world.set_status(sub, "a_status_of_a_later_version").status_code == 200


def test_periods_stripe_cannot_hold_are_a_400_not_a_500(world: World, http: TestClient) -> None:
    client = create_client(http, "free")
    sub = world.subscribe(client["client_id"], "pro", start=0, end=1)
    sub["items"]["data"][0]["current_period_end"] = 10**15
    response = world.deliver(world.sub_event("customer.subscription.created", sub))
    assert (response.status_code, response.json()["code"]) == (400, "invalid_payload")


@pytest.mark.parametrize("depth", [200_000, 490_000])
def test_a_signed_body_nested_too_deeply_is_a_400(
    http: TestClient, world: World, depth: int
) -> None:
    body = (
        '{"id": "evt_1", "type": "x", "created": 1, "livemode": false, "data": '
        + ("[" * depth + "]" * depth)
        + "}"
    )
    payload, headers = signed_payload(body, WEBHOOK_SECRET)
    response = http.post("/api/billing/webhook", content=payload, headers=headers)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_payload")
    assert world.deliver(unknown_event(created=world.tick())).status_code == 200


# -- dispute state on every backend -----------------------------------------------------------


def test_an_open_dispute_refuses_charges_on_every_backend(store: Store, store_url: str) -> None:
    record, _ = add_client(store, PlanId.PRO)
    when = record.billing_cycle_start + timedelta(hours=1)
    ref = StripeRef(record.client_id, None, None)

    def opened(r: Any) -> None:
        set_dispute(r, "dp_1", True, when)

    assert store.apply_stripe_event("evt_a", ref, 1, opened, when)[0] == EventOutcome.APPLIED
    with pytest.raises(PaymentDisputed):
        store.charge(record.client_id, "job-1", 0.0, when)
    with reopen(store_url) as again:
        stored = again.get_client(record.client_id)
        assert stored is not None
        assert ledger.open_disputes(stored) == ["dp_1"]
        assert ledger.refusal_of(stored) is ledger.Refusal.DISPUTED

    def closed(r: Any) -> None:
        set_dispute(r, "dp_1", False, when)
        revoke_period(r, int(r.billing_cycle_end.timestamp()), when)

    store.apply_stripe_event("evt_b", ref, 2, closed, when)
    assert store.charge(record.client_id, "job-2", 0.0, when).credits_remaining == 4
    stored = store.get_client(record.client_id)
    assert stored is not None
    assert stored.plan == PlanId.FREE
