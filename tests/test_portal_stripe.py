"""The portal's billing (openclaw_billing/web/portal_billing.py) against the local fake Stripe,
as tests/test_stripe.py drives it: an upgrade through Checkout, paying at the fake, the
success page before and after Stripe's events arrive, the cancel page, "Manage billing", and
Stripe's refusals and failures as the portal's error pages."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from openclaw_billing.service import BillingService
from openclaw_billing.settings import get_settings
from tests.factories import create_client
from tests.fake_stripe import FakeStripe
from tests.test_portal import PORTAL, numbers, portal_sign_in
from tests.test_stripe import (  # noqa: F401 - fixtures
    PRICES,
    World,
    fake_fixture,
    upgrade,
    world_fixture,
)

PUBLIC = "http://localhost:18789"  # OPENCLAW_PUBLIC_URL's default
CHECKOUT_URL = re.compile(r"^https://checkout\.stripe\.com/c/pay/(cs_test_[0-9a-f]+)$")


def upgrade_buttons(page: str) -> list[str]:
    return re.findall(r'name="plan" value="([a-z]+)"', page)


def post_upgrade(http: TestClient, csrf: str, plan: str) -> Any:
    return http.post(
        f"{PORTAL}/upgrade", data={"plan": plan, "csrf_token": csrf}, follow_redirects=False
    )


def success_page(http: TestClient, session_id: str) -> str:
    answer = http.get(f"{PORTAL}/checkout/success", params={"session_id": session_id})
    assert answer.status_code == 200, answer.text
    found = re.search(r'data-outcome="([a-z]+)"', answer.text)
    assert found is not None
    return found.group(1)


def pay_and_deliver(world: World, session_id: str, *, deliver: bool = True) -> None:
    """The customer pays at the fake; Stripe's events reach the webhook if ``deliver``."""
    [sent] = [
        r
        for r in world.fake.requests_to("POST", "/v1/checkout/sessions")
        if r.status == 200 and not r.replayed
    ]
    events = world.fake.pay(world.fake.checkout_sessions[session_id], sent.params)
    for event in events if deliver else ():
        assert world.deliver(event).status_code == 200


