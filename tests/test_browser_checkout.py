"""A client upgrading through Stripe Checkout in a real browser (Debian's chromium through
Playwright): a real gateway whose Stripe is the local fake (tests/fake_stripe.py), the
fake's hosted Checkout page, Stripe's events delivered to the gateway's webhook over HTTP, and
the portal's pages Checkout returns to (HTML) showing the new plan.

The page may reach the gateway and the fake only: nothing leaves the machine. Where the test
needs the browser to be on Stripe's own origin (``https://checkout.stripe.com``), the fake
answers for it (``stand_ins`` of :func:`tests.browser.offline_page`).

Two behaviours only a browser shows are checked here, each once a defect of the portal:

* Chromium applies a page's ``form-action`` to the redirect that answers a form, so the
  portal's policy names Stripe's Checkout and customer portal for its Upgrade and Manage
  billing buttons (a form whose answer is a 303 to Stripe).
* The portal's session cookie is ``SameSite=Strict``, so when Stripe's site sends the browser
  back the cookie is not sent: the page Stripe returns to sends the browser to itself once
  (a navigation of this site, which carries the cookie) instead of asking to sign in.

The other tests start Checkout with the Upgrade form's own fields through the browser's
request context, and pay on the fake's page at its own address (the same site as the
gateway), so the rest of the flow is checked on its own."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser import Visit, accessibility_violations, loopback, offline_page, screenshot
from tests.fake_stripe import FakeStripe
from tests.server import free_port, running_gateway
from tests.test_browser_console import clean
from tests.test_browser_console_flows import new_client
from tests.test_browser_portal import PORTAL, figures, portal_sign_in
from tests.test_stripe import PRICES, WEBHOOK_SECRET, stripe_settings

STRIPE_CHECKOUT = "https://checkout.stripe.com"
STRIPE_PORTAL = "https://billing.stripe.com"
CHECKOUT_URL = re.compile(r"^https://checkout\.stripe\.com/c/pay/(cs_test_[0-9a-f]+)$")
#: How long Stripe's events may take to reach the gateway.
DELIVERY_SECONDS = 10
#: How long a page may take to get where a button or Stripe sends it.
REDIRECT_SECONDS = 5


class Gateway(NamedTuple):
    url: str
    fake: FakeStripe


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway with Stripe set up against the fake, whose webhook the fake calls; its
    public address is its own, so Checkout returns to it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = {"OPENCLAW_PUBLIC_URL": base}
    with FakeStripe(
        webhook_url=f"{base}/api/billing/webhook", webhook_secret=WEBHOOK_SECRET
    ) as fake:
        env = stripe_settings(fake) | settings
        with running_gateway(tmp_path_factory.mktemp("checkout"), extra_env=env, port=port):
            yield Gateway(base, fake)


def assert_accessible(page: Page) -> None:
    assert accessibility_violations(page) == [], page.url


def reaches(visit: Visit, url: re.Pattern[str]) -> None:
    """The page gets to ``url`` soon; else the test fails (at once when the page's policy
    refused something), saying where the page is and what was refused."""
    deadline = time.monotonic() + REDIRECT_SECONDS
    while not url.search(visit.page.url):
        if visit.refused or time.monotonic() > deadline:
            raise AssertionError(f"still at {visit.page.url}; refused: {visit.refused}")
        visit.page.wait_for_timeout(50)


def start_checkout(page: Page, plan: str) -> str:
    """Post the dashboard's Upgrade form (its own fields, the session's cookie) as the button
    would, without following the answer; returns where it sends the browser: Stripe."""
    form = page.locator(f"form[action='{PORTAL}/upgrade']", has_text=f"Upgrade to {plan.title()}")
    fields: dict[str, str | float | bool] = {
        name: form.locator(f"input[name={name}]").get_attribute("value") or ""
        for name in ("csrf_token", "plan")
    }
    assert fields["plan"] == plan
    answer = page.request.post(
        page.url.split(PORTAL)[0] + f"{PORTAL}/upgrade", form=fields, max_redirects=0
    )
    assert answer.status == 303, answer.text()
    location = answer.headers["location"]
    assert CHECKOUT_URL.match(location), location
    return location


def on_the_fake(gateway: Gateway, checkout_url: str) -> str:
    """The checkout page at the fake's own address (the gateway's site)."""
    return checkout_url.replace(STRIPE_CHECKOUT, gateway.fake.base_url)


@contextmanager
def events_held(fake: FakeStripe) -> Iterator[list[str]]:
    """Payments in the block deliver nothing yet; on leaving, their events (the list) are
    delivered, and the block waits until the gateway has answered each."""
    before, url = set(fake.events), fake.webhook_url
    held: list[str] = []
    fake.webhook_url = None
    try:
        yield held
    finally:
        fake.webhook_url = url
    held.extend(sorted(set(fake.events) - before))
    for event_id in held:  # Stripe's retry of a delivery, through the fake's own route
        assert httpx.post(f"{fake.base_url}/_fake/events/{event_id}/resend").status_code == 200
    deadline = time.monotonic() + DELIVERY_SECONDS
    while not set(held) <= {e for e, status in fake.deliveries if status == 200}:
        assert time.monotonic() < deadline, fake.deliveries
        time.sleep(0.05)


def pay_on_the_fake(page: Page, gateway: Gateway, plan: str) -> str:
    """From the dashboard: Checkout for ``plan``, paid on the fake's page; the browser ends on
    the success page. Returns the Checkout Session's id."""
    checkout_url = start_checkout(page, plan)
    page.goto(on_the_fake(gateway, checkout_url))
    expect(page.get_by_role("heading", name="Checkout (fake Stripe)")).to_be_visible()
    expect(page.locator("[data-price]")).to_have_text(PRICES[plan])
    page.get_by_role("button", name="Pay and subscribe").click()
    session_id = checkout_url.rsplit("/", 1)[1]
    expect(page).to_have_url(f"{gateway.url}{PORTAL}/checkout/success?session_id={session_id}")
    return session_id


