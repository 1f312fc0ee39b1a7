"""The contract suite: the delivery summary's 16 categories, over real HTTP and the public
functions of ``client_auth``.

Every test runs against a fresh app over its own store in a temp directory (see conftest.py).
Time is moved with the ``clock`` fixture, never slept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import client_auth
import gateway
from client_auth import (
    ChargeResult,
    ClientInactive,
    ClientNotFound,
    CreditLimitReached,
    SubmitDecision,
    can_submit_job,
    deduct_job_credit,
    get_client_by_api_key,
)
from conftest import ADMIN_TOKEN, Clock
from openclaw_billing.service import BillingService
from openclaw_billing.settings import get_settings
from tests.factories import JOB_BODY, create_client, submit_job
from tests.invariants import check_store_file, records_of

KEY_RE = re.compile(r"^oc_live_[0-9a-f]{32}$")
INVALID_KEY_BODY = {
    "code": "invalid_api_key",
    "message": "Invalid or inactive API key",
    "detail": "Invalid or inactive API key",
}
LIMIT_BODY = {
    "code": "credit_limit_reached",
    "message": "Monthly job limit reached",
    "detail": "Monthly job limit reached",
}
INVALID_ADMIN_BODY = {
    "code": "invalid_admin_token",
    "message": "Invalid admin token",
    "detail": "Invalid admin token",
}
STRIPE_BODY = {
    "code": "stripe_not_configured",
    "message": "Stripe is not configured on this gateway",
    "detail": "Stripe is not configured on this gateway",
}
T0 = datetime(2026, 2, 19, 10, 30, tzinfo=UTC)  # the clock fixture's start
ADMIN = {"X-Auth-Token": ADMIN_TOKEN}


def key_headers(api_key: str) -> dict[str, str]:
    return {"X-Client-Key": api_key}


def usage(http: TestClient, api_key: str) -> dict[str, Any]:
    response = http.get("/api/billing/usage", headers=key_headers(api_key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def detail(http: TestClient, client_id: str) -> dict[str, Any]:
    response = http.get(f"/api/admin/clients/{client_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def add_credits(http: TestClient, client_id: str, credits: int, reason: str) -> Any:
    return http.put(
        f"/api/admin/clients/{client_id}/credits",
        headers=ADMIN,
        json={"credits": credits, "reason": reason},
    )


def iso(moment: datetime) -> str:
    return moment.isoformat()


def log_lines(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


# == API Key Generation =====================================================================


def test_api_key_generation(http: TestClient, store_path: Path) -> None:
    created = create_client(http, "pro")
    key = created["api_key"]
    assert KEY_RE.fullmatch(key), key
    assert created["api_key_prefix"] == key[:12]
    # Shown once: never in GET one client, never in the list, never in the store file.
    one = detail(http, created["client_id"])
    assert "api_key" not in one
    assert "api_key_hash" not in one
    assert key not in json.dumps(one)
    listed = http.get("/api/admin/clients", headers=ADMIN)
    assert listed.status_code == 200
    assert key not in listed.text
    assert all("api_key" not in c for c in listed.json()["clients"])
    raw = store_path.read_bytes()
    assert key.encode() not in raw
    check_store_file(store_path, [key])


def test_api_key_digest_is_what_is_stored(http: TestClient, store_path: Path) -> None:
    created = create_client(http, "starter")
    key = created["api_key"]
    # As stored: the snapshot with its journal replayed.
    [record] = [r for r in records_of(store_path) if r.client_id == created["client_id"]]
    stored = record.model_dump(mode="json")
    assert stored["api_key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert stored["api_key_prefix"] == key[:12]
    assert "api_key" not in stored


def test_api_key_uniqueness(http: TestClient, store_path: Path) -> None:
    keys = [create_client(http, plan)["api_key"] for plan in ("free", "starter", "pro") * 4]
    assert len(set(keys)) == 12
    assert all(KEY_RE.fullmatch(k) for k in keys)
    digests = {r.api_key_hash for r in records_of(store_path)}
    assert len(digests) == 12
    check_store_file(store_path, keys)
    # Each key authenticates as its own client only.
    owners = [get_client_by_api_key(k) for k in keys]
    assert len({o.client_id for o in owners if o is not None}) == 12


# == Authentication =========================================================================


def test_authenticate_valid_key(http: TestClient) -> None:
    created = create_client(http, "pro", name="Acme Corp", email="api@acmecorp.com")
    client = get_client_by_api_key(created["api_key"])
    assert client is not None
    assert client.client_id == created["client_id"]
    assert client.name == "Acme Corp"
    assert client.email == "api@acmecorp.com"
    assert client.plan == "pro"
    assert client.active is True
    assert client.credits_remaining == 200
    assert client.api_key_hash == hashlib.sha256(created["api_key"].encode()).hexdigest()
    # And over HTTP.
    assert usage(http, created["api_key"])["client_id"] == created["client_id"]


@pytest.mark.parametrize(
    "make_bad",
    [
        pytest.param(lambda k: "oc_live_" + "0" * 32, id="unknown"),
        pytest.param(lambda k: k.upper(), id="uppercase"),
        pytest.param(lambda k: "oc_live_" + k[8:].upper(), id="uppercase-hex"),
        pytest.param(lambda k: k[:-1], id="short"),
        pytest.param(lambda k: k + "0", id="long"),
        pytest.param(lambda k: "oc_test_" + k[8:], id="wrong-prefix"),
        pytest.param(lambda k: k[8:], id="no-prefix"),
        pytest.param(lambda k: k[:-1] + "g", id="non-hex"),
        pytest.param(lambda k: "", id="empty"),
        pytest.param(lambda k: k * 20, id="oversized"),
    ],
)
def test_authenticate_invalid_key(http: TestClient, make_bad: Any) -> None:
    created = create_client(http, "pro")
    bad = make_bad(created["api_key"])
    assert get_client_by_api_key(bad) is None
    for response in (
        http.get("/api/billing/usage", headers=key_headers(bad)),
        submit_job(http, bad),
    ):
        assert response.status_code == 401
        assert response.json() == INVALID_KEY_BODY
    # Nothing was charged by the refused intake.
    assert detail(http, created["client_id"])["credits_remaining"] == 200


def test_authenticate_missing_key(http: TestClient) -> None:
    create_client(http, "pro")
    assert get_client_by_api_key(None) is None
    assert get_client_by_api_key("") is None
    for response in (
        http.get("/api/billing/usage"),
        http.post("/api/intake", json=JOB_BODY),
        http.get("/api/jobs"),
    ):
        assert response.status_code == 401
        assert response.json() == INVALID_KEY_BODY


def test_authenticate_inactive_client(http: TestClient) -> None:
    created = create_client(http, "pro")
    key = created["api_key"]
    assert get_client_by_api_key(key) is not None
    response = http.delete(f"/api/admin/clients/{created['client_id']}", headers=ADMIN)
    assert response.status_code == 200
    assert get_client_by_api_key(key) is None
    inactive = http.get("/api/billing/usage", headers=key_headers(key))
    unknown = http.get("/api/billing/usage", headers=key_headers("oc_live_" + "f" * 32))
    missing = http.get("/api/billing/usage")
    assert inactive.status_code == unknown.status_code == missing.status_code == 401
    # One identical answer: never tell which.
    assert inactive.content == unknown.content == missing.content
    assert inactive.json() == INVALID_KEY_BODY


def test_authenticate_all_bad_keys_give_identical_bodies(http: TestClient) -> None:
    created = create_client(http, "free")
    key = created["api_key"]
    http.delete(f"/api/admin/clients/{created['client_id']}", headers=ADMIN)
    variants: list[dict[str, str]] = [
        {},
        key_headers("not-a-key"),
        key_headers(key.upper()),
        key_headers("oc_live_" + "a" * 32),
        key_headers(key),  # inactive
    ]
    responses = [http.post("/api/intake", headers=h, json=JOB_BODY) for h in variants]
    assert {r.status_code for r in responses} == {401}
    assert len({r.content for r in responses}) == 1
    assert responses[0].json() == INVALID_KEY_BODY


def test_authenticate_legacy_plaintext_record(
    env: Path, store_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A store written in the summary's format (plaintext ``api_key``) still loads, its key keeps
    working, and the first write migrates it to a digest after a backup copy."""
    caplog.set_level(logging.INFO, logger="openclaw_billing")
    key = "oc_live_" + "0123456789abcdef" * 2
    legacy = {
        "uuid-legacy": {
            "client_id": "uuid-legacy",
            "name": "Company Name",
            "email": "contact@company.com",
            "api_key": key,
            "plan": "pro",
            "credits_remaining": 198,
            "total_spent": 5.5,
            "created_at": "2026-02-19T10:00:00+00:00",
            "updated_at": "2026-02-19T10:15:00+00:00",
            "active": True,
            "stripe_customer_id": "cus_123",
            "stripe_subscription_id": "sub_123",
            "billing_cycle_start": "2026-02-19T10:00:00+00:00",
            "billing_cycle_end": "2026-03-21T10:00:00+00:00",
            "metadata": {
                "credit_adjustments": [],
                "cost_log": [
                    {"timestamp": "2026-02-19T10:10:00+00:00", "cost": 5.5, "job_id": "job-a"},
                    {"timestamp": "2026-02-19T10:15:00+00:00", "cost": 0.0, "job_id": "job-b"},
                ],
            },
        }
    }
    store_path.write_text(json.dumps(legacy))
    with TestClient(gateway.create_app()) as http:
        client = get_client_by_api_key(key)
        assert client is not None
        assert client.client_id == "uuid-legacy"
        assert usage(http, key)["credits_remaining"] == 198
        assert submit_job(http, key).status_code == 201
        assert usage(http, key)["credits_remaining"] == 197
        record = detail(http, "uuid-legacy")
        assert record["stripe_customer_id"] == "cus_123"
        assert record["total_spent"] == 5.5
    raw = store_path.read_bytes()
    assert key.encode() not in raw
    assert json.loads(raw)["clients"]["uuid-legacy"]["api_key_hash"] == (
        hashlib.sha256(key.encode()).hexdigest()
    )
    backups = list(env.glob("clients.json.legacy-backup-*"))
    assert len(backups) == 1
    assert json.loads(backups[0].read_bytes()) == legacy
    assert key not in caplog.text


