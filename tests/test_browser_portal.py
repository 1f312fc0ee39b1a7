"""The client portal in a real browser (Debian's chromium through Playwright) against a real
gateway: a client signs in with the key the console copied for it, sees its usage change after
jobs (the credits held, each job's receipt), is signed out with the inactive message when the
operator deactivates it (and its key no longer signs in), is signed out when its key is
revoked; a hostile name shows as text, and a form with a wrong token or from another site
changes nothing. Every page visited has no serious
accessibility violation, asks nothing of another host, runs no failing script and has nothing
refused by its policy. The upgrade through Stripe is in tests/test_browser_checkout.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from conftest import ADMIN_TOKEN
from tests.browser import accessibility_violations, offline_page, screenshot
from tests.server import running_gateway
from tests.test_browser_console import HOSTILE, KEY, clean, create_client, sign_in
from tests.test_browser_console_flows import new_client, submit_job

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}
PORTAL = "/billing/portal"


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("portal")) as base:
        yield base


def portal_sign_in(page: Page, base: str, key: str) -> None:
    """Sign in through the portal's form; the dashboard is shown."""
    page.goto(f"{base}{PORTAL}/sign-in")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}{PORTAL}/")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def figures(page: Page) -> dict[str, str | None]:
    """The dashboard's figures, by their data attributes."""
    return {
        name: page.locator(f"[data-{name}]").first.get_attribute(f"data-{name}")
        for name in ("credits-left", "jobs", "status")
    }


def assert_accessible(page: Page) -> None:
    assert accessibility_violations(page) == [], page.url


def test_a_client_signs_in_with_its_copied_key_and_sees_jobs_change_its_usage(
    gateway_url: str,
) -> None:
    with offline_page(gateway_url, clipboard=True) as visit:
        page = visit.page
        sign_in(page, gateway_url)
        create_client(page, gateway_url, "Portal Corp", plan="starter")
        page.get_by_role("button", name="Copy").click()
        expect(page.get_by_text("Copied")).to_be_visible()
        key = page.evaluate("navigator.clipboard.readText()")
        assert KEY.fullmatch(key)

        page.goto(f"{gateway_url}{PORTAL}/sign-in")
        assert_accessible(page)
        screenshot(page, "portal-sign-in")
        portal_sign_in(page, gateway_url, key)
        expect(page.get_by_role("heading", name="Portal Corp", exact=True)).to_be_visible()
        assert figures(page) == {"credits-left": "50", "jobs": "0", "status": "active"}
        expect(page.get_by_text("No job this cycle yet.")).to_be_visible()
        assert_accessible(page)

        jobs = []
        for n in range(3):  # the starter plan runs two at once: the first two end
            jobs.append(submit_job(gateway_url, key))
            assert jobs[-1].status_code == 201, jobs[-1].text
            if n < 2:
                ended = httpx.post(
                    f"{gateway_url}/api/admin/jobs/{jobs[-1].json()['job_id']}/outcome",
                    headers=ADMIN,
                    json={"status": "succeeded"},
                )
                assert ended.status_code == 200, ended.text
        page.reload()
        assert figures(page) == {"credits-left": "47", "jobs": "3", "status": "active"}
        expect(page.get_by_text("3 jobs this cycle")).to_be_visible()
        listed = page.locator("table.jobs tbody code").all_inner_texts()
        assert sorted(listed) == sorted(job.json()["job_id"] for job in jobs)
        expect(page.locator("[data-held]")).to_have_attribute("data-held", "1")
        holding = page.locator("table.jobs tr.holding")
        expect(holding).to_contain_text(jobs[2].json()["job_id"])
        expect(holding).to_contain_text("Held until")
        expect(page.locator("table.jobs td.reason", has_text="succeeded: charged")).to_have_count(2)
        assert key not in page.content()
        assert key not in page.url
        assert_accessible(page)
        screenshot(page, "portal-dashboard")
        clean(visit)


