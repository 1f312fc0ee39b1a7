"""A store file written by the original module (plaintext ``api_key``, the summary's fields)
loads, its keys keep working, reads leave it alone, and the first write migrates it to digests
after a byte-identical backup."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import gateway
from client_auth import get_client_by_api_key
from conftest import Clock
from openclaw_billing.errors import ClientNotFound, InsufficientCredits, UnlimitedPlan
from openclaw_billing.keys import digest_key, generate_key
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService, set_service
from openclaw_billing.store import ClientQuery
from openclaw_billing.store.json_file import JsonFileStore
from tests.factories import submit_job
from tests.invariants import KEY_RE, check_record
from tests.store_helpers import T0, ledger_ids, legacy_bytes, legacy_record, temp_files

NOW = T0 + timedelta(hours=2)  # inside the legacy records' cycle (to 2026-03-21)


class Legacy:
    """An original-format file with a pro, a starter and an enterprise client."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys = {"acme": generate_key(), "beta": generate_key(), "ent": generate_key()}
        self.records = [
            legacy_record(
                "acme",
                self.keys["acme"],
                PlanId.PRO,
                credits=198,
                jobs=[("job-legacy-1", 5.5), ("job-legacy-2", 0.0)],
                adjustments=[(25, "promotional credit")],
            ),
            legacy_record("beta", self.keys["beta"], PlanId.STARTER, credits=50, jobs=()),
            legacy_record(
                "ent", self.keys["ent"], PlanId.ENTERPRISE, credits=None, jobs=[("job-e", 12.0)]
            ),
        ]
        # A record as sparse as the original could write: no stripe ids, no metadata.
        for name in ("stripe_customer_id", "stripe_subscription_id", "metadata", "updated_at"):
            del self.records[1][name]
        self.raw = legacy_bytes(self.records)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_bytes(self.raw)
        self.mtime = path.stat().st_mtime_ns

    def record(self, client_id: str) -> dict[str, Any]:
        return next(r for r in self.records if r["client_id"] == client_id)

    def untouched(self) -> bool:
        return (
            self.path.read_bytes() == self.raw
            and self.path.stat().st_mtime_ns == self.mtime
            and self.backups() == []
        )

    def backups(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.name}.legacy-backup-*"))


@pytest.fixture
def legacy(tmp_path: Path) -> Legacy:
    return Legacy(tmp_path / "clients.json")


def assert_migrated(legacy: Legacy) -> dict[str, ClientRecord]:
    """The file is in the new format with digests only, and every legacy field carried over."""
    raw = legacy.path.read_bytes()
    doc = json.loads(raw)
    assert (doc["format"], doc["version"]) == ("openclaw-billing", 2)
    assert KEY_RE.search(raw) is None
    for key in legacy.keys.values():
        assert key.encode() not in raw
        assert key[len("oc_live_") :].encode() not in raw
    assert all("api_key" not in record for record in doc["clients"].values())
    store = JsonFileStore(legacy.path)
    records = {r.client_id: r for r in store.list_clients()[0]}
    assert list(records) == ["acme", "beta", "ent"]  # the original order
    for client_id, key in legacy.keys.items():
        record = records[client_id]
        assert record.api_key_hash == digest_key(key)
        assert record.api_key_prefix == key[:12]
        old = legacy.record(client_id)
        assert record.name == old["name"]
        assert record.email == old["email"]
        assert record.plan == old["plan"]
        assert record.created_at.isoformat() == old["created_at"]
        assert record.billing_cycle_end.isoformat() == old["billing_cycle_end"]
        assert record.stripe_customer_id == old.get("stripe_customer_id")
        assert record.active
        meta = old.get("metadata", {})
        assert [
            (a.timestamp.isoformat(), a.amount, a.reason)
            for a in record.metadata.credit_adjustments
        ] == [
            (a["timestamp"], a["amount"], a["reason"]) for a in meta.get("credit_adjustments", [])
        ]
        assert [(e.job_id, e.cost) for e in record.metadata.cost_log][
            : len(meta.get("cost_log", []))
        ] == [(e["job_id"], e["cost"]) for e in meta.get("cost_log", [])]
        job_ids = ledger_ids(record)
        assert len(job_ids) == len(set(job_ids))
    return records


