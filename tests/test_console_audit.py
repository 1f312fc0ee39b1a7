"""The console's audit log page over HTTP (openclaw_billing/web/console_audit.py): every
event newest first, the filters of GET /api/admin/audit (client, action, since and until in
UTC) giving the same events as that route, refusals, and pages (htmx swapping the table)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Clock
from openclaw_billing.service import BillingService
from openclaw_billing.web import console_audit
from tests.factories import create_client
from tests.test_console import CONSOLE, assert_safe_page, sign_in

AUDIT = f"{CONSOLE}/audit"
_ROW = re.compile(r"<tr>\s*<td><time datetime=\"([^\"]+)\">.*?<code>([a-z_.]+)</code>", re.S)


def listed(page: str) -> list[tuple[str, str]]:
    """(time, action) of each row the page lists, in its order."""
    return _ROW.findall(page)


def api_events(http: TestClient, admin_headers: dict[str, str], **query: Any) -> list[Any]:
    answer = http.get("/api/admin/audit", params=query, headers=admin_headers)
    assert answer.status_code == 200, answer.text
    return [(e["at"], e["action"]) for e in answer.json()["events"]]


@pytest.fixture
def story(http: TestClient, service: BillingService, clock: Clock) -> dict[str, str]:
    """Client A created at 10:30 UTC, B at 11:30, A's credits at 12:30 (2026-02-19)."""
    sign_in(http)
    first = create_client(http, name="A", max_active_jobs=None)["client_id"]
    clock.advance(hours=1)
    second = create_client(http, name="B", max_active_jobs=None)["client_id"]
    clock.advance(hours=1)
    service.add_credits(first, 5, "promo")
    return {"first": first, "second": second}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["client.credits", "client.create", "client.create", "console.sign_in"]),
        ({"client_id": "{first}"}, ["client.credits", "client.create"]),
        ({"client_id": "{second}"}, ["client.create"]),
        ({"action": "client.create"}, ["client.create", "client.create"]),
        ({"since": "2026-02-19T11:00", "until": "2026-02-19T12:00"}, ["client.create"]),
        ({"since": "2026-02-19T11:30:00", "action": "client.create"}, ["client.create"]),
        ({"until": "2026-02-19T11:30"}, ["client.create"]),  # until is exclusive
        ({"client_id": "", "action": "", "since": "", "until": ""}, None),  # no filter
        ({"client_id": "no-such-client"}, []),
    ],
    ids=["all", "client_a", "client_b", "action", "range", "since", "until", "empty", "unknown"],
)
def test_the_filters_give_the_apis_events_newest_first(
    http: TestClient,
    admin_headers: dict[str, str],
    story: dict[str, str],
    query: dict[str, str],
    expected: list[str] | None,
) -> None:
    query = {name: value.format(**story) for name, value in query.items()}
    page = http.get(AUDIT, params=query)
    assert page.status_code == 200
    rows = listed(page.text)
    api_query = {name: value for name, value in query.items() if value}
    if expected is None:
        expected = [action for _, action in api_events(http, admin_headers)]
    if "console.sign_in" not in expected:
        assert [action for _, action in rows] == expected
    else:  # the sign-in is recorded at the wall clock's time, not the test's
        assert sorted(action for _, action in rows) == sorted(expected)
    assert rows == api_events(http, admin_headers, **api_query)
    assert f"{len(rows)} event{'' if len(rows) == 1 else 's'}, newest first" in page.text


def test_the_form_keeps_the_filters_and_says_times_are_utc(
    http: TestClient, story: dict[str, str]
) -> None:
    page = http.get(
        AUDIT,
        params={
            "client_id": story["first"],
            "action": "client.credits",
            "since": "2026-02-19T12:00",
            "until": "2026-02-19T13:00:30",
        },
    ).text
    assert f'name="client_id" value="{story["first"]}"' in page
    assert '<option value="client.credits" selected>' in page
    assert 'name="since" type="datetime-local" step="1" value="2026-02-19T12:00:00"' in page
    assert 'name="until" type="datetime-local" step="1" value="2026-02-19T13:00:30"' in page
    assert "Since (UTC)" in page
    assert [action for _, action in listed(page)] == ["client.credits"]
    assert '<a href="/billing/console/audit" aria-current="page">Audit log</a>' in page


def test_a_range_that_ends_before_it_starts_is_refused_on_the_page(
    http: TestClient, story: dict[str, str]
) -> None:
    page = http.get(AUDIT, params={"since": "2026-02-19T12:00", "until": "2026-02-19T11:00"})
    assert page.status_code == 422
    assert '<p class="alert" role="alert" data-code="invalid_request">' in page.text
    assert 'value="2026-02-19T12:00:00"' in page.text  # the form, to correct it
    assert listed(page.text) == []
    assert_safe_page(page)


@pytest.mark.parametrize(
    "query",
    [
        {"action": "client.delete"},
        {"since": "yesterday"},
        {"since": "0001-01-01T00:00"},
        {"client_id": "a\nb"},
        {"client_id": "x" * 101},
        {"offset": "-1"},
        {"offset": "1000000001"},
    ],
)
def test_a_bad_filter_is_a_422_page(http: TestClient, query: dict[str, str]) -> None:
    sign_in(http)
    page = http.get(AUDIT, params=query)
    assert page.status_code == 422
    assert 'data-code="validation_error"' in page.text


def test_pages_carry_the_filters_and_htmx_gets_the_table_alone(
    http: TestClient, service: BillingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_audit, "AUDIT_PAGE", 4)
    sign_in(http)
    client_id = create_client(http, max_active_jobs=None)["client_id"]
    other = create_client(http, max_active_jobs=None)["client_id"]
    for n in range(10):
        service.add_credits(client_id, 1, f"credit {n}")
        service.add_credits(other, 1, f"other {n}")
    query = f"client_id={client_id}&action=client.credits"
    seen: list[str] = []
    url = f"{AUDIT}?{query}"
    for _ in range(3):
        part = http.get(url, headers={"HX-Request": "true"})
        assert "<html" not in part.text
        seen += re.findall(r"reason: (credit \d)", part.text)
        older = re.search(r'<a href="([^"]+)" hx-get="\1" hx-target="#audit">Older</a>', part.text)
        if older is None:
            break
        url = older.group(1).replace("&amp;", "&")
        assert url.startswith(f"{AUDIT}?{query}&offset=")
    assert seen == [f"credit {n}" for n in reversed(range(10))]
    whole = http.get(f"{AUDIT}?{query}&offset=8")
    assert "<html" in whole.text
    assert 'id="audit"' in whole.text
    assert re.findall(r"reason: (credit \d)", whole.text) == ["credit 1", "credit 0"]
    assert "9 to 10 of 10" in whole.text
    newer = f"{AUDIT}?{query}&offset=4".replace("&", "&amp;")
    assert f'<a href="{newer}" hx-get="{newer}" hx-target="#audit">Newer</a>' in whole.text
