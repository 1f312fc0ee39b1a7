"""The reference gateway: intake, jobs, history windows, persistence, health, start-up,
credentials in URLs, the access log and the job file's mode."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import gateway
import gateway_jobfile
import gateway_jobs
from conftest import ADMIN_TOKEN, Clock
from openclaw_billing.errors import StoreUnavailable
from openclaw_billing.service import BillingService, set_service
from openclaw_billing.settings import get_settings
from openclaw_billing.store import JsonFileStore, json_replica
from tests.factories import JOB_BODY, create_client, create_client_at, submit_job
from tests.primitives_only import PrimitivesOnly
from tests.server import REPO_ROOT, clean_env, free_port, log_path, running_gateway


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


@pytest.fixture
def file_jobs(env: Path) -> None:
    """The gateway over a store that keeps no jobs (a host's own Store without
    ``JobStorage``): jobs go to the job file, after the charge."""
    set_service(BillingService(PrimitivesOnly(JsonFileStore(env / "clients.json"))))


@pytest.mark.usefixtures("file_jobs")
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


@pytest.mark.usefixtures("file_jobs")
def test_a_job_that_cannot_be_queued_is_refunded(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = create_client(http, "free")

    def disk_full(self: gateway_jobfile.JobStore, job: gateway_jobs.Job) -> None:
        raise StoreUnavailable("Cannot write the job file: No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(gateway_jobfile.JobStore, "add", disk_full)
        response = submit_job(http, client["api_key"])
        assert response.status_code == 503
        assert response.json()["code"] == "store_unavailable"
        detail = http.get(
            f"/api/admin/clients/{client['client_id']}", headers={"X-Auth-Token": ADMIN_TOKEN}
        ).json()
        assert detail["credits_remaining"] == 5
        assert detail["metadata"]["cost_log"] == []
    assert submit_job(http, client["api_key"]).json()["credits_remaining"] == 4


# -- secrets never in URLs or logs; files 0600 ----------------------------------------------------


def test_a_store_failure_shows_the_client_no_path_and_no_system_error(
    http: TestClient,
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The 503's detail (the store file's path, the system's error) goes to the log only."""
    client = create_client(http, "free")

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json_replica, "append", disk_full)
    for response in (
        submit_job(http, client["api_key"]),
        http.put(
            f"/api/admin/clients/{client['client_id']}/credits",
            headers={"X-Auth-Token": ADMIN_TOKEN},
            json={"credits": 5, "reason": "promo"},
        ),
    ):
        assert response.status_code == 503
        assert response.json()["message"] == StoreUnavailable.message
        assert str(env) not in response.text
        assert "No space" not in response.text
    assert f"Cannot write the billing store {env}" in caplog.text
    assert "No space left on device" in caplog.text


def _secured_routes(http: TestClient, scheme: str) -> list[tuple[str, str]]:
    """(method, path) of every route that takes ``scheme``, path ids filled in."""
    schema = http.get("/openapi.json").json()
    routes = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if {scheme: []} in operation.get("security", []):
                routes.append((method.upper(), re.sub(r"\{[^}]+\}", "some-id", path)))
    return routes


#: Query strings that carry a client key: by a credential's name, or by a key-like value.
KEY_QUERIES = ("api_key={key}", "key={key}", "apikey={key}", "X-API-Key={key}", "q={key}")


def test_a_client_key_in_the_query_string_is_401_on_every_route_that_takes_a_key(
    http: TestClient,
) -> None:
    client = create_client(http, "free")
    key = client["api_key"]
    routes = _secured_routes(http, "ClientKey")
    assert ("POST", "/api/intake") in routes
    assert ("GET", "/api/billing/usage") in routes
    assert len(routes) >= 6
    for method, path in routes:
        for query in (*KEY_QUERIES, "api_key=anything", "token=anything"):
            response = http.request(
                method,
                f"{path}?{query.format(key=key)}",
                headers={"X-Client-Key": key},  # even with the key where it belongs
                json=JOB_BODY,
            )
            where = f"{method} {path}?{query}"
            assert response.status_code == 401, where
            assert response.json()["code"] == "credentials_in_query", where
            assert "X-Client-Key header" in response.json()["message"], where
            assert key not in response.text, where
    usage = http.get("/api/billing/usage", headers={"X-Client-Key": key}).json()
    assert usage["credits_remaining"] == 5  # nothing was charged
    # Ordinary query parameters still work.
    assert http.get("/api/jobs?limit=5", headers={"X-Client-Key": key}).status_code == 200


def test_the_admin_token_in_the_query_string_is_401_on_every_admin_route(
    http: TestClient,
) -> None:
    key = create_client(http, "free")["api_key"]
    routes = _secured_routes(http, "AdminToken")
    assert len(routes) >= 14
    queries = (
        f"token={ADMIN_TOKEN}",
        f"x-auth-token={ADMIN_TOKEN}",
        f"admin_token={ADMIN_TOKEN}",
        f"note={ADMIN_TOKEN}",  # the token itself, under any name
        f"api_key={key}",
    )
    for method, path in routes:
        for query in queries:
            response = http.request(
                method,
                f"{path}?{query}",
                headers={"X-Auth-Token": ADMIN_TOKEN},
                json={},
            )
            where = f"{method} {path}?{query}"
            assert response.status_code == 401, where
            assert response.json()["code"] == "credentials_in_query", where
            assert "X-Auth-Token header" in response.json()["message"], where
    listed = http.get(
        "/api/admin/clients?limit=5&active=true", headers={"X-Auth-Token": ADMIN_TOKEN}
    )
    assert listed.status_code == 200


