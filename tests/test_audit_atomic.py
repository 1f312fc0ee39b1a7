"""R26 over HTTP, on every backend: an admin action whose audit event cannot be written answers
503 and changes nothing; retried once the log is back, it is done once and recorded once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import gateway
from openclaw_billing.service import get_service, set_service
from openclaw_billing.settings import get_settings
from openclaw_billing.store import Store
from tests.audit_faults import audit_refused
from tests.backends import store_url_fixture  # noqa: F401 - the fixture "store_url"


class Api:
    def __init__(self, http: TestClient, headers: dict[str, str], store: Store, url: str) -> None:
        self.http, self.headers, self.store, self.url = http, headers, store, url

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        return self.http.request(method, f"/api/admin{path}", headers=self.headers, json=body)

    def view(self, cid: str | None) -> Any:
        """What the admin API shows of the clients (and the one client): nothing else moves."""
        listing = self.admin("GET", "/clients").json()
        if cid is None:
            return listing
        return listing, self.admin("GET", f"/clients/{cid}").json(), self.keys(cid)

    def keys(self, cid: str) -> list[dict[str, Any]]:
        keys: list[dict[str, Any]] = self.admin("GET", f"/clients/{cid}/keys").json()["keys"]
        return keys

    def audit(self, cid: str) -> list[tuple[str, dict[str, Any]]]:
        page = self.admin("GET", "/audit", None).json()["events"]
        return [(e["action"], e["detail"]) for e in reversed(page) if e["client_id"] == cid]


@pytest.fixture
def api(
    store_url: str, env: Path, monkeypatch: pytest.MonkeyPatch, admin_headers: dict[str, str]
) -> Iterator[Api]:
    monkeypatch.setenv("OPENCLAW_BILLING_DB", store_url)
    get_settings.cache_clear()
    set_service(None)
    with TestClient(gateway.create_app()) as http:
        yield Api(http, admin_headers, get_service().store, store_url)
    set_service(None)


def refused_then_done(api: Api, cid: str | None, method: str, path: str, body: Any = None) -> Any:
    """The request with the audit log down: 503 and nothing changed. Then the retry: 2xx."""
    before = api.view(cid)
    with audit_refused(api.store, api.url):
        answer = api.admin(method, path, body)
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "store_unavailable"
    assert api.view(cid) == before, f"{method} {path} answered 503 but changed something"
    answer = api.admin(method, path, body)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def test_credits_whose_event_fails_are_not_added_and_a_retry_adds_them_once(api: Api) -> None:
    created = api.admin("POST", "/clients", {"name": "A", "email": "a@acmecorp.com"}).json()
    cid = created["client_id"]
    body = {"credits": 25, "reason": "goodwill"}
    with audit_refused(api.store, api.url):
        for _ in range(2):  # the admin sees 503 and tries again, still down
            assert api.admin("PUT", f"/clients/{cid}/credits", body).status_code == 503
    assert api.admin("GET", f"/clients/{cid}").json()["credits_remaining"] == 5
    assert api.admin("PUT", f"/clients/{cid}/credits", body).json()["credits_remaining"] == 30
    assert api.audit(cid) == [
        ("client.create", {"plan": "free", "key_id": api.keys(cid)[0]["key_id"]}),
        ("client.credits", {"amount": 25, "reason": "goodwill"}),
    ]


def test_a_rotation_without_grace_whose_event_fails_leaves_the_old_key_working(
    api: Api,
) -> None:
    created = api.admin("POST", "/clients", {"name": "A", "email": "a@acmecorp.com"}).json()
    cid, old = created["client_id"], created["api_key"]
    (key,) = api.keys(cid)
    rotate = f"/clients/{cid}/keys/{key['key_id']}/rotate"
    with audit_refused(api.store, api.url):
        assert api.admin("POST", rotate, {"grace_seconds": 0}).status_code == 503
    usage = api.http.get("/api/billing/usage", headers={"X-Client-Key": old})
    assert usage.status_code == 200, "the old key stopped though the new one was never shown"
    assert [k["key_id"] for k in api.keys(cid)] == [key["key_id"]]
    new = api.admin("POST", rotate, {"grace_seconds": 0}).json()
    assert api.http.get("/api/billing/usage", headers={"X-Client-Key": old}).status_code == 401
    assert api.http.get("/api/billing/usage", headers={"X-Client-Key": new["api_key"]}).is_success
    rotation = {"key_id": key["key_id"], "new_key_id": new["key_id"], "grace_seconds": 0}
    assert api.audit(cid)[1:] == [("key.rotate", rotation)]


def test_every_admin_action_is_refused_whole_or_recorded_exactly_once(api: Api) -> None:
    """Each admin action, first with the log down (503, nothing changes), then retried: the
    log holds each one exactly once, in order, no-ops (revoking twice) included."""
    new = {"name": "A", "email": "a@acmecorp.com", "plan": "starter"}
    cid = refused_then_done(api, None, "POST", "/clients", new)["client_id"]
    base = f"/clients/{cid}"
    first = api.keys(cid)[0]["key_id"]
    refused_then_done(api, cid, "PUT", f"{base}/credits", {"credits": 5, "reason": "goodwill"})
    issued = refused_then_done(api, cid, "POST", f"{base}/keys", {"label": "ci"})["key_id"]
    expiry = {"expires_at": "2099-01-01T00:00:00+00:00"}
    refused_then_done(api, cid, "PUT", f"{base}/keys/{issued}/expiry", expiry)
    rotated = refused_then_done(
        api, cid, "POST", f"{base}/keys/{first}/rotate", {"grace_seconds": 0}
    )["key_id"]
    for _ in range(2):
        refused_then_done(api, cid, "DELETE", f"{base}/keys/{issued}")
    refused_then_done(api, cid, "PUT", f"{base}/plan", {"plan": "pro"})
    policy = {"rate_limit_per_minute": 5, "ip_allowlist": ["10.0.0.1"]}
    refused_then_done(api, cid, "PUT", f"{base}/policy", policy)
    for _ in range(2):
        refused_then_done(api, cid, "DELETE", base)
    refused_then_done(api, cid, "POST", f"{base}/reactivate")

    refused = [  # refusals record nothing, whether or not the log is up
        api.admin("PUT", f"{base}/plan", {"plan": "pro"}),
        api.admin("PUT", f"{base}/keys/{issued}/expiry", expiry),
        api.admin("PUT", "/clients/nobody/credits", {"credits": 1, "reason": "x"}),
    ]
    assert [r.status_code for r in refused] == [409, 409, 404]
    assert api.audit(cid) == [
        ("client.create", {"plan": "starter", "key_id": first}),
        ("client.credits", {"amount": 5, "reason": "goodwill"}),
        ("key.issue", {"key_id": issued, "expires_at": None}),
        ("key.expiry", {"key_id": issued, **expiry}),
        ("key.rotate", {"key_id": first, "new_key_id": rotated, "grace_seconds": 0}),
        ("key.revoke", {"key_id": issued}),
        ("key.revoke", {"key_id": issued}),
        ("client.plan_change", {"from": "starter", "to": "pro"}),
        (
            "client.policy",
            {"rate_limit_per_minute": 5, "ip_allowlist": ["10.0.0.1/32"], "max_active_jobs": None},
        ),
        ("client.deactivate", {}),
        ("client.deactivate", {}),
        ("client.reactivate", {}),
    ]
    record = api.admin("GET", base).json()
    assert (record["plan"], record["active"]) == ("pro", True)
    assert record["credits_remaining"] == 50 + 5 + 150  # the plan change's difference once