# == Job Limits =============================================================================


def test_job_limit_free_plan_five_then_402(http: TestClient, store_path: Path) -> None:
    created = create_client(http, "free")
    key = created["api_key"]
    remaining = []
    for _ in range(5):
        response = submit_job(http, key)
        assert response.status_code == 201, response.text
        remaining.append(response.json()["credits_remaining"])
    assert remaining == [4, 3, 2, 1, 0]
    for _ in range(2):
        refused = submit_job(http, key)
        assert refused.status_code == 402
        assert refused.json() == LIMIT_BODY
    record = detail(http, created["client_id"])
    assert record["credits_remaining"] == 0
    assert len(record["metadata"]["cost_log"]) == 5
    # Nothing was queued for the refused jobs.
    jobs = http.get("/api/jobs", headers=key_headers(key))
    assert jobs.status_code == 200
    assert len(jobs.json()["jobs"]) == 5
    check_store_file(store_path, [key])


@pytest.mark.parametrize(("plan", "limit"), [("free", 5), ("starter", 50)])
def test_job_limit_matches_plan(http: TestClient, plan: str, limit: int) -> None:
    created = create_client(http, plan)
    for n in range(limit):
        result = deduct_job_credit(created["client_id"], job_id=f"job-{n}")
        assert result.credits_remaining == limit - n - 1
    with pytest.raises(CreditLimitReached) as excinfo:
        deduct_job_credit(created["client_id"], job_id="one-too-many")
    assert excinfo.value.code == "credit_limit_reached"
    assert excinfo.value.message == "Monthly job limit reached"
    assert submit_job(http, created["api_key"]).json() == LIMIT_BODY
    assert detail(http, created["client_id"])["credits_remaining"] == 0


def test_job_limit_enterprise_never_decremented_but_logged(http: TestClient) -> None:
    created = create_client(http, "enterprise")
    assert created["credits_remaining"] is None
    for _ in range(7):
        response = submit_job(http, created["api_key"])
        assert response.status_code == 201
        assert response.json()["credits_remaining"] is None
    record = detail(http, created["client_id"])
    assert record["credits_remaining"] is None
    assert record["credits_limit"] is None
    cost_log = record["metadata"]["cost_log"]
    assert len(cost_log) == 7
    assert len({e["job_id"] for e in cost_log}) == 7
    result = deduct_job_credit(created["client_id"], job_id="ent-1", cost=12.5)
    assert result.credits_remaining is None
    assert result.replayed is False
    record = detail(http, created["client_id"])
    assert len(record["metadata"]["cost_log"]) == 8
    assert record["total_spent"] == 12.5


def test_job_limit_can_submit_job_turns_false_at_limit(http: TestClient) -> None:
    created = create_client(http, "free")
    client = get_client_by_api_key(created["api_key"])
    assert client is not None
    assert can_submit_job(client) == SubmitDecision(True, None)
    for _ in range(5):
        assert submit_job(http, created["api_key"]).status_code == 201
    # The caller's (stale) record still says 5: the advisory check reads the store.
    assert client.credits_remaining == 5
    allowed, reason = can_submit_job(client)
    assert allowed is False
    assert reason == "Monthly job limit reached"


def test_job_limit_intake_validates_body_before_charging(http: TestClient) -> None:
    created = create_client(http, "free")
    bad = submit_job(http, created["api_key"], priority="P9")
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation_error"
    extra = submit_job(http, created["api_key"], credits=1)
    assert extra.status_code == 422
    assert detail(http, created["client_id"])["credits_remaining"] == 5


