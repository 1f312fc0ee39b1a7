"""``Idempotency-Key`` on ``POST /api/intake`` (docs/ARCHITECTURE.md R3, R4).

The same key and body get the first answer again and are charged once; the same key with
another body is a conflict that charges nothing; keys are per client; a request still running
under a key makes its duplicates retry; a job refunded because it could not be queued can be
retried; R3 and R4 hold under several uvicorn workers.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import datetime
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
from openclaw_billing.service import BillingService, get_service
from openclaw_billing.store.capabilities import JobStorage
from tests.backends import all_clients
from tests.factories import JOB_BODY, create_client, create_client_at, submit_job
from tests.invariants import check_store_file
from tests.server import running_gateway

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}
KEY = "4f1c2a9e-8d0b-4c47-9a63-2f5e1b7d0c11"


def keyed(http: TestClient, api_key: str, key: str | bytes, **overrides: Any) -> httpx.Response:
    response: httpx.Response = http.post(
        "/api/intake",
        headers={"X-Client-Key": api_key, "Idempotency-Key": key},
        json=JOB_BODY | overrides,
    )
    return response


def detail(http: TestClient, client_id: str) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"/api/admin/clients/{client_id}", headers=ADMIN).json()
    return body


def ledger(http: TestClient, client_id: str) -> list[str]:
    return [e["job_id"] for e in detail(http, client_id)["metadata"]["cost_log"]]


def job_lines(env: Path) -> list[dict[str, Any]]:
    """Every stored job, as the gateway's job record would hold it (None fields left out)."""
    store = get_service().store
    assert isinstance(store, JobStorage)
    jobs = [job for record in all_clients(store) for job in store.client_jobs(record.client_id)]
    return [
        gateway_jobs.record_of(job).model_dump(mode="json", exclude_none=True)
        for job in sorted(jobs, key=lambda job: job.created_at)
    ]


# -- same key ---------------------------------------------------------------------------------


def test_same_key_and_body_get_the_first_answer_and_one_charge(http: TestClient, env: Path) -> None:
    client = create_client(http, "starter")
    first = keyed(http, client["api_key"], KEY)
    assert first.status_code == 201
    assert first.json()["credits_remaining"] == 49
    assert "Idempotent-Replayed" not in first.headers
    for _ in range(3):
        again = keyed(http, client["api_key"], KEY)
        assert again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
    job_id = first.json()["job_id"]
    assert job_id == gateway_jobs.idempotent_job_id(client["client_id"], KEY)
    assert detail(http, client["client_id"])["credits_remaining"] == 49
    assert ledger(http, client["client_id"]) == [job_id]
    assert [line["job_id"] for line in job_lines(env)] == [job_id]
    check_store_file(env / "clients.json")


def test_the_idempotency_fields_are_stored_but_never_served(http: TestClient, env: Path) -> None:
    client = create_client(http, "pro")
    headers = {"X-Client-Key": client["api_key"]}
    keyed_job = keyed(http, client["api_key"], KEY).json()
    plain_job = submit_job(http, client["api_key"]).json()
    for served in (
        keyed_job["job"],
        plain_job["job"],
        http.get(f"/api/jobs/{keyed_job['job_id']}", headers=headers).json(),
        *http.get("/api/jobs", headers=headers).json()["jobs"],
    ):
        assert "request_hash" not in served
        assert "credits_remaining" not in served
    keyed_line, plain_line = job_lines(env)
    assert len(keyed_line["request_hash"]) == 64
    assert keyed_line["credits_remaining"] == keyed_job["credits_remaining"]
    # An unkeyed job is stored without a request hash.
    assert "request_hash" not in plain_line


@pytest.mark.parametrize(
    "variant",
    [
        {},  # identical
        {"priority": JOB_BODY["priority"], "project_name": JOB_BODY["project_name"]},  # reordered
        {"project_name": "  " + JOB_BODY["project_name"] + " "},  # trimmed by validation
    ],
)
def test_bodies_are_compared_after_validation(http: TestClient, variant: dict[str, str]) -> None:
    client = create_client(http, "pro")
    first = keyed(http, client["api_key"], KEY).json()
    body = dict(variant) | {k: v for k, v in JOB_BODY.items() if k not in variant}
    again = http.post(
        "/api/intake",
        headers={"X-Client-Key": client["api_key"], "Idempotency-Key": KEY},
        json=body,
    )
    assert again.status_code == 201
    assert again.json() == first
    assert len(ledger(http, client["client_id"])) == 1


