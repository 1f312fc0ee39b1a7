"""The storage contract for a job's move (``Settle``, ``MarkMeter`` in ``Store.mutate_batch``)
on every backend, where a backend's fast path could part from the rules of
openclaw_billing/outcomes.py: a hold settled after its cycle rolled, a long ledger, the same
report again, a refused move, a batch mixing charges and settlements of one client; and the
stored result of each backend's own path equal to the generic path's (``MutatingStore._settle``:
the whole record loaded, changed by the rules and written back)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from openclaw_billing import plans
from openclaw_billing.audit import ADMIN_ACTOR, AuditAction, NewAuditEvent
from openclaw_billing.errors import ClientNotFound, IllegalTransition, JobNotFound
from openclaw_billing.jobs import JobStatus, MeterState, NewJob
from openclaw_billing.models import ClientRecord
from openclaw_billing.outcomes import MeterMark, Report, Settled
from openclaw_billing.plans import PlanId
from openclaw_billing.store import Store, changes
from openclaw_billing.store.base import Charge, MarkMeter, Mutation, Operation, Settle
from openclaw_billing.store.capabilities import JobStorage
from openclaw_billing.store.mutating import MutatingStore
from openclaw_billing.store.sql import SqlStore
from openclaw_billing.store.sql_schema import clients, job_rows, ledger_rows, summary_rows
from tests.backends import (  # noqa: F401 - the fixtures "store" and "store_url"
    SQL_BACKENDS,
    add_client,
    assert_invariants,
    reopen,
    store_fixture,
    store_url_fixture,
)
from tests.store_helpers import CYCLE, T0

T1 = T0 + timedelta(hours=1)
MINUTE = timedelta(minutes=1)
SUCCEEDED = Report(JobStatus.SUCCEEDED)
RELEASED = Report(JobStatus.FAILED, "infrastructure")


def audit(settled: Settled) -> NewAuditEvent | None:
    """As the service audits a move: an event for a move, none for the same report again."""
    if not settled.changed:
        return None
    receipt = settled.job.receipt
    return NewAuditEvent(
        at=T1,
        action=AuditAction.JOB_OUTCOME,
        client_id=settled.job.client_id,
        actor=ADMIN_ACTOR,
        source="127.0.0.1",
        detail={
            "job_id": settled.job.job_id,
            "status": settled.job.status.value,
            "charged": None if receipt is None else receipt.charged,
        },
    )


def reserve(cid: str, job_id: str, now: datetime, price: int = 3, **job: Any) -> Charge:
    return Charge(cid, job_id, 0.5, now, job=NewJob({"prompt": "p"}, price=price, **job))


def settle(cid: str, job_id: str, now: datetime, report: Report = SUCCEEDED) -> Settle:
    return Settle(cid, job_id, now, report, audit)


def one(store: Store, op: Operation) -> Any:
    [outcome] = store.mutate_batch([op])
    return outcome.unwrap()


def record(store: Store, cid: str) -> ClientRecord:
    found = store.get_client(cid)
    assert found is not None
    return found


def events(store: Store, cid: str) -> list[Any]:
    page, _ = store.audit.query(client_id=cid, limit=500)
    return [(e.action, e.detail) for e in reversed(page)]


def entry(stored: ClientRecord, job_id: str) -> tuple[int, bool]:
    meta = stored.metadata
    last = meta.cycle_history[-1].entries if meta.cycle_history else []
    [found] = [e for e in (*last, *meta.cost_log) if e.job_id == job_id]
    return found.credits, found.held


def client(store: Store, cid: str | None = None) -> str:
    """A pro client with room for many open holds."""
    made, _ = add_client(store, PlanId.PRO, name=cid or "Acme")
    store.set_policy(
        made.client_id, T0, rate_limit_per_minute=None, ip_allowlist=[], max_active_jobs=1000
    )
    return made.client_id


def test_a_hold_settled_after_its_cycle_ended_gives_nothing_back(store: Store) -> None:
    cid = client(store)
    one(store, reserve(cid, "j1", T1))
    one(store, reserve(cid, "j2", T1))
    later = T0 + CYCLE + MINUTE
    # The settlement itself finds the cycle ended: it rolls it first, as every mutation does.
    settled = one(store, settle(cid, "j1", later, RELEASED))
    receipt = settled.job.receipt
    assert (receipt.charged, receipt.released) == (0, 3)
    assert "the hold's cycle had ended: nothing to give back" in receipt.reason
    stored = record(store, cid)
    assert len(stored.metadata.cycle_history) == 1
    assert stored.credits_remaining == 200  # the new cycle's allowance, nothing given back
    assert entry(stored, "j1") == (0, False)
    # Rolled by an earlier change this time: the hold is in the previous cycle's ledger.
    one(store, Mutation(cid, later, changes.read))
    settled = one(store, settle(cid, "j2", later + MINUTE))
    assert settled.job.receipt.charged == 3
    stored = record(store, cid)
    assert (stored.credits_remaining, entry(stored, "j2")) == (200, (3, False))
    assert_invariants(store)


def test_a_hold_two_cycles_old_ends_its_job_and_changes_no_credit(store: Store) -> None:
    cid = client(store)
    one(store, reserve(cid, "j1", T1))
    before = record(store, cid).credits_remaining
    far = T0 + 2 * CYCLE + MINUTE
    one(store, Mutation(cid, T0 + CYCLE + MINUTE, changes.read))
    one(store, Mutation(cid, far, changes.read))  # two cycles rolled: the hold's is archived
    rolled = record(store, cid)
    settled = one(store, settle(cid, "j1", far, SUCCEEDED))
    assert settled.job.status is JobStatus.SUCCEEDED
    assert record(store, cid) == rolled  # the hold is in no ledger the record holds
    assert rolled.credits_remaining == 200 != before
    assert_invariants(store)


def test_a_long_ledger_settles_one_entry(store: Store, store_url: str) -> None:
    cid = client(store)
    store.add_credits(cid, 1000, "room", T1)
    for start in range(0, 500, 100):
        store.mutate_batch([Charge(cid, f"h{i}", 0.25, T1) for i in range(start, start + 100)])
    one(store, reserve(cid, "j1", T1, price=7))
    one(store, reserve(cid, "j2", T1, price=5))
    assert record(store, cid).credits_remaining == 200 + 1000 - 500 - 12
    one(store, settle(cid, "j1", T1 + MINUTE, RELEASED))
    one(store, settle(cid, "j2", T1 + MINUTE, SUCCEEDED))
    with reopen(store_url) as again:
        stored = record(again, cid)
        assert stored.credits_remaining == 200 + 1000 - 500 - 5
        assert (entry(stored, "j1"), entry(stored, "j2")) == ((0, False), (5, False))
        assert len(stored.metadata.cost_log) == 502
        assert stored.total_spent == 0.25 * 500 + 0.5  # the released job's cost given back
        assert_invariants(again)


def test_the_same_report_again_stores_nothing(store: Store) -> None:
    cid = client(store)
    one(store, reserve(cid, "j1", T1))
    first = one(store, settle(cid, "j1", T1 + MINUTE))
    stored, logged = record(store, cid), events(store, cid)
    again = one(store, settle(cid, "j1", T1 + 2 * MINUTE))
    assert not again.changed
    assert again.job == first.job
    assert record(store, cid) == stored
    assert events(store, cid) == logged
    assert isinstance(store, JobStorage)
    assert store.get_job(cid, "j1") == first.job


def test_a_refused_move_writes_nothing(store: Store) -> None:
    cid = client(store)
    one(store, reserve(cid, "j1", T1))
    one(store, reserve(cid, "j2", T1))
    one(store, settle(cid, "j1", T1 + MINUTE))
    one(store, Settle(cid, "j2", T1, Report(JobStatus.RUNNING), audit))
    assert isinstance(store, JobStorage)
    stored, jobs, logged = record(store, cid), store.client_jobs(cid), events(store, cid)
    refused = store.mutate_batch(
        [
            settle(cid, "j1", T1 + 2 * MINUTE, RELEASED),  # ended: moves no more
            Settle(cid, "j2", T1, Report(JobStatus.CANCELLED, by_client=True), audit),
            settle(cid, "nope", T1),
            settle("nobody", "j1", T1),
        ]
    )
    assert [type(o.error) for o in refused] == [
        IllegalTransition,
        IllegalTransition,
        JobNotFound,
        ClientNotFound,
    ]
    assert record(store, cid) == stored
    assert store.client_jobs(cid) == jobs
    assert events(store, cid) == logged
    assert_invariants(store)


def test_a_batch_mixing_charges_and_settlements_of_one_client(store: Store, store_url: str) -> None:
    cid = client(store)
    one(store, reserve(cid, "j1", T1))
    at = T1 + MINUTE
    outcomes = store.mutate_batch(
        [
            reserve(cid, "j2", at),  # 194
            settle(cid, "j1", at, RELEASED),  # 197
            Charge(cid, "j3", 1.0, at),  # 196
            settle(cid, "j9", at),  # refused: no such job
            Mutation(cid, at, changes.add_credits(5, "goodwill", at)),  # 201
            settle(cid, "j2", at),  # charged: 201
            settle(cid, "j1", at, RELEASED),  # the same report again
            reserve(cid, "j4", at, price=4),  # 197
            MarkMeter(cid, "j2", at, MeterMark(1, MeterState.REPORTED)),  # nothing to mark
        ]
    )
    assert [type(o.error) if o.error else None for o in outcomes] == [
        None,
        None,
        None,
        JobNotFound,
        None,
        None,
        None,
        None,
        None,
    ]
    assert outcomes[4].unwrap().credits_remaining == 201
    assert not outcomes[6].unwrap().changed
    with reopen(store_url) as again:
        stored = record(again, cid)
        assert stored.credits_remaining == 197
        assert [entry(stored, j) for j in ("j1", "j2", "j3", "j4")] == [
            (0, False),
            (3, False),
            (1, False),
            (4, True),
        ]
        assert [a for a, _ in events(again, cid)].count(AuditAction.JOB_OUTCOME) == 2
        assert_invariants(again)


def test_workers_settling_one_job_at_once_settle_it_once(store: Store, store_url: str) -> None:
    """Each worker its own store on the same location, all reporting the job's end at once:
    one moves it, the others find it ended (the same report again) and give nothing back."""
    cid = client(store)
    one(store, reserve(cid, "j1", T1, price=7))
    workers = 6
    barrier = threading.Barrier(workers)
    results: list[Any] = []

    def report() -> None:
        with reopen(store_url) as mine:
            barrier.wait()
            [outcome] = mine.mutate_batch([settle(cid, "j1", T1 + MINUTE, RELEASED)])
            results.append(outcome.unwrap().changed)  # a refusal: an entry missing

    threads = [threading.Thread(target=report) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * (workers - 1) + [True]
    stored = record(store, cid)
    assert (stored.credits_remaining, entry(stored, "j1")) == (200, (0, False))
    assert [a for a, _ in events(store, cid)].count(AuditAction.JOB_OUTCOME) == 1
    assert_invariants(store)


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_sql_a_settlement_reads_the_row_the_job_and_its_entry_whatever_the_ledger(
    store: Store,
) -> None:
    """No whole record: the locked row, the job with its ledger row, then the writes; the same
    statements with an empty ledger and with 500 entries."""
    assert isinstance(store, SqlStore)
    cid = client(store)
    store.add_credits(cid, 1000, "room", T1)
    seen: list[list[str]] = []
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(" ".join(str(args[2]).split()))

    for entries in (0, 500):
        for start in range(0, entries, 100):
            batch = [Charge(cid, f"h{i}", 0.0, T1) for i in range(start, start + 100)]
            store.mutate_batch(batch)
        one(store, reserve(cid, f"j{entries}", T1))
        statements.clear()
        event.listen(store._write, "before_cursor_execute", count)
        try:
            one(store, settle(cid, f"j{entries}", T1 + MINUTE, RELEASED))
        finally:
            event.remove(store._write, "before_cursor_execute", count)
        seen.append(list(statements))
        tables = ("openclaw_cycle_summaries", "openclaw_credit_adjustments", "openclaw_api_keys")
        assert not [s for s in statements if any(t in s for t in tables)], statements
    assert seen[0] == seen[1]
    assert record(store, cid).credits_remaining == 1200 - 500


# -- each backend's path stores what the generic path stores -----------------------------------


@contextmanager
def generic(store: Store) -> Iterator[None]:
    """The store's moves by the generic path (the whole record) for the block."""
    assert isinstance(store, MutatingStore)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "_settle", functools.partial(MutatingStore._settle, store))
        yield


