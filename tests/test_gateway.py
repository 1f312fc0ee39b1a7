"""The reference gateway: intake, jobs, history windows, persistence, health, start-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import gateway
from conftest import ADMIN_TOKEN, Clock
from openclaw_billing.errors import StoreUnavailable
from openclaw_billing.settings import get_settings
from tests.factories import JOB_BODY, create_client, submit_job


def test_intake_charges_one_credit_and_answers_with_the_job(http: TestClient) -> None:
    client = create_client(http, "starter")
    response = submit_job(http, client["api_key"])
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    assert body["credits_remaining"] == 49
    assert body["job"]["project_name"] == "Feature Build"
    assert body["job"]["client_id"] == client["client_id"]
    detail = http.get(
        f"/api/admin/clients/{client['client_id']}", headers={"X-Auth-Token": ADMIN_TOKEN}
    ).json()
    assert [e["job_id"] for e in detail["metadata"]["cost_log"]] == [body["job_id"]]


@pytest.mark.parametrize(
    "change",
    [
        {"credits_remaining": 1000},
        {"client_id": "someone-else"},
        {"priority": "P9"},
        {"project_name": ""},
        {"task_type": "Feature Build!"},
        {"description": "x" * 20_001},
    ],
)
def test_invalid_job_bodies_are_422_and_charge_nothing(
    http: TestClient, change: dict[str, Any]
) -> None:
    client = create_client(http, "free")
    response = submit_job(http, client["api_key"], **change)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    usage = http.get("/api/billing/usage", headers={"X-Client-Key": client["api_key"]}).json()
    assert usage["credits_remaining"] == 5


def test_intake_without_a_valid_key_is_401_and_queues_nothing(http: TestClient, env: Path) -> None:
    for headers in ({}, {"X-Client-Key": "oc_live_" + "0" * 32}):
        response = http.post("/api/intake", headers=headers, json=JOB_BODY)
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_api_key"
    assert not (env / "jobs.jsonl").exists()


def test_a_bad_key_is_401_even_when_the_body_is_invalid_too(http: TestClient, env: Path) -> None:
    # The intake runs its key check together with the charge (one hand-off); a body that
    # fails validation must not let an unauthenticated caller learn anything beyond 401.
    for headers in ({}, {"X-Client-Key": "oc_live_" + "0" * 32}):
        response = http.post("/api/intake", headers=headers, json={"priority": "P9"})
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_api_key"
    assert not (env / "jobs.jsonl").exists()


def test_invalid_bodies_of_a_client_count_against_its_rate_limit(http: TestClient) -> None:
    client = create_client(http, "free")  # 10 requests a minute
    for sent in range(1, 11):
        response = submit_job(http, client["api_key"], priority="P9")
        assert response.status_code == 422
        assert response.headers["RateLimit-Limit"] == "10"
        assert response.headers["RateLimit-Remaining"] == str(10 - sent)
    response = submit_job(http, client["api_key"])
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"


def test_a_client_sees_only_its_own_jobs(http: TestClient) -> None:
    a = create_client(http, "pro")
    b = create_client(http, "pro")
    job_a = submit_job(http, a["api_key"]).json()["job_id"]
    job_b = submit_job(http, b["api_key"]).json()["job_id"]
    listed = http.get("/api/jobs", headers={"X-Client-Key": a["api_key"]}).json()
    assert [j["job_id"] for j in listed["jobs"]] == [job_a]
    assert listed["history_days"] == 90
    own = http.get(f"/api/jobs/{job_a}", headers={"X-Client-Key": a["api_key"]})
    assert own.status_code == 200
    other = http.get(f"/api/jobs/{job_b}", headers={"X-Client-Key": a["api_key"]})
    assert other.status_code == 404
    assert other.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("plan", "visible_after_days", "hidden_after_days"),
    [("free", 0.9, 1.1), ("starter", 29, 31), ("pro", 89, 91)],
)
def test_job_history_follows_the_plan_window(
    http: TestClient, clock: Clock, plan: str, visible_after_days: float, hidden_after_days: float
) -> None:
    client = create_client(http, plan)
    headers = {"X-Client-Key": client["api_key"]}
    job_id = submit_job(http, client["api_key"]).json()["job_id"]
    clock.advance(days=visible_after_days)
    assert [j["job_id"] for j in http.get("/api/jobs", headers=headers).json()["jobs"]] == [job_id]
    assert http.get(f"/api/jobs/{job_id}", headers=headers).status_code == 200
    clock.advance(days=hidden_after_days - visible_after_days)
    assert http.get("/api/jobs", headers=headers).json()["jobs"] == []
    assert http.get(f"/api/jobs/{job_id}", headers=headers).status_code == 404


def test_enterprise_history_is_forever(http: TestClient, clock: Clock) -> None:
    client = create_client(http, "enterprise")
    job_id = submit_job(http, client["api_key"]).json()["job_id"]
    clock.advance(days=3650)
    jobs = http.get("/api/jobs", headers={"X-Client-Key": client["api_key"]}).json()
    assert [j["job_id"] for j in jobs["jobs"]] == [job_id]
    assert jobs["history_days"] is None


def test_jobs_and_credits_persist_across_restarts(env: Path) -> None:
    with TestClient(gateway.create_app()) as first:
        client = create_client(first, "starter")
        job_id = submit_job(first, client["api_key"]).json()["job_id"]
    with TestClient(gateway.create_app()) as second:
        headers = {"X-Client-Key": client["api_key"]}
        assert second.get(f"/api/jobs/{job_id}", headers=headers).status_code == 200
        assert second.get("/api/billing/usage", headers=headers).json()["credits_remaining"] == 49


def test_a_torn_last_job_line_is_skipped_and_the_next_job_stands_alone(
    http: TestClient, env: Path
) -> None:
    client = create_client(http, "pro")
    first = submit_job(http, client["api_key"]).json()["job_id"]
    with (env / "jobs.jsonl").open("ab") as handle:
        handle.write(b'{"job_id": "torn')
    second = submit_job(http, client["api_key"]).json()["job_id"]
    with TestClient(gateway.create_app()) as fresh:
        jobs = fresh.get("/api/jobs", headers={"X-Client-Key": client["api_key"]}).json()
    assert [j["job_id"] for j in jobs["jobs"]] == [first, second]
    lines = (env / "jobs.jsonl").read_bytes().splitlines()
    assert json.loads(lines[-1])["job_id"] == second


def test_health(http: TestClient) -> None:
    response = http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_unknown_paths_and_methods_keep_the_error_shape(http: TestClient) -> None:
    missing = http.get("/api/nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    wrong = http.get("/api/intake")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"


def test_openapi_documents_both_security_schemes(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ClientKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Client-Key",
        "description": "The client's API key, `oc_live_` + 32 lowercase hex characters.",
    }
    assert schemes["AdminToken"]["name"] == "X-Auth-Token"
    assert schema["paths"]["/api/intake"]["post"]["security"] == [{"ClientKey": []}]
    assert schema["paths"]["/api/admin/clients"]["post"]["security"] == [{"AdminToken": []}]


# -- start-up -------------------------------------------------------------------------------


def test_main_generates_and_prints_an_admin_token_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: Path
) -> None:
    monkeypatch.delenv("OPENCLAW_ADMIN_TOKEN")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("gateway.uvicorn.run", lambda *a, **kw: calls.append({"a": a, **kw}))
    assert gateway.main([]) == 0
    out = capsys.readouterr().out
    token = get_settings().admin_token
    assert token is not None
    assert out.count(token.get_secret_value()) == 1
    assert f"export OPENCLAW_ADMIN_TOKEN={token.get_secret_value()}" in out
    assert calls == [{"a": ("gateway:app",), "host": "127.0.0.1", "port": 18789, "workers": 1}]


def test_main_port_comes_from_the_flag_then_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: Path
) -> None:
    ports: list[int] = []
    monkeypatch.setattr("gateway.uvicorn.run", lambda *a, **kw: ports.append(kw["port"]))
    monkeypatch.setenv("OPENCLAW_GATEWAY_PORT", "19999")
    gateway.main([])
    gateway.main(["--port", "18001"])
    assert ports == [19999, 18001]


def test_main_refuses_a_placeholder_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: Path
) -> None:
    monkeypatch.setenv("OPENCLAW_ADMIN_TOKEN", "your-secret-admin-token")
    monkeypatch.setattr("gateway.uvicorn.run", lambda *a, **kw: pytest.fail("must not start"))
    assert gateway.main([]) == 2
    assert "placeholder" in capsys.readouterr().err


def test_a_job_that_cannot_be_queued_is_refunded(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = create_client(http, "free")

    def disk_full(self: gateway.JobStore, job: gateway.Job) -> None:
        raise StoreUnavailable("Cannot write the job file: No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(gateway.JobStore, "add", disk_full)
        response = submit_job(http, client["api_key"])
        assert response.status_code == 503
        assert response.json()["code"] == "store_unavailable"
        detail = http.get(
            f"/api/admin/clients/{client['client_id']}", headers={"X-Auth-Token": ADMIN_TOKEN}
        ).json()
        assert detail["credits_remaining"] == 5
        assert detail["metadata"]["cost_log"] == []
    assert submit_job(http, client["api_key"]).json()["credits_remaining"] == 4