def test_an_explicit_default_is_the_same_body(http: TestClient) -> None:
    client = create_client(http, "pro")
    lean = {k: v for k, v in JOB_BODY.items() if k != "task_type"}
    headers = {"X-Client-Key": client["api_key"], "Idempotency-Key": KEY}
    first = http.post("/api/intake", headers=headers, json=lean)
    again = http.post("/api/intake", headers=headers, json=lean | {"task_type": "feature_build"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()


@pytest.mark.parametrize(
    "change",
    [
        {"description": "Add user authentication, and 2FA"},
        {"priority": "P0"},
        {"task_type": "bug_fix"},
    ],
)
def test_same_key_other_body_is_a_conflict_and_charges_nothing(
    http: TestClient, env: Path, change: dict[str, str]
) -> None:
    client = create_client(http, "starter")
    first = keyed(http, client["api_key"], KEY).json()
    conflict = keyed(http, client["api_key"], KEY, **change)
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "idempotency_conflict"
    assert "different request body" in conflict.json()["message"]
    assert detail(http, client["client_id"])["credits_remaining"] == 49
    assert ledger(http, client["client_id"]) == [first["job_id"]]
    assert len(job_lines(env)) == 1
    # The key still stands for the first job.
    assert keyed(http, client["api_key"], KEY).json() == first


def test_keys_are_scoped_per_client(http: TestClient) -> None:
    a = create_client(http, "starter")
    b = create_client(http, "starter")
    job_a = keyed(http, a["api_key"], KEY)
    job_b = keyed(http, b["api_key"], KEY, description="Something else entirely")
    assert job_a.status_code == job_b.status_code == 201
    assert job_a.json()["job_id"] != job_b.json()["job_id"]
    assert job_b.json()["job"]["client_id"] == b["client_id"]
    assert ledger(http, a["client_id"]) == [job_a.json()["job_id"]]
    assert ledger(http, b["client_id"]) == [job_b.json()["job_id"]]
    # B's key cannot read A's job, even knowing the key.
    other = http.get(f"/api/jobs/{job_a.json()['job_id']}", headers={"X-Client-Key": b["api_key"]})
    assert other.status_code == 404


def test_without_a_key_every_request_is_a_new_job(http: TestClient) -> None:
    client = create_client(http, "starter")
    first = submit_job(http, client["api_key"]).json()
    second = submit_job(http, client["api_key"]).json()
    assert first["job_id"] != second["job_id"]
    assert not first["job_id"].startswith("idem-")
    assert second["credits_remaining"] == 48
    assert len(ledger(http, client["client_id"])) == 2


def test_a_key_and_no_key_are_different_jobs(http: TestClient) -> None:
    client = create_client(http, "starter")
    with_key = keyed(http, client["api_key"], KEY).json()
    without = submit_job(http, client["api_key"]).json()
    assert with_key["job_id"] != without["job_id"]
    assert without["credits_remaining"] == 48


# -- the header ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "",
        " ",
        " leading",
        "trailing ",
        "x" * 256,
        "tab\there",
        "del\x7f",
        "caf\u00e9".encode("latin-1"),
        "\u00e9t\u00e9".encode(),
    ],
    ids=["empty", "space", "leading", "trailing", "256", "tab", "del", "latin1", "utf8"],
)
def test_an_invalid_key_is_400_and_charges_nothing(
    http: TestClient, env: Path, key: str | bytes
) -> None:
    client = create_client(http, "starter")
    response = keyed(http, client["api_key"], key)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_idempotency_key"
    assert body["message"] == gateway_jobs.InvalidIdempotencyKey.message
    assert detail(http, client["client_id"])["credits_remaining"] == 50
    assert job_lines(env) == []


@pytest.mark.parametrize(
    "key",
    ["a", "x" * 255, "with inner spaces", "".join(chr(c) for c in range(0x21, 0x7F))],
    ids=["one", "255", "spaces", "all-printable"],
)
def test_valid_keys_are_accepted(http: TestClient, key: str) -> None:
    client = create_client(http, "starter")
    first = keyed(http, client["api_key"], key)
    assert first.status_code == 201
    assert keyed(http, client["api_key"], key).json() == first.json()
    assert detail(http, client["client_id"])["credits_remaining"] == 49


def test_a_bad_client_key_is_401_before_the_idempotency_key_is_looked_at(
    http: TestClient,
) -> None:
    response = keyed(http, "oc_live_" + "0" * 32, "")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"


