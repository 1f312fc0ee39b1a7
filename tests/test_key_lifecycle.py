"""Key lifecycle (several keys per client, rotation, revocation, expiry, last use), per-client
access policy (IP allowlist, rate-limit override) and an operator's plan change: the store
primitives on every backend, then the admin routes and auth checks through real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from conftest import Clock
from openclaw_billing.access import KEY_TOUCH_INTERVAL, MAX_USABLE_KEYS, new_key_record
from openclaw_billing.errors import (
    AlreadyOnPlan,
    DuplicateClient,
    KeyNotFound,
    KeyRevoked,
    SubscriptionExists,
    TooManyKeys,
)
from openclaw_billing.keys import digest_key, generate_key
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store import Store
from openclaw_billing.store.base import StripeRef
from openclaw_billing.store.sql_schema import SCHEMA_VERSION
from tests.backends import (  # noqa: F401
    SQL_BACKENDS,
    add_client,
    assert_invariants,
    reopen,
    store_fixture,
    store_url_fixture,
)
from tests.store_helpers import T0

# -- store primitives, every backend ------------------------------------------------------


def _owner(store: Store, key: str) -> str | None:
    record = store.get_client_by_key_digest(digest_key(key))
    return None if record is None else record.client_id


def test_a_new_client_has_one_key_named_by_the_record(store: Store) -> None:
    record, key = add_client(store)
    stored = store.get_client(record.client_id)
    assert stored is not None
    [only] = stored.api_keys
    assert only.digest == digest_key(key) == stored.api_key_hash
    assert only.prefix == stored.api_key_prefix == key[:12]
    assert only.revoked_at is None
    assert only.expires_at is None
    assert only.last_used_at is None


def test_issued_keys_all_find_the_client_and_survive_a_restart(
    store: Store, store_url: str
) -> None:
    record, first = add_client(store)
    other, other_key = add_client(store, name="Other")
    second = generate_key()
    updated = store.issue_key(record.client_id, new_key_record(second, T0, label="ci"), T0)
    assert [k.label for k in updated.api_keys] == [None, "ci"]
    assert updated.api_key_hash == digest_key(second)  # the summary's field names the newest
    with reopen(store_url) as again:
        assert _owner(again, first) == record.client_id
        assert _owner(again, second) == record.client_id
        assert _owner(again, other_key) == other.client_id
        reloaded = again.get_client(record.client_id)
        assert reloaded is not None
        assert reloaded.api_keys == updated.api_keys


def test_rotation_sets_the_old_keys_grace_end(store: Store) -> None:
    record, _old = add_client(store)
    old_id = record.api_keys[0].key_id
    new = new_key_record(generate_key(), T0)
    after = store.rotate_key(record.client_id, old_id, new, timedelta(seconds=60), T0)
    by_id = {k.key_id: k for k in after.api_keys}
    assert by_id[old_id].expires_at == T0 + timedelta(seconds=60)
    assert by_id[new.key_id].expires_at is None
    assert by_id[old_id].usable(T0 + timedelta(seconds=59))
    assert not by_id[old_id].usable(T0 + timedelta(seconds=60))
    # An earlier expiry is kept; a rotation never extends a key's life.
    newer = new_key_record(generate_key(), T0)
    store.set_key_expiry(record.client_id, new.key_id, T0 + timedelta(seconds=10), T0)
    again = store.rotate_key(record.client_id, new.key_id, newer, timedelta(days=1), T0)
    assert {k.key_id: k for k in again.api_keys}[new.key_id].expires_at == T0 + timedelta(
        seconds=10
    )


def test_revoke_is_immediate_and_idempotent(store: Store) -> None:
    record, _ = add_client(store)
    key_id = record.api_keys[0].key_id
    revoked = store.revoke_key(record.client_id, key_id, T0)
    assert revoked.api_keys[0].revoked_at == T0
    later = T0 + timedelta(hours=1)
    assert store.revoke_key(record.client_id, key_id, later).api_keys[0].revoked_at == T0
    assert not revoked.api_keys[0].usable(T0)


def test_refusals_change_nothing(store: Store) -> None:
    record, _ = add_client(store)
    cid, key_id = record.client_id, record.api_keys[0].key_id
    with pytest.raises(KeyNotFound):
        store.revoke_key(cid, "key_000000000000", T0)
    with pytest.raises(KeyNotFound):
        store.touch_key(cid, "key_000000000000", T0)
    for _ in range(MAX_USABLE_KEYS - 1):
        store.issue_key(cid, new_key_record(generate_key(), T0), T0)
    before = store.get_client(cid)
    with pytest.raises(TooManyKeys):
        store.issue_key(cid, new_key_record(generate_key(), T0), T0)
    store.revoke_key(cid, key_id, T0)
    with pytest.raises(KeyRevoked):
        store.rotate_key(cid, key_id, new_key_record(generate_key(), T0), timedelta(0), T0)
    with pytest.raises(KeyRevoked):
        store.set_key_expiry(cid, key_id, None, T0)
    after = store.get_client(cid)
    assert before is not None
    assert after is not None
    assert [k.key_id for k in after.api_keys] == [k.key_id for k in before.api_keys]
    # With one key revoked there is room for exactly one more.
    store.issue_key(cid, new_key_record(generate_key(), T0), T0)


def test_a_key_digest_is_never_shared_between_clients(store: Store) -> None:
    a, key_a = add_client(store)
    b, _ = add_client(store, name="Other")
    stolen = new_key_record(key_a, T0)
    with pytest.raises(DuplicateClient):
        store.issue_key(b.client_id, stolen, T0)
    assert _owner(store, key_a) == a.client_id
    stored_b = store.get_client(b.client_id)
    assert stored_b is not None
    assert len(stored_b.api_keys) == 1


def test_last_use_is_written_at_most_once_a_minute(store: Store) -> None:
    record, _ = add_client(store)
    cid, key_id = record.client_id, record.api_keys[0].key_id

    def last_used() -> datetime | None:
        stored = store.get_client(cid)
        assert stored is not None
        return stored.api_keys[0].last_used_at

    store.touch_key(cid, key_id, T0)
    assert last_used() == T0
    store.touch_key(cid, key_id, T0 + KEY_TOUCH_INTERVAL - timedelta(seconds=1))
    assert last_used() == T0
    store.touch_key(cid, key_id, T0 + KEY_TOUCH_INTERVAL)
    assert last_used() == T0 + KEY_TOUCH_INTERVAL


def test_policy_is_normalised_and_stored(store: Store, store_url: str) -> None:
    record, _ = add_client(store)
    store.set_policy(
        record.client_id,
        T0,
        rate_limit_per_minute=7,
        ip_allowlist=["10.0.0.1", "2001:db8::/32", "192.168.0.0/16"],
    )
    with reopen(store_url) as again:
        stored = again.get_client(record.client_id)
    assert stored is not None
    assert stored.rate_limit_per_minute == 7
    assert stored.ip_allowlist == ["10.0.0.1/32", "2001:db8::/32", "192.168.0.0/16"]
    with pytest.raises(ValueError, match="ip_allowlist"):
        store.set_policy(record.client_id, T0, rate_limit_per_minute=None, ip_allowlist=["x"])


def test_an_operators_plan_change_prorates_within_the_cycle(store: Store) -> None:
    record, _ = add_client(store, PlanId.STARTER)
    store.charge(record.client_id, "job-1", 0.0, T0)
    now = T0 + timedelta(days=3)
    left_pro, pro = store.change_plan(record.client_id, PlanId.PRO, now)
    assert (left_pro, pro.plan) == (PlanId.STARTER, PlanId.PRO)
    assert pro.credits_remaining == 49 + (200 - 50)
    assert pro.metadata.credit_adjustments[-1].reason == "plan change starter -> pro"
    assert pro.billing_cycle_start == record.billing_cycle_start  # same cycle
    with pytest.raises(AlreadyOnPlan):
        store.change_plan(record.client_id, PlanId.PRO, now)
    left_back, back = store.change_plan(record.client_id, PlanId.FREE, now)
    assert left_back == PlanId.PRO
    assert back.credits_remaining == 4  # free's 5, less the one job already run
    store.charge(record.client_id, "job-2", 0.0, now)
    store.charge(record.client_id, "job-3", 0.0, now)
    left_starter, starter = store.change_plan(record.client_id, PlanId.STARTER, now)
    assert left_starter == PlanId.FREE
    assert starter.credits_remaining == 2 + 45
    left_unlimited, unlimited = store.change_plan(record.client_id, PlanId.ENTERPRISE, now)
    assert left_unlimited == PlanId.STARTER
    assert unlimited.credits_remaining is None
    assert_invariants(store)


def test_a_plan_managed_by_stripe_is_not_changed_by_hand(store: Store) -> None:
    record, _ = add_client(store, PlanId.STARTER)

    def subscribe(r: ClientRecord) -> None:
        r.stripe_subscription_id = "sub_123"
        r.metadata.subscription_status = "active"

    store.apply_stripe_event("evt_1", StripeRef(record.client_id, None, None), 1, subscribe, T0)
    with pytest.raises(SubscriptionExists):
        store.change_plan(record.client_id, PlanId.PRO, T0)


# -- the schema upgrade (SQL) -------------------------------------------------------------


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_a_version_1_database_is_upgraded_and_its_keys_keep_working(store_url: str) -> None:
    with reopen(store_url) as first:
        record, key = add_client(first)
        first.charge(record.client_id, "job-1", 0.5, T0)
    # Put the database back the way release 1 left it: no key table rows, no policy columns.
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE openclaw_api_keys"))
        conn.execute(text("ALTER TABLE openclaw_clients DROP COLUMN rate_limit_per_minute"))
        conn.execute(text("ALTER TABLE openclaw_clients DROP COLUMN ip_allowlist"))
        conn.execute(text("UPDATE openclaw_schema_version SET version = 1"))
    engine.dispose()
    with reopen(store_url) as upgraded:
        assert _owner(upgraded, key) == record.client_id
        stored = upgraded.get_client(record.client_id)
        assert stored is not None
        [only] = stored.api_keys
        assert only.key_id == f"key_{record.api_key_hash[:12]}"
        assert stored.credits_remaining == 199
        assert stored.total_spent == 0.5
        upgraded.set_policy(record.client_id, T0, rate_limit_per_minute=3, ip_allowlist=[])
        upgraded.issue_key(record.client_id, new_key_record(generate_key(), T0), T0)
    engine = create_engine(store_url)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version FROM openclaw_schema_version")).scalar()
        assert version == SCHEMA_VERSION
    engine.dispose()


# -- HTTP ---------------------------------------------------------------------------------


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
        {"rate_limit_per_minute": 5, "ip_allowlist": ["10.0.0.0/8"]},
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


# -- authentication without the ledger ------------------------------------------------------


def test_authentication_reads_the_account_not_the_ledger(store: Store) -> None:
    record, key = add_client(store)
    store.issue_key(record.client_id, new_key_record(generate_key(), T0), T0)
    for n in range(30):
        store.charge(record.client_id, f"job-{n}", 0.25, T0)
    store.add_credits(record.client_id, 5, "courtesy", T0)
    full = store.get_client_by_key_digest(digest_key(key))
    light = store.get_client_by_key_digest(digest_key(key), ledger=False)
    assert full is not None
    assert light is not None
    assert len(full.metadata.cost_log) == 30
    expected = full.model_copy(deep=True)
    if light.metadata.cost_log == []:  # SQL leaves the ledger parts out; JSON has them anyway
        expected.metadata.cost_log = []
        expected.metadata.credit_adjustments = []
        expected.metadata.cycle_history = []
    assert light == expected
    assert store.get_client_by_key_digest(digest_key(generate_key()), ledger=False) is None


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_authentication_is_one_query_whatever_the_usage(store: Store) -> None:
    from sqlalchemy import event

    from openclaw_billing.store.sql import SqlStore

    assert isinstance(store, SqlStore)
    record, key = add_client(store, PlanId.ENTERPRISE)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    for jobs in (0, 500):
        for n in range(jobs):
            store.charge(record.client_id, f"job-{jobs}-{n}", 0.0, T0)
        statements.clear()
        event.listen(store._read, "before_cursor_execute", count)
        try:
            found = store.get_client_by_key_digest(digest_key(key), ledger=False)
        finally:
            event.remove(store._read, "before_cursor_execute", count)
        assert found is not None
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 1, statements
