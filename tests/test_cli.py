"""The operator CLI: migrate / export / import between JSON, SQLite and PostgreSQL.

The issue's acceptance check: a JSON store with 1,000 clients and their history migrates to
SQLite and PostgreSQL with identical balances, and the gateway serves the same keys from the
new backend.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import gateway
from openclaw_billing.cli import app
from openclaw_billing.keys import digest_key, display_prefix, generate_key
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService, set_service
from openclaw_billing.settings import get_settings
from openclaw_billing.store import open_store
from openclaw_billing.store.json_file import JsonFileStore
from openclaw_billing.store.json_format import FORMAT, VERSION
from openclaw_billing.store.migrate import MigrationError, check_source_exists, fingerprint
from tests.backends import (  # noqa: F401 - the fixture "store_url"
    SQL_BACKENDS,
    _pg_schema,
    all_clients,
    pg_base_url,
    store_url_fixture,
)

#: The seeded history's first cycle started 40 days ago, so "now" is in its second cycle.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)
runner = CliRunner()


def seed_json(path: Path, count: int) -> dict[str, str]:
    """A JSON store of ``count`` clients with history (a past cycle with jobs and an
    adjustment, a current cycle with jobs, a refund). Returns client id -> plaintext key for
    every 100th client. Built from one template record, written once."""
    template_store = JsonFileStore(path.with_name("template.json"))
    service = BillingService(template_store)
    record, _ = service.create_client(name="T", email="t@acmecorp.com", plan=PlanId.PRO, now=T0)
    for n in range(12):
        service.charge(record.client_id, job_id=f"old-{n}", cost=0.5, now=T0)
    service.add_credits(record.client_id, 25, "promotional credit", now=T0)
    later = T0 + timedelta(days=31)
    for n in range(3):
        service.charge(record.client_id, job_id=f"new-{n}", cost=1.25, now=later)
    service.refund(record.client_id, "new-2", now=later)
    service.set_active(record.client_id, True, now=later)
    template = template_store.get_client(record.client_id)
    assert template is not None
    keys: dict[str, str] = {}
    table = {}
    for n in range(count):
        key = generate_key()
        clone: ClientRecord = template.model_copy(deep=True)
        clone.client_id = str(uuid.uuid4())
        clone.name = f"Client {n}"
        clone.api_key_hash, clone.api_key_prefix = digest_key(key), display_prefix(key)
        clone.api_keys = []  # the one key, filled in from the fields above by validation
        clone.active = n % 17 != 0
        table[clone.client_id] = ClientRecord.model_validate(clone.model_dump()).model_dump(
            mode="json"
        )
        if n % 100 == 0:
            keys[clone.client_id] = key
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, "clients": table}))
    return keys


@pytest.fixture
def pg_url() -> Iterator[str]:
    with _pg_schema(pg_base_url()) as url:
        yield url


def _fingerprints(url: str) -> dict[str, object]:
    store = open_store(url)
    try:
        return {r.client_id: fingerprint(r) for r in all_clients(store)}
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_1000_clients_migrate_with_identical_balances_and_keys_keep_working(
    env: Path, monkeypatch: pytest.MonkeyPatch, store_url: str
) -> None:
    source = env / "source.json"
    keys = seed_json(source, 1000)
    active = {r.client_id: r.active for r in all_clients(JsonFileStore(source))}
    target = store_url  # a fresh SQLite file or PostgreSQL schema
    started = time.perf_counter()
    result = runner.invoke(app, ["migrate", "--from", str(source), "--to", target])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert "copied 1000 clients" in result.output
    print(f"\nmigrated 1000 clients to {target.split(':', 1)[0]} in {elapsed:.1f} s")
    assert _fingerprints(target) == _fingerprints(str(source))

    monkeypatch.setenv("OPENCLAW_BILLING_DB", target)
    get_settings.cache_clear()
    set_service(None)
    with TestClient(gateway.create_app()) as http:
        served = 0
        for client_id, key in keys.items():
            usage = http.get("/api/billing/usage", headers={"X-Client-Key": key})
            job = http.post(
                "/api/intake",
                headers={"X-Client-Key": key},
                json={"project_name": "P", "description": "after the move"},
            )
            if not active[client_id]:  # deactivated before the move: still refused
                assert (usage.status_code, job.status_code) == (401, 401)
                continue
            served += 1
            body = usage.json()
            assert body["client_id"] == client_id
            assert body["credits_remaining"] == 198  # 200 - 3 charged + 1 refunded
            assert body["credits_used"] == 2
            assert job.status_code == 201
            assert job.json()["credits_remaining"] == 197
        assert served >= 8


def test_a_non_empty_target_is_refused_unless_told(env: Path) -> None:
    source = env / "source.json"
    seed_json(source, 3)
    target = f"sqlite:///{env}/billing.db"
    assert runner.invoke(app, ["migrate", "--from", str(source), "--to", target]).exit_code == 0
    again = runner.invoke(app, ["migrate", "--from", str(source), "--to", target])
    assert again.exit_code == 1
    assert "already holds 3 clients" in again.output
    forced = runner.invoke(
        app, ["migrate", "--from", str(source), "--to", target, "--into-non-empty"]
    )
    assert forced.exit_code == 1  # the same client ids: never overwritten
    assert "already exists" in forced.output
    assert len(_fingerprints(target)) == 3


def test_export_and_import_round_trip(env: Path) -> None:
    source = env / "source.json"
    seed_json(source, 20)
    sqlite = f"sqlite:///{env}/billing.db"
    backup = env / "backup.json"
    assert runner.invoke(app, ["import", "--from", str(source), "--to", sqlite]).exit_code == 0
    exported = runner.invoke(app, ["export", "--from", sqlite, "--to", str(backup)])
    assert exported.exit_code == 0, exported.output
    assert _fingerprints(str(backup)) == _fingerprints(str(source))
    refused = runner.invoke(app, ["export", "--from", sqlite, "--to", str(backup)])
    assert refused.exit_code == 1
    assert "exists" in refused.output


def test_the_original_modules_file_imports(env: Path) -> None:
    key = generate_key()
    original = {
        "c1": {
            "client_id": "c1",
            "name": "Acme Corp",
            "email": "api@acmecorp.com",
            "api_key": key,
            "plan": "pro",
            "credits_remaining": 198,
            "total_spent": 5.5,
            "created_at": "2026-02-19T10:30:00+00:00",
            "updated_at": "2026-02-19T11:45:00+00:00",
            "active": True,
            "stripe_customer_id": None,
            "stripe_subscription_id": None,
            "billing_cycle_start": "2026-02-19T10:30:00+00:00",
            "billing_cycle_end": "2026-03-21T10:30:00+00:00",
            "metadata": {"credit_adjustments": [], "cost_log": []},
        }
    }
    source = env / "original.json"
    source.write_text(json.dumps(original))
    target = f"sqlite:///{env}/billing.db"
    result = runner.invoke(app, ["import", "--from", str(source), "--to", target])
    assert result.exit_code == 0, result.output
    store = open_store(target)
    client = BillingService(store).authenticate(key)
    store.close()
    assert client is not None
    assert (client.client_id, client.credits_remaining) == ("c1", 198)
    assert key not in (env / "billing.db").read_bytes().decode("latin-1")


# -- refusals that must not lose or invent data ---------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("command", ["migrate", "import", "export"])
@pytest.mark.parametrize(
    "kind", ["path", "json-url", "sqlite", "postgresql", "empty-json", "empty-sqlite"]
)
def test_a_source_that_does_not_exist_is_refused_and_nothing_is_created(
    env: Path, command: str, kind: str, request: pytest.FixtureRequest
) -> None:
    work = env / "work"
    work.mkdir()
    target = work / "target.json"
    seed_json(target, 2)  # an existing target: it must come out byte for byte the same
    missing = work / "missing" / "clients.json"
    source = {
        "path": str(missing),
        "json-url": f"json://{missing}",
        "sqlite": f"sqlite:///{work}/missing.db",
        "postgresql": request.getfixturevalue("pg_url") if kind == "postgresql" else "",
        # An empty file is no store either: neither read as one nor written into.
        "empty-json": str(work / "empty.json"),
        "empty-sqlite": f"sqlite:///{work}/empty.db",
    }[kind]
    if kind.startswith("empty-"):
        (work / f"empty.{kind[6:].replace('sqlite', 'db')}").touch()
    before = _tree(work)
    # Flags that would let the command write into the existing target: the refusal must win.
    args = [command, "--from", source, "--to", str(target)]
    args.append("--force" if command == "export" else "--into-non-empty")
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert any(
        refusal in result.output
        for refusal in ("does not exist", "holds no billing store", "is empty")
    )
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert _tree(work) == before  # no source created, the target untouched
    if kind == "postgresql":  # and no billing tables created in the empty database
        with pytest.raises(MigrationError, match="holds no billing store"):
            check_source_exists(source)


def test_export_force_replaces_the_target_with_a_verified_export(env: Path) -> None:
    first, second = env / "first.json", env / "second.json"
    seed_json(first, 3)
    seed_json(second, 5)
    backup = env / "backup.json"
    assert runner.invoke(app, ["export", "--from", str(first), "--to", str(backup)]).exit_code == 0
    assert _fingerprints(str(backup)) == _fingerprints(str(first))

    refused = runner.invoke(app, ["export", "--from", str(second), "--to", str(backup)])
    assert refused.exit_code == 1
    assert "pass --force to replace it" in refused.output
    assert _fingerprints(str(backup)) == _fingerprints(str(first))

    forced = runner.invoke(app, ["export", "--from", str(second), "--to", str(backup), "--force"])
    assert forced.exit_code == 0, forced.output
    assert f"copied 5 clients to json://{backup}" in forced.output
    assert _fingerprints(str(backup)) == _fingerprints(str(second))
    assert backup.stat().st_mode & 0o777 == 0o600
    # Nothing of the staging directory is left beside the backup.
    assert sorted(p.name for p in env.iterdir() if p.name.startswith(".backup")) == []


def test_export_force_keeps_the_old_file_when_the_new_export_fails(env: Path) -> None:
    good, damaged = env / "good.json", env / "damaged.json"
    seed_json(good, 2)
    damaged.write_text("{not json")
    backup = env / "backup.json"
    assert runner.invoke(app, ["export", "--from", str(good), "--to", str(backup)]).exit_code == 0
    before = backup.read_bytes()
    failed = runner.invoke(app, ["export", "--from", str(damaged), "--to", str(backup), "--force"])
    assert failed.exit_code == 1
    assert "not valid JSON" in failed.output
    assert "Traceback" not in failed.output
    assert backup.read_bytes() == before


def test_version_is_the_installed_package_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"openclaw-billing {version('openclaw-billing')}"
