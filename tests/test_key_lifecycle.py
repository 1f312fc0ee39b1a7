"""Key lifecycle (several keys per client, rotation, revocation, expiry, last use), per-client
access policy (IP allowlist, rate-limit override) and an operator's plan change through the
admin routes and the auth checks, over real HTTP. The transitions themselves:
tests/test_access.py; the store primitives that run them, on every backend:
tests/store/test_contract_access.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Clock
from openclaw_billing.keys import digest_key, generate_key
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from tests.store_helpers import T0


def _create(http: TestClient, admin: dict[str, str], plan: str = "free") -> dict[str, Any]:
    reply = http.post(
        "/api/admin/clients",
        json={"name": "Acme", "email": "ops@acmecorp.com", "plan": plan},
        headers=admin,
    )
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


def _usage(http: TestClient, key: str) -> int:
    reply = http.get("/api/billing/usage", headers={"X-Client-Key": key})
    return int(reply.status_code)


def _keys(http: TestClient, admin: dict[str, str], client_id: str) -> list[dict[str, Any]]:
    reply = http.get(f"/api/admin/clients/{client_id}/keys", headers=admin)
    assert reply.status_code == 200, reply.text
    keys: list[dict[str, Any]] = reply.json()["keys"]
    return keys


def test_rotation_with_a_60_second_grace(
    http: TestClient, admin_headers: dict[str, str], clock: Clock
) -> None:
    """The issue's acceptance test: the new key works at once, the old one until the grace
    ends and not after; both draw on one balance."""
    client = _create(http, admin_headers, "starter")
    cid, old = client["client_id"], client["api_key"]
    # Keys, not jobs at once, are tested here: the jobs stay queued, so the cap is lifted.
    uncapped: dict[str, Any] = {
        "rate_limit_per_minute": None,
        "ip_allowlist": [],
        "max_active_jobs": 100,
    }
    http.put(f"/api/admin/clients/{cid}/policy", json=uncapped, headers=admin_headers)
    [first] = _keys(http, admin_headers, cid)
    rotated = http.post(
        f"/api/admin/clients/{cid}/keys/{first['key_id']}/rotate",
        json={"grace_seconds": 60, "label": "2026 rotation"},
        headers=admin_headers,
    )
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()["api_key"]
    assert new != old
    assert rotated.json()["label"] == "2026 rotation"

    def intake(key: str) -> int:
        reply = http.post(
            "/api/intake",
            json={"project_name": "demo", "description": "build it"},
            headers={"X-Client-Key": key},
        )
        return int(reply.status_code)

    assert intake(new) == 201
    clock.advance(seconds=59)
    assert intake(old) == 201
    assert intake(new) == 201
    clock.advance(seconds=1)
    assert intake(old) == 401
    assert intake(new) == 201
    usage = http.get("/api/billing/usage", headers={"X-Client-Key": new}).json()
    assert usage["credits_remaining"] == 50 - 4
    assert usage["credits_used"] == 4
    statuses = {k["key_id"]: k["status"] for k in _keys(http, admin_headers, cid)}
    assert statuses[first["key_id"]] == "expired"
    assert list(statuses.values()).count("active") == 1


def test_revoked_and_expired_keys_get_the_one_401(
    http: TestClient, admin_headers: dict[str, str], clock: Clock
) -> None:
    client = _create(http, admin_headers)
    cid, key = client["client_id"], client["api_key"]
    unknown = http.get("/api/billing/usage", headers={"X-Client-Key": generate_key()})
    issued = http.post(
        f"/api/admin/clients/{cid}/keys",
        json={"expires_at": (clock.now + timedelta(hours=1)).isoformat()},
        headers=admin_headers,
    )
    assert issued.status_code == 201, issued.text
    expiring = issued.json()["api_key"]
    assert _usage(http, expiring) == 200
    clock.advance(hours=1)
    expired = http.get("/api/billing/usage", headers={"X-Client-Key": expiring})
    [original] = [
        k for k in _keys(http, admin_headers, cid) if k["key_id"] != issued.json()["key_id"]
    ]
    revoke = http.delete(
        f"/api/admin/clients/{cid}/keys/{original['key_id']}", headers=admin_headers
    )
    assert revoke.status_code == 200
    assert revoke.json()["status"] == "revoked"
    revoked = http.get("/api/billing/usage", headers={"X-Client-Key": key})
    for reply in (expired, revoked):
        assert reply.status_code == 401
        assert reply.json() == unknown.json()


def test_key_listing_never_shows_a_key_or_digest(
    http: TestClient, admin_headers: dict[str, str], store_path: Path
) -> None:
    client = _create(http, admin_headers)
    cid, key = client["client_id"], client["api_key"]
    assert _usage(http, key) == 200
    extra = http.post(f"/api/admin/clients/{cid}/keys", json={}, headers=admin_headers).json()
    for path in (
        f"/api/admin/clients/{cid}/keys",
        f"/api/admin/clients/{cid}",
        "/api/admin/clients",
    ):
        text_ = http.get(path, headers=admin_headers).text
        for secret in (key, extra["api_key"], digest_key(key), digest_key(extra["api_key"])):
            assert secret not in text_, path
    [first, second] = _keys(http, admin_headers, cid)
    assert first["last_used_at"] is not None
    assert second["last_used_at"] is None
    assert key not in store_path.read_text()
    assert extra["api_key"] not in store_path.read_text()


def test_key_route_refusals(http: TestClient, admin_headers: dict[str, str], clock: Clock) -> None:
    client = _create(http, admin_headers)
    cid = client["client_id"]
    key_id = _keys(http, admin_headers, cid)[0]["key_id"]
    base = f"/api/admin/clients/{cid}/keys"
    cases: list[tuple[str, str, dict[str, Any] | None, int, str]] = [
        ("POST", f"{base}/{key_id}/rotate", {"grace_seconds": -1}, 422, "validation_error"),
        ("POST", f"{base}/{key_id}/rotate", {"grace_seconds": 31 * 86400}, 422, "validation_error"),
        ("POST", f"{base}/{key_id}/rotate", {}, 422, "validation_error"),
        ("POST", f"{base}/key_000000000000/rotate", {"grace_seconds": 0}, 404, "key_not_found"),
        ("DELETE", f"{base}/key_000000000000", None, 404, "key_not_found"),
        ("DELETE", f"{base}/not-a-key-id", None, 422, "validation_error"),
        ("POST", base, {"expires_at": "2020-01-01T00:00:00+00:00"}, 422, "invalid_request"),
        ("POST", base, {"expires_at": "2030-01-01T00:00:00"}, 422, "validation_error"),
        ("POST", base, {"digest": "0" * 64}, 422, "validation_error"),
        ("POST", "/api/admin/clients/nope/keys", {}, 404, "client_not_found"),
        (
            "PUT",
            f"{base}/{key_id}/expiry",
            {"expires_at": "2020-01-01T00:00:00Z"},
            422,
            "invalid_request",
        ),
    ]
    for method, path, body, status, code in cases:
        reply = http.request(method, path, json=body, headers=admin_headers)
        assert (reply.status_code, reply.json()["code"]) == (status, code), (method, path, body)
    assert len(_keys(http, admin_headers, cid)) == 1
    http.delete(f"{base}/{key_id}", headers=admin_headers)
    again = http.post(f"{base}/{key_id}/rotate", json={"grace_seconds": 0}, headers=admin_headers)
    assert (again.status_code, again.json()["code"]) == (409, "key_revoked")


def test_expiry_can_be_set_and_cleared(
    http: TestClient, admin_headers: dict[str, str], clock: Clock
) -> None:
    client = _create(http, admin_headers)
    cid, key = client["client_id"], client["api_key"]
    key_id = _keys(http, admin_headers, cid)[0]["key_id"]
    path = f"/api/admin/clients/{cid}/keys/{key_id}/expiry"
    soon = (clock.now + timedelta(minutes=5)).isoformat()
    assert http.put(path, json={"expires_at": soon}, headers=admin_headers).status_code == 200
    cleared = http.put(path, json={"expires_at": None}, headers=admin_headers)
    assert cleared.status_code == 200
    assert cleared.json()["expires_at"] is None
    clock.advance(minutes=10)
    assert _usage(http, key) == 200


def test_plan_and_policy_routes(
    http: TestClient, admin_headers: dict[str, str], clock: Clock
) -> None:
    client = _create(http, admin_headers, "starter")
    cid = client["client_id"]
    plan = http.put(f"/api/admin/clients/{cid}/plan", json={"plan": "pro"}, headers=admin_headers)
    assert plan.status_code == 200, plan.text
    assert plan.json()["plan"] == "pro"
    assert plan.json()["credits_remaining"] == 200
    same = http.put(f"/api/admin/clients/{cid}/plan", json={"plan": "pro"}, headers=admin_headers)
    assert (same.status_code, same.json()["code"]) == (409, "already_on_plan")
    policy = http.put(
        f"/api/admin/clients/{cid}/policy",
        json={"rate_limit_per_minute": 30, "ip_allowlist": ["203.0.113.7", "2001:db8::/48"]},
        headers=admin_headers,
    )
    assert policy.status_code == 200, policy.text
    assert policy.json() == {
        "client_id": cid,
        "rate_limit_per_minute": 30,
        "ip_allowlist": ["203.0.113.7/32", "2001:db8::/48"],
        "max_active_jobs": None,
    }
    detail = http.get(f"/api/admin/clients/{cid}", headers=admin_headers).json()
    assert detail["ip_allowlist"] == ["203.0.113.7/32", "2001:db8::/48"]
    assert detail["rate_limit_per_minute"] == 30
    for bad in (["10.0.0.1/8"], ["nonsense"], ["10.0.0.0/8"] * 101):
        reply = http.put(
            f"/api/admin/clients/{cid}/policy",
            json={"rate_limit_per_minute": None, "ip_allowlist": bad},
            headers=admin_headers,
        )
        assert reply.status_code == 422, bad
    assert http.get(f"/api/admin/clients/{cid}", headers=admin_headers).json()["ip_allowlist"]


def test_service_authenticate_touches_last_use(service: BillingService) -> None:
    record, key = service.create_client(
        name="Acme", email="ops@acmecorp.com", plan=PlanId.FREE, now=T0
    )
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert service.authenticate(key, now=now) is not None
    stored = service.store.get_client(record.client_id)
    assert stored is not None
    assert stored.api_keys[0].last_used_at == now


# -- IP allowlist --------------------------------------------------------------------------


def _from(app: Any, host: str) -> TestClient:
    return TestClient(app, client=(host, 50000))


def test_ip_allowlist_ipv4_and_ipv6(app: Any, admin_headers: dict[str, str]) -> None:
    with TestClient(app) as admin:
        client = _create(admin, admin_headers)
        cid, key = client["client_id"], client["api_key"]
        policy = {
            "rate_limit_per_minute": None,
            "ip_allowlist": ["203.0.113.0/24", "2001:db8::/32"],
        }
        reply = admin.put(f"/api/admin/clients/{cid}/policy", json=policy, headers=admin_headers)
        assert reply.status_code == 200, reply.text
    headers = {"X-Client-Key": key}
    for host, status in (
        ("203.0.113.7", 200),
        ("2001:db8::1", 200),
        ("::ffff:203.0.113.9", 200),
        ("198.51.100.1", 403),
        ("2001:db9::1", 403),
        ("testclient", 403),
    ):
        reply = _from(app, host).get("/api/billing/usage", headers=headers)
        assert reply.status_code == status, (host, reply.text)
        if status == 403:
            assert reply.json()["code"] == "ip_not_allowed"
    # An unknown key from outside the list is still the one 401: the list is not an oracle.
    outside = _from(app, "198.51.100.1").get(
        "/api/billing/usage", headers={"X-Client-Key": generate_key()}
    )
    assert outside.status_code == 401
    # Intake is refused too, and nothing is charged.
    refused = _from(app, "198.51.100.1").post(
        "/api/intake", json={"project_name": "p", "description": "d"}, headers=headers
    )
    assert refused.status_code == 403
    usage = _from(app, "203.0.113.7").get("/api/billing/usage", headers=headers).json()
    assert usage["credits_used"] == 0
    # Emptying the list allows every address again.
    with TestClient(app) as admin:
        policy = {"rate_limit_per_minute": None, "ip_allowlist": []}
        admin.put(f"/api/admin/clients/{cid}/policy", json=policy, headers=admin_headers)
    assert _from(app, "198.51.100.1").get("/api/billing/usage", headers=headers).status_code == 200


def test_forwarded_for_counts_only_from_a_trusted_proxy(
    env: Path, monkeypatch: pytest.MonkeyPatch, admin_headers: dict[str, str]
) -> None:
    import gateway
    from openclaw_billing.settings import get_settings

    def run(trusted: str) -> tuple[int, int]:
        monkeypatch.setenv("OPENCLAW_TRUSTED_PROXIES", trusted)
        get_settings.cache_clear()
        app = gateway.create_app()
        with TestClient(app) as admin:
            client = _create(admin, admin_headers)
            policy = {"rate_limit_per_minute": None, "ip_allowlist": ["203.0.113.7"]}
            admin.put(
                f"/api/admin/clients/{client['client_id']}/policy",
                json=policy,
                headers=admin_headers,
            )
        proxy = _from(app, "10.1.2.3")
        via = {"X-Client-Key": client["api_key"], "X-Forwarded-For": "203.0.113.7"}
        forged = {"X-Client-Key": client["api_key"], "X-Forwarded-For": "203.0.113.7, 8.8.8.8"}
        return (
            proxy.get("/api/billing/usage", headers=via).status_code,
            proxy.get("/api/billing/usage", headers=forged).status_code,
        )

    # Without trusted proxies the header is ignored: the peer 10.1.2.3 is not on the list.
    assert run("") == (403, 403)
    # Behind a trusted proxy the client is the right-most untrusted hop: a client that writes
    # its own X-Forwarded-For cannot pick its address.
    assert run("10.0.0.0/8") == (200, 403)


def test_key_plan_and_policy_actions_are_audited(
    http: TestClient, admin_headers: dict[str, str]
) -> None:
    client = _create(http, admin_headers, "starter")
    cid = client["client_id"]
    key_id = _keys(http, admin_headers, cid)[0]["key_id"]
    base = f"/api/admin/clients/{cid}"
    issued = http.post(f"{base}/keys", json={"label": "ci"}, headers=admin_headers).json()
    rotated = http.post(
        f"{base}/keys/{key_id}/rotate", json={"grace_seconds": 30}, headers=admin_headers
    ).json()
    expiry = {"expires_at": "2099-01-01T00:00:00+00:00"}
    http.put(f"{base}/keys/{issued['key_id']}/expiry", json=expiry, headers=admin_headers)
    http.delete(f"{base}/keys/{key_id}", headers=admin_headers)
    http.put(f"{base}/plan", json={"plan": "pro"}, headers=admin_headers)
    policy = {"rate_limit_per_minute": 5, "ip_allowlist": ["10.0.0.0/8"]}
    http.put(f"{base}/policy", json=policy, headers=admin_headers)
    reply = http.get("/api/admin/audit", params={"client_id": cid}, headers=admin_headers)
    events = list(reversed(reply.json()["events"]))
    assert [(e["action"], e["actor"]) for e in events] == [
        ("client.create", "admin"),
        ("key.issue", "admin"),
        ("key.rotate", "admin"),
        ("key.expiry", "admin"),
        ("key.revoke", "admin"),
        ("client.plan_change", "admin"),
        ("client.policy", "admin"),
    ]
    details = [e["detail"] for e in events[1:]]
    assert details == [
        {"key_id": issued["key_id"], "expires_at": None},
        {"key_id": key_id, "new_key_id": rotated["key_id"], "grace_seconds": 30},
        {"key_id": issued["key_id"], "expires_at": "2099-01-01T00:00:00+00:00"},
        {"key_id": key_id},
        {"from": "starter", "to": "pro"},
        {"rate_limit_per_minute": 5, "ip_allowlist": ["10.0.0.0/8"], "max_active_jobs": None},
    ]
    for secret in (client["api_key"], issued["api_key"], rotated["api_key"]):
        assert secret not in reply.text


def test_auth_failures_are_audited_and_bounded_by_the_throttle(
    env: Path, monkeypatch: pytest.MonkeyPatch, admin_headers: dict[str, str]
) -> None:
    import gateway
    from openclaw_billing.settings import get_settings

    monkeypatch.setenv("OPENCLAW_AUTH_FAILURE_LIMIT", "3/minute")
    get_settings.cache_clear()
    app = gateway.create_app()
    with TestClient(app) as admin:
        client = _create(admin, admin_headers)
        policy = {"rate_limit_per_minute": None, "ip_allowlist": ["203.0.113.0/24"]}
        admin.put(
            f"/api/admin/clients/{client['client_id']}/policy", json=policy, headers=admin_headers
        )
    guesser = _from(app, "198.51.100.1")
    wrong = generate_key()
    statuses = [
        guesser.get("/api/billing/usage", headers={"X-Client-Key": wrong}).status_code,
        guesser.get("/api/billing/usage", headers={"X-Client-Key": "oc_live_nope"}).status_code,
        guesser.get("/api/admin/clients", headers={"X-Auth-Token": "x" * 40}).status_code,
        # The address is now blocked: further failures are refused and not recorded.
        guesser.get("/api/billing/usage", headers={"X-Client-Key": wrong}).status_code,
        guesser.get("/api/admin/clients", headers={"X-Auth-Token": "y" * 40}).status_code,
    ]
    assert statuses == [401, 401, 401, 429, 429]
    outsider = _from(app, "192.0.2.10")
    denied = outsider.get("/api/billing/usage", headers={"X-Client-Key": client["api_key"]})
    assert denied.status_code == 403
    with TestClient(app) as admin:
        reply = admin.get("/api/admin/audit", params={"limit": 100}, headers=admin_headers)
    events = [e for e in reversed(reply.json()["events"]) if e["action"].startswith("auth.")]
    assert [(e["action"], e["source"], e["actor"]) for e in events] == [
        ("auth.key_failed", "198.51.100.1", "anonymous"),
        ("auth.key_failed", "198.51.100.1", "anonymous"),
        ("auth.admin_failed", "198.51.100.1", "anonymous"),
        ("auth.throttled", "198.51.100.1", "anonymous"),
        ("auth.ip_denied", "192.0.2.10", f"client:{client['client_id']}"),
    ]
    assert events[0]["detail"] == {"key_prefix": wrong[:12]}
    assert events[1]["detail"] == {}
    assert events[4]["client_id"] == client["client_id"]
    raw = (env / "clients.json.audit.jsonl").read_text()
    for secret in (wrong, wrong[8:], "x" * 40, client["api_key"]):
        assert secret not in raw