def test_the_access_log_never_writes_a_query_string(tmp_path: Path) -> None:
    with running_gateway(tmp_path, workers=2, log_level="info") as base:
        key = create_client_at(base, "free")["api_key"]
        sent = [
            ("GET", f"/api/billing/usage?api_key={key}", 401),
            ("POST", f"/api/intake?key={key}", 401),
            ("GET", f"/api/jobs?limit=3&x-api-key={key}", 401),
            ("GET", f"/api/admin/clients?token={ADMIN_TOKEN}", 401),
            ("GET", f"/api/billing/return?checkout=success&session_id={key}", 200),
            ("GET", f"/health?anything={key}", 200),
            ("GET", f"/no/such/{key}?x=1", 404),
            ("GET", f"/api/admin/clients/{ADMIN_TOKEN}", 401),  # a token pasted in a path
        ]
        for _ in range(2):  # both workers, most likely
            for method, target, expected in sent:
                response = httpx.request(method, f"{base}{target}", json=JOB_BODY)
                assert response.status_code == expected, (target, response.text)
    port = base.rsplit(":", 1)[1]
    log = log_path(tmp_path, port).read_text()
    assert key not in log
    assert key[8:] not in log  # not even the hex part
    assert ADMIN_TOKEN not in log
    assert "session_id" not in log
    # The lines are there, with the query replaced.
    assert '"GET /api/billing/usage?[redacted] HTTP/1.1" 401' in log
    assert '"POST /api/intake?[redacted] HTTP/1.1" 401' in log
    assert '"GET /no/such/oc_live_[redacted]?[redacted] HTTP/1.1" 404' in log
    assert '"GET /api/admin/clients/[redacted] HTTP/1.1" 401' in log
    assert log.count("?[redacted]") >= 2 * (len(sent) - 1)


@pytest.mark.usefixtures("file_jobs")
def test_the_jobs_file_is_0600_whatever_the_umask(http: TestClient, env: Path) -> None:
    jobs = env / "jobs.jsonl"
    client = create_client(http, "pro")
    old = os.umask(0)
    try:
        assert submit_job(http, client["api_key"]).status_code == 201
    finally:
        os.umask(old)
    assert jobs.stat().st_mode & 0o777 == 0o600


@pytest.mark.usefixtures("file_jobs")
def test_an_existing_jobs_file_with_a_wider_mode_is_narrowed(env: Path) -> None:
    jobs = env / "jobs.jsonl"
    jobs.write_bytes(b"")
    jobs.chmod(0o644)
    with TestClient(gateway.create_app()) as http:
        assert jobs.stat().st_mode & 0o777 == 0o600  # at start, before any job
        jobs.chmod(0o666)  # widened while running: narrowed again by the next append
        client = create_client(http, "pro")
        assert submit_job(http, client["api_key"]).status_code == 201
    assert jobs.stat().st_mode & 0o777 == 0o600


# -- a refused start: one clear line, no traceback -------------------------------------------------


@pytest.mark.parametrize("how", ["uvicorn", "python gateway.py"])
@pytest.mark.parametrize("problem", ["corrupt store", "unsupported URL"])
def test_a_refused_start_prints_its_message_without_a_traceback(
    tmp_path: Path, how: str, problem: str
) -> None:
    store = tmp_path / "clients.json"
    if problem == "corrupt store":
        store.write_text("{not json")
        db, expected = str(store), f"The billing store {store} is not valid JSON"
    else:
        db, expected = (
            "mysql://db.internal/billing",
            "OPENCLAW_BILLING_DB uses the unsupported scheme",
        )
    command = (
        [sys.executable, "-m", "uvicorn", "gateway:app", "--port", str(free_port())]
        if how == "uvicorn"
        else [sys.executable, "gateway.py", "--port", str(free_port())]
    )
    env = clean_env() | {
        "OPENCLAW_BILLING_DB": db,
        "OPENCLAW_JOBS_FILE": str(tmp_path / "jobs.jsonl"),
        "OPENCLAW_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert f"Refusing to start: {expected}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    if problem == "corrupt store":
        assert store.read_text() == "{not json"  # left untouched


@pytest.mark.parametrize(
    "character", ["\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u202e"], ids=repr
)
def test_a_description_with_a_control_character_is_a_422_and_charges_nothing(
    http: TestClient, character: str
) -> None:
    client = create_client(http, "free")
    refused = submit_job(http, client["api_key"], description=f"Build{character}it")
    assert refused.status_code == 422
    assert refused.json()["code"] == "validation_error"
    # Text of several lines is a description's own: tabs and line breaks stay.
    accepted = submit_job(http, client["api_key"], description="Build it:\n\t- login\r\n- logout")
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["credits_remaining"] == 4  # one charge, for the accepted job


def test_a_worker_leaves_what_it_loaded_at_start_out_of_full_collections(env: Path) -> None:
    """The lifespan freezes what start-up loaded (``gc.freeze``), so the collector's full
    passes do not walk the JSON store's records, and lets go of it at shutdown."""
    assert gc.get_freeze_count() == 0
    with TestClient(gateway.create_app()):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
