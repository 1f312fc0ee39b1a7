"""The operator's reads over HTTP: ``GET /api/admin/clients`` with ``search``, ``status`` and
``sort`` (bounded: 422 otherwise; the earlier parameters and defaults as they were) and
``GET /api/admin/overview``, on the data of tests/console_data.py, whose answers are worked out
there by hand."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN_TOKEN, Clock
from openclaw_billing.plans import PLANS
from openclaw_billing.service import BillingService
from tests.console_data import (
    BY_CREDITS_LEFT,
    BY_NAME,
    BY_USAGE,
    CREDITS_USED,
    FIRST_DAY,
    IDS,
    JOBS_ON,
    JOBS_THIS_CYCLE,
    LAST_DAY,
    NOW,
    PLAN_FIGURES,
    build,
    days,
)

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}


@pytest.fixture
def built(http: TestClient, service: BillingService, clock: Clock) -> TestClient:
    build(service.store)
    clock.now = NOW
    return http


def listing(http: TestClient, **params: Any) -> dict[str, Any]:
    response = http.get(f"/api/admin/clients?{urlencode(params)}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(http: TestClient, **params: Any) -> tuple[list[str], int]:
    body = listing(http, **params)
    return [c["client_id"] for c in body["clients"]], body["total"]


def test_search_status_and_sort(built: TestClient) -> None:
    assert ids(built, search="acme") == (["c01", "c05", "acme-8"], 3)
    assert ids(built, search="ACME") == (["c01", "c05"], 2)
    assert ids(built, search="%") == (["c06"], 1)
    assert ids(built, search="_") == (["c02", "c07"], 2)
    assert ids(built, status="past_due") == (["c05"], 1)
    assert ids(built, status="at_limit") == (["c02"], 1)
    assert ids(built, status="inactive") == (["c04"], 1)
    assert ids(built, sort="name") == (BY_NAME, 10)
    assert ids(built, sort="credits_left") == (BY_CREDITS_LEFT, 10)
    assert ids(built, sort="newest", limit=2) == (IDS[::-1][:2], 10)
    assert ids(built, sort="usage", offset=3, limit=3) == (BY_USAGE[3:6], 10)
    assert ids(built, search="seas", plan="pro", active="true", sort="name") == (
        ["acme-8", "c09"],
        2,
    )
    body = listing(built, status="active", sort="spend", offset=7, limit=5)
    assert (body["total"], body["offset"], body["limit"]) == (9, 7, 5)
    assert [c["client_id"] for c in body["clients"]] == ["c05", "c07"]


def test_the_earlier_parameters_and_defaults_are_as_they_were(built: TestClient) -> None:
    body = listing(built)
    assert [c["client_id"] for c in body["clients"]] == IDS
    assert (body["total"], body["offset"], body["limit"]) == (10, 0, 100)
    assert ids(built, search="") == (IDS, 10)  # an empty search field finds everyone
    assert ids(built, plan="pro", active="true", limit=2) == (["c01", "c06"], 5)
    assert ids(built, active="false") == (["c04"], 1)
    assert ids(built, unknown="ignored") == (IDS, 10)
    keys = set(body["clients"][0])
    assert "api_key" not in keys
    assert "api_key_hash" not in keys


@pytest.mark.parametrize(
    "params",
    [
        {"status": "gold"},
        {"status": "PAST_DUE"},
        {"sort": "price"},
        {"sort": ""},
        {"search": "x" * 201},
        {"search": "a\nb"},
        {"search": "a\x00b"},
        {"search": "\u202eevil"},
        {"offset": -1},
        {"limit": 0},
        {"limit": 1001},
        {"active": "maybe"},
    ],
)
def test_bad_list_parameters_are_a_422(built: TestClient, params: dict[str, Any]) -> None:
    response = built.get(f"/api/admin/clients?{urlencode(params)}", headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_a_search_of_200_characters_is_fine(built: TestClient) -> None:
    assert ids(built, search="é" * 200) == ([], 0)


def test_the_overview(built: TestClient) -> None:
    response = built.get("/api/admin/overview", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["at"] == NOW.isoformat()
    assert (body["clients"], body["active_clients"], body["inactive_clients"]) == (10, 9, 1)
    prices = {plan: PLANS[plan].price_usd for plan, *_ in PLAN_FIGURES}
    assert body["plans"] == [
        {
            "plan": plan.value,
            "active_clients": active,
            "inactive_clients": inactive,
            "paying_subscriptions": paying,
            "price_usd": prices[plan],
            "mrr_usd": None if (price := prices[plan]) is None else paying * price,
        }
        for plan, active, inactive, paying in PLAN_FIGURES
    ]
    assert body["mrr_usd"] == 2 * 49 + 199
    assert body["unpriced_subscriptions"] == 0
    assert (body["jobs_this_cycle"], body["credits_used_this_cycle"]) == (
        JOBS_THIS_CYCLE,
        CREDITS_USED,
    )
    assert (body["clients_at_limit"], body["clients_past_due"]) == (1, 1)
    assert body["jobs_by_day"] == [
        {"day": day.isoformat(), "jobs": JOBS_ON.get(day, 0)} for day in days(FIRST_DAY, LAST_DAY)
    ]


def test_the_overview_needs_the_admin_token(built: TestClient) -> None:
    for headers in ({}, {"X-Auth-Token": "wrong"}):
        response = built.get("/api/admin/overview", headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_admin_token"
