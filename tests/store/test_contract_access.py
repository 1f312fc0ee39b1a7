"""The storage contract, continued: who may use an account. The store primitives that run
``openclaw_billing/access.py``'s transitions (several keys per client, rotation, revocation,
expiry, last use, the per-client policy, an operator's plan change) and the authentication
read, on every backend (tests/backends.py). The transitions themselves, on a bare record:
tests/test_access.py; the admin routes over HTTP: tests/test_key_lifecycle.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from openclaw_billing.access import KEY_TOUCH_INTERVAL, MAX_USABLE_KEYS, new_key_record
from openclaw_billing.errors import (
    AlreadyOnPlan,
    DuplicateClient,
    KeyNotFound,
    KeyRevoked,
    SubscriptionExists,
    TooManyKeys,
)
from openclaw_billing.keys import digest_key, generate_key
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.store import Store
from openclaw_billing.store.base import StripeRef
from openclaw_billing.store.sql import SqlStore
from tests.backends import (  # noqa: F401 - the fixtures "store" and "store_url"
    SQL_BACKENDS,
    add_client,
    assert_invariants,
    reopen,
    store_fixture,
    store_url_fixture,
)
from tests.store_helpers import T0

# -- keys, policy and plan ------------------------------------------------------------------


def _owner(store: Store, key: str) -> str | None:
    record = store.get_client_by_key_digest(digest_key(key))
    return None if record is None else record.client_id


def test_a_new_client_has_one_key_named_by_the_record(store: Store) -> None:
    record, key = add_client(store)
    stored = store.get_client(record.client_id)
    assert stored is not None
    [only] = stored.api_keys
    assert only.digest == digest_key(key) == stored.api_key_hash
    assert only.prefix == stored.api_key_prefix == key[:12]
    assert only.revoked_at is None
    assert only.expires_at is None
    assert only.last_used_at is None


def test_issued_keys_all_find_the_client_and_survive_a_restart(
    store: Store, store_url: str
) -> None:
    record, first = add_client(store)
    other, other_key = add_client(store, name="Other")
    second = generate_key()
    updated = store.issue_key(record.client_id, new_key_record(second, T0, label="ci"), T0)
    assert [k.label for k in updated.api_keys] == [None, "ci"]
    assert updated.api_key_hash == digest_key(second)  # the summary's field names the newest
    with reopen(store_url) as again:
        assert _owner(again, first) == record.client_id
        assert _owner(again, second) == record.client_id
        assert _owner(again, other_key) == other.client_id
        reloaded = again.get_client(record.client_id)
        assert reloaded is not None
        assert reloaded.api_keys == updated.api_keys


def test_rotation_sets_the_old_keys_grace_end(store: Store) -> None:
    record, _old = add_client(store)
    old_id = record.api_keys[0].key_id
    new = new_key_record(generate_key(), T0)
    after = store.rotate_key(record.client_id, old_id, new, timedelta(seconds=60), T0)
    by_id = {k.key_id: k for k in after.api_keys}
    assert by_id[old_id].expires_at == T0 + timedelta(seconds=60)
    assert by_id[new.key_id].expires_at is None
    assert by_id[old_id].usable(T0 + timedelta(seconds=59))
    assert not by_id[old_id].usable(T0 + timedelta(seconds=60))
    # An earlier expiry is kept; a rotation never extends a key's life.
    newer = new_key_record(generate_key(), T0)
    store.set_key_expiry(record.client_id, new.key_id, T0 + timedelta(seconds=10), T0)
    again = store.rotate_key(record.client_id, new.key_id, newer, timedelta(days=1), T0)
    assert {k.key_id: k for k in again.api_keys}[new.key_id].expires_at == T0 + timedelta(
        seconds=10
    )


def test_revoke_is_immediate_and_idempotent(store: Store) -> None:
    record, _ = add_client(store)
    key_id = record.api_keys[0].key_id
    revoked = store.revoke_key(record.client_id, key_id, T0)
    assert revoked.api_keys[0].revoked_at == T0
    later = T0 + timedelta(hours=1)
    assert store.revoke_key(record.client_id, key_id, later).api_keys[0].revoked_at == T0
    assert not revoked.api_keys[0].usable(T0)


def test_refusals_change_nothing(store: Store) -> None:
    record, _ = add_client(store)
    cid, key_id = record.client_id, record.api_keys[0].key_id
    with pytest.raises(KeyNotFound):
        store.revoke_key(cid, "key_000000000000", T0)
    with pytest.raises(KeyNotFound):
        store.touch_key(cid, "key_000000000000", T0)
    for _ in range(MAX_USABLE_KEYS - 1):
        store.issue_key(cid, new_key_record(generate_key(), T0), T0)
    before = store.get_client(cid)
    with pytest.raises(TooManyKeys):
        store.issue_key(cid, new_key_record(generate_key(), T0), T0)
    store.revoke_key(cid, key_id, T0)
    with pytest.raises(KeyRevoked):
        store.rotate_key(cid, key_id, new_key_record(generate_key(), T0), timedelta(0), T0)
    with pytest.raises(KeyRevoked):
        store.set_key_expiry(cid, key_id, None, T0)
    after = store.get_client(cid)
    assert before is not None
    assert after is not None
    assert [k.key_id for k in after.api_keys] == [k.key_id for k in before.api_keys]
    # With one key revoked there is room for exactly one more.
    store.issue_key(cid, new_key_record(generate_key(), T0), T0)


def test_a_key_digest_is_never_shared_between_clients(store: Store) -> None:
    a, key_a = add_client(store)
    b, _ = add_client(store, name="Other")
    stolen = new_key_record(key_a, T0)
    with pytest.raises(DuplicateClient):
        store.issue_key(b.client_id, stolen, T0)
    assert _owner(store, key_a) == a.client_id
    stored_b = store.get_client(b.client_id)
    assert stored_b is not None
    assert len(stored_b.api_keys) == 1


def test_last_use_is_written_at_most_once_a_minute(store: Store) -> None:
    record, _ = add_client(store)
    cid, key_id = record.client_id, record.api_keys[0].key_id

    def last_used() -> datetime | None:
        stored = store.get_client(cid)
        assert stored is not None
        return stored.api_keys[0].last_used_at

    store.touch_key(cid, key_id, T0)
    assert last_used() == T0
    store.touch_key(cid, key_id, T0 + KEY_TOUCH_INTERVAL - timedelta(seconds=1))
    assert last_used() == T0
    store.touch_key(cid, key_id, T0 + KEY_TOUCH_INTERVAL)
    assert last_used() == T0 + KEY_TOUCH_INTERVAL


def test_policy_is_normalised_and_stored(store: Store, store_url: str) -> None:
    record, _ = add_client(store)
    store.set_policy(
        record.client_id,
        T0,
        rate_limit_per_minute=7,
        ip_allowlist=["10.0.0.1", "2001:db8::/32", "192.168.0.0/16"],
    )
    with reopen(store_url) as again:
        stored = again.get_client(record.client_id)
    assert stored is not None
    assert stored.rate_limit_per_minute == 7
    assert stored.ip_allowlist == ["10.0.0.1/32", "2001:db8::/32", "192.168.0.0/16"]
    with pytest.raises(ValueError, match="ip_allowlist"):
        store.set_policy(record.client_id, T0, rate_limit_per_minute=None, ip_allowlist=["x"])


def test_an_operators_plan_change_prorates_within_the_cycle(store: Store) -> None:
    record, _ = add_client(store, PlanId.STARTER)
    store.charge(record.client_id, "job-1", 0.0, T0)
    now = T0 + timedelta(days=3)
    left_pro, pro = store.change_plan(record.client_id, PlanId.PRO, now)
    assert (left_pro, pro.plan) == (PlanId.STARTER, PlanId.PRO)
    assert pro.credits_remaining == 49 + (200 - 50)
    assert pro.metadata.credit_adjustments[-1].reason == "plan change starter -> pro"
    assert pro.billing_cycle_start == record.billing_cycle_start  # same cycle
    with pytest.raises(AlreadyOnPlan):
        store.change_plan(record.client_id, PlanId.PRO, now)
    left_back, back = store.change_plan(record.client_id, PlanId.FREE, now)
    assert left_back == PlanId.PRO
    assert back.credits_remaining == 4  # free's 5, less the one job already run
    store.charge(record.client_id, "job-2", 0.0, now)
    store.charge(record.client_id, "job-3", 0.0, now)
    left_starter, starter = store.change_plan(record.client_id, PlanId.STARTER, now)
    assert left_starter == PlanId.FREE
    assert starter.credits_remaining == 2 + 45
    left_unlimited, unlimited = store.change_plan(record.client_id, PlanId.ENTERPRISE, now)
    assert left_unlimited == PlanId.STARTER
    assert unlimited.credits_remaining is None
    assert_invariants(store)


def test_a_plan_managed_by_stripe_is_not_changed_by_hand(store: Store) -> None:
    record, _ = add_client(store, PlanId.STARTER)

    def subscribe(r: ClientRecord) -> None:
        r.stripe_subscription_id = "sub_123"
        r.metadata.subscription_status = "active"

    store.apply_stripe_event("evt_1", StripeRef(record.client_id, None, None), 1, subscribe, T0)
    with pytest.raises(SubscriptionExists):
        store.change_plan(record.client_id, PlanId.PRO, T0)


# -- authentication without the ledger ------------------------------------------------------


def test_authentication_reads_the_account_not_the_ledger(store: Store) -> None:
    record, key = add_client(store)
    store.issue_key(record.client_id, new_key_record(generate_key(), T0), T0)
    for n in range(30):
        store.charge(record.client_id, f"job-{n}", 0.25, T0)
    store.add_credits(record.client_id, 5, "courtesy", T0)
    full = store.get_client_by_key_digest(digest_key(key))
    light = store.get_client_by_key_digest(digest_key(key), ledger=False)
    assert full is not None
    assert light is not None
    assert len(full.metadata.cost_log) == 30
    expected = full.model_copy(deep=True)
    if light.metadata.cost_log == []:  # SQL leaves the ledger parts out; JSON has them anyway
        expected.metadata.cost_log = []
        expected.metadata.credit_adjustments = []
        expected.metadata.cycle_history = []
    assert light == expected
    assert store.get_client_by_key_digest(digest_key(generate_key()), ledger=False) is None


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_authentication_is_one_query_whatever_the_usage(store: Store) -> None:
    assert isinstance(store, SqlStore)
    record, key = add_client(store, PlanId.ENTERPRISE)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    for jobs in (0, 500):
        for n in range(jobs):
            store.charge(record.client_id, f"job-{jobs}-{n}", 0.0, T0)
        statements.clear()
        event.listen(store._read, "before_cursor_execute", count)
        try:
            found = store.get_client_by_key_digest(digest_key(key), ledger=False)
        finally:
            event.remove(store._read, "before_cursor_execute", count)
        assert found is not None
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 1, statements
