"""One client's console page in a real browser (Debian's chromium), against a running gateway:
under the pages' policy htmx pages the audit trail by swapping only its section, a key issued
through the form is shown once with a working copy button, and a plain form (revoking a key)
goes back to the page with its notice. Nothing is refused by the policy, no script fails and
nothing is fetched from another host."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from conftest import ADMIN_TOKEN
from tests.browser import offline_page
from tests.factories import create_client
from tests.server import running_gateway

#: More events than the trail's first page (console_client.TRAIL_PAGE).
EVENTS = 30


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("console")) as base:
        yield base


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
        page.goto(url)
        page.fill("#admin_token", ADMIN_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url("**/billing/console/")  # the overview, the console's home
        page.goto(url)
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
