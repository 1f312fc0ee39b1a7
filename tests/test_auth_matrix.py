"""docs/ARCHITECTURE.md R11-R14 over HTTP: each bad key or token is one identical 401, never 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import gateway
from conftest import ADMIN_TOKEN
from openclaw_billing.settings import get_settings
from tests.factories import create_client, submit_job
from tests.openapi_routes import operations

INVALID_KEY_BODY = {
    "code": "invalid_api_key",
    "message": "Invalid or inactive API key",
    "detail": "Invalid or inactive API key",
}
#: Every route that takes a client key, and every admin route, from the app's OpenAPI document
#: (tests/openapi_routes.py): a route added later is in the matrix without editing this file.
_OPERATIONS = operations(gateway.create_app())
CLIENT_ROUTES = [(op.method, op.path, op.sample_body()) for op in _OPERATIONS if op.is_client]
ADMIN_ROUTES = [(op.method, op.path, op.sample_body()) for op in _OPERATIONS if op.is_admin]


def _url(path: str, client_id: str) -> str:
    """A route's path for ``client_id`` (well-formed ids for the other parameters: the
    credentials are refused before any id is looked at)."""
    return path.format(client_id=client_id, key_id="key_" + "0" * 12, job_id="job-1")


def test_the_matrix_covers_every_known_route() -> None:
    """The enumeration is not empty or partial (a check of the check)."""
    client = {(m, p) for m, p, _ in CLIENT_ROUTES}
    admin = {(m, p) for m, p, _ in ADMIN_ROUTES}
    assert {
        ("GET", "/api/billing/usage"),
        ("POST", "/api/billing/quote"),
        ("POST", "/api/billing/checkout"),
        ("POST", "/api/billing/portal"),
        ("POST", "/api/intake"),
        ("GET", "/api/jobs"),
        ("GET", "/api/jobs/{job_id}"),
    } <= client
    assert {
        ("POST", "/api/admin/clients"),
        ("GET", "/api/admin/clients"),
        ("GET", "/api/admin/clients/{client_id}"),
        ("PUT", "/api/admin/clients/{client_id}/credits"),
        ("DELETE", "/api/admin/clients/{client_id}"),
        ("POST", "/api/admin/clients/{client_id}/reactivate"),
    } <= admin
    assert not client & admin


def _bad_client_keys(http: TestClient) -> dict[str, dict[str, Any]]:
    revoked = create_client(http, "pro")
    http.delete(f"/api/admin/clients/{revoked['client_id']}", headers={"X-Auth-Token": ADMIN_TOKEN})
    good = create_client(http, "pro")["api_key"]
    return {
        "no header": {},
        "empty": {"X-Client-Key": ""},
        "wrong prefix": {"X-Client-Key": "oc_test_" + good[8:]},
        "31 hex": {"X-Client-Key": good[:-1]},
        "33 hex": {"X-Client-Key": good + "a"},
        "uppercase hex": {"X-Client-Key": "oc_live_" + good[8:].upper()},
        "unknown": {"X-Client-Key": "oc_live_" + "f" * 32},
        "deactivated": {"X-Client-Key": revoked["api_key"]},
        "non-ascii": {"X-Client-Key": ("oc_live_" + "é" * 32).encode("utf-8")},
        "16 kB": {"X-Client-Key": "oc_live_" + "a" * 16_000},
        "admin token as key": {"X-Client-Key": ADMIN_TOKEN},
        "key as bearer only": {"Authorization": f"Bearer {good}"},
    }


@pytest.mark.parametrize(("method", "path", "body"), CLIENT_ROUTES)
def test_r11_every_bad_client_key_gets_one_identical_401(
    http: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    for label, headers in _bad_client_keys(http).items():
        response = http.request(method, _url(path, "x"), headers=headers, json=body)
        assert response.status_code == 401, label
        assert response.json() == INVALID_KEY_BODY, label


def test_r11_a_key_in_the_query_string_is_not_accepted(http: TestClient) -> None:
    key = create_client(http, "pro")["api_key"]
    for param in ("api_key", "X-Client-Key", "key"):
        response = http.get("/api/billing/usage", params={param: key})
        assert response.status_code == 401
        assert response.json()["code"] == "credentials_in_query"  # refused, never used
        assert "X-Client-Key header" in response.json()["message"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_r12_every_bad_admin_token_gets_401(
    http: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    client = create_client(http, "pro")
    url = _url(path, client["client_id"])
    bad: dict[str, dict[str, Any]] = {
        "none": {},
        "empty": {"X-Auth-Token": ""},
        "client key": {"X-Auth-Token": client["api_key"]},
        "client key in its own header": {"X-Client-Key": client["api_key"]},
        "wrong": {"X-Auth-Token": "wrong-token-wrong-token-wrong"},
        "one char off": {"X-Auth-Token": ADMIN_TOKEN[:-1] + "X"},
        "first char off": {"X-Auth-Token": "X" + ADMIN_TOKEN[1:]},
        "case changed": {"X-Auth-Token": ADMIN_TOKEN.upper()},
        "prefix": {"X-Auth-Token": ADMIN_TOKEN[:-1]},
        "longer": {"X-Auth-Token": ADMIN_TOKEN + "0"},
        "non-ascii": {"X-Auth-Token": "t\u00f6ken-\u00e9\u00e9\u00e9".encode()},
        "oversized": {"X-Auth-Token": "a" * 16_000},
    }
    for label, headers in bad.items():
        response = http.request(method, url, headers=headers, json=body)
        assert response.status_code == 401, label
        assert response.json()["code"] == "invalid_admin_token", label
    listed = http.get("/api/admin/clients", headers={"X-Auth-Token": ADMIN_TOKEN}).json()
    assert listed["total"] == 1  # nothing was created, and the client is still active
    assert listed["clients"][0]["active"] is True


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_admin_routes_are_closed_without_a_configured_token(
    monkeypatch: pytest.MonkeyPatch, env: Path, method: str, path: str, body: dict[str, Any] | None
) -> None:
    import gateway

    monkeypatch.delenv("OPENCLAW_ADMIN_TOKEN")
    get_settings.cache_clear()
    with TestClient(gateway.create_app()) as http:
        for headers in ({}, {"X-Auth-Token": ADMIN_TOKEN}, {"X-Auth-Token": ""}):
            response = http.request(method, _url(path, "x"), headers=headers, json=body)
            assert response.status_code == 503
            assert response.json()["code"] == "admin_token_not_configured"


def test_r13_a_client_cannot_reach_another_clients_job(http: TestClient) -> None:
    a = create_client(http, "pro")
    b = create_client(http, "pro")
    job_b = submit_job(http, b["api_key"]).json()["job_id"]
    response = http.get(f"/api/jobs/{job_b}", headers={"X-Client-Key": a["api_key"]})
    assert response.status_code == 404
    usage_a = http.get("/api/billing/usage", headers={"X-Client-Key": a["api_key"]}).json()
    assert usage_a["client_id"] == a["client_id"]
    usage_b = http.get("/api/billing/usage", headers={"X-Client-Key": b["api_key"]}).json()
    assert usage_b["credits_remaining"] == 199


@pytest.mark.parametrize(
    "extra",
    [
        {"credits_remaining": 10**6},
        {"plan": "enterprise", "client_id": "mine"},
        {"active": True},
        {"api_key": "oc_live_" + "a" * 32},
    ],
)
def test_r14_mass_assignment_is_rejected(http: TestClient, extra: dict[str, Any]) -> None:
    client = create_client(http, "free")
    headers = {"X-Client-Key": client["api_key"], "X-Auth-Token": ADMIN_TOKEN}
    created = http.post(
        "/api/admin/clients",
        headers=headers,
        json={"name": "N", "email": "n@acmecorp.com", "plan": "free", **extra},
    )
    assert created.status_code == 422
    credits = http.put(
        f"/api/admin/clients/{client['client_id']}/credits",
        headers=headers,
        json={"credits": 1, "reason": "r", **extra},
    )
    assert credits.status_code == 422
    checkout = http.post("/api/billing/checkout", headers=headers, json={"plan": "pro", **extra})
    assert checkout.status_code == 422
    usage = http.get("/api/billing/usage", headers=headers).json()
    assert usage["plan"] == "free"
    assert usage["credits_remaining"] == 5
