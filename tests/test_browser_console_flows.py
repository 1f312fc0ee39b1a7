"""The operator's account and key flows in a real browser (Debian's chromium through
Playwright) against a real gateway: credits through the form change the balance the page
shows, a job shows in the usage, a key rotated with a grace period is shown once and copied
while the old one keeps working, a client deactivated and reactivated has its keys refused and
then accepted again, and the audit log shows what the console did. Every page visited has no
serious accessibility violation, asks nothing of another host, runs no failing script and has
nothing refused by its policy.

Signing in, creating a client and copying its key, escaping, the cross-site form and revoking
a key are in tests/test_browser_console.py and tests/test_browser_console_client.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from conftest import ADMIN_TOKEN
from tests.browser import accessibility_violations, offline_page, screenshot
from tests.factories import JOB_BODY, create_client
from tests.server import running_gateway
from tests.test_browser_console import KEY, clean, sign_in

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("console-flows")) as base:
        yield base


def new_client(base: str, plan: str, name: str) -> dict[str, Any]:
    """A client made through the admin API (its key included)."""
    with httpx.Client(base_url=base) as api:
        return create_client(api, plan, name=name)


def submit_job(base: str, key: str) -> httpx.Response:
    return httpx.post(f"{base}/api/intake", headers={"X-Client-Key": key}, json=JOB_BODY)


def detail(base: str, client_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{base}/api/admin/clients/{client_id}", headers=ADMIN).json()
    return body


def assert_accessible(page: Page) -> None:
    assert accessibility_violations(page) == [], page.url


def test_credits_added_with_a_reason_change_the_balance_on_the_page(gateway_url: str) -> None:
    client = new_client(gateway_url, "starter", "Credit Corp")
    url = f"{gateway_url}/billing/console/clients/{client['client_id']}"
    with offline_page(gateway_url) as visit:
        page = visit.page
        sign_in(page, gateway_url)
        page.goto(url)
        usage = page.locator("section[aria-labelledby=usage-h]")
        expect(usage).to_contain_text("0 used, 50 left (0")

        page.get_by_label("Amount").fill("25")
        page.get_by_label("Reason").fill("Goodwill for the May outage")
        page.get_by_role("button", name="Adjust credits").click()
        expect(page.get_by_role("status")).to_have_text("Credits adjusted.")
        expect(page).to_have_url(url + "?notice=credits")
        expect(usage).to_contain_text("0 used, 75 left")
        row = page.locator("table.adjustments tbody tr").first
        expect(row).to_contain_text("+25")
        expect(row).to_contain_text("Goodwill for the May outage")
        assert_accessible(page)

        # A job charged through the API shows in the usage and the jobs of the cycle.
        job = submit_job(gateway_url, client["api_key"])
        assert job.status_code == 201, job.text
        page.reload()
        expect(usage).to_contain_text("1 used, 74 left")
        expect(page.locator("#jobs")).to_contain_text("1 job charged this cycle")
        expect(page.locator("#jobs")).to_contain_text(job.json()["job_id"])

        # Removing more than is left is refused with the page, and nothing changes.
        page.get_by_label("Amount").fill("-500")
        page.get_by_label("Reason").fill("too much")
        page.get_by_role("button", name="Adjust credits").click()
        expect(page.get_by_role("alert")).to_contain_text("Nothing was changed.")
        expect(usage).to_contain_text("1 used, 74 left")
        assert_accessible(page)
        page.goto(url)
        screenshot(page, "console-client")

        # The overview counts the job among this cycle's, and in today's bar of the chart.
        page.goto(f"{gateway_url}/billing/console/")
        jobs = page.locator(".figures li", has_text="jobs this cycle").locator(".figure")
        assert int(jobs.inner_text()) >= 1
        today = page.locator("svg.chart rect title").last.text_content() or ""
        assert not today.endswith(": 0 jobs")
        assert_accessible(page)
        screenshot(page, "console-overview")
        clean(visit)
    assert detail(gateway_url, client["client_id"])["credits_remaining"] == 74


def test_a_key_rotated_with_a_grace_period_is_shown_once_and_copied(gateway_url: str) -> None:
    client = new_client(gateway_url, "pro", "Rotate Corp")
    old_key = client["api_key"]
    url = f"{gateway_url}/billing/console/clients/{client['client_id']}"
    with offline_page(gateway_url, clipboard=True) as visit:
        page = visit.page
        sign_in(page, gateway_url)
        page.goto(url)
        row = page.locator("table.keys tbody tr").first
        expect(row.locator("[data-state]")).to_have_text("active")
        row.get_by_text("Manage").click()
        row.get_by_label("Rotate: the old key keeps working for").select_option("3600")
        row.get_by_label("New key's label").fill("rotated in the browser")
        row.get_by_role("button", name="Rotate key").click()

        expect(page.get_by_text("Copy this API key now")).to_be_visible()
        new_key = page.locator("#new-key").inner_text()
        assert KEY.fullmatch(new_key)
        assert new_key != old_key
        expect(page.get_by_text("keeps working until")).to_be_visible()
        page.get_by_role("button", name="Copy").click()
        expect(page.get_by_text("Copied")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == new_key
        assert_accessible(page)
        screenshot(page, "console-key-shown")

        # Both keys work now: the old one for the hour of grace.
        for key in (old_key, new_key):
            usage = httpx.get(f"{gateway_url}/api/billing/usage", headers={"X-Client-Key": key})
            assert usage.status_code == 200, usage.text

        page.get_by_role("link", name="Go to Rotate Corp").click()
        expect(page.get_by_role("heading", name="Rotate Corp")).to_be_visible()
        assert new_key not in page.content()
        assert old_key not in page.content()
        states = page.locator("table.keys tbody tr [data-state]").all_inner_texts()
        assert sorted(states) == ["active", "grace"]
        rotated = page.locator("table.keys tbody tr", has_text="rotated in the browser")
        expect(rotated.locator("[data-state]")).to_have_text("active")
        assert_accessible(page)
        clean(visit)


def test_a_deactivated_client_is_refused_until_it_is_reactivated(gateway_url: str) -> None:
    client = new_client(gateway_url, "pro", "Pause Corp")
    key = client["api_key"]
    url = f"{gateway_url}/billing/console/clients/{client['client_id']}"
    with offline_page(gateway_url) as visit:
        page = visit.page
        sign_in(page, gateway_url)
        page.goto(url)
        page.get_by_role("button", name="Deactivate client").click()
        expect(page.get_by_role("status")).to_have_text(
            "Client deactivated: its keys are refused from the next request."
        )
        expect(page.locator("[data-status]")).to_have_attribute("data-status", "inactive")
        expect(page.get_by_role("button", name="Deactivate client")).to_have_count(0)
        assert_accessible(page)
        refused = submit_job(gateway_url, key)
        assert refused.status_code == 401
        assert refused.json()["code"] == "invalid_api_key"

        page.goto(f"{gateway_url}/billing/console/clients?active=false")
        expect(page.get_by_role("link", name="Pause Corp")).to_be_visible()
        assert_accessible(page)

        page.goto(url)
        page.get_by_role("button", name="Reactivate client").click()
        expect(page.get_by_role("status")).to_have_text("Client reactivated: its keys work again.")
        expect(page.locator("[data-status]")).to_have_attribute("data-status", "active")
        assert submit_job(gateway_url, key).status_code == 201
        clean(visit)
    assert detail(gateway_url, client["client_id"])["active"] is True


def test_the_audit_log_shows_what_the_console_did(gateway_url: str) -> None:
    client = new_client(gateway_url, "pro", "Audit Corp")
    with offline_page(gateway_url) as visit:
        page = visit.page
        sign_in(page, gateway_url)
        page.goto(f"{gateway_url}/billing/console/clients/new")
        assert_accessible(page)
        page.goto(f"{gateway_url}/billing/console/clients/{client['client_id']}")
        page.get_by_label("Amount").fill("3")
        page.get_by_label("Reason").fill("audited <i>in</i> the browser")
        page.get_by_role("button", name="Adjust credits").click()
        expect(page.get_by_role("status")).to_have_text("Credits adjusted.")

        page.get_by_role("link", name="Audit log").click()
        expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
        expect(page.locator("#audit")).to_contain_text("console.sign_in")
        assert_accessible(page)
        screenshot(page, "console-audit")

        page.get_by_label("Client id").fill(client["client_id"])
        page.get_by_label("Action").select_option("client.credits")
        page.get_by_role("button", name="Filter").click()
        rows = page.locator("#audit tbody tr")
        expect(rows).to_have_count(1)
        expect(rows).to_contain_text("console")
        expect(rows).to_contain_text("audited <i>in</i> the browser")  # text, not markup
        assert page.locator("#audit i").count() == 0
        assert_accessible(page)
        clean(visit)
