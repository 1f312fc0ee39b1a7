"""Crashes: a child dies at each I/O step of the write protocol (R6), and a writer under load
is killed with SIGKILL again and again (R5). After each, the store holds exactly the old or
exactly the new state, a write cut in half is ignored (and cut off by the next writer), and
reopening sweeps what the crash left behind. The same for an admin action, whose audit event
goes through the store's outbox into the audit log: after any crash, the change and its event
are both there (the event exactly once) or neither is. The journal's compaction under crashes
is test_crash_journal.py's."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from openclaw_billing.audit import ANONYMOUS_ACTOR, AuditAction, AuditEvent
from openclaw_billing.keys import generate_key
from openclaw_billing.models import ChargeResult
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store.audit_json import audit_path
from openclaw_billing.store.json_file import JsonFileStore
from openclaw_billing.store.json_journal import journal_path
from tests.invariants import check_store_file
from tests.store_helpers import (
    CRASH_EXIT,
    CRASH_JOB,
    T0,
    WAIT,
    admin_forever,
    crash_during_admin_action,
    crash_during_charge,
    kill_after_acks,
    ledger_ids,
    legacy_bytes,
    legacy_record,
    make_record,
    mp_context,
    temp_files,
    write_forever,
)

pytestmark = pytest.mark.slow

#: One atomic write of a whole file, as the hooks see it: temp file, write, flush, fsync,
#: replace, then fsync of the directory.
WRITE_STEPS = ["mkstemp", "fdopen", "write", "flush", "fsync", "replace", "open", "fsync", "close"]
#: One append to the journal: open, write, fsync, close.
APPEND_STEPS = ["open", "os.write", "fsync", "close"]
#: Starting a journal: its header appended, then the directory fsynced.
START_STEPS = [*APPEND_STEPS, "open", "fsync", "close"]
NOW = T0 + timedelta(hours=1)


def run_crashing_charge(path: Path, crash_at: int) -> tuple[int | None, Any]:
    """Charge job-new (with its job) in a child that dies at step ``crash_at`` (0: never); its
    exit code and, if it lived, (steps, result)."""
    ctx = mp_context()
    out = ctx.Queue()
    child = ctx.Process(
        target=crash_during_charge, args=(str(path), "c1", "job-new", NOW, crash_at, out)
    )
    child.start()
    child.join(WAIT)
    if child.exitcode != 0:
        return child.exitcode, None
    return 0, out.get(timeout=WAIT)


def fresh_copy(base: Path, name: str, files: dict[str, bytes]) -> Path:
    """A store directory holding ``files`` (name -> bytes); the store file's path."""
    directory = base / name
    directory.mkdir(mode=0o700)
    for file_name, raw in files.items():
        (directory / file_name).write_bytes(raw)
    return directory / "clients.json"


def untokened(raw: bytes) -> object:
    """A store file's document, its random token left out."""
    doc = json.loads(raw)
    doc.pop("token", None)
    return doc


