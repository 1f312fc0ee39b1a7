"""The operator console in a real browser (Chromium through Playwright) against a real
gateway: the operator's flows, end to end, with no request leaving the gateway's host, no
script error, nothing refused by the pages' policy and no serious accessibility violation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from conftest import ADMIN_TOKEN
from tests.browser import Visit, accessibility_violations, offline_page, screenshot
from tests.server import running_gateway

KEY = re.compile(r"oc_live_[0-9a-f]{32}")
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("console")) as base:
        yield base


def clean(visit: Visit) -> None:
    """Nothing asked of another host, no script error, nothing the policy refused."""
    assert visit.elsewhere == []
    assert visit.errors == []
    assert visit.refused == []


def sign_in(page: Page, base: str, token: str = ADMIN_TOKEN) -> None:
    page.goto(f"{base}/billing/console/")
    expect(page).to_have_url(f"{base}/billing/console/sign-in")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def create_client(page: Page, base: str, name: str, plan: str = "pro") -> str:
    """Create a client through the form; returns its key, read from the page shown once."""
    page.goto(f"{base}/billing/console/clients/new")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Email").fill("ops@acmecorp.com")
    page.get_by_label("Plan").select_option(plan)
    page.get_by_role("button", name="Create client").click()
    expect(page.get_by_text("Copy this API key now")).to_be_visible()
    return page.locator("#new-key").inner_text()


def test_sign_in_create_a_client_and_copy_its_key(gateway_url: str) -> None:
    with offline_page(gateway_url, clipboard=True) as visit:
        page = visit.page
        page.goto(f"{gateway_url}/billing/console/sign-in")
        assert accessibility_violations(page) == []
        screenshot(page, "console-sign-in")
        sign_in(page, gateway_url)
        key = create_client(page, gateway_url, "Acme Corp")
        assert KEY.fullmatch(key)
        page.get_by_role("button", name="Copy").click()
        expect(page.get_by_text("Copied")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == key
        assert accessibility_violations(page) == []
        # The key works at once, and is never shown again.
        usage = httpx.get(f"{gateway_url}/api/billing/usage", headers={"X-Client-Key": key})
        assert usage.json()["name"] == "Acme Corp"
        page.get_by_role("link", name="Go to Acme Corp").click()
        expect(page.get_by_role("heading", name="Acme Corp")).to_be_visible()
        assert key not in page.content()
        page.goto(f"{gateway_url}/billing/console/clients")
        expect(page.get_by_role("link", name="Acme Corp")).to_be_visible()
        assert accessibility_violations(page) == []
        screenshot(page, "console-clients")
        clean(visit)


def test_a_hostile_name_shows_as_text(gateway_url: str) -> None:
    with offline_page(gateway_url) as visit:
        page = visit.page
        dialogs: list[str] = []

        def record(dialog: Dialog) -> None:  # an alert() that ran would land here
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", record)
        sign_in(page, gateway_url)
        create_client(page, gateway_url, HOSTILE)
        expect(page.get_by_role("heading", name=f"Client created: {HOSTILE}")).to_be_visible()
        page.goto(f"{gateway_url}/billing/console/clients")
        expect(page.get_by_role("link", name=HOSTILE)).to_be_visible()
        page.get_by_role("link", name=HOSTILE).click()
        expect(page.get_by_role("heading", name=HOSTILE)).to_be_visible()
        assert page.locator("img[src=x]").count() == 0
        assert dialogs == []
        clean(visit)


def test_a_wrong_token_is_refused_and_sign_out_ends_the_session(gateway_url: str) -> None:
    with offline_page(gateway_url) as visit:
        page = visit.page
        page.goto(f"{gateway_url}/billing/console/sign-in")
        page.get_by_label("Admin token").fill("not-the-token-0123456789")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Invalid admin token")
        assert accessibility_violations(page) == []
        sign_in(page, gateway_url)
        cookies = page.context.cookies()
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_text("You have signed out.")).to_be_visible()
        # The cookie as it was before signing out opens nothing any more.
        page.context.add_cookies(cookies)  # type: ignore[arg-type]
        page.goto(f"{gateway_url}/billing/console/clients")
        expect(page).to_have_url(re.compile(r"/billing/console/sign-in\?reason=expired$"))
        clean(visit)


def test_a_form_posted_from_another_site_is_refused(gateway_url: str, tmp_path: Path) -> None:
    """A page of another origin that posts to the console with the operator's cookie: the
    cookie is SameSite=Strict (not sent), and the post has no CSRF token anyway."""
    with offline_page(gateway_url) as visit:
        page = visit.page
        sign_in(page, gateway_url)
        before = httpx.get(
            f"{gateway_url}/api/admin/clients", headers={"X-Auth-Token": ADMIN_TOKEN}
        ).json()["total"]
        page.set_content(
            f'<form method="post" action="{gateway_url}/billing/console/clients">'
            '<input name="name" value="Forged"><input name="email" value="f@example.com">'
            '<input name="plan" value="enterprise"><button>go</button></form>'
        )
        page.get_by_role("button", name="go").click()
        page.wait_for_load_state()
        after = httpx.get(
            f"{gateway_url}/api/admin/clients", headers={"X-Auth-Token": ADMIN_TOKEN}
        ).json()["total"]
        assert after == before
        assert visit.errors == []


def test_the_accessibility_check_can_fail(gateway_url: str) -> None:
    """Guards the checks above: axe-core does report a serious violation when there is one."""
    with offline_page(gateway_url) as visit:
        visit.page.set_content('<html lang="en"><body><img src="data:,"></body></html>')
        found = accessibility_violations(visit.page)
    assert sorted(line.split(" ")[0] for line in found) == ["document-title", "image-alt"]


def test_the_clients_search_filters_as_you_type(gateway_url: str) -> None:
    """htmx sends the form's empty fields too; the table follows the search box, the status
    menu narrows it, and the page's address keeps the filters."""
    with offline_page(gateway_url) as visit:
        page = visit.page
        sign_in(page, gateway_url)
        create_client(page, gateway_url, "Zebra Search Co", plan="starter")
        create_client(page, gateway_url, "Yak Search Co", plan="pro")
        page.goto(f"{gateway_url}/billing/console/clients")
        rows = page.locator("table.clients tbody tr")
        with page.expect_response(lambda r: "/billing/console/clients?" in r.url) as found:
            page.get_by_label("Search").fill("zebra search")
        assert found.value.status == 200
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("Zebra Search Co")
        expect(page).to_have_url(re.compile(r"q=zebra(\+|%20)search"))
        page.get_by_label("Search").fill("search co")
        expect(rows).to_have_count(2)
        page.get_by_label("Plan").select_option("pro")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("Yak Search Co")
        assert accessibility_violations(page) == []
        clean(visit)
