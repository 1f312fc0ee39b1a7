"""Who may use an account (``openclaw_billing/access.py``): each pure transition called directly
on a record, with no store and no HTTP. A transition that refuses raises its error and leaves
the record exactly as it was; the store primitives that run these inside their atomic step are
tested on every backend in tests/store/test_contract_access.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from openclaw_billing import access
from openclaw_billing.access import (
    KEY_TOUCH_INTERVAL,
    MAX_ALLOWLIST_ENTRIES,
    MAX_ROTATION_GRACE,
    MAX_USABLE_KEYS,
    new_key_record,
)
from openclaw_billing.errors import (
    AlreadyOnPlan,
    KeyNotFound,
    KeyRevoked,
    SubscriptionExists,
    TooManyKeys,
)
from openclaw_billing.keys import digest_key, generate_key
from openclaw_billing.models import ApiKeyRecord, ClientRecord, dump_record
from openclaw_billing.plans import PlanId, get_plan
from tests.store_helpers import CYCLE, T0, make_record

T1 = T0 + timedelta(hours=1)
UNKNOWN_KEY_ID = "key_000000000000"


def a_key(*, label: str | None = None) -> ApiKeyRecord:
    """A fresh key record, as the service makes one for an issue or a rotation."""
    return new_key_record(generate_key(), T0, label=label)


def refused(record: ClientRecord, error: type[Exception], change: Callable[[], object]) -> None:
    """``change`` raises ``error`` and leaves ``record`` exactly as it was."""
    before = record.model_copy(deep=True)
    with pytest.raises(error):
        change()
    assert record == before


def first_key_id(record: ClientRecord) -> str:
    return record.api_keys[0].key_id


def policy_of(record: ClientRecord) -> tuple[int | None, list[str], datetime]:
    return record.rate_limit_per_minute, record.ip_allowlist, record.updated_at


# -- new_client / new_key_record -------------------------------------------------------------


@pytest.mark.parametrize("plan", list(PlanId))
def test_a_new_client_starts_a_cycle_with_the_plans_allowance_and_one_key(plan: PlanId) -> None:
    key = generate_key()
    record = access.new_client(
        client_id="c1", name="Acme", email="ops@acmecorp.com", plan=plan, key=key, now=T0
    )
    allowance = get_plan(plan).jobs_per_month
    assert (record.client_id, record.name, record.email, record.plan) == (
        "c1",
        "Acme",
        "ops@acmecorp.com",
        plan,
    )
    assert (record.credits_remaining, record.metadata.cycle_allowance) == (allowance, allowance)
    assert (record.billing_cycle_start, record.billing_cycle_end) == (T0, T0 + CYCLE)
    assert (record.created_at, record.updated_at, record.total_spent) == (T0, T0, 0.0)
    assert record.active
    assert (record.metadata.cost_log, record.metadata.cycle_history) == ([], [])
    [only] = record.api_keys
    assert (only.digest, only.prefix) == (digest_key(key), key[:12])
    assert (record.api_key_hash, record.api_key_prefix) == (only.digest, only.prefix)
    assert (only.created_at, only.expires_at, only.revoked_at, only.last_used_at) == (
        T0,
        None,
        None,
        None,
    )
    assert key not in str(dump_record(record))  # the plaintext key is never part of it


def test_a_key_record_holds_the_digest_and_prefix_never_the_key() -> None:
    key = generate_key()
    record = new_key_record(key, T1, label="ci")
    assert (record.digest, record.prefix, record.label, record.created_at) == (
        digest_key(key),
        key[:12],
        "ci",
        T1,
    )
    assert key not in record.model_dump_json()
    assert len({new_key_record(key, T1).key_id for _ in range(20)}) == 20  # ids are random


# -- issue_key -------------------------------------------------------------------------------


def test_issue_adds_a_key_that_the_summary_fields_name() -> None:
    record, _ = make_record("c1")
    first = record.api_keys[0]
    new = a_key(label="ci")
    access.issue_key(record, new, T1)
    assert record.api_keys == [first, new]
    assert (record.api_key_hash, record.api_key_prefix) == (new.digest, new.prefix)
    assert record.updated_at == T1


def test_issue_refuses_a_key_past_the_usable_limit_and_counts_only_usable_keys() -> None:
    record, _ = make_record("c1")
    for _ in range(MAX_USABLE_KEYS - 1):
        access.issue_key(record, a_key(), T0)
    assert len(record.api_keys) == MAX_USABLE_KEYS
    refused(record, TooManyKeys, lambda: access.issue_key(record, a_key(), T1))
    # A revoked key and an expired one no longer count: room for two more, then full again.
    access.revoke_key(record, record.api_keys[0].key_id, T1)
    access.set_key_expiry(record, record.api_keys[1].key_id, T1 + timedelta(seconds=1), T1)
    later = T1 + timedelta(seconds=1)
    access.issue_key(record, a_key(), later)
    access.issue_key(record, a_key(), later)
    assert len(record.api_keys) == MAX_USABLE_KEYS + 2
    refused(record, TooManyKeys, lambda: access.issue_key(record, a_key(), later))


# -- rotate_key ------------------------------------------------------------------------------


def test_rotation_adds_the_new_key_and_ends_the_old_one_after_the_grace() -> None:
    record, _ = make_record("c1")
    old_id = first_key_id(record)
    new = a_key()
    access.rotate_key(record, old_id, new, timedelta(seconds=60), T1)
    old = access.find_key(record, old_id)
    assert old.expires_at == T1 + timedelta(seconds=60)
    assert old.usable(T1 + timedelta(seconds=59))
    assert not old.usable(T1 + timedelta(seconds=60))
    assert record.api_keys[-1] == new
    assert new.usable(T1 + timedelta(days=365))
    assert (record.api_key_hash, record.updated_at) == (new.digest, T1)


def test_rotation_without_grace_stops_the_old_key_at_once() -> None:
    record, _ = make_record("c1")
    old_id = first_key_id(record)
    access.rotate_key(record, old_id, a_key(), timedelta(0), T1)
    assert not access.find_key(record, old_id).usable(T1)


def test_rotation_never_extends_a_keys_life() -> None:
    record, _ = make_record("c1")
    old_id = first_key_id(record)
    soon = T1 + timedelta(seconds=10)
    access.set_key_expiry(record, old_id, soon, T1)
    access.rotate_key(record, old_id, a_key(), timedelta(days=1), T1)
    assert access.find_key(record, old_id).expires_at == soon


def test_rotating_one_of_a_full_set_of_keys_replaces_it() -> None:
    """The key being rotated does not count against the limit: a rotation is possible with
    every slot taken."""
    record, _ = make_record("c1")
    for _ in range(MAX_USABLE_KEYS - 1):
        access.issue_key(record, a_key(), T0)
    access.rotate_key(record, first_key_id(record), a_key(), timedelta(seconds=60), T1)
    assert len(record.api_keys) == MAX_USABLE_KEYS + 1
    assert sum(k.usable(T1 + timedelta(seconds=60)) for k in record.api_keys) == MAX_USABLE_KEYS


@pytest.mark.parametrize(
    "grace", [timedelta(seconds=-1), MAX_ROTATION_GRACE + timedelta(seconds=1)], ids=str
)
def test_rotation_refuses_a_grace_out_of_bounds(grace: timedelta) -> None:
    record, _ = make_record("c1")
    key_id = first_key_id(record)
    refused(record, ValueError, lambda: access.rotate_key(record, key_id, a_key(), grace, T1))


def test_rotation_refuses_an_unknown_revoked_or_expired_key() -> None:
    record, _ = make_record("c1")
    grace = timedelta(seconds=60)
    refused(
        record, KeyNotFound, lambda: access.rotate_key(record, UNKNOWN_KEY_ID, a_key(), grace, T1)
    )
    expiring = a_key()
    access.issue_key(record, expiring, T0)
    access.set_key_expiry(record, expiring.key_id, T1, T0)
    refused(
        record, KeyRevoked, lambda: access.rotate_key(record, expiring.key_id, a_key(), grace, T1)
    )
    key_id = first_key_id(record)
    access.revoke_key(record, key_id, T0)
    refused(record, KeyRevoked, lambda: access.rotate_key(record, key_id, a_key(), grace, T1))


# -- revoke_key ------------------------------------------------------------------------------


def test_revocation_is_immediate_and_idempotent() -> None:
    record, _ = make_record("c1")
    key_id = first_key_id(record)
    assert access.revoke_key(record, key_id, T1) is True
    key = access.find_key(record, key_id)
    assert (key.revoked_at, record.updated_at) == (T1, T1)
    assert not key.usable(T1)
    before = record.model_copy(deep=True)
    assert access.revoke_key(record, key_id, T1 + timedelta(hours=1)) is False
    assert record == before  # the first revocation's time stays
    refused(record, KeyNotFound, lambda: access.revoke_key(record, UNKNOWN_KEY_ID, T1))


# -- set_key_expiry --------------------------------------------------------------------------


def test_an_expiry_can_be_set_and_cleared() -> None:
    record, _ = make_record("c1")
    key_id = first_key_id(record)
    access.set_key_expiry(record, key_id, T1 + timedelta(days=1), T1)
    assert access.find_key(record, key_id).expires_at == T1 + timedelta(days=1)
    assert record.updated_at == T1
    access.set_key_expiry(record, key_id, None, T1 + timedelta(hours=1))
    assert access.find_key(record, key_id).expires_at is None
    assert record.updated_at == T1 + timedelta(hours=1)


def test_an_expiry_must_be_in_the_future_of_a_usable_key() -> None:
    record, _ = make_record("c1")
    key_id = first_key_id(record)
    refused(record, ValueError, lambda: access.set_key_expiry(record, key_id, T1, T1))
    earlier = T1 - timedelta(microseconds=1)
    refused(record, ValueError, lambda: access.set_key_expiry(record, key_id, earlier, T1))
    refused(record, KeyNotFound, lambda: access.set_key_expiry(record, UNKNOWN_KEY_ID, None, T1))
    access.revoke_key(record, key_id, T0)
    refused(record, KeyRevoked, lambda: access.set_key_expiry(record, key_id, None, T1))


# -- touch_key -------------------------------------------------------------------------------


def test_last_use_is_due_at_most_once_per_interval() -> None:
    record, _ = make_record("c1")
    key_id = first_key_id(record)
    assert access.touch_key(record, key_id, T1) is True
    assert access.find_key(record, key_id).last_used_at == T1
    assert record.updated_at == T0  # a use is not a change of the account
    before = record.model_copy(deep=True)
    assert access.touch_key(record, key_id, T1 + KEY_TOUCH_INTERVAL - timedelta(seconds=1)) is False
    assert record == before
    assert access.touch_key(record, key_id, T1 + KEY_TOUCH_INTERVAL) is True
    assert access.find_key(record, key_id).last_used_at == T1 + KEY_TOUCH_INTERVAL
    refused(record, KeyNotFound, lambda: access.touch_key(record, UNKNOWN_KEY_ID, T1))


# -- set_policy ------------------------------------------------------------------------------


def test_a_policy_is_normalised_and_a_repeat_changes_nothing() -> None:
    record, _ = make_record("c1")
    allowlist = ["10.0.0.1", " 2001:db8::/32", "192.168.0.0/16"]
    assert access.set_policy(record, T1, rate_limit_per_minute=7, ip_allowlist=allowlist)
    assert policy_of(record) == (7, ["10.0.0.1/32", "2001:db8::/32", "192.168.0.0/16"], T1)
    before = record.model_copy(deep=True)
    later = T1 + timedelta(hours=1)
    assert not access.set_policy(record, later, rate_limit_per_minute=7, ip_allowlist=allowlist)
    assert record == before
    assert access.set_policy(record, later, rate_limit_per_minute=None, ip_allowlist=[])
    assert policy_of(record) == (None, [], later)  # the plan's limit, any address


@pytest.mark.parametrize(
    "allowlist",
    [["nonsense"], ["10.0.0.1/8"], ["10.0.0.0/8"] * (MAX_ALLOWLIST_ENTRIES + 1)],
    ids=["not-an-address", "host-bits", "too-many"],
)
def test_a_bad_allowlist_is_refused(allowlist: list[str]) -> None:
    record, _ = make_record("c1")
    access.set_policy(record, T0, rate_limit_per_minute=5, ip_allowlist=["203.0.113.0/24"])
    refused(
        record,
        ValueError,
        lambda: access.set_policy(record, T1, rate_limit_per_minute=9, ip_allowlist=allowlist),
    )


# -- admin_change_plan -----------------------------------------------------------------------


def test_an_operators_plan_change_is_a_logged_adjustment_within_the_cycle() -> None:
    record, _ = make_record("c1", PlanId.STARTER)
    record.credits_remaining = 49  # one job run this cycle
    access.admin_change_plan(record, PlanId.PRO, T1)
    assert (record.plan, record.credits_remaining) == (PlanId.PRO, 49 + 200 - 50)
    assert (record.billing_cycle_start, record.billing_cycle_end) == (T0, T0 + CYCLE)
    [adjustment] = record.metadata.credit_adjustments
    assert (adjustment.timestamp, adjustment.amount, adjustment.reason) == (
        T1,
        150,
        "plan change starter -> pro",
    )
    # Back down to free: its 5, less the one job already run.
    access.admin_change_plan(record, PlanId.FREE, T1)
    assert (record.plan, record.credits_remaining) == (PlanId.FREE, 4)
    assert record.metadata.credit_adjustments[-1].amount == -195
    assert record.metadata.cycle_history == []


def test_a_downgrade_takes_away_at_most_the_credits_left() -> None:
    record, _ = make_record("c1", PlanId.PRO)
    record.credits_remaining = 2  # 198 jobs run this cycle, more than free's 5
    access.admin_change_plan(record, PlanId.FREE, T1)
    assert (record.plan, record.credits_remaining) == (PlanId.FREE, 0)
    assert [(a.amount, a.reason) for a in record.metadata.credit_adjustments] == [
        (-2, "plan change pro -> free")
    ]


def test_a_change_to_an_unlimited_plan_closes_the_cycle_under_the_old_plan() -> None:
    record, _ = make_record("c1", PlanId.STARTER)
    access.admin_change_plan(record, PlanId.ENTERPRISE, T1)
    assert (record.plan, record.credits_remaining) == (PlanId.ENTERPRISE, None)
    [summary] = record.metadata.cycle_history
    assert (summary.plan, summary.allowance, summary.credits_left) == (PlanId.STARTER, 50, 50)


def test_a_change_to_the_same_plan_is_refused() -> None:
    record, _ = make_record("c1", PlanId.STARTER)
    refused(record, AlreadyOnPlan, lambda: access.admin_change_plan(record, PlanId.STARTER, T1))


@pytest.mark.parametrize("status", ["active", "trialing", "past_due", "paused"])
def test_a_plan_managed_by_a_live_subscription_is_not_changed_by_hand(
    status: str | None,
) -> None:
    record, _ = make_record("c1", PlanId.STARTER)
    record.stripe_subscription_id = "sub_1"
    record.metadata.subscription_status = status
    refused(record, SubscriptionExists, lambda: access.admin_change_plan(record, PlanId.PRO, T1))


@pytest.mark.parametrize("status", ["canceled", "incomplete_expired"])
def test_a_plan_whose_subscription_ended_can_be_changed(status: str) -> None:
    record, _ = make_record("c1", PlanId.STARTER)
    record.stripe_subscription_id = "sub_1"
    record.metadata.subscription_status = status
    access.admin_change_plan(record, PlanId.PRO, T1)
    assert record.plan == PlanId.PRO