def scenario(store: Store, cid: str) -> None:
    """Every kind of move: a run, ends charged, metered, released, cancelled by the client, an
    overage billed through Stripe and its mark, an illegal move, the same report again, and
    holds settled after their cycle rolled."""
    at = T1
    for n, price in enumerate((3, 5, 2, 8, 4, 6, 1), start=1):
        one(store, reserve(cid, f"j{n}", at, price=price))
    used = Report(JobStatus.SUCCEEDED, usage={"tokens_out": 50_000})
    ops: Sequence[Operation] = [
        Settle(cid, "j1", at, Report(JobStatus.RUNNING), audit),
        settle(cid, "j1", at + MINUTE),
        settle(cid, "j2", at + MINUTE, Report(JobStatus.SUCCEEDED, usage={"tokens_out": 2500})),
        settle(cid, "j3", at + MINUTE, RELEASED),
        Settle(cid, "j4", at, Report(JobStatus.CANCELLED, by_client=True), audit),
        settle(cid, "j5", at + MINUTE, used),
        settle(cid, "j1", at + 2 * MINUTE, RELEASED),
        settle(cid, "j2", at + 2 * MINUTE, Report(JobStatus.SUCCEEDED, usage={"tokens_out": 2500})),
    ]
    store.mutate_batch(ops)
    one(store, MarkMeter(cid, "j5", at + 3 * MINUTE, MeterMark(1, MeterState.PENDING, "busy")))
    one(store, MarkMeter(cid, "j5", at + 4 * MINUTE, MeterMark(2, MeterState.REPORTED)))
    later = T0 + CYCLE + MINUTE
    store.mutate_batch([settle(cid, "j6", later, RELEASED), settle(cid, "j7", later)])