def test_paying_at_checkout_comes_back_to_a_page_showing_the_new_plan(gateway: Gateway) -> None:
    client = new_client(gateway.url, "free", "Upgrade Corp")
    with offline_page(gateway.url, also_allow=[gateway.fake.base_url]) as visit:
        page = visit.page
        portal_sign_in(page, gateway.url, client["api_key"])
        expect(page.get_by_role("button", name="Upgrade to Starter")).to_be_visible()
        expect(page.get_by_role("button", name="Upgrade to Pro")).to_be_visible()
        assert_accessible(page)

        with events_held(gateway.fake) as events:
            pay_on_the_fake(page, gateway, "pro")
            outcome = page.locator("[data-outcome]")
            expect(outcome).to_have_attribute("data-outcome", "confirming")
            expect(outcome).to_contain_text("Your plan changes to Pro")
            expect(page.locator("[data-plan]")).to_have_attribute("data-plan", "free")
            assert_accessible(page)
        assert len(events) == 2  # checkout.session.completed, customer.subscription.created

        page.get_by_role("link", name="Check again").click()
        expect(outcome).to_have_attribute("data-outcome", "confirmed")
        expect(outcome).to_have_text("Your payment is confirmed: you are on the Pro plan.")
        expect(page.locator("[data-plan]")).to_have_attribute("data-plan", "pro")
        expect(page.get_by_text("Pro plan, 200 credits left")).to_be_visible()
        assert_accessible(page)
        screenshot(page, "portal-checkout-success")

        page.get_by_role("link", name="Back to your dashboard").click()
        assert figures(page) == {"credits-left": "200", "jobs": "0", "status": "active"}
        expect(page.get_by_role("button", name=re.compile("^Upgrade"))).to_have_count(0)
        expect(page.get_by_role("button", name="Manage billing")).to_be_visible()
        assert_accessible(page)
        clean(visit)


def test_leaving_checkout_comes_back_to_a_page_saying_nothing_changed(gateway: Gateway) -> None:
    client = new_client(gateway.url, "starter", "Hesitant Corp")
    with offline_page(gateway.url, also_allow=[gateway.fake.base_url]) as visit:
        page = visit.page
        portal_sign_in(page, gateway.url, client["api_key"])
        page.goto(on_the_fake(gateway, start_checkout(page, "pro")))
        page.get_by_role("link", name="Back").click()
        expect(page).to_have_url(f"{gateway.url}{PORTAL}/checkout/cancel")
        expect(page.get_by_role("status")).to_contain_text("nothing was charged")
        expect(page.locator("[data-plan]")).to_have_attribute("data-plan", "starter")
        assert_accessible(page)
        page.get_by_role("link", name="Back to your dashboard").click()
        assert figures(page)["credits-left"] == "50"
        clean(visit)


def test_the_upgrade_button_takes_the_browser_to_stripes_checkout(gateway: Gateway) -> None:
    client = new_client(gateway.url, "free", "Button Corp")
    with offline_page(gateway.url, stand_ins={STRIPE_CHECKOUT: gateway.fake.base_url}) as visit:
        page = visit.page
        portal_sign_in(page, gateway.url, client["api_key"])
        page.get_by_role("button", name="Upgrade to Pro").click()
        reaches(visit, CHECKOUT_URL)
        expect(page.get_by_role("button", name="Pay and subscribe")).to_be_visible()
        clean(visit)


def test_the_manage_billing_button_takes_the_browser_to_stripes_portal(gateway: Gateway) -> None:
    client = new_client(gateway.url, "free", "Manager Corp")
    with offline_page(
        gateway.url,
        also_allow=[gateway.fake.base_url],
        stand_ins={STRIPE_PORTAL: gateway.fake.base_url},
    ) as visit:
        page = visit.page
        portal_sign_in(page, gateway.url, client["api_key"])
        with events_held(gateway.fake):
            pay_on_the_fake(page, gateway, "starter")
        page.goto(f"{gateway.url}{PORTAL}/")
        page.get_by_role("button", name="Manage billing").click()
        reaches(visit, re.compile(r"^https://billing\.stripe\.com/p/session/bps_"))
        assert visit.refused == []


def test_coming_back_from_stripes_site_keeps_the_portal_session(gateway: Gateway) -> None:
    client = new_client(gateway.url, "free", "Returning Corp")
    with offline_page(gateway.url, stand_ins={STRIPE_CHECKOUT: gateway.fake.base_url}) as visit:
        page = visit.page
        portal_sign_in(page, gateway.url, client["api_key"])
        checkout_url = start_checkout(page, "pro")
        page.goto(checkout_url)  # on Stripe's origin, as the button would go
        expect(page).to_have_url(checkout_url)
        with page.expect_navigation():  # Stripe's redirect, then wherever the portal sends it
            page.get_by_role("button", name="Pay and subscribe").click()
        assert visit.served  # the fake answered for Stripe's origin
        session_id = checkout_url.rsplit("/", 1)[1]
        assert page.url == f"{gateway.url}{PORTAL}/checkout/success?session_id={session_id}"
        clean(visit)


def test_only_servers_on_this_machine_can_be_let_in() -> None:
    """Guards the checks above: a page can be let reach a local fake, never the internet."""
    assert loopback("http://127.0.0.1:12111") == "127.0.0.1:12111"
    for elsewhere in (STRIPE_CHECKOUT, "http://10.0.0.1:80", "http://127.0.0.1.example.com"):
        with pytest.raises(ValueError, match="not on this machine"):
            loopback(elsewhere)
