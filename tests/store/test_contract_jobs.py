"""The storage contract for jobs: ``Store.accept`` with a job, and the
:class:`~openclaw_billing.store.capabilities.JobStorage` reads, on every backend
(tests/backends.py), by the rules of openclaw_billing/jobs.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest

from openclaw_billing.access import new_key_record
from openclaw_billing.errors import (
    ClientInactive,
    ClientNotFound,
    ConcurrencyLimitReached,
    CreditLimitReached,
    InvalidApiKey,
)
from openclaw_billing.jobs import Charged, JobStatus, NewJob, StoredJob
from openclaw_billing.keys import generate_key
from openclaw_billing.ledger import concurrency_cap
from openclaw_billing.models import ClientRecord
from openclaw_billing.outcomes import Report
from openclaw_billing.plans import PLANS, PlanId
from openclaw_billing.store import Store, sql_charge
from openclaw_billing.store.base import Charge, Settle
from openclaw_billing.store.capabilities import JobStorage
from openclaw_billing.store.json_file import JsonFileStore
from openclaw_billing.store.migrate import copy_store
from tests.backends import (  # noqa: F401 - the fixtures "store" and "store_url"
    ROW_LOCK_BACKENDS,
    add_client,
    assert_invariants,
    make_record,
    reopen,
    store_fixture,
    store_url_fixture,
)
from tests.store_helpers import CYCLE, T0, ledger_ids

T1 = T0 + timedelta(hours=1, microseconds=250_001)
MINUTE = timedelta(minutes=1)
JOB = NewJob({"prompt": "summarise the report", "model": "small"}, request_hash="h" * 64)


def jobs_of(store: Store) -> JobStorage:
    assert isinstance(store, JobStorage), f"{store.location} keeps no jobs"
    return store


def credits(store: Store, client_id: str) -> int | None:
    record = store.get_client(client_id)
    assert record is not None
    return record.credits_remaining


def limited(store: Store, allowance: int) -> ClientRecord:
    record, _ = make_record(f"lim-{allowance}", PlanId.STARTER, allowance=allowance)
    store.create_client(record)
    return record


def test_every_backend_keeps_jobs(store: Store) -> None:
    assert isinstance(store, JobStorage)


def test_accept_with_a_job_stores_the_charge_and_the_job(store: Store, store_url: str) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    charged = store.accept(Charge(cid, "job-1", 1.25, T1, job=JOB))
    assert not charged.charge.replayed
    assert charged.charge.credits_remaining == 199
    expected = StoredJob(
        client_id=cid,
        job_id="job-1",
        created_at=T1,
        fields=dict(JOB.fields),
        request_hash=JOB.request_hash,
        credits_remaining=199,
    )
    assert charged.job == expected
    with reopen(store_url) as again:  # durable, as a restart (or another worker) sees it
        assert jobs_of(again).get_job(cid, "job-1") == expected
        assert jobs_of(again).client_jobs(cid) == [expected]
        stored = again.get_client(cid)
        assert stored is not None
        assert ledger_ids(stored) == ["job-1"]
        assert stored.credits_remaining == 199
        assert_invariants(again)


def test_a_charge_without_a_job_stores_none(store: Store) -> None:
    record, _ = add_client(store)
    assert store.accept(Charge(record.client_id, "job-1", 1.0, T1)).job is None
    assert jobs_of(store).get_job(record.client_id, "job-1") is None
    assert jobs_of(store).client_jobs(record.client_id) == []


def test_a_retry_returns_the_first_answer_and_the_stored_job(store: Store) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    first = store.accept(Charge(cid, "job-1", 1.25, T1, job=JOB))
    other = NewJob({"prompt": "something else"}, request_hash="x" * 64)
    later = T1 + MINUTE
    retry = store.accept(Charge(cid, "job-1", 9.0, later, job=other))
    assert retry.charge.replayed
    assert (retry.charge.cost, retry.charge.charged_at) == (1.25, T1)
    assert retry.charge.credits_remaining == 199
    assert retry.job == first.job  # the first request's job, not this one's
    # Without a job, and even after the cycle ended: still the first answer.
    again = store.accept(Charge(cid, "job-1", 9.0, T0 + CYCLE + MINUTE))
    assert again.charge.replayed
    assert again.job == first.job
    assert credits(store, cid) == 200  # the new cycle's allowance, nothing charged in it
    assert jobs_of(store).client_jobs(cid) == [first.job]
    assert_invariants(store)


def test_a_job_for_an_id_charged_without_one_is_stored_under_that_charge(store: Store) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    store.mutate_batch([Charge(cid, "job-1", 0.5, T1), Charge(cid, "job-2", 0.5, T1 + MINUTE)])
    charged = store.accept(Charge(cid, "job-1", 3.0, T1 + 2 * MINUTE, job=JOB))
    assert charged.charge.replayed
    assert (charged.charge.cost, charged.charge.charged_at) == (0.5, T1)
    assert charged.job is not None
    assert (charged.job.created_at, charged.job.credits_remaining) == (T1, 198)
    assert jobs_of(store).get_job(cid, "job-1") == charged.job
    assert credits(store, cid) == 198  # nothing charged again
    stored = store.get_client(cid)
    assert stored is not None
    assert ledger_ids(stored) == ["job-1", "job-2"]


def test_a_refused_charge_stores_no_job(store: Store) -> None:
    record = limited(store, 1)
    cid = record.client_id
    store.accept(Charge(cid, "job-1", 1.0, T1, job=JOB))
    with pytest.raises(CreditLimitReached):
        store.accept(Charge(cid, "job-2", 1.0, T1, job=JOB))
    off, _ = make_record("off", active=False)
    store.create_client(off)
    with pytest.raises(ClientInactive):
        store.accept(Charge("off", "job-1", 1.0, T1, job=JOB))
    with pytest.raises(ClientNotFound):
        store.accept(Charge("nobody", "job-1", 1.0, T1, job=JOB))
    assert jobs_of(store).get_job(cid, "job-2") is None
    assert jobs_of(store).get_job("off", "job-1") is None
    assert [j.job_id for j in jobs_of(store).client_jobs(cid)] == ["job-1"]
    assert credits(store, cid) == 0
    assert_invariants(store)


@pytest.mark.parametrize("state", ["revoked", "expired", "unknown"])
def test_a_key_no_longer_usable_is_refused_and_nothing_is_charged(store: Store, state: str) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    key = new_key_record(generate_key(), T0)
    store.issue_key(cid, key, T0)
    key_id = key.key_id
    if state == "revoked":
        store.revoke_key(cid, key_id, T0 + MINUTE)
    elif state == "expired":
        store.set_key_expiry(cid, key_id, T1 - MINUTE, T0 + MINUTE)
    else:
        key_id = "key_000000000000"
    with pytest.raises(InvalidApiKey):
        store.accept(Charge(cid, "job-1", 1.0, T1, job=JOB, key_id=key_id))
    assert credits(store, cid) == 200
    assert jobs_of(store).get_job(cid, "job-1") is None
    stored = store.get_client(cid)
    assert stored is not None
    assert ledger_ids(stored) == []
    # The client's first key still works.
    first = record.api_keys[0].key_id
    assert store.accept(Charge(cid, "job-1", 1.0, T1, job=JOB, key_id=first)).job is not None
    # A retry of a job stored already is the first answer, whatever became of the key.
    if state != "unknown":
        retry = store.accept(Charge(cid, "job-1", 1.0, T1, key_id=key_id))
        assert retry.charge.replayed


def test_client_jobs_since_a_time_oldest_first(store: Store) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    times = {"job-a": T1 + 3 * MINUTE, "job-b": T1 + MINUTE, "job-c": T1 + 2 * MINUTE}
    for job_id, at in times.items():
        store.accept(Charge(cid, job_id, 1.0, at, job=NewJob({"n": job_id})))
    storage = jobs_of(store)
    assert [j.job_id for j in storage.client_jobs(cid)] == ["job-b", "job-c", "job-a"]
    since = storage.client_jobs(cid, since=T1 + 2 * MINUTE)
    assert [j.job_id for j in since] == ["job-c", "job-a"]
    assert storage.client_jobs(cid, since=T1 + 4 * MINUTE) == []
    assert storage.client_jobs("nobody") == []


def test_another_clients_job_is_not_found(store: Store) -> None:
    a, _ = add_client(store, name="A")
    b, _ = add_client(store, name="B")
    store.accept(Charge(a.client_id, "job-1", 1.0, T1, job=JOB))
    assert jobs_of(store).get_job(b.client_id, "job-1") is None
    assert jobs_of(store).client_jobs(b.client_id) == []
    # The same job id is B's own job, apart from A's.
    own = store.accept(Charge(b.client_id, "job-1", 1.0, T1, job=NewJob({"mine": "b"})))
    assert not own.charge.replayed
    assert own.job is not None
    assert jobs_of(store).get_job(b.client_id, "job-1") == own.job
    assert jobs_of(store).get_job(a.client_id, "job-1") != own.job


def test_jobs_of_one_batch_are_stored_with_their_charges(store: Store, store_url: str) -> None:
    a, _ = add_client(store, name="A")
    b = limited(store, 1)
    batch = [
        Charge(a.client_id, "job-1", 1.0, T1, job=JOB),
        Charge(b.client_id, "job-1", 1.0, T1, job=JOB),
        Charge(b.client_id, "job-2", 1.0, T1, job=JOB),  # no credit left: refused
        Charge(a.client_id, "job-1", 1.0, T1, job=NewJob({"again": "yes"})),  # a retry
    ]
    outcomes = store.mutate_batch(batch)
    refused = [n for n, outcome in enumerate(outcomes) if outcome.error is not None]
    assert refused == [2]
    assert isinstance(outcomes[2].error, CreditLimitReached)
    first, retry = cast(Charged, outcomes[0].result), cast(Charged, outcomes[3].result)
    assert retry.charge.replayed
    assert retry.job == first.job
    with reopen(store_url) as again:
        assert [j.job_id for j in jobs_of(again).client_jobs(a.client_id)] == ["job-1"]
        assert [j.job_id for j in jobs_of(again).client_jobs(b.client_id)] == ["job-1"]
        assert_invariants(again)


def test_import_jobs_is_idempotent_and_skips_unknown_clients(store: Store, store_url: str) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    store.charge(cid, "job-1", 1.0, T1)

    def job(client_id: str, job_id: str, prompt: str) -> StoredJob:
        return StoredJob(
            client_id=client_id,
            job_id=job_id,
            created_at=T1,
            fields={"prompt": prompt},
            credits_remaining=199,
        )

    jobs = [job(cid, "job-1", "first"), job("nobody", "job-9", "x"), job(cid, "job-1", "dup")]
    storage = jobs_of(store)
    assert storage.import_jobs(jobs) == 1
    assert storage.import_jobs(jobs) == 0
    assert storage.import_jobs([]) == 0
    assert storage.get_job(cid, "job-1") == jobs[0]
    assert storage.get_job("nobody", "job-9") is None
    assert credits(store, cid) == 199  # the charges are not touched
    # A job imported is the first answer to a retry, like any stored job.
    assert store.accept(Charge(cid, "job-1", 1.0, T1 + MINUTE, job=JOB)).job == jobs[0]
    with reopen(store_url) as again:
        assert jobs_of(again).client_jobs(cid) == [jobs[0]]


@pytest.mark.parametrize("store_url", ROW_LOCK_BACKENDS, indirect=True)
def test_two_workers_importing_the_same_jobs_at_once_store_each_once(
    store: Store, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker imports the old job file at its start. On PostgreSQL an import sees only
    committed rows, so another worker can store the same jobs between its read of what is
    stored and its insert: those are skipped, not an error that stops the worker's start."""
    record, _ = add_client(store)
    jobs = [
        StoredJob(client_id=record.client_id, job_id=f"job-{n}", created_at=T1, fields={})
        for n in range(3)
    ]
    real = sql_charge.job_values
    raced: list[int] = []
    started = False

    def other_worker_first(job: StoredJob) -> dict[str, object]:
        nonlocal started
        if not started:  # after this import read what is stored, before it inserts
            started = True
            with reopen(store_url) as other:
                raced.append(jobs_of(other).import_jobs(jobs[:2]))
        return real(job)

    monkeypatch.setattr(sql_charge, "job_values", other_worker_first)
    assert jobs_of(store).import_jobs(jobs) == 1  # job-2; the other worker stored 0 and 1
    assert raced == [2]
    assert [j.job_id for j in jobs_of(store).client_jobs(record.client_id)] == [
        "job-0",
        "job-1",
        "job-2",
    ]


