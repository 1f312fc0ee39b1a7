"""R7: a store file that does not parse or validate stops the service with a message naming
it, and is never overwritten, reset or "migrated"; no request ever sees fresh credits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import gateway
from openclaw_billing.errors import StoreCorrupt
from openclaw_billing.keys import generate_key
from openclaw_billing.models import dump_record
from openclaw_billing.plans import PlanId
from openclaw_billing.store.json_file import JsonFileStore
from tests.factories import JOB_BODY, create_client, submit_job
from tests.invariants import check_store_file
from tests.store_helpers import legacy_record, make_record, temp_files

ADMIN = {"X-Auth-Token": "test-admin-token-0123456789abcdef"}


def valid_store_bytes() -> bytes:
    record, _ = make_record("c1")
    doc = {"format": "openclaw-billing", "version": 1, "clients": {"c1": dump_record(record)}}
    return json.dumps(doc).encode()


def store_doc(of: PlanId = PlanId.PRO, drop: tuple[str, ...] = (), **changes: Any) -> bytes:
    """A store holding one client whose record has ``changes`` and lacks the ``drop`` fields."""
    record = dump_record(make_record("c1", of)[0])
    record.update(changes)
    for name in drop:
        del record[name]
    doc = {"format": "openclaw-billing", "version": 1, "clients": {"c1": record}}
    return json.dumps(doc).encode()


GOOD = valid_store_bytes()
BAD_FILES: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b"  \n",
    "truncated": GOOD[: len(GOOD) // 2],
    "truncated-one-byte": GOOD[:-1],
    "nul-bytes": b"\x00" * 4096,
    "nul-filled-same-size": b"\x00" * len(GOOD),
    "nul-tail": GOOD + b"\x00" * 64,
    "invalid-utf8": b'{"format": "openclaw-billing", "\xff\xfe": 1}',
    "binary": bytes(range(256)),
    "list": b"[1, 2]",
    "string": b'"x"',
    "number": b"42",
    "null": b"null",
    "true": b"true",
    "future-version": b'{"format": "openclaw-billing", "version": 99, "clients": {}}',
    "other-format": b'{"format": "something-else", "version": 1, "clients": {}}',
    "clients-not-object": b'{"format": "openclaw-billing", "version": 1, "clients": [1]}',
    "no-clients": b'{"format": "openclaw-billing", "version": 1}',
    "record-not-object": b'{"format": "openclaw-billing", "version": 1, "clients": {"c1": 5}}',
    "record-missing-fields": store_doc(drop=("api_key_hash", "credits_remaining")),
    "record-missing-cycle": store_doc(drop=("billing_cycle_end",)),
    "negative-credits": store_doc(credits_remaining=-3),
    "negative-credits-free": store_doc(PlanId.FREE, credits_remaining=-1),
    "limited-plan-without-limit": store_doc(credits_remaining=None),
    "enterprise-with-a-limit": store_doc(PlanId.ENTERPRISE, credits_remaining=0),
    "bad-plan": store_doc(plan="platinum"),
    "bad-key-hash": store_doc(api_key_hash="not-a-digest"),
    "unknown-field": store_doc(credits_bonus=1000),
    "legacy-scalar-values": b'{"c1": 1, "c2": 2}',
    "legacy-clients-scalar": b'{"clients": 5}',
    "legacy-record-missing-fields": json.dumps({"c1": {"client_id": "c1", "plan": "pro"}}).encode(),
    "legacy-negative-credits": json.dumps(
        {"c1": legacy_record("c1", generate_key(), credits=-1)}
    ).encode(),
}


def write_bad(path: Path, raw: bytes) -> tuple[bytes, int]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(raw)
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    return path.read_bytes(), path.stat().st_mtime_ns


def assert_untouched(path: Path, before: tuple[bytes, int]) -> None:
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert list(path.parent.glob(f"{path.name}.legacy-backup*")) == []
    assert temp_files(path) == []


@pytest.mark.parametrize("raw", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_opening_a_bad_file_raises_store_corrupt_and_leaves_it(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "clients.json"
    before = write_bad(path, raw)
    for _ in range(2):  # and the same again: nothing was "repaired" the first time
        with pytest.raises(StoreCorrupt) as caught:
            JsonFileStore(path)
        assert str(path) in caught.value.message
        assert caught.value.status_code == 503
        assert caught.value.code == "store_unavailable"
        assert_untouched(path, before)


STARTUP_CASES = [
    "empty",
    "truncated",
    "nul-bytes",
    "invalid-utf8",
    "list",
    "string",
    "future-version",
    "record-missing-fields",
    "negative-credits",
]


@pytest.mark.parametrize("name", STARTUP_CASES)
def test_the_gateway_refuses_to_start(
    store_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    before = write_bad(store_path, BAD_FILES[name])
    with pytest.raises(StoreCorrupt) as caught, TestClient(gateway.create_app()):
        pytest.fail("the gateway started over a corrupt store")
    assert str(store_path) in caught.value.message
    assert any(
        r.levelname == "CRITICAL" and str(store_path) in r.getMessage() for r in caplog.records
    )
    assert_untouched(store_path, before)


@pytest.mark.parametrize("name", ["truncated", "negative-credits"])
def test_without_its_startup_the_gateway_still_never_serves_fresh_credits(
    store_path: Path, name: str
) -> None:
    """A host that skips the lifespan: every request that needs the store answers 503."""
    before = write_bad(store_path, BAD_FILES[name])
    http = TestClient(gateway.create_app())  # no `with`: the startup check never runs
    key = generate_key()
    responses = [
        http.get("/health"),
        http.get("/api/billing/usage", headers={"X-Client-Key": key}),
        http.post("/api/intake", headers={"X-Client-Key": key}, json=JOB_BODY),
        http.post(
            "/api/admin/clients",
            headers=ADMIN,
            json={"name": "New", "email": "new@acmecorp.com", "plan": "pro"},
        ),
        http.get("/api/admin/clients", headers=ADMIN),
    ]
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "store_unavailable"
    assert_untouched(store_path, before)


@pytest.mark.parametrize("name", ["truncated", "nul-filled-same-size", "list", "negative-credits"])
def test_a_file_corrupted_while_running_answers_503_and_is_kept(
    http: TestClient, store_path: Path, name: str
) -> None:
    created = create_client(http, "starter")
    key, client_id = created["api_key"], created["client_id"]
    assert submit_job(http, key).status_code == 201
    good = store_path.read_bytes()
    before = write_bad(store_path, BAD_FILES[name])

    auth = {"X-Client-Key": key}
    responses = [
        submit_job(http, key),
        http.get("/api/billing/usage", headers=auth),
        http.get("/health"),
        http.post(
            "/api/admin/clients",
            headers=ADMIN,
            json={"name": "New", "email": "new@acmecorp.com", "plan": "pro"},
        ),
        http.get("/api/admin/clients", headers=ADMIN),
        http.get(f"/api/admin/clients/{client_id}", headers=ADMIN),
        http.put(
            f"/api/admin/clients/{client_id}/credits",
            headers=ADMIN,
            json={"credits": 10, "reason": "during the outage"},
        ),
        http.delete(f"/api/admin/clients/{client_id}", headers=ADMIN),
    ]
    for response in responses:
        assert response.status_code == 503, (response.request.url, response.text)
        assert response.json()["code"] == "store_unavailable"
    assert_untouched(store_path, before)

    # The operator restores the file: service resumes where it was, without a restart.
    store_path.write_bytes(good)
    response = submit_job(http, key)
    assert response.status_code == 201, response.text
    assert response.json()["credits_remaining"] == 48
    (record,) = check_store_file(store_path, [key])
    assert len(record.metadata.cost_log) == 2
    assert record.metadata.credit_adjustments == []
    assert record.active


def test_an_empty_legacy_object_is_an_empty_store_not_an_error(tmp_path: Path) -> None:
    """``{}`` is what the original module wrote before its first client: it loads as empty
    (and the first write keeps a backup of it)."""
    path = tmp_path / "clients.json"
    path.write_bytes(b"{}")
    store = JsonFileStore(path)
    assert store.list_clients() == ([], 0)
    assert path.read_bytes() == b"{}"
    store.create_client(make_record("c1", PlanId.FREE)[0])
    (backup,) = path.parent.glob("clients.json.legacy-backup-*")
    assert backup.read_bytes() == b"{}"
    check_store_file(path)