def test_an_upgrade_goes_through_checkout_and_comes_back_to_the_portal(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free", email="buyer@acmecorp.com")
    csrf = portal_sign_in(http, client["api_key"])
    assert upgrade_buttons(http.get(f"{PORTAL}/").text) == ["starter", "pro"]

    answer = post_upgrade(http, csrf, "pro")
    assert answer.status_code == 303
    found = CHECKOUT_URL.match(answer.headers["location"])
    assert found is not None
    session_id = found.group(1)
    [sent] = fake.requests_to("POST", "/v1/checkout/sessions")
    assert sent.params["success_url"] == (
        f"{PUBLIC}/billing/portal/checkout/success?session_id={{CHECKOUT_SESSION_ID}}"
    )
    assert sent.params["cancel_url"] == f"{PUBLIC}/billing/portal/checkout/cancel"
    assert sent.params["client_reference_id"] == client["client_id"]
    assert sent.params["line_items"] == [{"price": PRICES["pro"], "quantity": "1"}]

    assert success_page(http, session_id) == "incomplete"  # not paid yet
    pay_and_deliver(world, session_id, deliver=False)
    assert success_page(http, session_id) == "confirming"  # paid; the events not arrived
    page = http.get(f"{PORTAL}/checkout/success", params={"session_id": session_id}).text
    assert "Your payment is being confirmed" in page
    assert f'href="/billing/portal/checkout/success?session_id={session_id}"' in page
    assert 'data-plan="free"' in page  # the plan as the store has it: not faked
    assert numbers(http.get(f"{PORTAL}/").text)["credits-left"] == "5"

    for event in fake.events.values():
        assert world.deliver(event).status_code == 200
    assert success_page(http, session_id) == "confirmed"
    page = http.get(f"{PORTAL}/checkout/success", params={"session_id": session_id}).text
    assert "you are on the Pro plan" in page
    dashboard = http.get(f"{PORTAL}/").text
    assert numbers(dashboard) == {"status": "active", "credits-left": "200", "jobs": "0"}
    assert upgrade_buttons(dashboard) == []  # a live subscription changes in Stripe's portal
    assert 'action="/billing/portal/manage-billing"' in dashboard


def test_the_dashboard_before_the_events_still_shows_the_old_plan(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    csrf = portal_sign_in(http, client["api_key"])
    found = CHECKOUT_URL.match(post_upgrade(http, csrf, "starter").headers["location"])
    assert found is not None
    pay_and_deliver(world, found.group(1), deliver=False)
    page = http.get(f"{PORTAL}/").text
    assert numbers(page)["credits-left"] == "5"
    assert "Free plan" in page


def test_the_cancel_page_says_nothing_was_charged(http: TestClient) -> None:
    client = create_client(http, "starter")
    portal_sign_in(http, client["api_key"])
    page = http.get(f"{PORTAL}/checkout/cancel")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "nothing was charged" in page.text
    assert 'data-plan="starter"' in page.text


def test_another_clients_checkout_tells_nothing(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    a = create_client(http, "free")
    b = create_client(http, "free")
    csrf = portal_sign_in(http, a["api_key"])
    found = CHECKOUT_URL.match(post_upgrade(http, csrf, "pro").headers["location"])
    assert found is not None
    pay_and_deliver(world, found.group(1))
    with TestClient(http.app) as other:
        portal_sign_in(other, b["api_key"])
        assert success_page(other, found.group(1)) == "unknown"
        page = other.get(f"{PORTAL}/checkout/success", params={"session_id": found.group(1)})
    assert 'data-plan="free"' in page.text
    assert "Pro" not in page.text.split("<main", 1)[1]


def test_a_session_id_is_bounded(http: TestClient, fake: FakeStripe) -> None:
    client = create_client(http, "free")
    portal_sign_in(http, client["api_key"])
    for bad in ("x", "cs_test_../../v1/customers", "cs_" + "a" * 300, "cs_test_a\nb"):
        answer = http.get(f"{PORTAL}/checkout/success", params={"session_id": bad})
        assert answer.status_code == 422
    assert fake.requests == []
    assert success_page(http, "cs_test_unknown") == "unknown"  # Stripe has no such session


def test_a_stripe_failure_on_the_success_page_is_not_an_error(
    http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    portal_sign_in(http, client["api_key"])
    fake.fail_next(500, count=10, stored=False)
    assert success_page(http, "cs_test_abc") == "unknown"


def test_an_upgrade_needs_the_form_token(http: TestClient, fake: FakeStripe) -> None:
    client = create_client(http, "free")
    portal_sign_in(http, client["api_key"])
    for data in ({"plan": "pro"}, {"plan": "pro", "csrf_token": "0" * 64}):
        answer = http.post(f"{PORTAL}/upgrade", data=data, follow_redirects=False)
        assert answer.status_code == 403
        assert 'data-code="csrf_refused"' in answer.text
    assert fake.requests == []


def test_upgrade_refusals_are_pages_and_call_no_stripe(http: TestClient, fake: FakeStripe) -> None:
    pro = create_client(http, "pro")
    csrf = portal_sign_in(http, pro["api_key"])
    for plan, status, code in (
        ("enterprise", 422, "plan_not_purchasable"),
        ("starter", 422, "plan_not_purchasable"),  # a downgrade: Stripe's portal, not Checkout
        ("free", 422, "plan_not_purchasable"),
        ("pro", 409, "already_on_plan"),
        ("platinum", 422, "validation_error"),
    ):
        answer = post_upgrade(http, csrf, plan)
        assert answer.status_code == status, plan
        assert f'data-code="{code}"' in answer.text
        assert "/api/billing" not in answer.text  # the portal's words, not the API's
    assert fake.requests == []


def test_a_subscribed_client_is_sent_to_manage_billing(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    upgrade(world, client, "starter")
    csrf = portal_sign_in(http, client["api_key"])
    page = http.get(f"{PORTAL}/").text
    assert upgrade_buttons(page) == []
    assert "In Manage billing" in page
    answer = post_upgrade(http, csrf, "pro")  # a crafted form: refused, nothing billed twice
    assert answer.status_code == 409
    assert "change your plan in Manage billing" in answer.text
    assert fake.requests_to("POST", "/v1/checkout/sessions") == []


def test_manage_billing_opens_stripes_portal(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    csrf = portal_sign_in(http, client["api_key"])
    assert "Manage billing</button>" not in http.get(f"{PORTAL}/").text
    refused = http.post(f"{PORTAL}/manage-billing", data={"csrf_token": csrf})
    assert refused.status_code == 409
    assert 'data-code="no_stripe_customer"' in refused.text
    assert "it is made with your first upgrade" in refused.text

    sub = upgrade(world, client, "pro")
    assert "Manage billing</button>" in http.get(f"{PORTAL}/").text
    answer = http.post(
        f"{PORTAL}/manage-billing", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("https://billing.stripe.com/p/session/bps_")
    [sent] = fake.requests_to("POST", "/v1/billing_portal/sessions")
    assert sent.params == {"customer": sub["customer"], "return_url": f"{PUBLIC}/billing/portal/"}
    assert http.post(f"{PORTAL}/manage-billing", data={}).status_code == 403


def test_an_htmx_upgrade_is_sent_on_with_hx_redirect(http: TestClient, fake: FakeStripe) -> None:
    client = create_client(http, "free")
    csrf = portal_sign_in(http, client["api_key"])
    answer = http.post(
        f"{PORTAL}/upgrade",
        data={"plan": "pro"},
        headers={"HX-Request": "true", "X-CSRF-Token": csrf},
    )
    assert answer.status_code == 204
    assert CHECKOUT_URL.match(answer.headers["hx-redirect"])


def test_stripe_failing_is_the_portals_error_page(http: TestClient, fake: FakeStripe) -> None:
    client = create_client(http, "free")
    csrf = portal_sign_in(http, client["api_key"])
    fake.fail_next(500, count=4, message="boom sk_test_fake", stored=False)
    answer = post_upgrade(http, csrf, "pro")
    assert answer.status_code == 502
    assert 'data-code="stripe_error"' in answer.text
    assert "Stripe could not be reached, so nothing changed." in answer.text
    assert "sk_test_fake" not in answer.text
    assert 'href="/billing/portal/"' in answer.text


def test_a_portal_stripe_has_not_set_up_is_a_clear_503(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    upgrade(world, client, "pro")
    csrf = portal_sign_in(http, client["api_key"])
    fake.portal_configured = False
    answer = http.post(f"{PORTAL}/manage-billing", data={"csrf_token": csrf})
    assert answer.status_code == 503
    assert "Online payments are not set up here yet. Contact OpenClaw support." in answer.text


def test_without_stripe_there_is_no_upgrade_button(
    http: TestClient, service: BillingService
) -> None:
    assert get_settings().stripe_secret_key is None
    client = create_client(http, "free")
    csrf = portal_sign_in(http, client["api_key"])
    page = http.get(f"{PORTAL}/").text
    assert upgrade_buttons(page) == []
    assert "Online upgrades are not available here." in page
    answer = post_upgrade(http, csrf, "pro")
    assert answer.status_code == 503
    assert 'data-code="stripe_not_configured"' in answer.text
    assert success_page(http, "cs_test_abc") == "unknown"


def test_past_due_and_paused_from_stripes_events_say_what_to_do(
    world: World, http: TestClient, fake: FakeStripe
) -> None:
    client = create_client(http, "free")
    sub = upgrade(world, client, "pro")
    portal_sign_in(http, client["api_key"])
    sub["status"] = "past_due"
    world.deliver(world.invoice("invoice.payment_failed", sub))
    page = http.get(f"{PORTAL}/").text
    assert numbers(page)["status"] == "past_due"
    assert "Update your card in Manage billing." in page
    assert 'data-subscription="past_due"' in page
    sub["status"] = "active"
    world.deliver(world.invoice("invoice.paid", sub))
    world.set_status(sub, "paused")
    page = http.get(f"{PORTAL}/").text
    assert numbers(page)["status"] == "paused"
    assert "Resume it in Manage billing." in page
