"""A job's move on the JSON store is one ``s`` line (the job, its client's credits and spend
after it): replayed, mixed with the whole-record lines of earlier releases, and compacted, it
rebuilds the very state the writer holds; a torn last one is ignored as any torn write is; one
that does not apply stops the store. The stored result of each move, against the generic path,
is in test_contract_settle.py."""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from openclaw_billing import plans
from openclaw_billing.errors import StoreCorrupt
from openclaw_billing.jobs import JobStatus, NewJob
from openclaw_billing.outcomes import Report
from openclaw_billing.plans import PlanId
from openclaw_billing.store.audit_json import audit_path
from openclaw_billing.store.base import Charge
from openclaw_billing.store.json_file import JsonFileStore
from openclaw_billing.store.json_journal import journal_path
from tests.invariants import check_store_file
from tests.store.test_contract_settle import (
    MINUTE,
    RELEASED,
    T1,
    _subscribed,
    client,
    generic,
    one,
    reserve,
    scenario,
    settle,
)

USED = Report(JobStatus.SUCCEEDED, usage={"tokens_out": 50_000})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "clients.json"


def state_of(store: JsonFileStore) -> dict[str, Any]:
    """Everything the store holds in memory (caught up first), in its order."""
    store.check()
    state = store._replica.state
    return {
        "clients": list(state.clients.items()),
        "by_digest": state.by_digest,
        "jobs": list(state.jobs.items()),
        "client_jobs": [(cid, list(jobs.items())) for cid, jobs in state.client_jobs.items()],
        "holds": {cid: list(held.items()) for cid, held in state.holds.items() if held},
        "meters": list(state.meters.items()),
        "job_holders": state.job_holders,
        "outbox": state.outbox,
    }


def kinds(path: Path, generation: int = 1) -> list[str]:
    lines = journal_path(path, generation).read_bytes().splitlines()
    return [json.loads(line[9:])["t"] for line in lines]