def test_legacy_file_loads_and_reads_do_not_rewrite_it(legacy: Legacy) -> None:
    store = JsonFileStore(legacy.path)
    service = BillingService(store)
    for client_id, key in legacy.keys.items():
        # The read half of authenticate (it then records the key's last use: a write).
        client = store.get_client_by_key_digest(digest_key(key))
        assert client is not None
        assert client.client_id == client_id
        assert service.can_submit(client, now=NOW).allowed
        assert store.refresh_cycle(client_id, NOW).client_id == client_id
    assert service.authenticate(generate_key()) is None
    acme = store.get_client("acme")
    assert acme is not None
    assert acme.credits_remaining == 198
    assert acme.total_spent == 5.5
    assert ledger_ids(acme) == ["job-legacy-1", "job-legacy-2"]
    assert [(a.amount, a.reason) for a in acme.metadata.credit_adjustments] == [
        (25, "promotional credit")
    ]
    beta = store.get_client("beta")
    assert beta is not None
    assert (beta.credits_remaining, beta.total_spent, beta.updated_at) == (50, 0.0, T0)
    ent = store.get_client("ent")
    assert ent is not None
    assert ent.credits_remaining is None
    assert store.list_clients(ClientQuery(plan=PlanId.ENTERPRISE))[1] == 1
    store.check()
    JsonFileStore(legacy.path)  # reopening reads it again, no more
    assert legacy.untouched()
    # A job charged by the original module is recognised: no second charge, no write.
    assert store.charge("acme", "job-legacy-1", 5.5, NOW).replayed
    assert legacy.untouched()
    # Authenticating records the key's last use: the first write, which migrates the file
    # (after a backup) and changes nothing else.
    assert service.authenticate(legacy.keys["acme"], now=NOW) is not None
    assert not legacy.untouched()
    migrated = store.get_client("acme")
    assert migrated is not None
    assert migrated.api_keys[0].last_used_at == NOW
    assert migrated.model_dump(exclude={"api_keys"}) == acme.model_dump(exclude={"api_keys"})


def test_first_write_keeps_a_byte_identical_backup_then_migrates(legacy: Legacy) -> None:
    store = JsonFileStore(legacy.path)
    result = store.charge("acme", "job-new", 2.5, NOW)
    assert (result.credits_remaining, result.replayed) == (197, False)
    (backup,) = legacy.backups()
    assert backup.read_bytes() == legacy.raw
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(legacy.path.stat().st_mode) == 0o600
    assert temp_files(legacy.path) == []

    records = assert_migrated(legacy)
    acme = records["acme"]
    assert acme.credits_remaining == 197
    assert acme.total_spent == 8.0
    assert ledger_ids(acme) == ["job-legacy-1", "job-legacy-2", "job-new"]
    assert records["beta"].credits_remaining == 50
    assert records["ent"].credits_remaining is None
    assert records["ent"].total_spent == 12.0

    # More writes, from this and another instance: still the one backup.
    other = JsonFileStore(legacy.path)
    other.charge("ent", "job-e2", 1.0, NOW)
    store.add_credits("beta", 5, "goodwill", NOW)
    assert legacy.backups() == [backup]
    assert backup.read_bytes() == legacy.raw
    # The keys keep working after the migration and after reopening.
    for reopened in (store, JsonFileStore(legacy.path)):
        service = BillingService(reopened)
        for client_id, key in legacy.keys.items():
            client = service.authenticate(key)
            assert client is not None
            assert client.client_id == client_id
    ent = JsonFileStore(legacy.path).get_client("ent")
    assert ent is not None
    assert ent.credits_remaining is None
    assert ledger_ids(ent) == ["job-e", "job-e2"]


def test_a_failed_write_does_not_migrate(legacy: Legacy) -> None:
    """Only a write that happens migrates: a refused charge leaves the original alone."""
    store = JsonFileStore(legacy.path)
    with pytest.raises(ClientNotFound):
        store.charge("nobody", "job-x", 1.0, NOW)
    with pytest.raises(UnlimitedPlan):
        store.add_credits("ent", 5, "x", NOW)
    with pytest.raises(InsufficientCredits):
        store.add_credits("beta", -51, "x", NOW)
    assert store.set_active("acme", True, NOW).active  # no change, nothing to write
    assert legacy.untouched()


def test_two_stores_migrating_at_once_make_one_backup(legacy: Legacy) -> None:
    a = JsonFileStore(legacy.path)
    b = JsonFileStore(legacy.path)  # both loaded the legacy file
    a.charge("acme", "job-a", 1.0, NOW)
    b.charge("acme", "job-b", 1.0, NOW)  # re-reads under the lock: already migrated
    assert len(legacy.backups()) == 1
    records = assert_migrated(legacy)
    assert ledger_ids(records["acme"]) == ["job-legacy-1", "job-legacy-2", "job-a", "job-b"]
    assert records["acme"].credits_remaining == 196


