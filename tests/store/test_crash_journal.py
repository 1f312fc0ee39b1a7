"""Crashes of the JSON store's journal and its compaction, in real processes: a child charging
batches of jobs is killed with SIGKILL again and again while it compacts often, and a child is
stopped at each step of a compaction. After each, every charge the child acknowledged is stored
with its job, every charge has its job and every job its charge, nothing is stored twice, and
the invariants hold (tests/invariants.py)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from openclaw_billing.plans import PlanId
from openclaw_billing.store.base import Charge
from openclaw_billing.store.json_file import JsonFileStore
from openclaw_billing.store.json_journal import frame, journal_path, journals
from tests.invariants import check_store_file
from tests.journal_crash import (
    COMPACTION_STEPS,
    MOST_PER_BATCH,
    acked_ids,
    charge_jobs_forever,
    die_in_compaction,
    job_fields,
)
from tests.store_helpers import (
    CRASH_EXIT,
    T0,
    WAIT,
    kill_after_acks,
    ledger_ids,
    make_record,
    mp_context,
    temp_files,
)

pytestmark = pytest.mark.slow

CLIENTS = ["c1", "c2", "c3"]


def seeded(path: Path) -> JsonFileStore:
    store = JsonFileStore(path)
    for cid in CLIENTS:
        store.create_client(make_record(cid, PlanId.PRO)[0])
        store.add_credits(cid, 1_000_000, "load test", T0)
    return store


def charges_and_jobs(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Reopened as the next start would: each client's ledger ids and stored jobs' ids; every
    record meets the invariants, and every stored job is as the child sent it."""
    records = check_store_file(path)
    store = JsonFileStore(path)
    found = {}
    for record in records:
        jobs = store.client_jobs(record.client_id)
        for job in jobs:
            sent = job_fields(job.job_id)
            assert (job.fields, job.request_hash) == (dict(sent.fields), sent.request_hash)
        found[record.client_id] = (ledger_ids(record), [job.job_id for job in jobs])
    return found


def test_a_writer_killed_at_random_moments_keeps_every_charge_with_its_job(
    tmp_path: Path,
) -> None:
    """R5 for the journal: kill -9 a process charging batches of jobs at random moments, 40
    times, restarting it each time, with a journal compacted every few kilobytes (so kills
    land in compactions too), and now and then a torn last line left as a power cut would."""
    rounds = 40
    path = tmp_path / "clients.json"
    seeded(path)
    acks = tmp_path / "acks"
    ctx = mp_context()
    rng = random.Random(20261129)
    generations = set()
    for n in range(rounds):
        kill_after_acks(
            ctx,
            charge_jobs_forever,
            (str(path), CLIENTS, f"r{n}", str(acks), 3000 + 500 * (n % 5)),
            rng,
            most=12,
            linger=0.004,
        )
        if n % 4 == 3:  # as a power cut could leave it: the last write torn, half there
            torn = frame([b'{"t":"c","id":"c1","job":"torn","cost":1,"at":"x","left":1}'], 10**6)
            with journal_path(path, max(journals(path))).open("ab") as journal:
                journal.write(torn[: len(torn) // 2])
        found = charges_and_jobs(path)
        assert temp_files(path) == [], "opening sweeps the crash's temp files"
        charged = [job_id for ids, _ in found.values() for job_id in ids]
        for cid, (ids, jobs) in found.items():
            assert ids == jobs, f"{cid}: a charge without its job, or a job without its charge"
        assert len(charged) == len(set(charged)), "a charge stored twice"
        acked = acked_ids(acks)
        missing = set(acked) - set(charged)
        assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
        in_flight = {i for i in set(charged) - set(acked) if i.startswith(f"r{n}-")}
        # At most the batch being written when the kill came, whole.
        assert len({job_id.rsplit("-", 1)[0] for job_id in in_flight}) <= 1, in_flight
        assert len(in_flight) <= MOST_PER_BATCH, in_flight
        generations.add(JsonFileStore(path)._replica.generation)
    assert len(generations) > 5, "the child compacted now and then"
    assert len(journals(path)) <= 2


@pytest.mark.parametrize("at_step", COMPACTION_STEPS)
def test_a_crash_at_each_step_of_a_compaction_loses_nothing_and_repeats_nothing(
    tmp_path: Path, at_step: str
) -> None:
    template = tmp_path / "template" / "clients.json"
    store = seeded(template)
    for generation in range(2):  # a history of compactions: generation 3, journals 2 and 3
        store.accept(_charge(f"old-{generation}"))
        store.compact()
    assert sorted(journals(template)) == [2, 3]
    path = tmp_path / at_step / "clients.json"
    shutil.copytree(template.parent, path.parent)
    reader = JsonFileStore(path)  # another worker, open across the crash
    reader.check()

    ctx = mp_context()
    child = ctx.Process(target=die_in_compaction, args=(str(path), "c1", "new-1", at_step, T0))
    child.start()
    child.join(WAIT)
    assert child.exitcode == CRASH_EXIT, child.exitcode
    renamed = COMPACTION_STEPS.index(at_step) >= COMPACTION_STEPS.index("renamed")
    assert (reader._replica.generation, JsonFileStore(path)._replica.generation) == (
        3,
        4 if renamed else 3,
    )
    expected = (["old-0", "old-1", "new-1"], ["old-0", "old-1", "new-1"])
    assert charges_and_jobs(path)["c1"] == expected  # the charge's line was written first
    assert temp_files(path) == []
    assert journal_path(path, 4).exists() == (at_step in ("journal-started", "old-removed"))
    # The worker open across the crash catches up; the store goes on, charging once.
    record = reader.get_client("c1")
    assert record is not None
    assert ledger_ids(record) == expected[0]
    again = JsonFileStore(path)
    assert again.accept(_charge("new-1")).charge.replayed
    again.accept(_charge("new-2"))
    again.compact()
    assert charges_and_jobs(path)["c1"] == tuple([*ids, "new-2"] for ids in expected)
    assert sorted(journals(path)) == [again._replica.generation - 1, again._replica.generation]


def _charge(job_id: str) -> Charge:
    return Charge("c1", job_id, 0.25, T0, job=job_fields(job_id))