def comparable(store: Store, cid: str) -> dict[str, Any]:
    """What the store holds of a client, its identity left out."""
    identity = {"client_id", "name", "email", "api_key_hash", "api_key_prefix", "api_keys"}
    stored = record(store, cid).model_dump(mode="json", exclude=identity)
    assert isinstance(store, JobStorage)
    held: dict[str, Any] = {
        "record": stored,
        "jobs": [j.model_dump(mode="json", exclude={"client_id"}) for j in store.client_jobs(cid)],
        "events": [e for e in events(store, cid) if e[0] is AuditAction.JOB_OUTCOME],
    }
    if isinstance(store, SqlStore):  # the rows themselves, archived ledger rows included
        with store._write.connect() as conn:
            for table, skip in (
                (clients, {"seq", *identity, "name_key", "email_key"}),
                (ledger_rows, {"id", "client_id"}),
                (summary_rows, {"id", "client_id"}),
                (job_rows, {"id", "client_id"}),
            ):
                query = select(table).where(table.c.client_id == cid).order_by(*table.primary_key)
                held[table.name] = [
                    {k: v for k, v in row._mapping.items() if k not in skip}
                    for row in conn.execute(query)
                ]
    return held


def test_each_backend_stores_what_the_generic_path_stores(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    metered = replace(plans.PLANS[PlanId.PRO], usage_rates={"tokens_out": 0.001})
    monkeypatch.setitem(plans.PLANS, PlanId.PRO, metered)
    own, whole = client(store, "Own"), client(store, "Whole")
    for cid in (own, whole):  # a subscribed client: an overage is reported to Stripe
        store.mutate(cid, T0, _subscribed)
    scenario(store, own)
    with generic(store):
        scenario(store, whole)
    mine, reference = comparable(store, own), comparable(store, whole)
    assert mine == reference
    assert mine["jobs"][4]["receipt"]["meter"]["state"] == "reported"
    assert_invariants(store)


def _subscribed(record: ClientRecord) -> tuple[ClientRecord, bool]:
    record.stripe_customer_id = "cus_1"
    record.stripe_subscription_id = "sub_1"
    record.metadata.subscription_status = "active"
    return record, True
