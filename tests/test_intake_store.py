"""The gateway's intake on every store (each keeps jobs: ``JobStorage``): the charge and its job in
one atomic step, the jobs read from the store, the key re-checked by the charge, the job file
of an earlier release imported, and no thread hand-off for a key this worker knows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

import gateway
from conftest import ADMIN_TOKEN
from openclaw_billing.service import BillingService, get_service
from openclaw_billing.settings import get_settings
from openclaw_billing.store import open_store
from openclaw_billing.store.capabilities import JobStorage
from tests.backends import BACKENDS, store_url_fixture  # noqa: F401
from tests.factories import JOB_BODY, create_client

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}


@pytest.fixture
def http(env: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The gateway over ``store_url``, each worker caching keys for a minute."""
    monkeypatch.setenv("OPENCLAW_BILLING_DB", store_url)
    monkeypatch.setenv("OPENCLAW_KEY_CACHE_SECONDS", "60")
    get_settings.cache_clear()
    with TestClient(gateway.create_app()) as client:
        yield client


def _intake(http: TestClient, key: str, idem: str | None = None, **body: str) -> Any:
    headers = {"X-Client-Key": key} | ({"Idempotency-Key": idem} if idem else {})
    return http.post("/api/intake", headers=headers, json=JOB_BODY | body)


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_the_job_is_stored_with_its_charge_and_read_back(http: TestClient, env: Path) -> None:
    created = create_client(http, "starter")
    key, client_id = created["api_key"], created["client_id"]
    first = _intake(http, key, description="Add user authentication")
    assert first.status_code == 201, first.text
    job = first.json()
    store = get_service().store
    assert isinstance(store, JobStorage)
    stored = store.get_job(client_id, job["job_id"])
    assert stored is not None
    assert stored.fields == {k: JOB_BODY[k] for k in stored.fields}
    assert stored.credits_remaining == job["credits_remaining"] == 49
    record = store.get_client(client_id)
    assert record is not None
    assert [e.job_id for e in record.metadata.cost_log] == [job["job_id"]]
    listed = http.get("/api/jobs", headers={"X-Client-Key": key}).json()["jobs"]
    assert listed == [job["job"]]
    one = http.get(f"/api/jobs/{job['job_id']}", headers={"X-Client-Key": key})
    assert one.json() == job["job"]
    assert not (env / "jobs.jsonl").exists()  # no job file on this store


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_a_retry_gets_the_first_answer_and_another_body_a_conflict(http: TestClient) -> None:
    key = create_client(http, "starter")["api_key"]
    first = _intake(http, key, "order-1")
    again = _intake(http, key, "order-1")
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = _intake(http, key, "order-1", description="Something else")
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_conflict"
    usage = http.get("/api/billing/usage", headers={"X-Client-Key": key}).json()
    assert usage["credits_remaining"] == 49


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_a_key_revoked_by_another_worker_is_never_charged(http: TestClient, store_url: str) -> None:
    created = create_client(http, "starter")
    key, client_id = created["api_key"], created["client_id"]
    assert _intake(http, key).status_code == 201  # this worker now holds the key for a minute
    elsewhere = BillingService(open_store(store_url))  # another worker, its own cache
    [only] = elsewhere.get_client(client_id).api_keys
    elsewhere.revoke_key(client_id, only.key_id)
    elsewhere.close()
    refused = _intake(http, key)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_api_key"
    record = get_service().store.get_client(client_id)
    assert record is not None
    assert record.credits_remaining == 49  # the charge's own check refused it


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_an_intake_with_a_known_key_hands_nothing_to_threads(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = create_client(http, "starter")["api_key"]
    assert _intake(http, key).status_code == 201  # the first check reads the store
    handed: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(getattr(func, "func", func).__name__)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    assert _intake(http, key).status_code == 201
    assert handed == []  # the key check on the loop's thread, the charge on the committer's


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_the_job_file_of_an_earlier_release_is_imported(
    env: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_BILLING_DB", store_url)
    get_settings.cache_clear()
    with TestClient(gateway.create_app()) as http:
        created = create_client(http, "starter")
    line = JOB_BODY | {
        "job_id": "job-from-the-file",
        "client_id": created["client_id"],
        "status": "queued",
        "created_at": datetime.now(UTC).isoformat(),
    }
    (env / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    for _ in range(2):  # a second start imports nothing twice
        with TestClient(gateway.create_app()) as http:
            jobs = http.get("/api/jobs", headers={"X-Client-Key": created["api_key"]}).json()
        assert [job["job_id"] for job in jobs["jobs"]] == ["job-from-the-file"]
