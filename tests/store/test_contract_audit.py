"""The storage contract, continued: an admin action and its audit event are one atomic step,
and a read is one snapshot. On every backend (tests/backends.py).

The faults (tests/audit_faults.py) make one of the two writes of an action fail: its audit
event, or its change. Either way the action raises ``StoreUnavailable`` (503) and nothing at
all is stored; the retry, on the repaired store, does the action once and records it once.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from openclaw_billing.audit import ADMIN_ACTOR, ANONYMOUS_ACTOR, AuditAction, AuditEvent
from openclaw_billing.errors import BillingError, StoreUnavailable
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store import Store
from openclaw_billing.store.audit_json import JsonAuditLog
from openclaw_billing.store.json_file import JsonFileStore
from tests.audit_faults import audit_refused, change_refused
from tests.backends import (  # noqa: F401 - the fixtures "store" and "store_url"
    all_clients,
    assert_invariants,
    make_record,
    reopen,
    store_fixture,
    store_url_fixture,
)
from tests.store_helpers import T0, WAIT

T1 = T0 + timedelta(hours=1, microseconds=123_457)
SOURCE = "203.0.113.9"


@dataclass
class Client:
    service: BillingService
    cid: str
    key: str
    key_id: str


Action = Callable[[Client], object]

#: Every admin action, as the admin API runs it, by the audit action it records.
ACTIONS: dict[str, Action] = {
    "client.create": lambda c: c.service.create_client(
        name="Beta", email="beta@acmecorp.com", plan=PlanId.PRO, now=T1, source=SOURCE
    ),
    "client.credits": lambda c: c.service.add_credits(c.cid, 5, "goodwill", now=T1, source=SOURCE),
    "client.deactivate": lambda c: c.service.set_active(c.cid, False, now=T1, source=SOURCE),
    "client.reactivate": lambda c: c.service.set_active(c.cid, True, now=T1, source=SOURCE),
    "key.issue": lambda c: c.service.issue_key(c.cid, label="ci", now=T1, source=SOURCE),
    "key.rotate": lambda c: c.service.rotate_key(
        c.cid, c.key_id, grace=timedelta(0), now=T1, source=SOURCE
    ),
    "key.revoke": lambda c: c.service.revoke_key(c.cid, c.key_id, now=T1, source=SOURCE),
    "key.expiry": lambda c: c.service.set_key_expiry(
        c.cid, c.key_id, T1 + timedelta(days=1), now=T1, source=SOURCE
    ),
    "client.plan_change": lambda c: c.service.change_plan(c.cid, PlanId.PRO, now=T1, source=SOURCE),
    "client.policy": lambda c: c.service.set_policy(
        c.cid, rate_limit_per_minute=5, ip_allowlist=["10.0.0.1"], now=T1, source=SOURCE
    ),
}


def a_client(store: Store, action: str) -> Client:
    """A Starter client (created through the service, so its creation is recorded), ready for
    ``action``: deactivated first if the action reactivates it."""
    service = BillingService(store)
    record, key = service.create_client(
        name="Acme", email="acme@acmecorp.com", plan=PlanId.STARTER, now=T0, source=SOURCE
    )
    if action == "client.reactivate":
        service.set_active(record.client_id, False, now=T0, source=SOURCE)
    return Client(service, record.client_id, key, record.api_keys[0].key_id)


def snapshot(store: Store) -> tuple[list[ClientRecord], list[AuditEvent]]:
    return all_clients(store), list(store.audit.export())


Fault = Callable[[Store, str], AbstractContextManager[None]]


@pytest.mark.parametrize("fault", [audit_refused, change_refused], ids=["audit", "change"])
@pytest.mark.parametrize("action", list(ACTIONS))
def test_an_admin_action_is_recorded_with_its_change_or_not_done(
    store: Store, store_url: str, action: str, fault: Fault
) -> None:
    client = a_client(store, action)
    clients, events = snapshot(store)
    with fault(store, store_url), pytest.raises(StoreUnavailable):
        ACTIONS[action](client)
    # Neither the change nor the event: the answer was 503, and nothing happened.
    assert snapshot(store) == (clients, events)
    with reopen(store_url) as again:  # not even on disk
        assert snapshot(again) == (clients, events)

    ACTIONS[action](client)  # the admin's retry, on the repaired store: done once
    after, recorded = snapshot(store)
    assert after != clients
    assert recorded[: len(events)] == events
    (new,) = recorded[len(events) :]
    assert (new.action.value, new.actor, new.source) == (action, ADMIN_ACTOR, SOURCE)
    assert new.client_id in {r.client_id for r in after}
    with reopen(store_url) as again:
        assert snapshot(again) == (after, recorded)
    assert_invariants(store)


def test_credits_refused_for_the_audit_then_retried_are_added_once(
    store: Store, store_url: str
) -> None:
    client = a_client(store, "client.credits")
    with audit_refused(store, store_url):
        for _ in range(3):  # an admin retrying while the log is down
            with pytest.raises(StoreUnavailable):
                client.service.add_credits(client.cid, 25, "goodwill", now=T1, source=SOURCE)
    record = client.service.add_credits(client.cid, 25, "goodwill", now=T1, source=SOURCE)
    assert record.credits_remaining == 50 + 25
    assert [a.amount for a in record.metadata.credit_adjustments] == [25]
    events, total = store.audit.query(action=None)
    assert [e.action.value for e in events] == ["client.credits", "client.create"]
    assert total == 2


def test_a_rotation_without_grace_whose_event_fails_keeps_the_old_key(
    store: Store, store_url: str
) -> None:
    client = a_client(store, "key.rotate")
    with audit_refused(store, store_url), pytest.raises(StoreUnavailable):
        client.service.rotate_key(client.cid, client.key_id, grace=timedelta(0), now=T1)
    later = T1 + timedelta(minutes=5)
    found = client.service.authenticate(client.key, now=later)
    assert found is not None
    assert [k.key_id for k in found.api_keys] == [client.key_id]  # no key nobody was shown
    _, new, plaintext = client.service.rotate_key(
        client.cid, client.key_id, grace=timedelta(0), now=later
    )
    assert client.service.authenticate(client.key, now=later + timedelta(seconds=1)) is None
    assert client.service.authenticate(plaintext, now=later + timedelta(seconds=1)) is not None
    events, _ = store.audit.query(action=None)
    assert events[0].detail == {
        "key_id": client.key_id,
        "new_key_id": new.key_id,
        "grace_seconds": 0,
    }


def test_an_action_that_changes_nothing_is_recorded_like_any_other(store: Store) -> None:
    """Revoking a revoked key, deactivating an inactive client or setting the same policy
    again answers as the first time did (it is idempotent), so it is recorded the same way:
    once per request."""
    client = a_client(store, "key.revoke")
    service, cid = client.service, client.cid
    for _ in range(2):
        service.revoke_key(cid, client.key_id, now=T1, source=SOURCE)
        service.set_active(cid, False, now=T1, source=SOURCE)
        service.set_policy(cid, rate_limit_per_minute=None, ip_allowlist=[], now=T1)
    events, total = store.audit.query(client_id=cid)
    assert [e.action.value for e in reversed(events)] == [
        "client.create",
        *["key.revoke", "client.deactivate", "client.policy"] * 2,
    ]
    assert total == 7
    assert [e.id for e in events] == sorted({e.id for e in events}, reverse=True)


def test_a_refused_action_records_nothing(store: Store) -> None:
    client = a_client(store, "key.rotate")
    client.service.revoke_key(client.cid, client.key_id, now=T1)
    _, before = snapshot(store)
    refusals: list[Action] = [
        ACTIONS["key.rotate"],  # a revoked key
        ACTIONS["key.expiry"],
        lambda c: c.service.add_credits(c.cid, -1000, "too much", now=T1),
        lambda c: c.service.change_plan(c.cid, PlanId.STARTER, now=T1),
        lambda c: c.service.add_credits("nobody", 1, "x", now=T1),
    ]
    for refused in refusals:
        with pytest.raises(BillingError) as caught:
            refused(client)
        assert caught.value.status_code in {404, 409}, caught.value
    assert snapshot(store)[1] == before


# -- the JSON store's outbox (SQL commits the event in the change's transaction) ------------


def test_json_an_event_whose_append_fails_after_the_commit_is_appended_once_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change and its event are committed in one write of the store file; the append to
    the log that follows fails (a full disk, say). The action is done and answered, and the
    event reaches the log once: at the next append (another worker's), or read, or start."""
    store_url = str(tmp_path / "clients.json")
    store = JsonFileStore(store_url)
    client = a_client(store, "client.credits")
    write = JsonAuditLog._write

    def disk_full(self: JsonAuditLog, tail: Any, events: Any) -> None:
        if events:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(JsonAuditLog, "_write", disk_full)
    record = client.service.add_credits(client.cid, 5, "goodwill", now=T1, source=SOURCE)
    assert record.credits_remaining == 55
    monkeypatch.setattr(JsonAuditLog, "_write", write)
    log = store.audit.path.read_bytes()
    assert b"client.credits" not in log  # only in the store's outbox so far

    with reopen(store_url) as other:  # another worker records a failed login meanwhile
        failed = BillingService(other).record_audit(
            AuditAction.AUTH_KEY_FAILED, actor=ANONYMOUS_ACTOR, source=SOURCE, now=T1
        )
    assert failed is not None
    events = list(store.audit.export())
    assert [(e.id, e.action.value) for e in events] == [
        (1, "client.create"),
        (2, "client.credits"),
        (3, "auth.key_failed"),
    ]
    for _ in range(2):  # reopening, reading again: nothing is appended twice
        with reopen(store_url) as again:
            assert list(again.audit.export()) == events
    assert store.audit.path.read_bytes().count(b"client.credits") == 1