def store_files(path: Path) -> dict[str, bytes]:
    """The store's files (the snapshot, its journals, the audit log), by name."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file()}


def test_crash_at_each_step_of_a_write_leaves_the_old_or_the_new_state(tmp_path: Path) -> None:
    setup = tmp_path / "setup" / "clients.json"
    store = JsonFileStore(setup)
    store.create_client(make_record("c1")[0])
    store.charge("c1", "job-old", 1.0, T0)
    old = store_files(setup)
    journal = journal_path(setup, 1).name

    code, reference = run_crashing_charge(fresh_copy(tmp_path, "reference", old), 0)
    assert code == 0
    steps, result = reference
    assert steps == APPEND_STEPS
    assert isinstance(result, ChargeResult)
    assert result.credits_remaining == 198
    new = store_files(tmp_path / "reference" / "clients.json")
    written_at = steps.index("os.write") + 1
    assert new["clients.json"] == old["clients.json"]  # a charge only appends

    for k in range(1, len(steps) + 1):
        path = fresh_copy(tmp_path, f"crash-{k}", old)
        code, _ = run_crashing_charge(path, k)
        assert code == CRASH_EXIT, (k, steps[k - 1], code)
        # The crash came before step k ("os.write": half way through it).
        expect_new = k > written_at
        left = journal_path(path, 1).read_bytes()
        if expect_new:
            assert left == new[journal]
        elif k == written_at:  # the torn half of the line is there: ignored
            assert left.startswith(old[journal])
            assert len(old[journal]) < len(left)
        else:
            assert left == old[journal]
        assert path.read_bytes() == old["clients.json"]

        reopened = JsonFileStore(path)
        record = reopened.get_client("c1")
        assert record is not None
        job = reopened.get_job("c1", "job-new")
        if expect_new:
            assert (record.credits_remaining, ledger_ids(record)) == (198, ["job-old", "job-new"])
            assert job is not None
            assert job.fields == CRASH_JOB.fields
        else:
            assert (record.credits_remaining, ledger_ids(record)) == (199, ["job-old"])
            assert job is None
        # The client retries its job after the crash: charged exactly once either way.
        retry = reopened.charge("c1", "job-new", 1.5, NOW)
        assert retry.replayed == expect_new
        assert retry.credits_remaining == 198
        (final,) = check_store_file(path)
        assert ledger_ids(final) == ["job-old", "job-new"]
        assert b"#torn" not in journal_path(path, 1).read_bytes()


def test_crash_during_the_legacy_migration_loses_nothing(tmp_path: Path) -> None:
    """The first write to an original-format file writes a backup, then the migrated snapshot,
    then starts its journal and appends the change: a crash anywhere leaves the original (keys
    working) or the migrated snapshot, with or without the change, and any backup is
    byte-identical to the original."""
    key = generate_key()
    old = legacy_bytes([legacy_record("c1", key)])
    reference_path = fresh_copy(tmp_path, "reference", {"clients.json": old})
    code, reference = run_crashing_charge(reference_path, 0)
    assert code == 0
    steps, _ = reference
    assert steps == WRITE_STEPS + WRITE_STEPS + START_STEPS + APPEND_STEPS
    migrated = (tmp_path / "reference" / "clients.json").read_bytes()
    backup_done_at = WRITE_STEPS.index("replace") + 1
    replaced_at = len(WRITE_STEPS) + backup_done_at
    written_at = 2 * len(WRITE_STEPS) + len(START_STEPS) + APPEND_STEPS.index("os.write") + 1

    for k in range(1, len(steps) + 1):
        path = fresh_copy(tmp_path, f"crash-{k}", {"clients.json": old})
        code, _ = run_crashing_charge(path, k)
        assert code == CRASH_EXIT, (k, code)
        expect_new = k > written_at
        assert untokened(path.read_bytes()) == untokened(migrated if k > replaced_at else old), k
        backups = list(path.parent.glob("clients.json.legacy-backup-*"))
        assert len(backups) == (1 if k > backup_done_at else 0), (k, backups)
        assert all(b.read_bytes() == old for b in backups)

        reopened = JsonFileStore(path)
        assert temp_files(path) == []
        service = BillingService(reopened)
        client = service.authenticate(key)
        assert client is not None, k
        assert ledger_ids(client) == (
            ["job-legacy-1", "job-new"] if expect_new else ["job-legacy-1"]
        )
        assert client.credits_remaining == (197 if expect_new else 198)
        retry = reopened.charge("c1", "job-new", 1.5, NOW)
        assert retry.replayed == expect_new
        for raw in store_files(path).values():
            assert key.encode() not in raw or raw == old
        assert service.authenticate(key) is not None
        assert all(b.read_bytes() == old for b in path.parent.glob("clients.json.legacy-backup-*"))


def test_writer_killed_at_random_moments_never_breaks_the_file(tmp_path: Path) -> None:
    """R5: kill -9 a charging writer at random moments, 15 times, restarting it each time."""
    rounds = 15
    path = tmp_path / "clients.json"
    store = JsonFileStore(path)
    store.create_client(make_record("c1", PlanId.PRO)[0])
    store.add_credits("c1", 100_000, "load test", T0)
    ctx = mp_context()
    rng = random.Random(20260219)
    committed: list[str] = []
    for n in range(rounds):
        returned = kill_after_acks(
            ctx, write_forever, (str(path), "c1", f"r{n}"), rng, most=25, linger=0.003
        )

        json.loads(path.read_bytes())  # parses as it is, before anyone reopens it
        (record,) = check_store_file(path)  # reopens (sweeps), then I1-I3, I5
        assert temp_files(path) == []
        ids = ledger_ids(record)
        assert ids[: len(committed)] == committed, "a committed charge was lost"
        this_round = ids[len(committed) :]
        # Every charge that returned is on disk, in order, plus at most the one in flight.
        assert this_round == [f"r{n}-{i}" for i in range(len(this_round))]
        assert returned <= len(this_round) <= returned + 1, (returned, this_round)
        committed = ids
    (record,) = check_store_file(path)
    assert record.credits_remaining == 200 + 100_000 + sum(
        a.amount for a in record.metadata.credit_adjustments[1:]
    ) - len(committed)


# -- an admin action and its audit event -------------------------------------------------------

#: The journal's append (the change and its event in the outbox), between the audit log's
#: open under its lock and the append of the event, its fsync and the close.
ADMIN_STEPS = ["open", *APPEND_STEPS, "os.write", "fsync", "close"]


def run_crashing_admin_action(path: Path, client_id: str, crash_at: int) -> tuple[int | None, Any]:
    ctx = mp_context()
    out = ctx.Queue()
    child = ctx.Process(
        target=crash_during_admin_action, args=(str(path), client_id, NOW, crash_at, out)
    )
    child.start()
    child.join(WAIT)
    if child.exitcode != 0:
        return child.exitcode, None
    return 0, out.get(timeout=WAIT)


def credits_and_events(path: Path, client_id: str) -> tuple[int | None, list[AuditEvent]]:
    """Reopened as the next start would: the client's credits and the whole audit log."""
    store = JsonFileStore(path)
    record = store.get_client(client_id)
    assert record is not None
    return record.credits_remaining, list(store.audit.export())


