"""Charging by outcome over HTTP, through the reference gateway: intake holds the job's price,
the runner's report settles it, the client reads its receipt and may cancel a queued job, a
quote fixes the price, and the concurrency cap answers 429 with Retry-After."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN_TOKEN, Clock
from tests.factories import create_client, submit_job

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}


def _report(http: TestClient, job_id: str, **body: Any) -> Any:
    return http.post(f"/api/admin/jobs/{job_id}/outcome", headers=ADMIN, json=body)


def _usage(http: TestClient, key: str) -> Any:
    return http.get("/api/billing/usage", headers={"X-Client-Key": key}).json()


def test_a_failed_job_gives_its_credit_back_and_the_client_sees_why(http: TestClient) -> None:
    client = create_client(http, "starter")
    key = client["api_key"]
    accepted = submit_job(http, key)
    assert accepted.status_code == 201
    job_id = accepted.json()["job_id"]
    assert accepted.json()["credits_remaining"] == 49
    receipt = accepted.json()["job"]["receipt"]
    assert (receipt["reserved"], receipt["charged"]) == (1, None)
    usage = _usage(http, key)
    assert (usage["credits_remaining"], usage["credits_reserved"], usage["credits_used"]) == (
        49,
        1,
        1,
    )
    running = _report(http, job_id, status="running")
    assert running.status_code == 200
    assert running.json()["status"] == "running"
    failed = _report(http, job_id, status="failed", failure_class="infrastructure")
    assert failed.status_code == 200
    assert failed.json()["receipt"]["released"] == 1
    again = _report(http, job_id, status="failed", failure_class="infrastructure")
    assert again.json()["changed"] is False
    late = _report(http, job_id, status="succeeded")
    assert late.status_code == 409
    assert late.json()["code"] == "illegal_transition"
    job = http.get(f"/api/jobs/{job_id}", headers={"X-Client-Key": key}).json()
    assert job["status"] == "failed"
    assert job["failure_class"] == "infrastructure"
    assert job["receipt"]["reason"] == "failed (infrastructure): released in full"
    usage = _usage(http, key)
    assert (usage["credits_remaining"], usage["credits_reserved"]) == (50, 0)


def test_a_client_error_is_charged(http: TestClient) -> None:
    client = create_client(http, "starter")
    job_id = submit_job(http, client["api_key"]).json()["job_id"]
    ended = _report(http, job_id, status="failed", failure_class="client_error").json()
    assert (ended["receipt"]["charged"], ended["receipt"]["released"]) == (1, 0)
    assert _usage(http, client["api_key"])["credits_remaining"] == 49


def test_reports_are_checked(http: TestClient) -> None:
    client = create_client(http, "pro")
    job_id = submit_job(http, client["api_key"]).json()["job_id"]
    for body, code in (
        ({"status": "failed"}, "invalid_request"),
        ({"status": "failed", "failure_class": "gremlins"}, "invalid_request"),
        ({"status": "succeeded", "failure_class": "client_error"}, "invalid_request"),
        ({"status": "expired"}, "validation_error"),
        ({"status": "succeeded", "usage": {"tokens": -1}}, "validation_error"),
        ({"status": "succeeded", "usage": {f"u{n}": 1 for n in range(17)}}, "validation_error"),
        ({"status": "succeeded", "credits": 0}, "validation_error"),
    ):
        answer = _report(http, job_id, **body)
        assert answer.status_code == 422, body
        assert answer.json()["code"] == code, body
    assert _report(http, "no-such-job", status="succeeded").json()["code"] == "job_not_found"
    unauthorised = http.post(f"/api/admin/jobs/{job_id}/outcome", json={"status": "succeeded"})
    assert unauthorised.status_code == 401


def test_a_client_cancels_its_queued_job_only(http: TestClient) -> None:
    client = create_client(http, "starter")
    key = {"X-Client-Key": client["api_key"]}
    queued = submit_job(http, client["api_key"]).json()["job_id"]
    running = submit_job(http, client["api_key"]).json()["job_id"]
    _report(http, running, status="running")
    cancelled = http.post(f"/api/jobs/{queued}/cancel", headers=key)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["receipt"]["released"] == 1
    refused = http.post(f"/api/jobs/{running}/cancel", headers=key)
    assert refused.status_code == 409
    assert refused.json()["code"] == "illegal_transition"
    other = create_client(http, "starter")
    stranger = http.post(f"/api/jobs/{running}/cancel", headers={"X-Client-Key": other["api_key"]})
    assert stranger.status_code == 404
    assert http.post(f"/api/jobs/{queued}/cancel").status_code == 401


def test_the_concurrency_cap_answers_429_with_retry_after(http: TestClient) -> None:
    client = create_client(http, "free", max_active_jobs=None)  # the plan's cap: 1
    first = submit_job(http, client["api_key"])
    assert first.status_code == 201
    second = submit_job(http, client["api_key"])
    assert second.status_code == 429
    assert second.json()["code"] == "concurrency_limit_reached"
    assert second.headers["Retry-After"] == "30"
    _report(http, first.json()["job_id"], status="succeeded")
    assert submit_job(http, client["api_key"]).status_code == 201
    # The admin raises this client's cap.
    policy = http.put(
        f"/api/admin/clients/{client['client_id']}/policy",
        headers=ADMIN,
        json={"rate_limit_per_minute": None, "ip_allowlist": [], "max_active_jobs": 3},
    )
    assert policy.json()["max_active_jobs"] == 3
    assert submit_job(http, client["api_key"]).status_code == 201


def test_a_quote_is_honoured_and_a_stale_one_refused(
    http: TestClient, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from openclaw_billing import plans

    priced = replace(plans.PLANS[plans.PlanId.PRO], task_prices={"research": 4})
    monkeypatch.setitem(plans.PLANS, plans.PlanId.PRO, priced)
    client = create_client(http, "pro")
    key = {"X-Client-Key": client["api_key"]}
    body = {"task_type": "research", "priority": "P2"}
    quote = http.post("/api/billing/quote", headers=key, json=body).json()
    assert quote["credits"] == 4
    # The price table changes; the quote holds its price.
    monkeypatch.setitem(plans.PLANS, plans.PlanId.PRO, replace(priced, task_prices={}))
    accepted = submit_job(http, client["api_key"], quote_id=quote["quote_id"], **body)
    assert accepted.status_code == 201
    assert accepted.json()["job"]["receipt"]["reserved"] == 4
    assert accepted.json()["credits_remaining"] == 196
    other_type = submit_job(http, client["api_key"], quote_id=quote["quote_id"])
    assert other_type.json()["code"] == "invalid_quote"
    clock.advance(minutes=16)
    stale = submit_job(http, client["api_key"], quote_id=quote["quote_id"], **body)
    assert stale.status_code == 409
    assert stale.json()["code"] == "quote_expired"
    assert _usage(http, client["api_key"])["credits_remaining"] == 196


def test_max_credits_caps_the_hold(http: TestClient) -> None:
    client = create_client(http, "pro")
    accepted = submit_job(http, client["api_key"], max_credits=1).json()
    assert accepted["job"]["receipt"]["max_credits"] == 1
    assert accepted["job"]["max_credits"] == 1
    refused = submit_job(http, client["api_key"], max_credits=0)
    assert refused.status_code == 422


def test_holds_past_their_time_to_live_expire(http: TestClient, clock: Clock) -> None:
    from openclaw_billing.service import get_service

    client = create_client(http, "starter")
    job_id = submit_job(http, client["api_key"]).json()["job_id"]
    clock.advance(hours=24, seconds=1)
    assert get_service().sweep(now=clock.now) == 1
    job = http.get(f"/api/jobs/{job_id}", headers={"X-Client-Key": client["api_key"]}).json()
    assert job["status"] == "expired"
    assert job["receipt"]["released"] == 1
    assert _usage(http, client["api_key"])["credits_remaining"] == 50
    events = http.get("/api/admin/audit", headers=ADMIN, params={"action": "job.expire"}).json()
    assert [e["detail"]["job_id"] for e in events["events"]] == [job_id]
    assert clock.now - timedelta(hours=24) > clock.now - timedelta(days=1, seconds=2)
