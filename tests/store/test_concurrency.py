"""The JSON store under real concurrency: threads, OS processes, and both at once.

Every scenario releases its workers through a barrier so the charges really overlap, and ends
with the docs/ARCHITECTURE.md invariants checked on the file.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import gateway
from openclaw_billing.errors import StoreUnavailable
from openclaw_billing.models import ClientRecord
from openclaw_billing.settings import get_settings
from openclaw_billing.store.json_file import JsonFileStore
from tests.factories import create_client, submit_job
from tests.invariants import check_store_file
from tests.store_helpers import (
    CYCLE,
    T0,
    WAIT,
    Outcome,
    charge_in_threads,
    charge_process,
    collect,
    hold_lock,
    ledger_ids,
    make_record,
    mp_context,
)

pytestmark = pytest.mark.slow


def stored(path: Path, client_id: str) -> ClientRecord:
    record = JsonFileStore(path).get_client(client_id)
    assert record is not None
    return record


def assert_exactly_n_charged(path: Path, outcomes: list[Outcome], n: int) -> ClientRecord:
    """Exactly ``n`` distinct jobs succeeded, every other attempt hit the limit, and the ledger
    holds exactly the successful jobs."""
    kinds = Counter(kind for _, kind, _ in outcomes)
    assert kinds == Counter({"ok": n, "limit": len(outcomes) - n})
    ok = [job_id for job_id, kind, _ in outcomes if kind == "ok"]
    assert len(set(ok)) == n
    (record,) = check_store_file(path)
    assert record.credits_remaining == 0
    assert sorted(ledger_ids(record)) == sorted(ok)
    # Each success saw a distinct "credits left" value: n-1 ... 0.
    left = sorted(
        r.credits_remaining
        for _, _, r in outcomes
        if r is not None and r.credits_remaining is not None
    )
    assert left == list(range(n))
    return record


def test_threads_charge_exactly_the_credits(tmp_path: Path) -> None:
    """Each thread on its own instance of the store, as each worker of a gateway has: only the
    file lock keeps them apart. (Threads sharing one instance: the contract suite's test of the
    same name, on every backend.)"""
    credits, threads, attempts = 300, 16, 24  # 384 attempts for 300 credits
    path = tmp_path / "clients.json"
    JsonFileStore(path).create_client(make_record("c1", allowance=credits)[0])
    batches = [[(f"t{t}-{i}", T0) for i in range(attempts)] for t in range(threads)]
    barrier = threading.Barrier(threads)
    results: list[list[Outcome]] = [[] for _ in batches]

    def own_store(index: int) -> None:
        results[index] = charge_in_threads(JsonFileStore(path), "c1", [batches[index]], barrier)

    workers = [threading.Thread(target=own_store, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT)
    outcomes = [o for batch in results for o in batch]
    assert len(outcomes) == threads * attempts
    assert_exactly_n_charged(path, outcomes, credits)


def test_processes_charge_exactly_the_credits(tmp_path: Path) -> None:
    credits, procs, attempts = 200, 4, 80  # 320 attempts for 200 credits
    path = tmp_path / "clients.json"
    JsonFileStore(path).create_client(make_record("c1", allowance=credits)[0])
    ctx = mp_context()
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    children = [
        ctx.Process(
            target=charge_process,
            args=(str(path), "c1", [[(f"p{p}-{i}", T0) for i in range(attempts)]], barrier, out),
        )
        for p in range(procs)
    ]
    for child in children:
        child.start()
    outcomes = collect(children, out)
    assert len(outcomes) == procs * attempts
    assert_exactly_n_charged(path, outcomes, credits)


def test_same_job_id_from_threads_and_processes_is_charged_once(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    JsonFileStore(path).create_client(make_record("c1")[0])
    local_threads, procs, threads_per_proc = 8, 4, 4
    ctx = mp_context()
    barrier = ctx.Barrier(local_threads + procs * threads_per_proc)
    out = ctx.Queue()

    def attempt(n: int) -> list[tuple[str, datetime]]:
        # Each caller brings its own time: only the first one's is recorded.
        return [("job-same", T0 + timedelta(seconds=n))]

    children = [
        ctx.Process(
            target=charge_process,
            args=(
                str(path),
                "c1",
                [attempt(100 + p * threads_per_proc + t) for t in range(threads_per_proc)],
                barrier,
                out,
            ),
        )
        for p in range(procs)
    ]
    for child in children:
        child.start()
    local = charge_in_threads(
        JsonFileStore(path), "c1", [attempt(t) for t in range(local_threads)], barrier
    )
    outcomes = local + collect(children, out)
    assert len(outcomes) == local_threads + procs * threads_per_proc
    results = [r for _, kind, r in outcomes if r is not None]
    assert len(results) == len(outcomes), outcomes  # no errors at all
    assert sum(not r.replayed for r in results) == 1
    first = next(r for r in results if not r.replayed)
    for r in results:
        assert (r.client_id, r.job_id, r.cost, r.charged_at) == (
            first.client_id,
            first.job_id,
            first.cost,
            first.charged_at,
        )
        assert r.credits_remaining == 199
    (record,) = check_store_file(path)
    assert record.credits_remaining == 199
    assert ledger_ids(record) == ["job-same"]
    assert record.metadata.cost_log[0].timestamp == first.charged_at
    assert record.total_spent == first.cost


def test_cycle_boundary_under_concurrent_charges_resets_once(tmp_path: Path) -> None:
    """R20: charges stamped just before and just after the cycle's end race; the reset happens
    exactly once and every charge lands in exactly one cycle."""
    path = tmp_path / "clients.json"
    # 12 credits left in the ending cycle (so some "before" charges hit the limit there);
    # the new cycle has the plan's 200, more than all the charges together.
    JsonFileStore(path).create_client(make_record("c1", allowance=12)[0])
    end = T0 + CYCLE
    before, after = end - timedelta(seconds=1), end + timedelta(seconds=1)
    local_threads, procs, threads_per_proc, per_thread = 8, 2, 4, 8

    def batch(name: str) -> list[tuple[str, datetime]]:
        return [
            (f"{name}-{i}-{'b' if i % 2 == 0 else 'a'}", before if i % 2 == 0 else after)
            for i in range(per_thread)
        ]

    ctx = mp_context()
    barrier = ctx.Barrier(local_threads + procs * threads_per_proc)
    out = ctx.Queue()
    children = [
        ctx.Process(
            target=charge_process,
            args=(
                str(path),
                "c1",
                [batch(f"p{p}t{t}") for t in range(threads_per_proc)],
                barrier,
                out,
            ),
        )
        for p in range(procs)
    ]
    for child in children:
        child.start()
    local = charge_in_threads(
        JsonFileStore(path), "c1", [batch(f"l{t}") for t in range(local_threads)], barrier
    )
    outcomes = local + collect(children, out)
    total = (local_threads + procs * threads_per_proc) * per_thread
    assert len(outcomes) == total

    (record,) = check_store_file(path)
    history = record.metadata.cycle_history
    assert len(history) == 1, "exactly one reset"
    old = history[0]
    assert (old.start, old.end) == (T0, end)
    assert (record.billing_cycle_start, record.billing_cycle_end) == (end, end + CYCLE)

    ok = {job_id for job_id, kind, _ in outcomes if kind == "ok"}
    refused = {job_id for job_id, kind, _ in outcomes if kind != "ok"}
    assert all(kind in ("ok", "limit") for _, kind, _ in outcomes), outcomes
    assert all(job_id.endswith("-b") for job_id in refused), "only the old cycle ran out"
    in_old = [e.job_id for e in old.entries]
    in_new = ledger_ids(record)
    # No charge lost or doubled: the two ledgers partition the accepted jobs.
    assert len(in_old) + len(in_new) == len(ok)
    assert set(in_old) | set(in_new) == ok
    assert not refused & (set(in_old) | set(in_new))
    assert all(job_id.endswith("-b") for job_id in in_old)
    assert all(e.timestamp == before for e in old.entries)
    assert old.jobs == len(in_old) <= 12
    assert old.credits_left == 12 - old.jobs
    assert record.credits_remaining == 200 - len(in_new)
    assert record.total_spent == 0.5 * len(ok)


def test_concurrent_refreshes_reset_once(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    JsonFileStore(path).create_client(make_record("c1")[0])
    JsonFileStore(path).charge("c1", "job-1", 1.0, T0)
    now = T0 + CYCLE + timedelta(minutes=1)
    threads = 16
    barrier = threading.Barrier(threads)
    seen: list[ClientRecord] = []

    def refresh() -> None:
        store = JsonFileStore(path)
        barrier.wait(WAIT)
        seen.append(store.refresh_cycle("c1", now))

    workers = [threading.Thread(target=refresh) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT)
    assert len(seen) == threads
    assert all(r == seen[0] for r in seen)
    (record,) = check_store_file(path)
    assert record == seen[0]
    assert len(record.metadata.cycle_history) == 1
    assert record.credits_remaining == 200


def test_lock_held_by_another_process_gives_a_bounded_503_then_recovers(tmp_path: Path) -> None:
    """R9: with the lock held elsewhere a charge waits at most its timeout, then raises
    StoreUnavailable; once the holder lets go, charges go through."""
    path = tmp_path / "clients.json"
    JsonFileStore(path).create_client(make_record("c1")[0])
    store = JsonFileStore(path, lock_timeout=0.5)
    patient = JsonFileStore(path, lock_timeout=WAIT)  # opened first: opening takes the lock
    ctx = mp_context()
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=hold_lock, args=(str(path) + ".lock", held, release))
    holder.start()
    try:
        assert held.wait(WAIT)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.charge("c1", "job-1", 1.0, T0)
        waited = time.monotonic() - started
        assert 0.45 <= waited < 3.0, waited
        with pytest.raises(StoreUnavailable):
            store.add_credits("c1", 1, "x", T0)
        record = store.get_client("c1")  # reads do not need the lock
        assert record is not None
        assert record.credits_remaining == 200

        # A charge with a longer timeout waits for the holder, then succeeds.
        done: list[int | None] = []
        entered = threading.Event()

        def wait_and_charge() -> None:
            entered.set()
            done.append(patient.charge("c1", "job-2", 1.0, T0).credits_remaining)

        waiter = threading.Thread(target=wait_and_charge)
        waiter.start()
        assert entered.wait(WAIT)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:  # bounded: it must still be waiting for the lock
            assert not done
            time.sleep(0.01)
    finally:
        release.set()
        holder.join(WAIT)
    waiter.join(WAIT)
    assert done == [199]
    assert store.charge("c1", "job-3", 1.0, T0).credits_remaining == 198
    (record,) = check_store_file(path)
    assert ledger_ids(record) == ["job-2", "job-3"]


def test_lock_held_over_http_answers_503_not_500(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_STORE_LOCK_TIMEOUT", "0.5")
    get_settings.cache_clear()
    ctx = mp_context()
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=hold_lock, args=(str(store_path) + ".lock", held, release))
    with TestClient(gateway.create_app()) as http:
        created = create_client(http, "starter")
        key = created["api_key"]
        holder.start()
        try:
            assert held.wait(WAIT)
            started = time.monotonic()
            response = submit_job(http, key)
            assert time.monotonic() - started < 3.0
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "store_unavailable"
            usage = http.get("/api/billing/usage", headers={"X-Client-Key": key})
            assert usage.status_code in (200, 503), usage.text
        finally:
            release.set()
            holder.join(WAIT)
        response = submit_job(http, key)
        assert response.status_code == 201, response.text
        assert response.json()["credits_remaining"] == 49
    (record,) = check_store_file(store_path, [key])
    assert len(record.metadata.cost_log) == 1