def test_crash_at_each_step_of_an_admin_action_loses_no_event_and_writes_none_twice(
    tmp_path: Path,
) -> None:
    setup = tmp_path / "setup" / "clients.json"
    setup.parent.mkdir()
    created, _ = BillingService(JsonFileStore(setup)).create_client(
        name="Acme", email="acme@acmecorp.com", plan=PlanId.PRO, now=T0
    )
    cid = created.client_id
    old = store_files(setup)
    assert audit_path(setup).name in old
    _, (create,) = credits_and_events(setup, cid)

    def fresh(name: str) -> Path:
        return fresh_copy(tmp_path, name, old)

    code, steps = run_crashing_admin_action(fresh("reference"), cid, 0)
    assert (code, steps) == (0, ADMIN_STEPS)
    credits, events = credits_and_events(tmp_path / "reference" / "clients.json", cid)
    assert credits == 205
    (_, done) = events
    assert (done.id, done.action, done.detail) == (
        2,
        AuditAction.CLIENT_CREDITS,
        {"amount": 5, "reason": "crash test"},
    )
    committed_at = ADMIN_STEPS.index("os.write") + 1

    for k in range(1, len(ADMIN_STEPS) + 1):
        path = fresh(f"crash-{k}")
        code, _ = run_crashing_admin_action(path, cid, k)
        assert code == CRASH_EXIT, (k, ADMIN_STEPS[k - 1], code)
        committed = k > committed_at
        credits, events = credits_and_events(path, cid)  # the start catches the log up
        assert credits == (205 if committed else 200), (k, ADMIN_STEPS[k - 1])
        assert events == ([create, done] if committed else [create]), (k, ADMIN_STEPS[k - 1])
        if not committed:  # never answered: the admin retries, and it is done once
            BillingService(JsonFileStore(path)).add_credits(
                cid, 5, "crash test", now=NOW, source="203.0.113.9"
            )
        # Later appends (another start, a failed login) never reuse or repeat an id.
        failed = BillingService(JsonFileStore(path)).record_audit(
            AuditAction.AUTH_KEY_FAILED, actor=ANONYMOUS_ACTOR, source="x", now=NOW
        )
        assert failed is not None
        assert failed.id == 3
        credits, events = credits_and_events(path, cid)
        assert credits == 205
        assert [(e.id, e.action) for e in events] == [
            (1, AuditAction.CLIENT_CREATE),
            (2, AuditAction.CLIENT_CREDITS),
            (3, AuditAction.AUTH_KEY_FAILED),
        ], k


def test_admin_actions_killed_at_random_moments_keep_change_and_event_together(
    tmp_path: Path,
) -> None:
    """R5 for admin actions: kill -9 a process adding credits (each with its audit event) at
    random moments, 15 times, restarting it. After each kill and restart, every credit the
    store holds has exactly one event in the log, in the same order, and nothing else."""
    rounds = 15
    path = tmp_path / "clients.json"
    created, _ = BillingService(JsonFileStore(path)).create_client(
        name="Acme", email="acme@acmecorp.com", plan=PlanId.PRO, now=T0
    )
    cid = created.client_id
    ctx = mp_context()
    rng = random.Random(20260220)
    committed: list[str] = []
    for n in range(rounds):
        returned = kill_after_acks(
            ctx, admin_forever, (str(path), cid, f"r{n}"), rng, most=10, linger=0.005
        )

        store = JsonFileStore(path)  # the restart catches the log up
        record = store.get_client(cid)
        assert record is not None
        reasons = [a.reason for a in record.metadata.credit_adjustments]
        events = list(store.audit.export())
        assert [e.action for e in events[:1]] == [AuditAction.CLIENT_CREATE]
        assert [e.detail["reason"] for e in events[1:]] == reasons, "a change without its event"
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        assert reasons[: len(committed)] == committed, "a committed action was lost"
        this_round = reasons[len(committed) :]
        assert this_round == [f"r{n}-{i}" for i in range(len(this_round))]
        assert returned <= len(this_round) <= returned + 1, (returned, this_round)
        assert record.credits_remaining == 200 + len(reasons)
        committed = reasons