def test_json_a_charge_never_touches_the_audit_log(tmp_path: Path) -> None:
    """The charge path carries no event: it neither takes the log's lock nor writes it."""
    store_url = str(tmp_path / "clients.json")
    store = JsonFileStore(store_url)
    client = a_client(store, "client.credits")
    log = store.audit.path
    before = log.read_bytes(), log.stat().st_mtime_ns
    with audit_refused(store, store_url):  # the log cannot even be opened
        for n in range(3):
            store.charge(client.cid, f"job-{n}", 0.5, T1)
    assert (log.read_bytes(), log.stat().st_mtime_ns) == before
    assert store.get_client(client.cid).credits_remaining == 47  # type: ignore[union-attr]


# -- reads are one snapshot ------------------------------------------------------------------


def _agrees(record: ClientRecord) -> bool:
    """The balance a record shows is the one its own ledger gives."""
    allowance = record.metadata.cycle_allowance
    assert allowance is not None
    assert record.credits_remaining is not None
    adjusted = sum(a.amount for a in record.metadata.credit_adjustments)
    return record.credits_remaining == allowance + adjusted - len(record.metadata.cost_log)


def test_every_read_under_concurrent_charges_is_one_snapshot(store: Store) -> None:
    """R28: charges commit while clients are read by id, by key digest, in a page and through
    the cycle refresh (what GET /api/admin/clients/{id} and /api/billing/usage use): every
    record read shows a balance that agrees with its own ledger and adjustments."""
    record, _ = make_record("c1", allowance=10_000)
    store.create_client(record)
    store.add_credits("c1", 50, "goodwill", T1)
    digest = record.api_key_hash
    chargers, jobs, readers = 4, 60, 3
    barrier = threading.Barrier(chargers + readers)
    done = threading.Event()
    reads: list[tuple[str, ClientRecord]] = []
    errors: list[BaseException] = []

    def read_once(n: int) -> tuple[str, ClientRecord | None]:
        kind = n % 4
        if kind == 0:
            return "get_client", store.get_client("c1")
        if kind == 1:
            return "get_client_by_key_digest", store.get_client_by_key_digest(digest)
        if kind == 2:
            return "list_clients", store.list_clients()[0][0]
        return "refresh_cycle", store.refresh_cycle("c1", T1)

    def charge(index: int) -> None:
        try:
            barrier.wait(WAIT)
            for j in range(jobs):
                store.charge("c1", f"job-{index}-{j}", 0.5, T1)
        except BaseException as exc:
            errors.append(exc)

    def read(index: int) -> None:
        try:
            barrier.wait(WAIT)
            n = index
            while not done.is_set():
                kind, found = read_once(n)
                assert found is not None
                reads.append((kind, found))
                n += 1
        except BaseException as exc:
            errors.append(exc)

    charging = [threading.Thread(target=charge, args=(i,)) for i in range(chargers)]
    reading = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    for thread in [*charging, *reading]:
        thread.start()
    for thread in charging:
        thread.join(WAIT)
    done.set()
    for thread in reading:
        thread.join(WAIT)
    assert not errors, errors[0]
    assert reads
    disagreeing = Counter(kind for kind, found in reads if not _agrees(found))
    assert not disagreeing, f"of {len(reads)} reads, disagreeing with the ledger: {disagreeing}"
    final = store.get_client("c1")
    assert final is not None
    assert final.credits_remaining == 10_000 + 50 - chargers * jobs
    assert_invariants(store)
