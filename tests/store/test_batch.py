"""``Store.mutate_batch`` on every backend: several clients' changes in one atomic step (one
transaction, one file write), each with its own outcome (docs/ARCHITECTURE.md, "Store
primitives")."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from openclaw_billing import access
from openclaw_billing.audit import ADMIN_ACTOR, AuditAction, DetailValue, NewAuditEvent
from openclaw_billing.errors import (
    ClientNotFound,
    DuplicateClient,
    InsufficientCredits,
    KeyNotFound,
    StoreUnavailable,
    UnstorableChange,
)
from openclaw_billing.keys import generate_key
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.store import (
    JsonFileStore,
    Store,
    changes,
    json_format,
    json_replica,
    sql_charge,
)
from openclaw_billing.store.base import Charge, Mutation, Outcome
from openclaw_billing.store.json_replica import Replica
from openclaw_billing.store.sql import SqlStore
from tests.backends import (  # noqa: F401 - the fixtures "store" and "store_url"
    ROW_LOCK_BACKENDS,
    SQL_BACKENDS,
    add_client,
    assert_invariants,
    reopen,
    store_fixture,
    store_url_fixture,
)
from tests.store_helpers import CYCLE, T0, WAIT

T1 = T0 + timedelta(hours=2, microseconds=7)


def credits(amount: int, reason: str = "batch") -> changes.Change[ClientRecord]:
    return changes.add_credits(amount, reason, T1)


def credits_event(client_id: str) -> Any:
    """The audit of an add_credits change: one event naming the client and its new balance."""

    def audit(result: ClientRecord) -> NewAuditEvent:
        detail: dict[str, DetailValue] = {"credits_remaining": result.credits_remaining}
        return NewAuditEvent(
            at=T1,
            action=AuditAction.CLIENT_CREDITS,
            client_id=client_id,
            actor=ADMIN_ACTOR,
            source="127.0.0.1",
            detail=detail,
        )

    return audit


def balance(store: Store, client_id: str) -> int | None:
    record = store.get_client(client_id)
    assert record is not None
    return record.credits_remaining


def limited(store: Store, name: str) -> tuple[ClientRecord, int]:
    """A new client on a limited plan, and its credits."""
    record, _ = add_client(store, PlanId.STARTER, name=name)
    assert record.credits_remaining is not None
    return record, record.credits_remaining


def two_limited(store: Store) -> tuple[ClientRecord, int, ClientRecord, int]:
    """Clients A and B on a limited plan, each with its credits."""
    return *limited(store, "A"), *limited(store, "B")


def events_of(store: Store) -> list[tuple[str | None, Any]]:
    page, _ = store.audit.query(action=AuditAction.CLIENT_CREDITS, limit=100)
    return [(e.client_id, e.detail.get("credits_remaining")) for e in reversed(page)]


@contextmanager
def writes_counted(store: Store) -> Iterator[list[int]]:
    """How many times the store makes a change durable: JSON journal appends (each one write
    and one fsync), SQL commits."""
    count = [0]
    if isinstance(store, JsonFileStore):
        write = Replica._write

        def counting(replica: Replica, data: bytes) -> None:
            count[0] += 1
            write(replica, data)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Replica, "_write", counting)
            yield count
    else:
        assert isinstance(store, SqlStore)
        engine = store._write

        def on_commit(_conn: Any) -> None:
            count[0] += 1

        event.listen(engine, "commit", on_commit)
        try:
            yield count
        finally:
            event.remove(engine, "commit", on_commit)


def test_a_batch_of_several_clients_is_one_write_and_each_keeps_its_result(
    store: Store, store_url: str
) -> None:
    a, a0, b, b0 = two_limited(store)
    c, c0 = limited(store, "C")
    batch = [
        Mutation(a.client_id, T1, credits(5), credits_event(a.client_id)),
        Mutation(b.client_id, T1, credits(-1000), credits_event(b.client_id)),  # past zero
        Mutation("no-such-client", T1, credits(1)),
        Mutation(c.client_id, T1, credits(7), credits_event(c.client_id)),
        Mutation(a.client_id, T1, credits(2), credits_event(a.client_id)),  # sees the first
    ]
    with writes_counted(store) as writes:
        outcomes = store.mutate_batch(batch)
    assert writes == [1]

    assert [type(o.error) if o.error else None for o in outcomes] == [
        None,
        InsufficientCredits,
        ClientNotFound,
        None,
        None,
    ]
    assert outcomes[0].unwrap().credits_remaining == a0 + 5
    assert outcomes[4].unwrap().credits_remaining == a0 + 7
    assert outcomes[3].unwrap().credits_remaining == c0 + 7
    with pytest.raises(InsufficientCredits):
        outcomes[1].unwrap()

    with reopen(store_url) as again:  # durable, as a restart sees it
        assert balance(again, a.client_id) == a0 + 7
        assert balance(again, b.client_id) == b0  # the refusal changed nothing
        assert balance(again, c.client_id) == c0 + 7
        # One event per mutation done, in the batch's order; none for the refusals.
        assert events_of(again) == [
            (a.client_id, a0 + 5),
            (c.client_id, c0 + 7),
            (a.client_id, a0 + 7),
        ]
        assert_invariants(again)


def test_mutate_is_a_batch_of_one(store: Store) -> None:
    a, a0 = limited(store, "A")
    with writes_counted(store) as writes:
        record = store.mutate(a.client_id, T1, credits(3), audit=credits_event(a.client_id))
    assert writes == [1]
    assert record.credits_remaining == a0 + 3
    with pytest.raises(ClientNotFound):
        store.mutate("no-such-client", T1, credits(3))
    with pytest.raises(InsufficientCredits):
        store.mutate(a.client_id, T1, credits(-10_000))
    assert balance(store, a.client_id) == a0 + 3


def test_a_batch_of_refusals_only_stores_nothing(store: Store) -> None:
    a, _a0 = limited(store, "A")
    before = store.get_client(a.client_id)
    with writes_counted(store) as writes:
        outcomes = store.mutate_batch(
            [Mutation(a.client_id, T1, credits(-10_000)), Mutation("nobody", T1, credits(1))]
        )
    assert [type(o.error) for o in outcomes] == [InsufficientCredits, ClientNotFound]
    assert store.get_client(a.client_id) == before
    assert events_of(store) == []
    if isinstance(store, JsonFileStore):  # SQL commits the transaction that held the locks
        assert writes == [0]


def test_a_key_another_client_of_the_batch_took_refuses_only_that_mutation(
    store: Store, store_url: str
) -> None:
    a, _a0 = limited(store, "A")
    b, b0 = limited(store, "B")
    shared = generate_key()
    batch = [
        Mutation(a.client_id, T1, changes.issue_key(access.new_key_record(shared, T1), T1)),
        Mutation(b.client_id, T1, credits(4)),
        Mutation(b.client_id, T1, changes.issue_key(access.new_key_record(shared, T1), T1)),
        Mutation(b.client_id, T1, credits(1)),  # from B as last kept: +4, not the refused key
    ]
    outcomes = store.mutate_batch(batch)
    assert [type(o.error) if o.error else None for o in outcomes] == [
        None,
        None,
        DuplicateClient,
        None,
    ]
    with reopen(store_url) as again:
        stored_a, stored_b = again.get_client(a.client_id), again.get_client(b.client_id)
        assert stored_a is not None
        assert stored_b is not None
        assert len(stored_a.api_keys) == len(a.api_keys) + 1
        assert len(stored_b.api_keys) == len(b.api_keys)
        assert stored_b.credits_remaining == b0 + 5
        assert_invariants(again)


def test_an_error_that_is_no_refusal_stores_none_of_the_batch(store: Store) -> None:
    a, a0 = limited(store, "A")
    b, _b0 = limited(store, "B")

    def broken(record: ClientRecord) -> tuple[None, bool]:
        raise RuntimeError("a bug in a change")

    with pytest.raises(RuntimeError):
        store.mutate_batch(
            [
                Mutation(a.client_id, T1, credits(5), credits_event(a.client_id)),
                Mutation(b.client_id, T1, broken),
            ]
        )
    assert balance(store, a.client_id) == a0
    assert store.audit.query(action=AuditAction.CLIENT_CREDITS) == ([], 0)


def test_a_due_cycle_is_rolled_once_per_client_in_a_batch(store: Store) -> None:
    a, _a0 = limited(store, "A")
    later = T0 + CYCLE + timedelta(minutes=1)
    outcomes = store.mutate_batch(
        [
            Mutation(a.client_id, later, changes.add_credits(-1, "one", later)),
            Mutation(a.client_id, later, changes.read),
        ]
    )
    first, second = (o.unwrap() for o in outcomes)
    assert len(first.metadata.cycle_history) == len(second.metadata.cycle_history) == 1
    assert second.credits_remaining == first.credits_remaining
    stored = store.get_client(a.client_id)
    assert stored is not None
    assert stored.credits_remaining == first.credits_remaining


def test_batches_in_opposite_orders_never_wait_for_each_other(store: Store) -> None:
    """Each batch locks its clients in one fixed order, so two batches that name the same
    clients in opposite orders cannot deadlock (PostgreSQL row locks)."""
    a, a0, b, b0 = two_limited(store)
    rounds = 20
    barrier = threading.Barrier(2, timeout=WAIT)
    failures: list[BaseException] = []

    def run(first: str, second: str) -> None:
        try:
            for _ in range(rounds):
                barrier.wait()
                outcomes = store.mutate_batch(
                    [Mutation(first, T1, credits(1)), Mutation(second, T1, credits(1))]
                )
                for outcome in outcomes:
                    outcome.unwrap()
        except BaseException as exc:  # reported below
            failures.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=run, args=(a.client_id, b.client_id)),
        threading.Thread(target=run, args=(b.client_id, a.client_id)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 4)
    assert failures == []
    assert balance(store, a.client_id) == a0 + 2 * rounds
    assert balance(store, b.client_id) == b0 + 2 * rounds


# -- JSON only: what the file write adds ------------------------------------------------------


def test_json_a_record_that_would_not_load_refuses_only_its_mutation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonFileStore(tmp_path / "clients.json")
    a, a0, b, b0 = two_limited(store)
    # Whatever the loader refuses (here a check made to refuse one name) is refused first.
    refuse = json_format.record_problem

    def problem(record: ClientRecord) -> str | None:
        return "holds a poisoned name" if record.name == "poison" else refuse(record)

    def poison(record: ClientRecord) -> tuple[None, bool]:
        record.name = "poison"
        record.credits_remaining = 0
        return None, True

    monkeypatch.setattr(json_format, "record_problem", problem)
    outcomes = store.mutate_batch(
        [
            Mutation(a.client_id, T1, credits(1)),
            Mutation(b.client_id, T1, poison),
            Mutation(b.client_id, T1, credits(2)),  # from B as the file has it
        ]
    )
    assert [type(o.error) if o.error else None for o in outcomes] == [None, UnstorableChange, None]
    again = JsonFileStore(tmp_path / "clients.json")
    assert balance(again, a.client_id) == a0 + 1
    assert balance(again, b.client_id) == b0 + 2
    stored_b = again.get_client(b.client_id)
    assert stored_b is not None
    assert stored_b.name == "B"


def test_json_a_batch_that_cannot_be_written_stores_none_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonFileStore(tmp_path / "clients.json")
    a, a0, b, b0 = two_limited(store)

    def full_disk(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json_replica, "append", full_disk)
    with pytest.raises(StoreUnavailable):
        store.mutate_batch(
            [Mutation(a.client_id, T1, credits(1)), Mutation(b.client_id, T1, credits(1))]
        )
    monkeypatch.undo()
    again = JsonFileStore(tmp_path / "clients.json")
    assert balance(again, a.client_id) == a0
    assert balance(again, b.client_id) == b0


def test_json_charges_that_cannot_be_written_leave_this_process_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A charge works on a copy of the record that shares its ledger's entries with the stored
    one (it copies no history): the stored record must not see a charge that was not written,
    neither its counters nor its ledger, and the next charge starts from it."""
    store = JsonFileStore(tmp_path / "clients.json")
    a, a0 = limited(store, "A")
    store.charge(a.client_id, "first", 1.0, T1)
    before = store.get_client(a.client_id)

    def full_disk(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json_replica, "append", full_disk)
    with pytest.raises(StoreUnavailable):
        store.mutate_batch(
            [Charge(a.client_id, "second", 1.0, T1), Charge(a.client_id, "third", 1.0, T1)]
        )
    monkeypatch.undo()
    assert store.get_client(a.client_id) == before
    store.charge(a.client_id, "fourth", 1.0, T1)
    after = store.get_client(a.client_id)
    assert after is not None
    assert [e.job_id for e in after.metadata.cost_log] == ["first", "fourth"]
    assert after.credits_remaining == a0 - 2
    assert JsonFileStore(tmp_path / "clients.json").get_client(a.client_id) == after


