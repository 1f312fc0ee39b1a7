"""One client's console page in a real browser (Debian's chromium), against a running gateway:
under the pages' policy htmx pages the audit trail by swapping only its section, a key issued
through the form is shown once with a working copy button, and a plain form (revoking a key)
goes back to the page with its notice; the client's jobs show their holds and outcomes, and an
open job's end reported through its form settles it. Nothing is refused by the policy, no
script fails, nothing is fetched from another host and axe finds no serious violation."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from conftest import ADMIN_TOKEN
from tests.browser import accessibility_violations, offline_page, screenshot
from tests.factories import JOB_BODY, create_client
from tests.server import running_gateway

#: More events than the trail's first page (console_client.TRAIL_PAGE).
EVENTS = 30


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("console")) as base:
        yield base


def open_signed_in(page: Page, url: str) -> None:
    """Open the console page ``url``: the sign-in page first, then the page itself."""
    page.goto(url)
    page.fill("#admin_token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url("**/billing/console/")  # the overview, the console's home
    page.goto(url)


def test_the_client_page_works_in_a_browser(gateway_url: str) -> None:
    with httpx.Client(base_url=gateway_url) as api:
        client = create_client(api, "pro", name="Browser Corp")
        for n in range(EVENTS - 1):
            answer = api.put(
                f"/api/admin/clients/{client['client_id']}/credits",
                headers={"X-Auth-Token": ADMIN_TOKEN},
                json={"credits": 1, "reason": f"credit {n}"},
            )
            assert answer.status_code == 200, answer.text
    url = f"{gateway_url}/billing/console/clients/{client['client_id']}"
    with offline_page(gateway_url) as visit:
        page = visit.page
        open_signed_in(page, url)
        trail = page.locator("#audit-trail")
        assert "credit 28" in trail.inner_text()

        trail.get_by_role("link", name="Older").click()  # htmx: the section alone
        page.wait_for_function(
            "() => document.querySelector('#audit-trail').innerText.includes('client.create')"
        )
        assert page.url == url
        assert "credit 28" not in trail.inner_text()
        assert page.locator("h1").inner_text() == "Browser Corp"

        page.fill("#label", "from the browser")
        page.get_by_role("button", name="Issue key").click()
        page.wait_for_selector("#new-key")
        key = page.locator("#new-key").inner_text()
        assert key.startswith("oc_live_")
        page.get_by_role("button", name="Copy").click()
        page.wait_for_function("() => document.querySelector('.copied').textContent !== ''")

        page.get_by_role("link", name="Go to Browser Corp").click()
        assert key not in page.content()
        row = page.locator("tr", has_text="from the browser")
        row.locator("summary").click()
        row.get_by_role("button", name="Revoke key").click()
        page.wait_for_selector(".notice")
        assert "Key revoked" in page.locator(".notice").inner_text()
        assert (
            page.locator("tr", has_text="from the browser").locator("[data-state]").inner_text()
            == "revoked"
        )
    assert visit.refused == []
    assert visit.errors == []
    assert visit.elsewhere == []


def test_the_client_page_shows_holds_and_outcomes_in_a_browser(gateway_url: str) -> None:
    """Three jobs through intake (a credit held by each): one still reserved, one failed for
    the infrastructure (released), one succeeded (charged); then the operator settles the held
    one through the page's form."""
    with httpx.Client(base_url=gateway_url) as api:
        client = create_client(api, "pro", name="Outcome Corp")
        ids = []
        for _ in range(3):
            answer = api.post(
                "/api/intake", headers={"X-Client-Key": client["api_key"]}, json=JOB_BODY
            )
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["job_id"])
        held, failed, succeeded = ids
        for job_id, report in (
            (failed, {"status": "failed", "failure_class": "infrastructure"}),
            (succeeded, {"status": "succeeded"}),
        ):
            answer = api.post(
                f"/api/admin/jobs/{job_id}/outcome",
                headers={"X-Auth-Token": ADMIN_TOKEN},
                json=report,
            )
            assert answer.status_code == 200, answer.text
    url = f"{gateway_url}/billing/console/clients/{client['client_id']}"
    with offline_page(gateway_url) as visit:
        page = visit.page
        open_signed_in(page, url)
        expect(page.locator("dd[data-held]")).to_have_text("1 credit held by open jobs")
        jobs = page.locator("#outcomes table")
        expect(jobs.locator("tbody tr")).to_have_count(3)
        holding = jobs.locator("tr.holding")
        expect(holding).to_have_count(1)
        expect(holding).to_contain_text(held)
        expect(holding.locator(".badge")).to_have_text("holding")
        expect(holding).to_contain_text("Held until")
        expect(jobs.locator("tr", has_text=failed)).to_contain_text(
            "failed (infrastructure): released in full"
        )
        expect(jobs.locator("tr", has_text=succeeded)).to_contain_text("succeeded: charged")
        assert accessibility_violations(page) == []
        screenshot(page, "console-client-jobs")

        holding.locator("summary").click()
        holding.get_by_label("Ended as").select_option("failed")
        holding.get_by_label("Failure class (failed only)").select_option("client_error")
        holding.get_by_role("button", name="Settle job").click()
        expect(page.locator(".notice")).to_have_text("Job's end reported: its receipt is in Jobs.")
        expect(jobs.locator("tr.holding")).to_have_count(0)
        expect(jobs.locator("tr", has_text=held)).to_contain_text("failed (client_error): charged")
        expect(page.locator("dd[data-held]")).to_have_text("0 credits held by open jobs")
        assert accessibility_violations(page) == []
    assert visit.refused == []
    assert visit.errors == []
    assert visit.elsewhere == []