def test_deactivating_the_client_signs_it_out_and_its_key_no_longer_signs_in(
    gateway_url: str,
) -> None:
    client = new_client(gateway_url, "pro", "Stopped Corp")
    with offline_page(gateway_url) as visit:
        page = visit.page
        portal_sign_in(page, gateway_url, client["api_key"])

        sign_in(page, gateway_url)  # the operator, in the same browser
        page.goto(f"{gateway_url}/billing/console/clients/{client['client_id']}")
        page.get_by_role("button", name="Deactivate client").click()
        expect(page.get_by_role("status")).to_contain_text("Client deactivated")

        page.goto(f"{gateway_url}{PORTAL}/")
        expect(page).to_have_url(f"{gateway_url}{PORTAL}/sign-in?reason=inactive")
        expect(page.get_by_role("status")).to_have_text(
            "This account is deactivated. Contact OpenClaw support."
        )
        assert_accessible(page)

        page.get_by_label("API key").fill(client["api_key"])
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Invalid or inactive API key")
        expect(page.get_by_label("API key")).to_have_value("")  # the key is not written back
        assert client["api_key"] not in page.content()
        assert_accessible(page)

        reactivated = httpx.post(
            f"{gateway_url}/api/admin/clients/{client['client_id']}/reactivate", headers=ADMIN
        )
        assert reactivated.status_code == 200
        portal_sign_in(page, gateway_url, client["api_key"])  # the refusal was the deactivation
        clean(visit)


def test_revoking_the_key_signs_the_portal_out(gateway_url: str) -> None:
    client = new_client(gateway_url, "pro", "Revoked Corp")
    keys_url = f"{gateway_url}/api/admin/clients/{client['client_id']}/keys"
    other = httpx.post(keys_url, headers=ADMIN, json={"label": "spare"}).json()
    with offline_page(gateway_url) as visit:
        page = visit.page
        portal_sign_in(page, gateway_url, client["api_key"])
        [first] = [k for k in httpx.get(keys_url, headers=ADMIN).json()["keys"] if not k["label"]]
        assert httpx.delete(f"{keys_url}/{first['key_id']}", headers=ADMIN).status_code == 200

        page.reload()
        expect(page).to_have_url(f"{gateway_url}{PORTAL}/sign-in?reason=key")
        expect(page.get_by_role("status")).to_contain_text("has been revoked or has expired")
        assert_accessible(page)
        page.get_by_label("API key").fill(client["api_key"])
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Invalid or inactive API key")

        portal_sign_in(page, gateway_url, other["api_key"])  # the client's other key still works
        expect(page.get_by_role("heading", name="Revoked Corp")).to_be_visible()
        clean(visit)


def test_a_hostile_name_shows_as_text(gateway_url: str) -> None:
    client = new_client(gateway_url, "free", HOSTILE)
    with offline_page(gateway_url) as visit:
        page = visit.page
        dialogs: list[str] = []

        def record(dialog: Dialog) -> None:  # an alert() that ran would land here
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", record)
        portal_sign_in(page, gateway_url, client["api_key"])
        expect(page.get_by_role("heading", name=HOSTILE)).to_be_visible()
        expect(page).to_have_title(re.compile(re.escape(HOSTILE)))
        assert page.locator("img[src=x]").count() == 0
        assert dialogs == []
        clean(visit)


def test_a_form_with_a_wrong_token_or_from_another_site_is_refused(gateway_url: str) -> None:
    client: dict[str, Any] = new_client(gateway_url, "free", "Forged Corp")
    with offline_page(gateway_url) as visit:
        page = visit.page
        portal_sign_in(page, gateway_url, client["api_key"])
        sign_out = page.locator(f"form[action='{PORTAL}/sign-out'] input[name=csrf_token]")
        sign_out.evaluate("input => { input.value = '0'.repeat(64); }")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("alert")).to_have_attribute("data-code", "csrf_refused")
        expect(page.get_by_role("heading", name="Something went wrong")).to_be_visible()
        assert_accessible(page)  # the portal's error page

        # A page of another site posting to the portal, with the client's browser.
        page.set_content(
            f'<form method="post" action="{gateway_url}{PORTAL}/sign-out">'
            '<input name="csrf_token" value="x"><button>go</button></form>'
        )
        page.get_by_role("button", name="go").click()
        page.wait_for_load_state()

        page.goto(f"{gateway_url}{PORTAL}/")  # still signed in after both
        expect(page.get_by_role("heading", name="Forged Corp")).to_be_visible()
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("status")).to_have_text("You have signed out.")
        assert visit.errors == []
        assert visit.elsewhere == []