def test_outcome_unwrap() -> None:
    assert Outcome(3).unwrap() == 3
    with pytest.raises(ClientNotFound):
        Outcome[int](error=ClientNotFound()).unwrap()


def test_a_refused_change_leaves_nothing_even_if_it_had_begun(store: Store) -> None:
    """Changes should validate before they mutate; one that does not still leaves nothing:
    the next mutation of the client starts from what was last kept."""
    a, a0 = limited(store, "A")

    def half_done(record: ClientRecord) -> tuple[None, bool]:
        record.credits_remaining = 0
        raise InsufficientCredits()

    outcomes = store.mutate_batch(
        [Mutation(a.client_id, T1, half_done), Mutation(a.client_id, T1, credits(1))]
    )
    assert [type(o.error) if o.error else None for o in outcomes] == [InsufficientCredits, None]
    assert balance(store, a.client_id) == a0 + 1


def test_an_audit_that_fails_stores_none_of_the_batch(store: Store) -> None:
    a, a0, b, b0 = two_limited(store)

    def broken_audit(result: ClientRecord) -> NewAuditEvent:
        raise KeyNotFound()  # a bug: an audit never refuses

    with pytest.raises(KeyNotFound):
        store.mutate_batch(
            [
                Mutation(a.client_id, T1, credits(5), credits_event(a.client_id)),
                Mutation(b.client_id, T1, credits(5), broken_audit),
            ]
        )
    assert (balance(store, a.client_id), balance(store, b.client_id)) == (a0, b0)
    assert events_of(store) == []


