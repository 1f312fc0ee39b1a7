"""Charging by outcome over HTTP, through the reference gateway: intake holds the job's price,
the runner's report settles it, the client reads its receipt and may cancel a queued job, a
quote fixes the price, and the concurrency cap answers 429 with Retry-After. What a plan holds
a client to (its cap, hold time to live, prices, outcome policy) is in the plan catalogue, and
the jobs open against the client's cap are in its usage and the admin's client detail."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import gateway
from conftest import ADMIN_TOKEN, Clock
from openclaw_billing.ledger import open_holds
from openclaw_billing.service import get_service, set_service
from openclaw_billing.settings import get_settings
from openclaw_billing.store.capabilities import JobStorage
from tests.backends import store_url_fixture  # noqa: F401
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


# -- what a plan and a client are held to, where they look -------------------------------------

#: GET /api/billing/plans before the plan's terms were added to it, field for field: the
#: documented examples and the delivery contract read these, so they never change.
CATALOGUE_BEFORE = {
    "free": ("Free", 0, "$0", 5, 1, ["Basic submission", "24h history"], 10),
    "starter": ("Starter", 49, "$49", 50, 30, ["Priority support", "30-day history"], 60),
    "pro": ("Pro", 199, "$199", 200, 90, ["24/7 support", "analytics", "webhooks"], 300),
    "enterprise": (
        "Enterprise",
        None,
        "Custom",
        None,
        None,
        ["Dedicated support", "forever history"],
        1200,
    ),
}
_BEFORE_FIELDS = (
    "name",
    "price_usd",
    "price_label",
    "jobs_per_month",
    "history_days",
    "features",
    "requests_per_minute",
)
DEFAULT_ENDS = {
    "succeeded": "charge",
    "failed:infrastructure": "release",
    "failed:client_error": "charge",
    "timed_out": "release",
    "cancelled_before_start": "release",
    "cancelled_after_start": "charge",
    "expired": "release",
}


def _plans(http: TestClient) -> dict[str, Any]:
    answer = http.get("/api/billing/plans")
    assert answer.status_code == 200
    return {plan["id"]: plan for plan in answer.json()["plans"]}


def test_the_plans_publish_their_caps_hold_prices_and_outcome_policy(http: TestClient) -> None:
    plans = _plans(http)
    assert list(plans) == list(CATALOGUE_BEFORE)
    for plan_id, before in CATALOGUE_BEFORE.items():
        plan = plans[plan_id]
        assert tuple(plan[name] for name in _BEFORE_FIELDS) == before, plan_id
        assert plan["hold_ttl_seconds"] == 24 * 3600
        assert plan["job_prices"] == {"default": 1, "task_types": {}, "priority_surcharges": {}}
        assert plan["outcome_policy"] == DEFAULT_ENDS
        assert plan["usage_rates"] == {}
    caps = {plan_id: plan["max_active_jobs"] for plan_id, plan in plans.items()}
    assert caps == {"free": 1, "starter": 2, "pro": 5, "enterprise": None}
    assert len(plans["pro"]) == 1 + len(_BEFORE_FIELDS) + 5  # id, the old fields, the terms


def test_a_plans_own_prices_and_policy_are_published_as_the_quote_prices_them(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from openclaw_billing import plans

    own = replace(
        plans.PLANS[plans.PlanId.PRO],
        task_prices={"*": 2, "research": 4},
        priority_surcharges={"P0": 3},
        outcome_policy={"failed:client_error": plans.Settlement.RELEASE},
        hold_ttl=timedelta(hours=2),
        usage_rates={"tokens_out": 0.001},
    )
    monkeypatch.setitem(plans.PLANS, plans.PlanId.PRO, own)
    pro = _plans(http)["pro"]
    prices = pro["job_prices"]
    assert prices == {"default": 2, "task_types": {"research": 4}, "priority_surcharges": {"P0": 3}}
    # A plan's policy replaces the default one: an end it does not name is charged
    # (Plan.settlement), and shown so.
    charged = dict.fromkeys(DEFAULT_ENDS, "charge")
    assert pro["outcome_policy"] == charged | {"failed:client_error": "release"}
    assert (pro["hold_ttl_seconds"], pro["usage_rates"]) == (7200, {"tokens_out": 0.001})
    key = {"X-Client-Key": create_client(http, "pro")["api_key"]}
    for task_type, priority in (("research", "P0"), ("research", "P2"), ("feature_build", "P0")):
        body = {"task_type": task_type, "priority": priority}
        quote = http.post("/api/billing/quote", headers=key, json=body).json()
        table = prices["task_types"].get(task_type, prices["default"])
        assert quote["credits"] == table + prices["priority_surcharges"].get(priority, 0)


@contextmanager
def _gateway(monkeypatch: pytest.MonkeyPatch, **settings: str) -> Iterator[TestClient]:
    """A gateway of its own, made after these settings are set (the ``env`` fixture first)."""
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    set_service(None)
    with TestClient(gateway.create_app()) as http:
        yield http


def test_the_plans_show_the_hold_time_to_live_in_force(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _gateway(monkeypatch, OPENCLAW_HOLD_TTL_SECONDS="90") as http:
        assert {plan["hold_ttl_seconds"] for plan in _plans(http).values()} == {90}
        client = create_client(http, "enterprise")
        job = submit_job(http, client["api_key"]).json()["job"]
    held = datetime.fromisoformat(job["receipt"]["hold_until"])
    assert held - datetime.fromisoformat(job["created_at"]) == timedelta(seconds=90)


def _detail(http: TestClient, client_id: str) -> Any:
    return http.get(f"/api/admin/clients/{client_id}", headers=ADMIN).json()


def _open_against_cap(http: TestClient, client: dict[str, Any]) -> list[Any]:
    """(active_jobs, active_jobs_limit) as the client's usage and the admin's detail show them,
    and the detail's own cap."""
    usage, detail = _usage(http, client["api_key"]), _detail(http, client["client_id"])
    return [
        (usage["active_jobs"], usage["active_jobs_limit"]),
        (detail["active_jobs"], detail["active_jobs_limit"]),
        detail["max_active_jobs"],
    ]