@pytest.mark.parametrize("credits", [None, -1, 0, 1_000_000])
def test_a_legacy_enterprise_client_is_unlimited_whatever_it_stored(
    tmp_path: Path, credits: int | None
) -> None:
    key = generate_key()
    path = tmp_path / "clients.json"
    path.write_bytes(legacy_bytes([legacy_record("ent", key, PlanId.ENTERPRISE, credits=credits)]))
    store = JsonFileStore(path)
    record = store.get_client("ent")
    assert record is not None
    assert record.credits_remaining is None
    for i in range(3):
        assert store.charge("ent", f"job-{i}", 1.0, NOW).credits_remaining is None
    assert BillingService(JsonFileStore(path)).authenticate(key) is not None


@pytest.mark.parametrize("shape", ["mapping", "list", "wrapped"])
def test_the_original_layouts_all_load(tmp_path: Path, shape: str) -> None:
    key = generate_key()
    record = legacy_record("acme", key)
    doc: object = {
        "mapping": {"acme": record},
        "list": [record],
        "wrapped": {"clients": {"acme": record}},
    }[shape]
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(doc))
    store = JsonFileStore(path)
    client = BillingService(store).authenticate(key)
    assert client is not None
    assert client.credits_remaining == 198


def test_migrated_clients_keep_the_invariants_from_their_next_cycle(legacy: Legacy) -> None:
    """The original file did not record a cycle's starting allowance; from the first reset on,
    every cycle balances (I1-I3)."""
    store = JsonFileStore(legacy.path)
    later = T0 + timedelta(days=31)
    for client_id in legacy.keys:
        store.refresh_cycle(client_id, later)
        store.charge(client_id, f"{client_id}-next", 1.0, later)
    records = {r.client_id: r for r in store.list_clients()[0]}
    assert records["acme"].credits_remaining == 199
    assert records["beta"].credits_remaining == 49
    assert records["ent"].credits_remaining is None
    for record in records.values():
        assert len(record.metadata.cycle_history) == 1
        record.metadata.cycle_history.clear()  # the legacy cycle's numbers are its own
        check_record(record)
    assert KEY_RE.search(legacy.path.read_bytes()) is None


# -- through the public contract and over HTTP ----------------------------------------------


def test_legacy_keys_work_through_the_contract_and_over_http(
    store_path: Path, clock: Clock
) -> None:
    legacy = Legacy(store_path)
    clock.now = NOW
    for client_id, key in legacy.keys.items():
        client = get_client_by_api_key(key)
        assert client is not None
        assert client.client_id == client_id
    with TestClient(gateway.create_app()) as http:
        usage = http.get("/api/billing/usage", headers={"X-Client-Key": legacy.keys["acme"]})
        assert usage.status_code == 200, usage.text
        assert usage.json()["credits_remaining"] == 198
        assert http.get("/health").status_code == 200
        # Authentication recorded the key's last use: the first write, which migrated the
        # file after a backup copy.
        assert not legacy.untouched()
        assert list(store_path.parent.glob("clients.json.legacy-backup-*"))

        response = submit_job(http, legacy.keys["beta"])
        assert response.status_code == 201, response.text
        assert response.json()["credits_remaining"] == 49
        (backup,) = legacy.backups()
        assert backup.read_bytes() == legacy.raw
        assert_migrated(legacy)

        for key in legacy.keys.values():
            again = http.get("/api/billing/usage", headers={"X-Client-Key": key})
            assert again.status_code == 200, again.text
            assert KEY_RE.search(again.content) is None
        ent = submit_job(http, legacy.keys["ent"])
        assert ent.status_code == 201, ent.text
        assert ent.json()["credits_remaining"] is None

    set_service(None)  # a restart: the migrated file is opened afresh
    with TestClient(gateway.create_app()) as http:
        for key in legacy.keys.values():
            response = submit_job(http, key)
            assert response.status_code == 201, response.text
    assert get_client_by_api_key(legacy.keys["acme"]) is not None
    records = assert_migrated(legacy)
    assert records["acme"].credits_remaining == 197
    assert records["beta"].credits_remaining == 48
    assert len(legacy.backups()) == 1