def test_a_refused_write_after_a_partial_one_leaves_nothing(store: Store, store_url: str) -> None:
    """B takes A's older key: on SQL B's row update succeeds before the key insert fails, so
    only the mutation's savepoint keeps the row and the event from being stored."""
    a, _, b, _ = two_limited(store)
    store.issue_key(a.client_id, access.new_key_record(generate_key(), T1), T1)  # a newer key
    stolen = access.new_key_record(generate_key(), T1).model_copy(update={"digest": a.api_key_hash})
    b_before = store.get_client(b.client_id)
    later = T1 + timedelta(seconds=1)
    [outcome] = store.mutate_batch(
        [Mutation(b.client_id, later, changes.issue_key(stolen, later), credits_event(b.client_id))]
    )
    assert isinstance(outcome.error, DuplicateClient)
    with reopen(store_url) as again:
        assert again.get_client(b.client_id) == b_before
        assert events_of(again) == []


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_sql_locks_a_batchs_rows_in_id_order(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same order in every process (a set's order depends on each process's hash seed),
    so two batches over the same clients can never wait for each other."""
    ids = [limited(store, name)[0].client_id for name in "ABCDE"]
    locked: list[str] = []
    lock_row = sql_charge.lock_row

    def recording(conn: Any, client_id: str) -> Any:
        locked.append(client_id)
        return lock_row(conn, client_id)

    monkeypatch.setattr(sql_charge, "lock_row", recording)
    store.mutate_batch([Mutation(cid, T1, credits(1)) for cid in reversed(ids)] * 2)
    assert locked == sorted(ids)


@pytest.mark.parametrize("store_url", ROW_LOCK_BACKENDS, indirect=True)
def test_a_key_change_keeps_a_use_recorded_meanwhile(store: Store) -> None:
    """touch_key writes a key's last use without the client's lock; a change of the key
    committed after it writes only what it changed, so the use stays recorded."""
    a, _ = limited(store, "A")
    key_id = a.api_keys[0].key_id
    expiry = T1 + timedelta(days=30)

    def expire_after_a_use(record: ClientRecord) -> tuple[ClientRecord, bool]:
        store.touch_key(a.client_id, key_id, T1)  # another request's use, committed meanwhile
        return changes.set_key_expiry(key_id, expiry, T1)(record)

    store.mutate(a.client_id, T1, expire_after_a_use)
    [key] = (k for k in store.get_client(a.client_id).api_keys if k.key_id == key_id)  # type: ignore[union-attr]
    assert (key.expires_at, key.last_used_at) == (expiry, T1)