def test_the_jobs_holding_credits_are_what_the_cap_counts(store: Store, store_url: str) -> None:
    """``JobStorage.active_jobs`` is the count the reservation's atomic step checks the cap
    against: at the cap it says the cap and the next reservation is refused; a job that ends
    frees a place, and the read drops by one."""
    cid = limited(store, 50).client_id  # the starter plan's cap: 2
    cap = concurrency_cap(PlanId.STARTER, None)
    storage, held = jobs_of(store), NewJob({"prompt": "p"}, price=3)
    assert (storage.active_jobs(cid), storage.active_jobs("nobody"), cap) == (0, 0, 2)
    store.accept(Charge(cid, "job-1", 0.5, T1, job=held))
    store.accept(Charge(cid, "plain", 0.5, T1, job=JOB))  # charged at intake: no hold
    store.mutate_batch([Settle(cid, "job-1", T1, Report(JobStatus.RUNNING))])
    store.accept(Charge(cid, "job-2", 0.5, T1, job=held))
    assert storage.active_jobs(cid) == cap
    past_hold = T1 + PLANS[PlanId.STARTER].hold_ttl + MINUTE  # not swept yet: still held
    with pytest.raises(ConcurrencyLimitReached):
        store.accept(Charge(cid, "job-3", 0.5, past_hold, job=held))
    other = limited(store, 5).client_id
    store.accept(Charge(other, "job-1", 0.5, T1, job=held))
    assert (storage.active_jobs(cid), storage.active_jobs(other)) == (cap, 1)
    store.mutate_batch([Settle(cid, "job-1", past_hold, Report(JobStatus.SUCCEEDED))])
    assert storage.active_jobs(cid) == cap - 1
    with reopen(store_url) as again:  # another worker reads the same
        assert jobs_of(again).active_jobs(cid) == cap - 1
    store.accept(Charge(cid, "job-3", 0.5, past_hold, job=held))  # the place it freed
    assert storage.active_jobs(cid) == cap