def test_job_limit_holds_under_concurrent_charges(http: TestClient, store_path: Path) -> None:
    created = create_client(http, "free")
    cid = created["client_id"]

    def attempt(n: int) -> str:
        try:
            deduct_job_credit(cid, job_id=f"race-{n}", cost=1.0)
        except CreditLimitReached:
            return "refused"
        return "charged"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(20)))
    assert outcomes.count("charged") == 5
    assert outcomes.count("refused") == 15
    record = detail(http, cid)
    assert record["credits_remaining"] == 0
    assert record["total_spent"] == 5.0
    check_store_file(store_path, [created["api_key"]])


# == Credit Management ======================================================================


def test_credit_deduct_records_cost_in_total_spent_and_cost_log(http: TestClient) -> None:
    created = create_client(http, "pro")
    cid = created["client_id"]
    first = deduct_job_credit(cid, job_id="job-a", cost=5.5)
    second = deduct_job_credit(cid, job_id="job-b", cost=0.25)
    assert isinstance(first, ChargeResult)
    assert (first.credits_remaining, second.credits_remaining) == (199, 198)
    record = detail(http, cid)
    assert record["credits_remaining"] == 198
    assert record["total_spent"] == 5.75
    log = record["metadata"]["cost_log"]
    assert [(e["job_id"], e["cost"]) for e in log] == [("job-a", 5.5), ("job-b", 0.25)]
    assert all(datetime.fromisoformat(e["timestamp"]).tzinfo is not None for e in log)


def test_credit_deduct_same_job_id_charges_once(http: TestClient, store_path: Path) -> None:
    created = create_client(http, "pro")
    cid = created["client_id"]
    first = deduct_job_credit(cid, job_id="job-retry", cost=3.0)
    again = deduct_job_credit(cid, job_id="job-retry", cost=3.0)
    assert first.replayed is False
    assert again.replayed is True
    assert again.credits_remaining == first.credits_remaining == 199
    assert again.charged_at == first.charged_at
    assert again.cost == 3.0
    record = detail(http, cid)
    assert record["credits_remaining"] == 199
    assert record["total_spent"] == 3.0
    assert len(record["metadata"]["cost_log"]) == 1
    check_store_file(store_path, [created["api_key"]])


def test_credit_adjustment_lands_in_metadata(http: TestClient, clock: Clock) -> None:
    created = create_client(http, "starter")
    cid = created["client_id"]
    response = add_credits(http, cid, 25, "promotional credit")
    assert response.status_code == 200
    assert response.json()["credits_remaining"] == 75
    clock.advance(hours=1)
    assert add_credits(http, cid, -10, "correction").json()["credits_remaining"] == 65
    adjustments = detail(http, cid)["metadata"]["credit_adjustments"]
    assert adjustments == [
        {"timestamp": iso(T0), "amount": 25, "reason": "promotional credit"},
        {"timestamp": iso(T0 + timedelta(hours=1)), "amount": -10, "reason": "correction"},
    ]


def test_credit_deduct_rejects_bad_input_and_unknown_client(http: TestClient) -> None:
    created = create_client(http, "pro")
    cid = created["client_id"]
    with pytest.raises(ValueError, match="cost"):
        deduct_job_credit(cid, job_id="neg", cost=-1.0)
    with pytest.raises(ValueError, match="cost"):
        deduct_job_credit(cid, job_id="nan", cost=float("nan"))
    with pytest.raises(ValueError, match="job_id"):
        deduct_job_credit(cid, job_id="")
    with pytest.raises(ClientNotFound):
        deduct_job_credit("no-such-client", job_id="x")
    record = detail(http, cid)
    assert record["credits_remaining"] == 200
    assert record["total_spent"] == 0.0
    assert record["metadata"]["cost_log"] == []


def test_credit_invariants_hold_after_mixed_activity(http: TestClient, store_path: Path) -> None:
    keys = []
    for plan in ("free", "pro", "enterprise"):
        created = create_client(http, plan)
        keys.append(created["api_key"])
        for n in range(3):
            deduct_job_credit(created["client_id"], job_id=f"{plan}-{n}", cost=1.5)
        deduct_job_credit(created["client_id"], job_id=f"{plan}-0", cost=1.5)  # replay
        if plan != "enterprise":
            assert add_credits(http, created["client_id"], 2, "goodwill").status_code == 200
    records = check_store_file(store_path, keys)
    assert sorted((r.plan.value, r.credits_remaining, r.total_spent) for r in records) == [
        ("enterprise", None, 4.5),
        ("free", 4, 4.5),
        ("pro", 199, 4.5),
    ]


# == Billing Cycles =========================================================================


def test_billing_cycle_is_thirty_days_from_creation(http: TestClient, clock: Clock) -> None:
    created = create_client(http, "pro")
    assert created["created_at"] == "2026-02-19T10:30:00+00:00"
    assert created["billing_cycle_start"] == "2026-02-19T10:30:00+00:00"
    assert created["billing_cycle_end"] == "2026-03-21T10:30:00+00:00"
    # One second before the end nothing resets.
    clock.advance(days=30, seconds=-1)
    submit_job(http, created["api_key"])
    body = usage(http, created["api_key"])
    assert body["credits_remaining"] == 199
    assert body["billing_cycle_end"] == "2026-03-21T10:30:00+00:00"