@pytest.fixture
def metered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pro plan meters its usage: a job may run over its reservation (an overage)."""
    rates = {"tokens_out": 0.001}
    monkeypatch.setitem(
        plans.PLANS, PlanId.PRO, replace(plans.PLANS[PlanId.PRO], usage_rates=rates)
    )


@pytest.mark.usefixtures("metered")
def test_moves_reload_to_the_same_state_mixed_with_whole_record_lines_and_compacted(
    path: Path,
) -> None:
    store = JsonFileStore(path)
    old, new = client(store, "Old"), client(store, "New")
    for cid in (old, new):
        store.mutate(cid, T1, _subscribed)
    with generic(store):  # the lines of a move as the previous code wrote them: r and u
        scenario(store, old)
    scenario(store, new)
    for cid in (old, new):  # an overage still to report, and a hold still open
        store.mutate_batch([reserve(cid, "m1", T1), reserve(cid, "open", T1)])
        one(store, settle(cid, "m1", T1 + MINUTE, USED))
    written = kinds(path)
    assert written.count("s") >= 8
    assert written.count("u") >= 8
    expected = state_of(store)
    assert len(expected["meters"]) == 2
    assert len(expected["holds"]) == 2
    logged = store.audit.query(limit=500)
    reloaded = JsonFileStore(path)  # the journal replayed
    assert state_of(reloaded) == expected
    assert reloaded.audit.query(limit=500) == logged
    store.compact()
    assert state_of(JsonFileStore(path)) == expected  # the snapshot alone
    assert state_of(reloaded) == expected
    check_store_file(path)


def test_a_move_is_one_line_whatever_the_clients_ledger(path: Path) -> None:
    store = JsonFileStore(path)
    cid = client(store)
    store.add_credits(cid, 1000, "room", T1)
    sizes = []
    for n in range(3):
        store.mutate_batch([Charge(cid, f"h{n}-{i}", 0.25, T1) for i in range(100)])
        one(store, reserve(cid, f"j{n}", T1))
        before = journal_path(path, 1).stat().st_size
        one(store, settle(cid, f"j{n}", T1 + MINUTE, RELEASED))
        sizes.append(journal_path(path, 1).stat().st_size - before)
        assert kinds(path)[-2:] == ["s", "a"]  # the move, then its audit event
    assert max(sizes) - min(sizes) <= 4, sizes
    assert max(sizes) < 1500, sizes
    assert state_of(JsonFileStore(path)) == state_of(store)


@pytest.mark.parametrize("cut", [10, 120, -1])
def test_a_torn_last_move_is_ignored_and_cut_off_by_the_next_writer(path: Path, cut: int) -> None:
    store = JsonFileStore(path)
    cid = client(store)
    one(store, reserve(cid, "j1", T1))
    journal, log = journal_path(path, 1), audit_path(path)
    good = journal.read_bytes()
    shutil.copy(log, log.with_suffix(".before"))
    before = state_of(store)
    one(store, settle(cid, "j1", T1 + MINUTE, RELEASED))
    after = state_of(store)
    torn = journal.read_bytes()[len(good) :]
    assert b'"t":"s"' in torn
    store.close()
    # A crash in the move's write: part of its batch written, its audit event not logged.
    journal.write_bytes(good + torn[:cut])
    shutil.copy(log.with_suffix(".before"), log)
    again = JsonFileStore(path)
    assert state_of(again) == before
    assert journal.read_bytes() == good + torn[:cut]
    one(again, settle(cid, "j1", T1 + MINUTE, RELEASED))  # cuts the torn tail off
    assert journal.read_bytes() == good + torn
    assert state_of(again) == after
    assert state_of(JsonFileStore(path)) == after
    check_store_file(path)


def _edit(doc: dict[str, Any], change: str) -> None:
    if change == "left":
        doc["left"] += 1
    elif change == "spent":
        doc["spent"] += 0.5
    elif change == "illegal":
        doc["job"]["status"] = "queued"  # a queued job does not become queued
    elif change == "not stored":
        doc["job"]["job_id"] = "nope"
    elif change == "client":
        doc["id"] = "someone-else"
    elif change == "still held":  # ended, its hold not settled, nothing given back
        doc["job"]["receipt"] = {k: doc["job"]["receipt"][k] for k in ("reserved", "hold_until")}
        doc["left"] -= 3
        doc["spent"] += 0.5
    else:
        del doc["job"]["receipt"]["settled_at"]


CHANGES = ["left", "spent", "illegal", "not stored", "client", "still held", "receipt"]


@pytest.mark.parametrize("change", CHANGES)
def test_a_move_that_does_not_apply_stops_the_store(path: Path, change: str) -> None:
    store = JsonFileStore(path)
    cid = client(store)
    store.mutate_batch([reserve(cid, "j1", T1), reserve(cid, "j2", T1)])
    one(store, settle(cid, "j1", T1 + MINUTE, RELEASED))
    store.charge(cid, "later", 1.0, T1)  # a complete batch after it: not a torn tail
    journal = journal_path(path, 1)
    lines = journal.read_bytes().splitlines(keepends=True)
    [index] = [n for n, line in enumerate(lines) if b'"t":"s"' in line]
    doc = json.loads(lines[index][9:])
    _edit(doc, change)
    payload = json.dumps(doc, separators=(",", ":")).encode()
    lines[index] = b"%08x %s\n" % (zlib.crc32(payload), payload)
    journal.write_bytes(b"".join(lines))
    with pytest.raises(StoreCorrupt, match=f"{journal}.*move"):
        JsonFileStore(path)


def test_a_move_of_a_job_without_a_hold_and_a_run_leave_the_record_as_it_is(path: Path) -> None:
    store = JsonFileStore(path)
    cid = client(store)
    store.accept(Charge(cid, "plain", 1.0, T1, job=NewJob({"prompt": "p"})))
    one(store, reserve(cid, "j1", T1))
    stored = store._replica.state.clients[cid]
    store.mutate_batch([settle(cid, "plain", T1 + MINUTE), settle(cid, "j1", T1, _RUNNING)])
    assert store._replica.state.clients[cid] is stored  # nothing of it written again
    assert kinds(path)[-3:] == ["s", "s", "a"]
    assert state_of(JsonFileStore(path)) == state_of(store)


_RUNNING = Report(JobStatus.RUNNING)