def test_the_header_is_documented(http: TestClient) -> None:
    operation = http.get("/openapi.json").json()["paths"]["/api/intake"]["post"]
    (param,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert param["in"] == "header"
    assert not param.get("required", False)
    assert {"400", "409"} <= set(operation["responses"])


# -- in progress, refunded, abandoned ---------------------------------------------------------


def test_a_charge_left_without_its_job_is_completed_by_a_retry_without_charging_again(
    http: TestClient, service: BillingService, env: Path
) -> None:
    """A charge made under the key's job id without a job (by an earlier release that died
    between its charge and its job file): the retry stores the job under the credit already
    paid, at once (the job and its charge are one step now, so nothing is ever in progress)."""
    client = create_client(http, "starter")
    job_id = gateway_jobs.idempotent_job_id(client["client_id"], KEY)
    charged = service.charge(client["client_id"], job_id=job_id)  # what the first request did
    response = keyed(http, client["api_key"], KEY)
    assert response.status_code == 201
    assert response.headers["Idempotent-Replayed"] == "true"
    body = response.json()
    assert body["job_id"] == job_id
    assert body["credits_remaining"] == 49
    assert datetime.fromisoformat(body["created_at"]) == charged.charged_at
    assert ledger(http, client["client_id"]) == [job_id]
    assert len(job_lines(env)) == 1
    assert keyed(http, client["api_key"], KEY).json() == body


def test_the_ledger_forgets_a_refunded_job_so_it_is_charged_again(
    service: BillingService, http: TestClient
) -> None:
    """What the retry after a failed queue relies on: after a refund the job id is unknown to
    the ledger, so the next charge is a real one (``replayed`` False)."""
    client = create_client(http, "starter")
    job_id = gateway_jobs.idempotent_job_id(client["client_id"], KEY)
    first = service.charge(client["client_id"], job_id=job_id)
    assert not first.replayed
    assert service.charge(client["client_id"], job_id=job_id).replayed
    assert service.refund(client["client_id"], job_id)
    again = service.charge(client["client_id"], job_id=job_id)
    assert not again.replayed
    assert again.credits_remaining == 49


def test_a_job_the_store_could_not_take_charges_nothing_and_can_be_retried(
    http: TestClient, service: BillingService, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = create_client(http, "starter")

    def disk_full(batch: Any) -> Any:
        raise StoreUnavailable("Cannot write the billing store: No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(service.store, "mutate_batch", disk_full)
        failed = keyed(http, client["api_key"], KEY)
        assert failed.status_code == 503
        assert failed.json()["code"] == "store_unavailable"
    assert detail(http, client["client_id"])["credits_remaining"] == 50
    assert ledger(http, client["client_id"]) == []
    retried = keyed(http, client["api_key"], KEY)
    assert retried.status_code == 201
    assert retried.json()["credits_remaining"] == 49
    assert "Idempotent-Replayed" not in retried.headers
    assert ledger(http, client["client_id"]) == [retried.json()["job_id"]]
    assert len(job_lines(env)) == 1
    check_store_file(env / "clients.json")


def test_a_replay_never_charges_even_with_no_credits_left(http: TestClient) -> None:
    client = create_client(http, "free")
    first = keyed(http, client["api_key"], KEY).json()
    for _ in range(4):
        assert submit_job(http, client["api_key"]).status_code == 201
    assert submit_job(http, client["api_key"]).json()["code"] == "credit_limit_reached"
    again = keyed(http, client["api_key"], KEY)
    assert again.status_code == 201
    assert again.json() == first


def test_a_replay_after_cycles_rolled_over_is_not_charged(
    http: TestClient, env: Path, clock: Clock
) -> None:
    """The ledger only remembers a job id for this cycle and the one before; the job file
    answers the replay, so even months later nothing is charged."""
    client = create_client(http, "starter")
    first = keyed(http, client["api_key"], KEY).json()
    for months in (1, 2, 3):
        clock.advance(days=31)
        again = keyed(http, client["api_key"], KEY)
        assert again.status_code == 201, months
        assert again.json() == first
        assert detail(http, client["client_id"])["credits_remaining"] == 50
        assert ledger(http, client["client_id"]) == []
    conflict = keyed(http, client["api_key"], KEY, priority="P0")
    assert conflict.json()["code"] == "idempotency_conflict"
    assert len(job_lines(env)) == 1
    check_store_file(env / "clients.json")


def test_keys_survive_a_restart_and_old_job_lines_still_load(env: Path) -> None:
    old_line = {
        "project_name": "Legacy",
        "description": "Written before idempotency keys",
        "task_type": "feature_build",
        "priority": "P2",
        "job_id": "legacy-1",
        "client_id": "someone",
        "status": "queued",
        "created_at": "2026-01-01T00:00:00Z",
    }
    (env / "jobs.jsonl").write_text(json.dumps(old_line) + "\n")
    with TestClient(gateway.create_app()) as first:
        client = create_client(first, "starter")
        answer = keyed(first, client["api_key"], KEY).json()
    with TestClient(gateway.create_app()) as second:
        again = keyed(second, client["api_key"], KEY)
        assert again.status_code == 201
        assert again.json() == answer
        assert keyed(second, client["api_key"], KEY, priority="P3").status_code == 409
        assert detail(second, client["client_id"])["credits_remaining"] == 49
        jobs = second.app.state.jobs  # type: ignore[attr-defined]
        assert isinstance(jobs, gateway_jobfile.JobStore)
        legacy = jobs.get("legacy-1")
        assert legacy is not None
        assert legacy.request_hash is None


# -- R3 and R4 under several workers -------------------------------------------------------------

CONCURRENT = 50


def _concurrent_duplicates(base: str, api_key: str, key: str) -> list[httpx.Response]:
    barrier = threading.Barrier(CONCURRENT)
    replies: list[httpx.Response | BaseException] = [RuntimeError("no reply")] * CONCURRENT

    def one(index: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            client.get("/health")  # connect before the barrier, so the posts really overlap
            barrier.wait(timeout=30)
            try:
                replies[index] = client.post(
                    "/api/intake",
                    headers={"X-Client-Key": api_key, "Idempotency-Key": key},
                    json=JOB_BODY,
                )
            except httpx.HTTPError as exc:
                replies[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    failures = [r for r in replies if not isinstance(r, httpx.Response)]
    assert not failures, failures
    return [r for r in replies if isinstance(r, httpx.Response)]


@pytest.mark.slow
def test_r3_r4_concurrent_duplicates_are_charged_once_across_workers(tmp_path: Path) -> None:
    with running_gateway(tmp_path, workers=2) as base:
        created = create_client_at(base, "starter")
        client_id, api_key = created["client_id"], created["api_key"]

        started = time.monotonic()
        replies = _concurrent_duplicates(base, api_key, KEY)
        elapsed = time.monotonic() - started

        statuses = Counter(r.status_code for r in replies)
        assert not [r for r in replies if r.status_code >= 500], statuses
        accepted = [r.json() for r in replies if r.status_code == 201]
        in_progress = [r.json() for r in replies if r.status_code == 409]
        assert accepted, statuses
        assert len(accepted) + len(in_progress) == CONCURRENT, statuses
        assert all(body == accepted[0] for body in accepted)
        assert {body["code"] for body in in_progress} <= {"idempotency_in_progress"}
        job_id = accepted[0]["job_id"]
        assert accepted[0]["credits_remaining"] == 49
        print(  # the R3 figures (pytest -s shows them)
            f"\nR3: {CONCURRENT} concurrent duplicates on 2 workers in {elapsed:.2f} s: "
            f"{len(accepted)} x 201 (one job {job_id}), "
            f"{len(in_progress)} x 409 idempotency_in_progress, 0 x 5xx"
        )

        # Those told to retry get the first answer when they do.
        retried = httpx.post(
            f"{base}/api/intake",
            headers={"X-Client-Key": api_key, "Idempotency-Key": KEY},
            json=JOB_BODY,
        )
        assert retried.status_code == 201
        assert retried.json() == accepted[0]

        client = httpx.get(f"{base}/api/admin/clients/{client_id}", headers=ADMIN).json()
        assert client["credits_remaining"] == 49
        assert [e["job_id"] for e in client["metadata"]["cost_log"]] == [job_id]
        listed = httpx.get(f"{base}/api/jobs", headers={"X-Client-Key": api_key}).json()
        assert [job["job_id"] for job in listed["jobs"]] == [job_id]

        # R4: the same key with another body is a clear conflict; nothing is charged.
        conflict = httpx.post(
            f"{base}/api/intake",
            headers={"X-Client-Key": api_key, "Idempotency-Key": KEY},
            json=JOB_BODY | {"description": "Something else"},
        )
        assert conflict.status_code == 409
        assert conflict.json()["code"] == "idempotency_conflict"
        client = httpx.get(f"{base}/api/admin/clients/{client_id}", headers=ADMIN).json()
        assert client["credits_remaining"] == 49
        assert [e["job_id"] for e in client["metadata"]["cost_log"]] == [job_id]
        listed = httpx.get(f"{base}/api/jobs", headers={"X-Client-Key": api_key}).json()
        assert len(listed["jobs"]) == 1
    check_store_file(tmp_path / "clients.json", [api_key])