def test_billing_cycle_resets_exactly_once_after_expiry(
    http: TestClient, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openclaw_billing")
    created = create_client(http, "free")
    cid, key = created["client_id"], created["api_key"]
    for _ in range(5):
        assert submit_job(http, key).status_code == 201
    assert submit_job(http, key).status_code == 402
    clock.advance(days=31)
    # Several readers and a charge after expiry: one reset.
    first = usage(http, key)
    assert first["credits_remaining"] == 5
    assert usage(http, key)["credits_remaining"] == 5
    assert submit_job(http, key).status_code == 201
    record = detail(http, cid)
    assert record["credits_remaining"] == 4
    assert record["billing_cycle_start"] == iso(T0 + timedelta(days=30))
    assert record["billing_cycle_end"] == iso(T0 + timedelta(days=60))
    assert log_lines(caplog, "Reset monthly credits") == [
        f"Reset monthly credits for {cid}: 5 jobs"
    ]
    history = record["metadata"]["cycle_history"]
    assert len(history) == 1
    assert history[0]["jobs"] == 5
    assert history[0]["credits_left"] == 0


def test_billing_cycle_long_gap_jumps_to_current_cycle(
    http: TestClient, clock: Clock, store_path: Path
) -> None:
    created = create_client(http, "pro")
    cid = created["client_id"]
    deduct_job_credit(cid, job_id="old-1", cost=2.0)
    deduct_job_credit(cid, job_id="old-2", cost=1.25)
    assert add_credits(http, cid, 10, "bonus").status_code == 200
    clock.advance(days=100)
    body = usage(http, created["api_key"])
    assert body["credits_remaining"] == 200
    assert body["credits_used"] == 0
    assert body["billing_cycle_start"] == iso(T0 + timedelta(days=90))
    assert body["billing_cycle_end"] == iso(T0 + timedelta(days=120))
    record = detail(http, cid)
    assert record["total_spent"] == 3.25  # lifetime spend survives the reset
    meta = record["metadata"]
    assert meta["cost_log"] == []
    assert meta["credit_adjustments"] == []
    [past] = meta["cycle_history"]
    assert past["start"] == iso(T0)
    assert past["end"] == iso(T0 + timedelta(days=30))
    assert past["jobs"] == 2
    assert past["spend"] == 3.25
    assert past["allowance"] == 200
    assert past["credits_left"] == 208
    assert [a["amount"] for a in past["adjustments"]] == [10]
    check_store_file(store_path, [created["api_key"]])


def test_billing_cycle_reset_logs_enterprise_as_unlimited(
    http: TestClient, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openclaw_billing")
    created = create_client(http, "enterprise")
    submit_job(http, created["api_key"])
    clock.advance(days=31)
    body = usage(http, created["api_key"])
    assert body["credits_remaining"] is None
    assert body["credits_used"] == 0
    assert log_lines(caplog, "Reset monthly credits") == [
        f"Reset monthly credits for {created['client_id']}: unlimited jobs"
    ]


def test_billing_cycle_retry_across_reset_not_charged_twice(http: TestClient, clock: Clock) -> None:
    created = create_client(http, "pro")
    cid = created["client_id"]
    first = deduct_job_credit(cid, job_id="edge-job", cost=1.0)
    clock.advance(days=31)
    again = deduct_job_credit(cid, job_id="edge-job", cost=1.0)
    assert first.replayed is False
    assert again.replayed is True
    assert again.credits_remaining == 200
    assert detail(http, cid)["total_spent"] == 1.0


def test_billing_cycle_concurrent_readers_reset_once(
    http: TestClient, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openclaw_billing")
    created = create_client(http, "starter")
    cid = created["client_id"]
    for n in range(10):
        deduct_job_credit(cid, job_id=f"before-{n}")
    clock.advance(days=31)

    def charge(n: int) -> int | None:
        return deduct_job_credit(cid, job_id=f"after-{n}").credits_remaining

    with ThreadPoolExecutor(max_workers=8) as pool:
        remaining = sorted(r for r in pool.map(charge, range(12)) if r is not None)
    assert remaining == list(range(38, 50))
    assert len(log_lines(caplog, "Reset monthly credits")) == 1
    record = detail(http, cid)
    assert record["credits_remaining"] == 38
    assert [h["jobs"] for h in record["metadata"]["cycle_history"]] == [10]


# == Usage Reporting ========================================================================


def test_usage_reporting_admin_detail_shows_ledger(http: TestClient) -> None:
    created = create_client(http, "pro", name="Acme Corp", email="api@acmecorp.com")
    cid = created["client_id"]
    deduct_job_credit(cid, job_id="job-uuid", cost=5.5)
    record = detail(http, cid)
    expected_fields = {
        "client_id",
        "name",
        "email",
        "api_key_prefix",
        "plan",
        "credits_remaining",
        "credits_limit",
        "total_spent",
        "created_at",
        "updated_at",
        "active",
        "stripe_customer_id",
        "stripe_subscription_id",
        "subscription_status",
        "billing_cycle_start",
        "billing_cycle_end",
        "metadata",
        "api_keys",
        "rate_limit_per_minute",
        "ip_allowlist",
        # Added with charging by outcome: the concurrency cap and the jobs open now.
        "max_active_jobs",
        "active_jobs",
        "active_jobs_limit",
    }
    assert set(record) == expected_fields
    assert record["name"] == "Acme Corp"
    assert record["email"] == "api@acmecorp.com"
    assert record["credits_remaining"] == 199
    assert record["credits_limit"] == 200
    assert record["total_spent"] == 5.5
    assert record["stripe_customer_id"] is None
    assert record["stripe_subscription_id"] is None
    assert [e["job_id"] for e in record["metadata"]["cost_log"]] == ["job-uuid"]


def test_usage_reporting_list_shows_credits_and_spend(http: TestClient) -> None:
    a = create_client(http, "starter")
    b = create_client(http, "enterprise")
    deduct_job_credit(a["client_id"], job_id="a1", cost=1.0)
    deduct_job_credit(b["client_id"], job_id="b1", cost=9.0)
    listed = http.get("/api/admin/clients", headers=ADMIN).json()["clients"]
    by_id = {c["client_id"]: c for c in listed}
    assert (by_id[a["client_id"]]["credits_remaining"], by_id[a["client_id"]]["total_spent"]) == (
        49,
        1.0,
    )
    assert by_id[a["client_id"]]["credits_limit"] == 50
    assert by_id[b["client_id"]]["credits_remaining"] is None
    assert by_id[b["client_id"]]["total_spent"] == 9.0
    assert all("metadata" not in c for c in listed)


def test_usage_reporting_list_shows_due_reset(http: TestClient, clock: Clock) -> None:
    created = create_client(http, "free")
    for _ in range(5):
        submit_job(http, created["api_key"])
    clock.advance(days=31)
    [listed] = http.get("/api/admin/clients", headers=ADMIN).json()["clients"]
    assert listed["credits_remaining"] == 5
    assert listed["billing_cycle_start"] == iso(T0 + timedelta(days=30))


def test_usage_reporting_logs_creation_and_deduction(
    http: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openclaw_billing")
    created = create_client(http, "pro", name="Acme Corp")
    cid = created["client_id"]
    assert log_lines(caplog, "Created client") == [f"Created client {cid} (Acme Corp) on pro plan"]
    submit_job(http, created["api_key"])
    deducted = log_lines(caplog, "Deducted credit")
    assert len(deducted) == 1
    assert deducted[0].startswith(f"Deducted credit for {cid}: job submission")
    assert all(r.name == "openclaw_billing" for r in caplog.records if "credit" in r.getMessage())


# == Public Endpoints =======================================================================


def test_public_plans_catalogue(http: TestClient) -> None:
    response = http.get("/api/billing/plans")  # no key, no token
    assert response.status_code == 200
    plans = response.json()["plans"]
    assert [
        (p["id"], p["name"], p["price_usd"], p["price_label"], p["jobs_per_month"]) for p in plans
    ] == [
        ("free", "Free", 0, "$0", 5),
        ("starter", "Starter", 49, "$49", 50),
        ("pro", "Pro", 199, "$199", 200),
        ("enterprise", "Enterprise", None, "Custom", None),
    ]
    assert [p["history_days"] for p in plans] == [1, 30, 90, None]
    assert plans[2]["features"] == ["24/7 support", "analytics", "webhooks"]


def test_public_openapi_security_schemes(http: TestClient) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ClientKey"]["type"] == "apiKey"
    assert schemes["ClientKey"]["in"] == "header"
    assert schemes["ClientKey"]["name"] == "X-Client-Key"
    assert schemes["AdminToken"]["type"] == "apiKey"
    assert schemes["AdminToken"]["in"] == "header"
    assert schemes["AdminToken"]["name"] == "X-Auth-Token"
    paths = doc["paths"]
    for path in (
        "/api/billing/plans",
        "/api/billing/webhook",
        "/api/billing/usage",
        "/api/billing/checkout",
        "/api/admin/clients",
        "/api/admin/clients/{client_id}/credits",
        "/api/admin/clients/{client_id}",
    ):
        assert path in paths, path
    assert "security" not in paths["/api/billing/plans"]["get"]
    assert paths["/api/billing/usage"]["get"]["security"] == [{"ClientKey": []}]


def test_public_unknown_path_uses_error_shape(http: TestClient) -> None:
    response = http.get("/api/billing/nope")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "message": "Not Found", "detail": "Not Found"}


# == Client Usage ===========================================================================


def test_client_usage_fresh_client(http: TestClient) -> None:
    created = create_client(http, "pro")
    body = usage(http, created["api_key"])
    assert body["client_id"] == created["client_id"]
    assert body["plan"] == "pro"
    assert body["credits_remaining"] == 200
    assert body["credits_limit"] == 200
    assert body["credits_used"] == 0
    assert body["usage_pct"] == 0.0
    assert body["status"] == "active"
    assert body["can_submit"] is True
    assert body["billing_cycle_start"] == created["billing_cycle_start"]
    assert body["billing_cycle_end"] == created["billing_cycle_end"]
    assert body["total_spent"] == 0.0
    assert "api_key" not in body


def test_client_usage_after_one_job(http: TestClient) -> None:
    created = create_client(http, "pro")
    assert submit_job(http, created["api_key"]).status_code == 201
    body = usage(http, created["api_key"])
    assert body["credits_remaining"] == 199
    assert body["credits_limit"] == 200
    assert body["credits_used"] == 1
    assert body["usage_pct"] == 0.5
    assert body["status"] == "active"


def test_client_usage_limit_reached_status(http: TestClient) -> None:
    created = create_client(http, "free")
    for _ in range(5):
        submit_job(http, created["api_key"])
    body = usage(http, created["api_key"])
    assert body["credits_remaining"] == 0
    assert body["usage_pct"] == 100.0
    assert body["status"] == "limit_reached"
    assert body["can_submit"] is False


def test_client_usage_enterprise_unlimited(http: TestClient) -> None:
    created = create_client(http, "enterprise")
    submit_job(http, created["api_key"])
    body = usage(http, created["api_key"])
    assert body["plan"] == "enterprise"
    assert body["credits_remaining"] is None
    assert body["credits_limit"] is None
    assert body["usage_pct"] is None
    assert body["credits_used"] == 1
    assert body["status"] == "active"


def test_client_usage_is_own_client_only(http: TestClient) -> None:
    a = create_client(http, "pro")
    b = create_client(http, "starter")
    submit_job(http, a["api_key"])
    assert usage(http, a["api_key"])["client_id"] == a["client_id"]
    body_b = usage(http, b["api_key"])
    assert body_b["client_id"] == b["client_id"]
    assert body_b["credits_remaining"] == 50


# == Checkout ===============================================================================


def test_checkout_requires_client_key(http: TestClient) -> None:
    response = http.post("/api/billing/checkout", json={"plan": "pro"})
    assert response.status_code == 401
    assert response.json() == INVALID_KEY_BODY
    bad = http.post(
        "/api/billing/checkout", headers=key_headers("oc_live_" + "1" * 32), json={"plan": "pro"}
    )
    assert bad.status_code == 401
    assert bad.json() == INVALID_KEY_BODY


def test_checkout_without_stripe_answers_503(http: TestClient) -> None:
    created = create_client(http, "free")
    response = http.post(
        "/api/billing/checkout",
        headers=key_headers(created["api_key"]),
        json={"plan": "pro", "success_url": "https://example.com/ok"},
    )
    assert response.status_code == 503
    assert response.json() == STRIPE_BODY
    # Never a success for an action that did not happen: nothing changed.
    record = detail(http, created["client_id"])
    assert record["plan"] == "free"
    assert record["stripe_customer_id"] is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"plan": "platinum"}, id="unknown-plan"),
        pytest.param({}, id="no-plan"),
        pytest.param({"plan": "pro", "credits_remaining": 1000}, id="extra-field"),
    ],
)
def test_checkout_validates_body(http: TestClient, body: dict[str, Any]) -> None:
    created = create_client(http, "free")
    response = http.post(
        "/api/billing/checkout", headers=key_headers(created["api_key"]), json=body
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert response.json()["message"] == "Request validation failed"


def test_checkout_inactive_client_is_401(http: TestClient) -> None:
    created = create_client(http, "starter")
    http.delete(f"/api/admin/clients/{created['client_id']}", headers=ADMIN)
    response = http.post(
        "/api/billing/checkout", headers=key_headers(created["api_key"]), json={"plan": "pro"}
    )
    assert response.status_code == 401
    assert response.json() == INVALID_KEY_BODY


# == Admin Creation =========================================================================


def test_admin_create_client(http: TestClient, clock: Clock) -> None:
    response = http.post(
        "/api/admin/clients",
        headers=ADMIN,
        json={"name": "Acme Corp", "email": "api@acmecorp.com", "plan": "pro"},
    )
    assert response.status_code == 201
    body = response.json()
    assert KEY_RE.fullmatch(body["api_key"])
    assert body["name"] == "Acme Corp"
    assert body["email"] == "api@acmecorp.com"
    assert body["plan"] == "pro"
    assert body["credits_remaining"] == 200
    assert body["credits_limit"] == 200
    assert body["total_spent"] == 0.0
    assert body["active"] is True
    assert body["created_at"] == body["updated_at"] == iso(T0)
    assert body["billing_cycle_end"] == iso(T0 + timedelta(days=30))
    assert re.fullmatch(r"[0-9a-f-]{36}", body["client_id"])


@pytest.mark.parametrize(
    ("plan", "credits"), [("free", 5), ("starter", 50), ("pro", 200), ("enterprise", None)]
)
def test_admin_create_credits_per_plan(http: TestClient, plan: str, credits: int | None) -> None:
    created = create_client(http, plan)
    assert created["plan"] == plan
    assert created["credits_remaining"] == credits
    assert created["credits_limit"] == credits


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"credits_remaining": 10_000}, id="credits_remaining"),
        pytest.param({"client_id": "chosen-id"}, id="client_id"),
        pytest.param({"active": False}, id="active"),
        pytest.param({"api_key": "oc_live_" + "a" * 32}, id="api_key"),
    ],
)
def test_admin_create_rejects_extra_fields(
    http: TestClient, extra: dict[str, Any], store_path: Path
) -> None:
    body = {"name": "Acme", "email": "a@acmecorp.com", "plan": "pro"} | extra
    response = http.post("/api/admin/clients", headers=ADMIN, json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert http.get("/api/admin/clients", headers=ADMIN).json()["total"] == 0


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@acmecorp.com", ""])
def test_admin_create_rejects_invalid_email(http: TestClient, email: str) -> None:
    response = http.post(
        "/api/admin/clients", headers=ADMIN, json={"name": "Acme", "email": email, "plan": "pro"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert any(e["loc"] == ["body", "email"] for e in body["errors"])


@pytest.mark.parametrize("plan", ["platinum", "PRO", "", 3])
def test_admin_create_rejects_unknown_plan(http: TestClient, plan: Any) -> None:
    response = http.post(
        "/api/admin/clients",
        headers=ADMIN,
        json={"name": "Acme", "email": "a@acmecorp.com", "plan": plan},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_admin_create_rejects_bad_name(http: TestClient, name: str) -> None:
    response = http.post(
        "/api/admin/clients",
        headers=ADMIN,
        json={"name": name, "email": "a@acmecorp.com", "plan": "pro"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_admin_create_requires_admin_token(http: TestClient) -> None:
    body = {"name": "Acme", "email": "a@acmecorp.com", "plan": "pro"}
    missing = http.post("/api/admin/clients", json=body)
    wrong = http.post("/api/admin/clients", headers={"X-Auth-Token": "wrong-token"}, json=body)
    client_key = http.post("/api/admin/clients", headers={"X-Client-Key": ADMIN_TOKEN}, json=body)
    for response in (missing, wrong, client_key):
        assert response.status_code == 401
        assert response.json() == INVALID_ADMIN_BODY
    assert http.get("/api/admin/clients", headers=ADMIN).json()["total"] == 0


def test_admin_create_answers_503_without_admin_token(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENCLAW_ADMIN_TOKEN")
    get_settings.cache_clear()
    with TestClient(gateway.create_app()) as http:
        body = {"name": "Acme", "email": "a@acmecorp.com", "plan": "pro"}
        for response in (
            http.post("/api/admin/clients", headers=ADMIN, json=body),
            http.post("/api/admin/clients", json=body),
            http.get("/api/admin/clients", headers={"X-Auth-Token": ""}),
        ):
            assert response.status_code == 503
            assert response.json() == {
                "code": "admin_token_not_configured",
                "message": "Admin routes are disabled: set OPENCLAW_ADMIN_TOKEN",
                "detail": "Admin routes are disabled: set OPENCLAW_ADMIN_TOKEN",
            }
        # Public routes still serve.
        assert http.get("/api/billing/plans").status_code == 200


def test_admin_create_defaults_to_free_plan(http: TestClient) -> None:
    response = http.post(
        "/api/admin/clients", headers=ADMIN, json={"name": "Acme", "email": "a@acmecorp.com"}
    )
    assert response.status_code == 201
    assert response.json()["plan"] == "free"
    assert response.json()["credits_remaining"] == 5


# == Admin Listing ==========================================================================


def test_admin_list_clients_without_keys(http: TestClient) -> None:
    created = [create_client(http, p) for p in ("free", "pro")]
    response = http.get("/api/admin/clients", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 2
    assert body["offset"] == 0
    assert body["limit"] == 100
    assert [c["client_id"] for c in body["clients"]] == [c["client_id"] for c in created]
    for c, listed in zip(created, body["clients"], strict=True):
        assert "api_key" not in listed
        assert "api_key_hash" not in listed
        assert listed["api_key_prefix"] == c["api_key"][:12]
        assert c["api_key"] not in response.text


def test_admin_list_filters_by_active(http: TestClient) -> None:
    keep = create_client(http, "pro")
    gone = create_client(http, "pro")
    assert http.delete(f"/api/admin/clients/{gone['client_id']}", headers=ADMIN).status_code == 200

    def ids(query: str) -> list[str]:
        response = http.get(f"/api/admin/clients{query}", headers=ADMIN)
        assert response.status_code == 200
        return [c["client_id"] for c in response.json()["clients"]]

    assert ids("?active=true") == [keep["client_id"]]
    assert ids("?active=false") == [gone["client_id"]]
    assert ids("") == [keep["client_id"], gone["client_id"]]
    bad = http.get("/api/admin/clients?active=maybe", headers=ADMIN)
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation_error"


def test_admin_list_filters_by_plan(http: TestClient) -> None:
    clients = {p: create_client(http, p) for p in ("free", "starter", "pro", "enterprise")}
    for plan, created in clients.items():
        response = http.get(f"/api/admin/clients?plan={plan}", headers=ADMIN)
        assert response.status_code == 200
        body = response.json()
        assert body["total"] == 1
        assert body["clients"][0]["client_id"] == created["client_id"]
    unknown = http.get("/api/admin/clients?plan=platinum", headers=ADMIN)
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "validation_error"


def test_admin_list_pagination_total(http: TestClient) -> None:
    created = [create_client(http, "starter")["client_id"] for _ in range(5)]
    page = http.get("/api/admin/clients?offset=1&limit=2", headers=ADMIN).json()
    assert page["total"] == 5
    assert (page["offset"], page["limit"]) == (1, 2)
    assert [c["client_id"] for c in page["clients"]] == created[1:3]
    tail = http.get("/api/admin/clients?offset=4&limit=2", headers=ADMIN).json()
    assert [c["client_id"] for c in tail["clients"]] == created[4:]
    assert tail["total"] == 5
    for query in ("?limit=0", "?limit=1001", "?offset=-1"):
        response = http.get(f"/api/admin/clients{query}", headers=ADMIN)
        assert response.status_code == 422, query


def test_admin_list_requires_admin_token(http: TestClient) -> None:
    created = create_client(http, "pro")
    for headers in ({}, {"X-Auth-Token": ADMIN_TOKEN + "x"}, key_headers(created["api_key"])):
        response = http.get("/api/admin/clients", headers=headers)
        assert response.status_code == 401
        assert response.json() == INVALID_ADMIN_BODY


# == Admin Credits ==========================================================================


def test_admin_credits_add_with_reason(http: TestClient, clock: Clock) -> None:
    created = create_client(http, "pro")
    cid = created["client_id"]
    response = add_credits(http, cid, 50, "Q1 promotional credit")
    assert response.status_code == 200
    body = response.json()
    assert body["credits_remaining"] == 250
    assert body["credits_limit"] == 200
    assert "api_key" not in body
    assert detail(http, cid)["metadata"]["credit_adjustments"] == [
        {"timestamp": iso(T0), "amount": 50, "reason": "Q1 promotional credit"}
    ]
    assert usage(http, created["api_key"])["credits_remaining"] == 250


def test_admin_credits_let_a_client_at_limit_submit_again(http: TestClient) -> None:
    created = create_client(http, "free")
    for _ in range(5):
        submit_job(http, created["api_key"])
    assert submit_job(http, created["api_key"]).status_code == 402
    assert add_credits(http, created["client_id"], 1, "one more").json()["credits_remaining"] == 1
    assert submit_job(http, created["api_key"]).status_code == 201
    assert submit_job(http, created["api_key"]).json() == LIMIT_BODY


def test_admin_credits_negative_below_zero_is_409(http: TestClient) -> None:
    created = create_client(http, "free")
    cid = created["client_id"]
    response = add_credits(http, cid, -6, "correction")
    assert response.status_code == 409
    assert response.json() == {
        "code": "insufficient_credits",
        "message": "A negative adjustment may not take credits below zero",
        "detail": "A negative adjustment may not take credits below zero",
    }
    assert detail(http, cid)["credits_remaining"] == 5
    assert detail(http, cid)["metadata"]["credit_adjustments"] == []
    exact = add_credits(http, cid, -5, "correction")
    assert exact.status_code == 200
    assert exact.json()["credits_remaining"] == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"credits": 0, "reason": "nothing"}, id="zero"),
        pytest.param({"credits": 5}, id="no-reason"),
        pytest.param({"credits": 5, "reason": "   "}, id="blank-reason"),
        pytest.param({"credits": "lots", "reason": "x"}, id="not-int"),
        pytest.param({"credits": 1_000_001, "reason": "x"}, id="too-large"),
        pytest.param({"credits": 5, "reason": "x", "plan": "enterprise"}, id="extra"),
    ],
)
def test_admin_credits_invalid_body_is_422(http: TestClient, body: dict[str, Any]) -> None:
    created = create_client(http, "pro")
    response = http.put(
        f"/api/admin/clients/{created['client_id']}/credits", headers=ADMIN, json=body
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert detail(http, created["client_id"])["credits_remaining"] == 200


def test_admin_credits_enterprise_is_409_unlimited_plan(http: TestClient) -> None:
    created = create_client(http, "enterprise")
    response = add_credits(http, created["client_id"], 50, "promo")
    assert response.status_code == 409
    assert response.json()["code"] == "unlimited_plan"
    assert response.json()["message"] == "The client's plan is unlimited; credits do not apply"


def test_admin_credits_unknown_client_is_404(http: TestClient) -> None:
    response = add_credits(http, "no-such-client", 5, "promo")
    assert response.status_code == 404
    assert response.json() == {
        "code": "client_not_found",
        "message": "Client not found",
        "detail": "Client not found",
    }
    no_token = http.put(
        "/api/admin/clients/no-such-client/credits", json={"credits": 5, "reason": "x"}
    )
    assert no_token.status_code == 401
    assert no_token.json() == INVALID_ADMIN_BODY


# == Admin Deactivation =====================================================================


def test_admin_deactivate_is_soft(http: TestClient, store_path: Path) -> None:
    created = create_client(http, "pro")
    cid = created["client_id"]
    deduct_job_credit(cid, job_id="kept", cost=4.0)
    response = http.delete(f"/api/admin/clients/{cid}", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["active"] is False
    assert response.json()["client_id"] == cid
    record = detail(http, cid)
    assert record["active"] is False
    assert record["credits_remaining"] == 199
    assert record["total_spent"] == 4.0
    assert [e["job_id"] for e in record["metadata"]["cost_log"]] == ["kept"]
    [stored] = [r for r in records_of(store_path) if r.client_id == cid]
    assert stored.active is False


def test_admin_deactivate_blocks_key_on_next_request(http: TestClient) -> None:
    created = create_client(http, "pro")
    key = created["api_key"]
    assert submit_job(http, key).status_code == 201
    assert http.delete(f"/api/admin/clients/{created['client_id']}", headers=ADMIN).status_code == (
        200
    )
    refused = submit_job(http, key)
    assert refused.status_code == 401
    assert refused.json() == INVALID_KEY_BODY
    assert http.get("/api/billing/usage", headers=key_headers(key)).json() == INVALID_KEY_BODY
    assert http.get("/api/jobs", headers=key_headers(key)).status_code == 401
    with pytest.raises(ClientInactive):
        deduct_job_credit(created["client_id"], job_id="after-deactivation")
    assert detail(http, created["client_id"])["credits_remaining"] == 199


def test_admin_reactivate_restores_key(http: TestClient) -> None:
    created = create_client(http, "starter")
    cid, key = created["client_id"], created["api_key"]
    http.delete(f"/api/admin/clients/{cid}", headers=ADMIN)
    assert get_client_by_api_key(key) is None
    response = http.post(f"/api/admin/clients/{cid}/reactivate", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["active"] is True
    assert get_client_by_api_key(key) is not None
    assert submit_job(http, key).status_code == 201
    assert usage(http, key)["credits_remaining"] == 49


def test_admin_deactivate_is_idempotent(http: TestClient) -> None:
    created = create_client(http, "pro")
    cid = created["client_id"]
    first = http.delete(f"/api/admin/clients/{cid}", headers=ADMIN)
    second = http.delete(f"/api/admin/clients/{cid}", headers=ADMIN)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    again = http.post(f"/api/admin/clients/{cid}/reactivate", headers=ADMIN)
    assert again.json()["active"] is True
    assert http.post(f"/api/admin/clients/{cid}/reactivate", headers=ADMIN).status_code == 200


def test_admin_deactivate_unknown_client_is_404(http: TestClient) -> None:
    not_found = {
        "code": "client_not_found",
        "message": "Client not found",
        "detail": "Client not found",
    }
    for response in (
        http.delete("/api/admin/clients/no-such-client", headers=ADMIN),
        http.post("/api/admin/clients/no-such-client/reactivate", headers=ADMIN),
        http.get("/api/admin/clients/no-such-client", headers=ADMIN),
    ):
        assert response.status_code == 404
        assert response.json() == not_found


def test_admin_deactivate_requires_admin_token(http: TestClient) -> None:
    created = create_client(http, "pro")
    for headers in ({}, key_headers(created["api_key"]), {"X-Auth-Token": "x" * 600}):
        response = http.delete(f"/api/admin/clients/{created['client_id']}", headers=headers)
        assert response.status_code == 401
        assert response.json() == INVALID_ADMIN_BODY
    assert detail(http, created["client_id"])["active"] is True


# == Helper Functions =======================================================================


def test_helper_public_surface() -> None:
    assert client_auth.__all__ == sorted(client_auth.__all__)
    for name in ("router", "get_client_by_api_key", "can_submit_job", "deduct_job_credit"):
        assert name in client_auth.__all__
        assert getattr(client_auth, name) is not None


def test_helper_get_client_by_api_key_returns_none_for_bad_input(
    service: BillingService,
) -> None:
    assert get_client_by_api_key(None) is None
    assert get_client_by_api_key("") is None
    assert get_client_by_api_key("oc_live_" + "0" * 32) is None
    assert get_client_by_api_key("oc_live_\u00e9" + "0" * 31) is None
    assert get_client_by_api_key("x" * 10_000) is None


def test_helper_can_submit_job(http: TestClient) -> None:
    created = create_client(http, "pro")
    client = get_client_by_api_key(created["api_key"])
    assert client is not None
    decision = can_submit_job(client)
    assert isinstance(decision, SubmitDecision)
    allowed, reason = decision
    assert (allowed, reason) == (True, None)
    http.delete(f"/api/admin/clients/{created['client_id']}", headers=ADMIN)
    assert can_submit_job(client) == SubmitDecision(False, "Client is inactive")


def test_helper_can_submit_job_sees_due_reset(http: TestClient, clock: Clock) -> None:
    created = create_client(http, "free")
    for _ in range(5):
        submit_job(http, created["api_key"])
    client = get_client_by_api_key(created["api_key"])
    assert client is not None
    assert can_submit_job(client).allowed is False
    clock.advance(days=31)
    assert can_submit_job(client) == SubmitDecision(True, None)


def test_helper_deduct_job_credit_result(http: TestClient, clock: Clock) -> None:
    created = create_client(http, "pro")
    result = deduct_job_credit(created["client_id"], job_id="job-uuid", cost=5.5)
    assert result == ChargeResult(
        client_id=created["client_id"],
        job_id="job-uuid",
        cost=5.5,
        charged_at=T0,
        credits_remaining=199,
        replayed=False,
    )
    generated = deduct_job_credit(created["client_id"])
    assert generated.job_id
    assert generated.credits_remaining == 198


def test_helper_deduct_job_credit_errors(http: TestClient) -> None:
    created = create_client(http, "free")
    cid = created["client_id"]
    for n in range(5):
        deduct_job_credit(cid, job_id=f"j{n}")
    with pytest.raises(CreditLimitReached):
        deduct_job_credit(cid, job_id="j5")
    # A retry of an already charged job is still answered (replayed), even at the limit.
    assert deduct_job_credit(cid, job_id="j4").replayed is True
    with pytest.raises(ClientNotFound) as excinfo:
        deduct_job_credit("missing", job_id="j")
    assert excinfo.value.code == "client_not_found"
    assert detail(http, cid)["credits_remaining"] == 0


# == Stripe Webhooks ========================================================================


def test_stripe_webhook_without_stripe_answers_503(http: TestClient) -> None:
    response = http.post(
        "/api/billing/webhook",
        content=b'{"id": "evt_1", "type": "checkout.session.completed"}',
        headers={"Stripe-Signature": "t=1,v1=deadbeef", "Content-Type": "application/json"},
    )
    assert response.status_code == 503
    assert response.json()["code"] == "stripe_not_configured"
    assert "STRIPE_WEBHOOK_SECRET" in response.json()["message"]


def test_stripe_webhook_changes_nothing(http: TestClient, store_path: Path) -> None:
    created = create_client(http, "free")
    before = store_path.read_bytes()
    event = {
        "id": "evt_2",
        "type": "checkout.session.completed",
        "data": {"object": {"client_reference_id": created["client_id"], "metadata": {}}},
    }
    for headers in ({}, key_headers(created["api_key"]), ADMIN):
        response = http.post("/api/billing/webhook", json=event, headers=headers)
        assert response.status_code == 503
        assert response.json()["code"] == "stripe_not_configured"
    assert store_path.read_bytes() == before
    assert detail(http, created["client_id"])["plan"] == "free"


# == Integration ============================================================================


def test_integration_summary_curl_flow(
    http: TestClient, store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # 1. Admin creates client.
    response = http.post(
        "/api/admin/clients",
        headers={"X-Auth-Token": ADMIN_TOKEN, "Content-Type": "application/json"},
        json={"name": "Acme Corp", "email": "api@acmecorp.com", "plan": "pro"},
    )
    assert response.status_code == 201
    created = response.json()
    cid, key = created["client_id"], created["api_key"]
    assert (created["plan"], created["credits_remaining"]) == ("pro", 200)
    # 2. Client checks usage.
    before = usage(http, key)
    assert (before["credits_remaining"], before["usage_pct"]) == (200, 0.0)
    # 3. Client submits a job.
    job = submit_job(http, key)
    assert job.status_code == 201
    accepted = job.json()
    assert accepted["status"] == "queued"
    assert accepted["credits_remaining"] == 199
    assert accepted["job"]["project_name"] == "Feature Build"
    assert accepted["job"]["client_id"] == cid
    fetched = http.get(f"/api/jobs/{accepted['job_id']}", headers=key_headers(key))
    assert fetched.status_code == 200
    assert fetched.json()["job_id"] == accepted["job_id"]
    after = usage(http, key)
    assert after["client_id"] == cid
    assert after["plan"] == "pro"
    assert after["credits_remaining"] == 199
    assert after["credits_limit"] == 200
    assert after["usage_pct"] == 0.5
    assert after["status"] == "active"
    # 4. Admin adds promotional credits.
    topped = add_credits(http, cid, 50, "Q1 promotional credit")
    assert topped.status_code == 200
    assert topped.json()["credits_remaining"] == 249
    assert usage(http, key)["credits_remaining"] == 249
    [entry] = detail(http, cid)["metadata"]["cost_log"]
    assert entry["job_id"] == accepted["job_id"]
    # No secret ever reaches the logs.
    assert key not in caplog.text
    assert ADMIN_TOKEN not in caplog.text
    assert f"Created client {cid} (Acme Corp) on pro plan" in caplog.text
    assert f"Deducted credit for {cid}: job submission" in caplog.text
    check_store_file(store_path, [key])


def test_client_lifecycle(
    http: TestClient, clock: Clock, store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Create.
    created = create_client(http, "starter", name="Lifecycle Ltd")
    cid, key = created["client_id"], created["api_key"]
    # Use.
    for _ in range(3):
        assert submit_job(http, key).status_code == 201
    deduct_job_credit(cid, job_id="ext-1", cost=2.0)
    assert usage(http, key)["credits_remaining"] == 46
    # Deactivate: blocked at once, data kept.
    assert http.delete(f"/api/admin/clients/{cid}", headers=ADMIN).json()["active"] is False
    assert submit_job(http, key).json() == INVALID_KEY_BODY
    assert detail(http, cid)["credits_remaining"] == 46
    # Reactivate: the same key works again, with the same balance.
    assert http.post(f"/api/admin/clients/{cid}/reactivate", headers=ADMIN).status_code == 200
    assert usage(http, key)["credits_remaining"] == 46
    assert submit_job(http, key).status_code == 201
    # Cycle reset.
    clock.advance(days=31)
    body = usage(http, key)
    assert body["credits_remaining"] == 50
    assert body["credits_used"] == 0
    assert body["billing_cycle_start"] == iso(T0 + timedelta(days=30))
    record = detail(http, cid)
    assert record["total_spent"] == 2.0
    [past] = record["metadata"]["cycle_history"]
    assert (past["jobs"], past["spend"], past["credits_left"]) == (5, 2.0, 45)
    assert log_lines(caplog, "Reset monthly credits") == [
        f"Reset monthly credits for {cid}: 50 jobs"
    ]
    assert key not in caplog.text
    assert ADMIN_TOKEN not in caplog.text
    check_store_file(store_path, [key])
