"""The JSON store's jobs in memory: the index of job ids (``jobs_by_id`` without a scan), the
same after a reload from the journal and after a compaction."""

from __future__ import annotations

from pathlib import Path

from openclaw_billing.jobs import NewJob, StoredJob
from openclaw_billing.store.base import Charge
from openclaw_billing.store.capabilities import MAX_SAME_ID
from openclaw_billing.store.json_file import JsonFileStore
from openclaw_billing.store.json_state import State
from tests.store_helpers import T0, make_record

JOB = NewJob({"prompt": "hello"})


def scanned(state: State, job_id: str) -> list[StoredJob]:
    """``jobs_by_id`` as it was: every client's jobs scanned, in ``client_jobs``'s order."""
    found = [jobs[job_id] for jobs in state.client_jobs.values() if job_id in jobs]
    return found[:MAX_SAME_ID]


def answers(store: JsonFileStore, ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    return {i: [(j.client_id, j.job_id) for j in store.jobs_by_id(i)] for i in ids}


def test_jobs_by_id_is_indexed_in_the_scans_order_after_reload_and_compaction(
    tmp_path: Path,
) -> None:
    path = tmp_path / "clients.json"
    store = JsonFileStore(path)
    cids = [f"c{n:02d}" for n in range(14)]
    for cid in cids:
        store.create_client(make_record(cid)[0])
    # Clients get their first job in an order unlike their creation's, and the shared ids
    # later in yet another order: the answer is in the order of each client's first job.
    for cid in reversed(cids[:7]):
        store.accept(Charge(cid, f"own-{cid}", 1.0, T0, job=JOB))
    for cid in cids[7:]:
        store.accept(Charge(cid, f"own-{cid}", 1.0, T0, job=JOB))
    batch = [Charge(cid, "shared", 1.0, T0, job=JOB) for cid in cids[5:]]
    batch += [Charge(cid, "shared", 1.0, T0, job=JOB) for cid in reversed(cids[:5])]
    store.mutate_batch(batch)
    store.mutate_batch([Charge(cid, "pair", 1.0, T0, job=JOB) for cid in (cids[12], cids[1])])
    ids = ["shared", "pair", f"own-{cids[3]}", "none"]

    state = store._replica.state
    assert [len(state.job_holders[i]) for i in ids[:3]] == [14, 2, 1]  # the index
    expected = {i: [(j.client_id, j.job_id) for j in scanned(state, i)] for i in ids}
    assert [cid for cid, _ in expected["shared"]] == [*reversed(cids[:7]), *cids[7:10]]
    assert len(expected["shared"]) == MAX_SAME_ID
    assert [cid for cid, _ in expected["pair"]] == [cids[1], cids[12]]
    assert answers(store, ids) == expected

    reloaded = JsonFileStore(path)  # from the journal
    assert answers(reloaded, ids) == expected
    store.compact()
    assert answers(JsonFileStore(path), ids) == expected  # from the snapshot alone
    assert answers(reloaded, ids) == expected  # a reader that takes the new snapshot