def test_jobs_survive_reopen_and_an_unlimited_plan_reports_no_credits(
    store: Store, store_url: str
) -> None:
    ent, _ = add_client(store, PlanId.ENTERPRISE, name="Ent")
    charged = store.accept(Charge(ent.client_id, "job-1", 2.0, T1, job=JOB))
    assert charged.job is not None
    assert charged.job.credits_remaining is None
    with reopen(store_url) as again:
        assert jobs_of(again).get_job(ent.client_id, "job-1") == charged.job
        retry = again.accept(Charge(ent.client_id, "job-1", 2.0, T1 + MINUTE, job=JOB))
        assert retry.charge.replayed
        assert retry.job == charged.job


def test_jobs_are_copied_between_backends(store: Store, tmp_path: Path) -> None:
    """A JSON store's jobs copied into every backend (``openclaw-billing migrate``), and back."""
    source = JsonFileStore(tmp_path / "source.json")
    a, _ = add_client(source, name="A")
    b, _ = add_client(source, name="B")
    source.accept(Charge(a.client_id, "job-1", 1.0, T1, job=JOB))
    source.accept(Charge(a.client_id, "job-2", 1.0, T1 + MINUTE, job=NewJob({"n": "2"})))
    source.charge(b.client_id, "job-1", 1.0, T1)  # a charge without a job
    copy_store(source, store)
    back = JsonFileStore(tmp_path / "back.json")
    copy_store(store, back)
    for copied in (store, back):
        for cid in (a.client_id, b.client_id):
            assert jobs_of(copied).client_jobs(cid) == source.client_jobs(cid)
