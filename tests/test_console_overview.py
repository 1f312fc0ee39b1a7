"""The console's overview (its home) and its clients list: the figures of the service's
overview as the page shows them, and search, filters, orders and pages through the service's
client query."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store.query import ClientQuery
from openclaw_billing.web.console import PAGE_SIZE
from tests.console_pages import ESCAPED, HOSTILE, subscribe
from tests.factories import create_client
from tests.test_console import CONSOLE, assert_safe_page, sign_in

_NAMES = re.compile(r'<td><a href="/billing/console/clients/[^"]+">([^<]+)</a></td>')


def names(page: str) -> list[str]:
    """The client names of a clients table, in the order shown."""
    return _NAMES.findall(page)


@pytest.fixture
def console(http: TestClient, service: BillingService) -> TestClient:
    """A signed-in console over four clients: Acme (pro, 2 jobs, paying), Beta (starter,
    at its limit after 50 jobs), Gamma (free, past due), Delta (enterprise, deactivated)."""
    sign_in(http)
    acme = create_client(http, "pro", name="Acme Corp")["client_id"]
    beta = create_client(http, "starter", name="Beta Labs")["client_id"]
    gamma = create_client(http, "free", name="Gamma Inc")["client_id"]
    delta = create_client(http, "enterprise", name="Delta LLC")["client_id"]
    for n in range(2):
        service.charge(acme, job_id=f"acme-{n}")
    for n in range(50):
        service.charge(beta, job_id=f"beta-{n}")
    subscribe(service, acme, "active")
    subscribe(service, gamma, "past_due")
    service.set_active(delta, False)
    return http


def test_the_overview_is_the_consoles_home(console: TestClient, service: BillingService) -> None:
    page = console.get(f"{CONSOLE}/")
    assert page.status_code == 200
    assert_safe_page(page, shown_text=ESCAPED)
    overview = service.overview()
    assert (overview.jobs_this_cycle, overview.at_limit, overview.past_due) == (52, 1, 1)
    text = re.sub(r"\s+", " ", page.text)
    assert '<span class="figure">3</span> active clients <span class="hint">of 4</span>' in text
    # Acme pays for pro ($199); Gamma's past-due subscription is on the free plan ($0).
    assert '<span class="figure">$199</span> monthly recurring revenue' in text
    assert '<span class="figure">52</span> jobs this cycle' in text
    assert "52 credits used" in text
    for status in ("at_limit", "past_due"):
        link = f'<a href="/billing/console/clients?status={status}">'
        assert f'{link}<span class="figure">1</span>' in text
    assert "<td>1</td><td>0</td><td>1</td> <td>$199</td> <td>$199</td>" in text  # the pro row
    assert "<td>0</td><td>1</td><td>0</td> <td>Custom</td> <td>—</td>" in text  # enterprise


def test_the_chart_has_a_bar_per_day_with_todays_jobs(console: TestClient) -> None:
    page = console.get(f"{CONSOLE}/").text
    bars = re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"', page)
    titles = re.findall(r"<title>([^<]+): (\d+) jobs</title>", page)
    assert len(bars) == len(titles) == 30
    today = datetime.now(UTC).strftime("%b %d")
    assert titles[-1] == (today, "52")
    assert float(bars[-1]) > 0
    assert all(float(h) == 0 for h in bars[:-1])  # every job was charged today
    assert [int(jobs) for _, jobs in titles[:-1]] == [0] * 29


def test_the_overview_needs_a_session(http: TestClient) -> None:
    answer = http.get(f"{CONSOLE}/", follow_redirects=False)
    assert answer.headers["location"] == f"{CONSOLE}/sign-in"


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("", ["Acme Corp", "Beta Labs", "Gamma Inc", "Delta LLC"]),
        ("q=acme+CORP", ["Acme Corp"]),
        ("q=acme+corp&plan=&status=&sort=created", ["Acme Corp"]),  # the form's empty fields
        ("q=&plan=&status=&sort=", ["Acme Corp", "Beta Labs", "Gamma Inc", "Delta LLC"]),
        ("q=LABS", ["Beta Labs"]),
        ("q=acmecorp.com", ["Acme Corp", "Beta Labs", "Gamma Inc", "Delta LLC"]),
        ("plan=starter", ["Beta Labs"]),
        ("status=inactive", ["Delta LLC"]),
        ("status=at_limit", ["Beta Labs"]),
        ("status=past_due", ["Gamma Inc"]),
        ("sort=name", ["Acme Corp", "Beta Labs", "Delta LLC", "Gamma Inc"]),
        ("sort=usage", ["Beta Labs", "Acme Corp", "Gamma Inc", "Delta LLC"]),
        ("sort=newest", ["Delta LLC", "Gamma Inc", "Beta Labs", "Acme Corp"]),
        ("q=a&plan=pro&status=active", ["Acme Corp"]),
        ("q=ACMECORP.COM&status=active", ["Acme Corp", "Beta Labs", "Gamma Inc"]),
        ("q=%25", []),  # a literal percent sign, not a wildcard
    ],
)
def test_search_filters_and_orders(console: TestClient, query: str, shown: list[str]) -> None:
    page = console.get(f"{CONSOLE}/clients?{query}")
    assert page.status_code == 200
    assert names(page.text) == shown


def test_an_id_prefix_finds_its_client(console: TestClient, service: BillingService) -> None:
    [acme], _ = service.list_clients(ClientQuery(search="Acme Corp"))
    page = console.get(f"{CONSOLE}/clients", params={"q": acme.client_id[:8]})
    assert names(page.text) == ["Acme Corp"]


def test_htmx_gets_the_table_alone_and_history_gets_the_page(console: TestClient) -> None:
    fragment = console.get(f"{CONSOLE}/clients?q=beta", headers={"HX-Request": "true"})
    assert "<form" not in fragment.text
    assert names(fragment.text) == ["Beta Labs"]
    restore = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    whole = console.get(f"{CONSOLE}/clients?q=beta", headers=restore)
    assert '<form method="get" action="/billing/console/clients"' in whole.text


def test_pages_keep_their_filters(http: TestClient, service: BillingService) -> None:
    sign_in(http)
    for n in range(PAGE_SIZE + 5):
        service.create_client(name=f"Client {n:03d}", email=f"c{n}@example.com", plan=PlanId.PRO)
    service.create_client(name="Other", email="o@example.com", plan=PlanId.FREE)
    first = http.get(f"{CONSOLE}/clients?plan=pro&sort=name")
    assert names(first.text)[:2] == ["Client 000", "Client 001"]
    assert f"{PAGE_SIZE + 5} clients, 1 to {PAGE_SIZE} shown" in first.text
    [next_link] = re.findall(r'<a href="([^"]+)" hx-get="[^"]+" hx-target="#clients"', first.text)
    assert next_link == f"/billing/console/clients?plan=pro&amp;sort=name&amp;offset={PAGE_SIZE}"
    second = http.get(next_link.replace("&amp;", "&"))
    assert names(second.text) == [f"Client {n:03d}" for n in range(PAGE_SIZE, PAGE_SIZE + 5)]


@pytest.mark.parametrize(
    "query",
    ["sort=fanciest", "status=happy", "plan=gold", "offset=-1", "q=" + "x" * 201, "q=a%0Ab"],
)
def test_a_bad_query_is_a_422_page(console: TestClient, query: str) -> None:
    answer = console.get(f"{CONSOLE}/clients?{query}")
    assert answer.status_code == 422
    assert 'data-code="validation_error"' in answer.text


def test_the_search_box_echoes_text_escaped(console: TestClient) -> None:
    page = console.get(f"{CONSOLE}/clients", params={"q": HOSTILE})
    assert HOSTILE not in page.text
    assert f'value="{ESCAPED}"' in page.text
    assert_safe_page(page, shown_text=ESCAPED)