def test_usage_and_the_client_detail_show_the_jobs_open_against_the_cap(http: TestClient) -> None:
    client = create_client(http, "starter", max_active_jobs=None)  # the plan's cap: 2
    assert _open_against_cap(http, client) == [(0, 2), (0, 2), None]
    first = submit_job(http, client["api_key"]).json()["job_id"]
    _report(http, first, status="running")
    submit_job(http, client["api_key"])
    assert _open_against_cap(http, client) == [(2, 2), (2, 2), None]
    assert submit_job(http, client["api_key"]).status_code == 429  # what the cap counts
    _report(http, first, status="succeeded")
    assert _open_against_cap(http, client) == [(1, 2), (1, 2), None]
    policy: dict[str, Any] = {
        "rate_limit_per_minute": None,
        "ip_allowlist": [],
        "max_active_jobs": 3,
    }
    http.put(f"/api/admin/clients/{client['client_id']}/policy", headers=ADMIN, json=policy)
    assert _open_against_cap(http, client) == [(1, 3), (1, 3), 3]
    unlimited = create_client(http, "enterprise", max_active_jobs=None)
    submit_job(http, unlimited["api_key"])
    assert _open_against_cap(http, unlimited) == [(1, None), (1, None), None]
    detail = _detail(http, client["client_id"])
    assert "api_key" not in detail
    assert all("digest" not in key for key in detail["api_keys"])


def test_a_job_open_across_a_cycle_reset_still_counts(
    env: Path, store_url: str, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    with _gateway(monkeypatch, OPENCLAW_BILLING_DB=store_url) as http:
        client = create_client(http, "free", max_active_jobs=None)  # the plan's cap: 1
        end = datetime.fromisoformat(_usage(http, client["api_key"])["billing_cycle_end"])
        clock.advance(seconds=(end - clock.now).total_seconds() - 3600)
        assert submit_job(http, client["api_key"]).status_code == 201
        clock.advance(hours=2)  # a new cycle; the job's hold lasts 24 hours
        usage = _usage(http, client["api_key"])
        assert (usage["credits_reserved"], usage["credits_remaining"]) == (0, 5)
        assert _open_against_cap(http, client) == [(1, 1), (1, 1), None]
        assert submit_job(http, client["api_key"]).status_code == 429  # the store counts it


def test_a_hold_the_ledger_no_longer_keeps_is_counted_from_the_stores_jobs(
    env: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _gateway(monkeypatch, OPENCLAW_BILLING_DB=store_url) as http:
        reads: list[str] = []
        store = get_service().store
        assert isinstance(store, JobStorage)
        active_jobs = store.active_jobs

        def counted(client_id: str) -> int:
            reads.append(client_id)
            return active_jobs(client_id)

        monkeypatch.setattr(store, "active_jobs", counted)
        client = create_client(http, "starter", max_active_jobs=None)  # the plan's cap: 2
        cid = client["client_id"]
        assert submit_job(http, client["api_key"]).status_code == 201
        assert _open_against_cap(http, client) == [(1, 2), (1, 2), None]
        assert reads == [cid] * 2  # usage and detail: the store's count, what the cap counts
        # Each move between a limited and an unlimited plan starts a cycle: from the second
        # on, the ledger no longer keeps the cycle the hold was taken in.
        for plan, cap in (("enterprise", None), ("starter", 2), ("enterprise", None)):
            http.put(f"/api/admin/clients/{cid}/plan", headers=ADMIN, json={"plan": plan})
            assert _open_against_cap(http, client) == [(1, cap), (1, cap), None], plan
        record = get_service().get_client(cid)
        assert open_holds(record) == 0  # a count of the ledger alone would be wrong here
        assert reads == [cid] * 8
        http.put(f"/api/admin/clients/{cid}/plan", headers=ADMIN, json={"plan": "starter"})
        assert submit_job(http, client["api_key"]).status_code == 201
        assert submit_job(http, client["api_key"]).status_code == 429  # what the store counts
        assert _open_against_cap(http, client) == [(2, 2), (2, 2), None]
