"""The storage contract: every Store primitive, per its docstring (openclaw_billing/store/base.py)
and the rules it applies (openclaw_billing/ledger.py), on every backend (tests/backends.py).

Time is always explicit, with microseconds, so a backend that loses precision or the time zone
fails. Each scenario ends with the docs/ARCHITECTURE.md invariants checked on every client. Where
backends legitimately differ, the test says so and asserts what they all guarantee.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from openclaw_billing import ledger
from openclaw_billing.errors import (
    BillingError,
    ClientInactive,
    ClientNotFound,
    CreditLimitReached,
    DuplicateClient,
    InsufficientCredits,
    PaymentPastDue,
    UnlimitedPlan,
)
from openclaw_billing.keys import digest_key
from openclaw_billing.models import (
    ChargeResult,
    ClientMetadata,
    ClientRecord,
    CostEntry,
    CreditAdjustment,
    CycleSummary,
)
from openclaw_billing.plans import PlanId
from openclaw_billing.store import ClientQuery, Store, open_store
from openclaw_billing.store.base import EVENT_ID_RETENTION, EventOutcome, StripeRef
from openclaw_billing.store.capabilities import EventIdTransfer
from tests.backends import (  # noqa: F401 - the fixtures "store" and "store_url"
    add_client,
    all_clients,
    assert_invariants,
    make_record,
    reopen,
    store_fixture,
    store_url_fixture,
)
from tests.store_helpers import CYCLE, T0, WAIT, Outcome, charge_in_threads, ledger_ids

US = timedelta(microseconds=1)
SECOND = timedelta(seconds=1)
#: An instant inside the first cycle, with microseconds that must survive a round trip.
T1 = T0 + timedelta(hours=1, microseconds=123_457)
#: The end of the first cycle of a client created at T0.
END = T0 + CYCLE
RESET_LOG = "Reset monthly credits for"

Change = Callable[[ClientRecord], None]


def stored(store: Store, client_id: str) -> ClientRecord:
    record = store.get_client(client_id)
    assert record is not None, client_id
    return record


def resets_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum(RESET_LOG in r.getMessage() for r in caplog.records)


def link(customer: str | None = None, subscription: str | None = None) -> Change:
    """A Stripe change that links the client to a customer and/or subscription."""

    def change(record: ClientRecord) -> None:
        if customer is not None:
            record.stripe_customer_id = customer
        if subscription is not None:
            record.stripe_subscription_id = subscription

    return change


def set_status(status: str, calls: list[str] | None = None) -> Change:
    """A Stripe change that sets the subscription status (and notes that it ran)."""

    def change(record: ClientRecord) -> None:
        if calls is not None:
            calls.append(status)
        record.metadata.subscription_status = status

    return change


def linked_record(
    client_id: str,
    *,
    customer: str | None = None,
    subscription: str | None = None,
    now: datetime = T0,
) -> ClientRecord:
    record, _ = make_record(client_id, now=now)
    record.stripe_customer_id = customer
    record.stripe_subscription_id = subscription
    return record


# -- create / get / list ---------------------------------------------------------------------


def test_an_empty_store_has_nothing_and_is_healthy(store: Store) -> None:
    assert store.get_client("nobody") is None
    assert store.get_client_by_key_digest("0" * 64) is None
    assert store.list_clients() == ([], 0)
    assert store.find_client_by_stripe(customer_id="cus_x", subscription_id="sub_x") is None
    assert isinstance(store.location, str)
    assert store.location
    store.check()


def test_create_then_get_by_id_and_by_key_digest(store: Store) -> None:
    record, key = add_client(store, PlanId.STARTER, now=T1)
    cid = record.client_id
    assert store.get_client(cid) == record
    assert store.get_client_by_key_digest(digest_key(key)) == record
    assert store.get_client_by_key_digest(digest_key(key + "0")) is None
    assert store.get_client("not-" + cid) is None
    # Found by its digest whether active or not (authentication decides what inactive means).
    store.set_active(cid, False, T1 + SECOND)
    found = store.get_client_by_key_digest(record.api_key_hash)
    assert found is not None
    assert (found.client_id, found.active) == (cid, False)
    store.check()
    assert_invariants(store)


def test_every_field_of_a_record_round_trips(store: Store, store_url: str) -> None:
    record, key = make_record("rt-1", PlanId.STARTER, now=T1)
    record.name = "Zoë Ünïcode ✓ O'Brien"
    record.email = "zoe+billing@acmecorp.com"
    record.total_spent = 12.345678
    record.updated_at = T1 + timedelta(minutes=5, microseconds=1)
    record.stripe_customer_id = "cus_rt"
    record.stripe_subscription_id = "sub_rt"
    record.metadata = ClientMetadata.model_validate(
        {
            **record.metadata.model_dump(),
            "subscription_status": "active",
            "stripe_event_at": 1_771_497_000,
            # Free-form keys of the summary's metadata bag are kept too.
            "team": "platform",
            "tags": ["a", "b"],
        }
    )
    store.create_client(record)
    assert store.get_client("rt-1") == record
    assert store.get_client_by_key_digest(digest_key(key)) == record
    with reopen(store_url) as again:
        assert again.get_client("rt-1") == record
    assert_invariants(store)


def test_a_record_with_ledger_history_round_trips_and_its_job_ids_count(store: Store) -> None:
    """A record that already has a ledger (a migrated client) is stored as given, and its job
    ids are charged never again."""
    record, _ = make_record("mig-1", PlanId.STARTER, now=T0)
    meta = record.metadata
    meta.cost_log = [
        CostEntry(timestamp=T0 + SECOND, cost=1.25, job_id="job-old-1"),
        CostEntry(timestamp=T0 + 2 * SECOND, cost=1.25, job_id="job-old-2"),
    ]
    meta.credit_adjustments = [CreditAdjustment(timestamp=T0, amount=3, reason="migrated")]
    meta.cycle_history = [
        CycleSummary(
            start=T0 - CYCLE,
            end=T0,
            plan=PlanId.STARTER,
            allowance=50,
            jobs=1,
            spend=0.5,
            credits_left=49,
            entries=[CostEntry(timestamp=T0 - SECOND, cost=0.5, job_id="job-prev")],
        )
    ]
    record.credits_remaining = 50 + 3 - 2
    record.total_spent = 3.0
    store.create_client(record)
    assert store.get_client("mig-1") == record

    again = store.charge("mig-1", "job-old-1", 9.0, T1)
    assert again == ChargeResult("mig-1", "job-old-1", 1.25, T0 + SECOND, 51, replayed=True)
    assert store.charge("mig-1", "job-prev", 9.0, T1).replayed  # the cycle before
    assert store.charge("mig-1", "job-new", 1.0, T1).credits_remaining == 50
    assert store.refund("mig-1", "job-old-2", T1 + SECOND)
    after = stored(store, "mig-1")
    assert after.credits_remaining == 51
    assert ledger_ids(after) == ["job-old-1", "job-new"]
    assert after.total_spent == 3.0 - 1.25 + 1.0
    assert_invariants(store)


def test_list_filters_paginates_and_keeps_creation_order(store: Store, store_url: str) -> None:
    ids_and_plans = [
        ("m", PlanId.PRO),
        ("b", PlanId.FREE),
        ("z", PlanId.PRO),
        ("a", PlanId.ENTERPRISE),
        ("k", PlanId.PRO),
    ]
    for n, (client_id, plan) in enumerate(ids_and_plans):
        store.create_client(make_record(client_id, plan, now=T0 + n * SECOND)[0])
    store.set_active("z", False, T1)
    store.charge("b", "job-1", 1.0, T1)  # an update keeps the client's place
    store.add_credits("m", 1, "bump", T1)

    def ids(
        listing: Store,
        *,
        active: bool | None = None,
        plan: PlanId | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[str], int]:
        query = ClientQuery(active=active, plan=plan, offset=offset, limit=limit)
        records, total = listing.list_clients(query)
        return [r.client_id for r in records], total

    assert ids(store) == (["m", "b", "z", "a", "k"], 5)
    assert ids(store, offset=1, limit=2) == (["b", "z"], 5)
    assert ids(store, offset=4, limit=10) == (["k"], 5)
    assert ids(store, offset=9) == ([], 5)
    assert ids(store, limit=0) == ([], 5)
    assert ids(store, plan=PlanId.PRO) == (["m", "z", "k"], 3)
    assert ids(store, plan=PlanId.PRO, offset=1, limit=1) == (["z"], 3)
    assert ids(store, active=False) == (["z"], 1)
    assert ids(store, active=True) == (["m", "b", "a", "k"], 4)
    assert ids(store, active=True, plan=PlanId.PRO) == (["m", "k"], 2)
    assert ids(store, active=True, plan=PlanId.PRO, offset=1) == (["k"], 2)
    assert ids(store, plan=PlanId.STARTER) == ([], 0)
    # Whole records, equal to what get_client returns.
    page, _ = store.list_clients()
    assert page == [stored(store, r.client_id) for r in page]
    with reopen(store_url) as again:
        assert ids(again) == (["m", "b", "z", "a", "k"], 5)
    assert_invariants(store)


def test_duplicate_id_or_key_digest_is_refused_and_writes_nothing(store: Store) -> None:
    first, _ = make_record("c1", now=T0)
    store.create_client(first)
    same_id, _ = make_record("c1", PlanId.FREE, now=T1)
    with pytest.raises(DuplicateClient):
        store.create_client(same_id)
    same_key, _ = make_record("c2", PlanId.FREE, now=T1)
    same_key.api_key_hash = first.api_key_hash
    with pytest.raises(DuplicateClient):
        store.create_client(same_key)
    assert store.get_client("c1") == first
    assert store.get_client("c2") is None
    assert store.get_client_by_key_digest(first.api_key_hash) == first
    assert store.list_clients() == ([first], 1)
    assert_invariants(store)


def test_returned_records_are_copies(store: Store) -> None:
    record, key = make_record("c1")
    record.stripe_customer_id = "cus_1"
    store.create_client(record)
    record.credits_remaining = 10_000  # the caller's object, after the create
    record.metadata.cost_log.append(CostEntry(timestamp=T0, cost=1.0, job_id="ghost"))
    store.charge("c1", "job-1", 1.0, T1)
    store.add_credits("c1", 1, "x", T1)
    for got in (
        store.get_client("c1"),
        store.get_client_by_key_digest(digest_key(key)),
        store.list_clients()[0][0],
        store.find_client_by_stripe(customer_id="cus_1"),
        store.refresh_cycle("c1", T1),
        store.add_credits("c1", 0, "noop", T1),
        store.set_active("c1", True, T1),
    ):
        assert got is not None
        got.credits_remaining = 0
        got.active = False
        got.plan = PlanId.ENTERPRISE
        got.metadata.cost_log.clear()
        got.metadata.credit_adjustments.clear()
    fresh = stored(store, "c1")
    assert fresh.credits_remaining == 200
    assert fresh.active
    assert fresh.plan == PlanId.PRO
    assert ledger_ids(fresh) == ["job-1"]
    assert [a.reason for a in fresh.metadata.credit_adjustments] == ["x", "noop"]
    assert_invariants(store)


# -- charge ----------------------------------------------------------------------------------


def test_charge_decrements_logs_and_sums_the_spend(store: Store, store_url: str) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    assert store.charge(cid, "job-1", 0.1, T1) == ChargeResult(cid, "job-1", 0.1, T1, 199, False)
    at2 = T1 + timedelta(seconds=1, microseconds=1)
    assert store.charge(cid, "job-2", 0.2, at2) == ChargeResult(cid, "job-2", 0.2, at2, 198, False)
    with reopen(store_url) as again:
        after = stored(again, cid)
    assert after.credits_remaining == 198
    assert after.total_spent == 0.3  # kept at fixed precision, never 0.30000000000000004
    assert after.updated_at == at2
    assert [(e.job_id, e.cost, e.timestamp) for e in after.metadata.cost_log] == [
        ("job-1", 0.1, T1),
        ("job-2", 0.2, at2),
    ]
    # Nothing else moved.
    assert (after.billing_cycle_start, after.billing_cycle_end) == (T0, END)
    assert after.metadata.cycle_history == []
    assert after.created_at == T0
    assert_invariants(store)


def test_charge_after_the_cycle_end_rolls_the_cycle_first(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openclaw_billing")
    record, _ = add_client(store)
    cid = record.client_id
    store.charge(cid, "job-old", 1.0, T1)
    result = store.charge(cid, "job-new", 2.0, END + SECOND)
    assert result == ChargeResult(cid, "job-new", 2.0, END + SECOND, 199, False)
    after = stored(store, cid)
    assert (after.billing_cycle_start, after.billing_cycle_end) == (END, END + CYCLE)
    assert ledger_ids(after) == ["job-new"]
    (summary,) = after.metadata.cycle_history
    assert (summary.start, summary.end, summary.jobs, summary.credits_left) == (T0, END, 1, 199)
    assert after.total_spent == 3.0  # lifetime, across cycles
    assert resets_logged(caplog) == 1
    assert_invariants(store)


def test_a_replayed_job_id_returns_the_first_result_and_charges_nothing(store: Store) -> None:
    record, _ = add_client(store, PlanId.FREE)
    cid = record.client_id
    first = store.charge(cid, "job-1", 2.0, T1)
    store.charge(cid, "job-2", 1.0, T1 + SECOND)
    before = stored(store, cid)
    again = store.charge(cid, "job-1", 9.0, T1 + timedelta(minutes=5))
    # The first result, with the credits left now (after job-2).
    assert again == first._replace(credits_remaining=3, replayed=True)
    assert stored(store, cid) == before

    # A retry of the job that took the last credit is its first result, not a limit error.
    for i in range(3, 6):
        store.charge(cid, f"job-{i}", 1.0, T1 + 2 * SECOND)
    last = store.charge(cid, "job-5", 1.0, T1 + 3 * SECOND)
    assert (last.replayed, last.credits_remaining, last.charged_at) == (True, 0, T1 + 2 * SECOND)
    # ... and so is a retry after the client was deactivated: the job did run.
    store.set_active(cid, False, T1 + 4 * SECOND)
    assert store.charge(cid, "job-1", 2.0, T1 + 5 * SECOND).replayed
    after = stored(store, cid)
    assert ledger_ids(after) == ["job-1", "job-2", "job-3", "job-4", "job-5"]
    assert after.total_spent == 6.0
    assert_invariants(store)


def test_credit_limit_raises_and_writes_nothing(store: Store) -> None:
    record, _ = add_client(store, PlanId.FREE)
    cid = record.client_id
    for i in range(5):
        assert store.charge(cid, f"job-{i}", 1.0, T1).credits_remaining == 4 - i
    before = stored(store, cid)
    with pytest.raises(CreditLimitReached):
        store.charge(cid, "job-5", 1.0, T1 + SECOND)
    assert stored(store, cid) == before
    # The refused job id was never charged: with a credit back it is a new charge.
    store.add_credits(cid, 1, "top-up", T1 + 2 * SECOND)
    result = store.charge(cid, "job-5", 1.0, T1 + 3 * SECOND)
    assert (result.replayed, result.credits_remaining) == (False, 0)
    assert_invariants(store)


def test_an_inactive_client_is_not_charged(store: Store) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    store.set_active(cid, False, T1)
    before = stored(store, cid)
    with pytest.raises(ClientInactive):
        store.charge(cid, "job-1", 1.0, T1 + SECOND)
    assert stored(store, cid) == before
    store.set_active(cid, True, T1 + 2 * SECOND)
    assert not store.charge(cid, "job-1", 1.0, T1 + 3 * SECOND).replayed
    assert_invariants(store)


def test_an_unpaid_subscription_is_not_charged(store: Store) -> None:
    """ledger.charge: a past_due or unpaid subscription runs no job until Stripe is paid."""
    record, _ = add_client(store)
    cid = record.client_id
    ref = StripeRef(cid, None, None)
    for n, status in enumerate(("past_due", "unpaid")):
        store.apply_stripe_event(f"evt_{status}", ref, 1000 + n, set_status(status), T1)
        before = stored(store, cid)
        with pytest.raises(PaymentPastDue):
            store.charge(cid, f"job-{status}", 1.0, T1 + SECOND)
        assert stored(store, cid) == before
    store.apply_stripe_event("evt_paid", ref, 2000, set_status("active"), T1 + 2 * SECOND)
    assert store.charge(cid, "job-paid", 1.0, T1 + 3 * SECOND).credits_remaining == 199
    assert_invariants(store)


def test_an_unknown_client_is_not_found_by_any_write(store: Store) -> None:
    add_client(store)
    with pytest.raises(ClientNotFound):
        store.charge("nope", "job", 0.0, T1)
    with pytest.raises(ClientNotFound):
        store.add_credits("nope", 1, "x", T1)
    with pytest.raises(ClientNotFound):
        store.set_active("nope", False, T1)
    with pytest.raises(ClientNotFound):
        store.refresh_cycle("nope", END + CYCLE)
    # Store.refund's docstring names no error: ClientNotFound (the JSON store) or False (there
    # is no such charge) both honour it; neither may create anything.
    try:
        refunded = store.refund("nope", "job", T1)
    except ClientNotFound:
        pass
    else:
        assert refunded is False
    assert store.get_client("nope") is None
    assert store.list_clients()[1] == 1
    assert_invariants(store)


def test_enterprise_is_never_decremented_but_is_logged(store: Store) -> None:
    record, _ = add_client(store, PlanId.ENTERPRISE)
    cid = record.client_id
    for i in range(25):
        at = T1 + timedelta(minutes=i)
        assert store.charge(cid, f"job-{i}", 2.0, at) == ChargeResult(
            cid, f"job-{i}", 2.0, at, None, False
        )
    again = store.charge(cid, "job-3", 7.0, T1)
    assert again == ChargeResult(cid, "job-3", 2.0, T1 + timedelta(minutes=3), None, True)
    with pytest.raises(UnlimitedPlan):
        store.add_credits(cid, 10, "pointless", T1)
    middle = stored(store, cid)
    assert middle.credits_remaining is None
    assert len(middle.metadata.cost_log) == 25
    assert middle.total_spent == 50.0
    assert middle.metadata.credit_adjustments == []
    after = store.refresh_cycle(cid, END + SECOND)
    assert after.credits_remaining is None
    (summary,) = after.metadata.cycle_history
    assert (summary.plan, summary.allowance, summary.jobs, summary.spend) == (
        PlanId.ENTERPRISE,
        None,
        25,
        50.0,
    )
    assert summary.credits_left is None
    assert after.total_spent == 50.0
    assert_invariants(store)


# -- refund ----------------------------------------------------------------------------------


def test_refund_gives_back_the_credit_and_the_cost_once(store: Store) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    store.charge(cid, "job-1", 1.5, T1)
    store.charge(cid, "job-2", 2.25, T1 + SECOND)
    before = stored(store, cid)
    assert store.refund(cid, "job-never", T1 + 2 * SECOND) is False
    assert stored(store, cid) == before
    at = T1 + 3 * SECOND
    assert store.refund(cid, "job-1", at) is True
    after = stored(store, cid)
    assert after.credits_remaining == 199
    assert after.total_spent == 2.25
    assert ledger_ids(after) == ["job-2"]
    assert after.updated_at == at
    assert store.refund(cid, "job-1", at + SECOND) is False  # twice: nothing more
    assert stored(store, cid) == after
    # The job id is no longer charged: a resubmission is a new charge.
    result = store.charge(cid, "job-1", 1.5, at + 2 * SECOND)
    assert (result.replayed, result.credits_remaining) == (False, 198)
    assert_invariants(store)


def test_refund_reaches_only_the_current_cycle(store: Store) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    store.charge(cid, "job-old", 1.0, END - SECOND)
    assert store.refund(cid, "job-old", END + SECOND) is False  # rolled first: not this cycle
    after = stored(store, cid)
    assert after.credits_remaining == 200
    assert after.total_spent == 1.0
    (summary,) = after.metadata.cycle_history
    assert (summary.jobs, summary.credits_left) == (1, 199)
    assert_invariants(store)


def test_refund_on_an_unlimited_plan_returns_the_cost(store: Store) -> None:
    record, _ = add_client(store, PlanId.ENTERPRISE)
    cid = record.client_id
    store.charge(cid, "job-1", 4.0, T1)
    assert store.refund(cid, "job-1", T1 + SECOND)
    after = stored(store, cid)
    assert (after.credits_remaining, after.total_spent, ledger_ids(after)) == (None, 0.0, [])
    assert_invariants(store)


# -- add_credits / set_active ----------------------------------------------------------------


def test_add_credits_adjusts_with_a_logged_reason(store: Store, store_url: str) -> None:
    record, _ = add_client(store, PlanId.STARTER)
    cid = record.client_id
    up = store.add_credits(cid, 25, "promotional credit", T1)
    assert up.credits_remaining == 75
    assert up.updated_at == T1
    assert up == stored(store, cid)
    assert store.add_credits(cid, -70, "correction", T1 + SECOND).credits_remaining == 5
    before = stored(store, cid)
    with pytest.raises(InsufficientCredits):
        store.add_credits(cid, -6, "too much", T1 + 2 * SECOND)
    assert stored(store, cid) == before
    assert store.add_credits(cid, -5, "to zero", T1 + 3 * SECOND).credits_remaining == 0
    with pytest.raises(CreditLimitReached):
        store.charge(cid, "job-1", 1.0, T1 + 4 * SECOND)
    with reopen(store_url) as again:
        after = stored(again, cid)
    assert after.credits_remaining == 0
    assert [(a.timestamp, a.amount, a.reason) for a in after.metadata.credit_adjustments] == [
        (T1, 25, "promotional credit"),
        (T1 + SECOND, -70, "correction"),
        (T1 + 3 * SECOND, -5, "to zero"),
    ]
    assert_invariants(store)


def test_add_credits_rolls_the_cycle_first(store: Store) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    store.add_credits(cid, 10, "old cycle", T1)
    after = store.add_credits(cid, 5, "new cycle", END)
    assert after.credits_remaining == 205
    assert [a.reason for a in after.metadata.credit_adjustments] == ["new cycle"]
    (summary,) = after.metadata.cycle_history
    assert [(a.amount, a.reason) for a in summary.adjustments] == [(10, "old cycle")]
    assert summary.credits_left == 210
    assert_invariants(store)


def test_set_active_soft_deletes_and_restores(store: Store, store_url: str) -> None:
    record, key = add_client(store)
    cid = record.client_id
    unchanged = store.set_active(cid, True, T1)  # already active: nothing changes
    assert unchanged == record
    assert stored(store, cid).updated_at == T0
    off = store.set_active(cid, False, T1 + SECOND)
    assert (off.active, off.updated_at) == (False, T1 + SECOND)
    assert off == stored(store, cid)
    with reopen(store_url) as again:
        assert not stored(again, cid).active
        assert again.list_clients(ClientQuery(active=False))[1] == 1
    found = store.get_client_by_key_digest(digest_key(key))
    assert found is not None
    assert not found.active  # soft delete: the record stays
    on = store.set_active(cid, True, T1 + 2 * SECOND)
    assert on.active
    assert store.charge(cid, "job-1", 0.0, T1 + 3 * SECOND).credits_remaining == 199
    assert_invariants(store)


# -- cycles ----------------------------------------------------------------------------------


def test_refresh_cycle_resets_exactly_once_at_the_end(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openclaw_billing")
    record, _ = add_client(store)
    cid = record.client_id
    store.add_credits(cid, 10, "bonus", T1)
    for i in range(3):
        store.charge(cid, f"job-{i}", 1.25, T1 + i * SECOND)
    just_before = store.refresh_cycle(cid, END - US)
    assert just_before == stored(store, cid)
    assert just_before.credits_remaining == 207
    assert just_before.metadata.cycle_history == []
    assert resets_logged(caplog) == 0

    reset = store.refresh_cycle(cid, END)  # the end itself belongs to the next cycle
    assert reset == stored(store, cid)
    assert (reset.billing_cycle_start, reset.billing_cycle_end) == (END, END + CYCLE)
    assert reset.credits_remaining == 200
    assert reset.metadata.cycle_allowance == 200
    assert reset.metadata.cost_log == []
    assert reset.metadata.credit_adjustments == []
    assert reset.total_spent == 3.75
    (summary,) = reset.metadata.cycle_history
    assert (summary.start, summary.end, summary.plan) == (T0, END, PlanId.PRO)
    assert (summary.allowance, summary.jobs, summary.spend, summary.credits_left) == (
        200,
        3,
        3.75,
        207,
    )
    assert [(a.timestamp, a.amount, a.reason) for a in summary.adjustments] == [(T1, 10, "bonus")]
    assert resets_logged(caplog) == 1

    again = store.refresh_cycle(cid, END + timedelta(days=1))
    assert again == reset  # nothing due: nothing changes
    assert resets_logged(caplog) == 1
    assert_invariants(store)


def test_a_long_expired_cycle_jumps_to_the_current_one(store: Store) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    store.charge(cid, "job-1", 1.0, T1)
    now = T0 + timedelta(days=100)
    after = store.refresh_cycle(cid, now)
    assert (after.billing_cycle_start, after.billing_cycle_end) == (T0 + 3 * CYCLE, T0 + 4 * CYCLE)
    assert after.billing_cycle_start <= now < after.billing_cycle_end
    assert len(after.metadata.cycle_history) == 1  # one summary, not one per missed cycle
    assert after.credits_remaining == 200
    assert_invariants(store)


def test_get_and_list_do_not_roll_the_cycle(store: Store) -> None:
    """Only the primitives that take ``now`` may reset; reading is never a write."""
    record, _ = add_client(store)  # its cycle ended long before the wall clock's today
    cid = record.client_id
    store.charge(cid, "job-1", 1.0, T1)
    for got in (stored(store, cid), store.list_clients()[0][0]):
        assert (got.billing_cycle_start, got.billing_cycle_end) == (T0, END)
        assert got.metadata.cycle_history == []
        assert got.credits_remaining == 199
    assert_invariants(store)


def test_a_job_charged_just_before_a_reset_is_recognised_right_after(store: Store) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    first = store.charge(cid, "job-edge", 3.0, END - US)
    again = store.charge(cid, "job-edge", 3.0, END + US)  # rolls the cycle, then replays
    assert again == first._replace(credits_remaining=200, replayed=True)
    after = stored(store, cid)
    assert (after.billing_cycle_start, after.credits_remaining) == (END, 200)
    assert ledger_ids(after) == []
    assert after.total_spent == 3.0
    (summary,) = after.metadata.cycle_history
    assert (summary.jobs, summary.credits_left) == (1, 199)
    assert [e.job_id for e in summary.entries] == ["job-edge"]
    assert_invariants(store)


def test_cycle_history_keeps_entries_only_in_the_newest_summary(store: Store) -> None:
    """The previous cycle's ledger entries stay with its summary (its job ids are still
    replayed); older summaries keep their totals only. (Whether a job id from two cycles back
    is still known is where backends differ: the test below.)"""
    record, _ = add_client(store)
    cid = record.client_id
    for cycle in range(3):
        start = T0 + cycle * CYCLE
        for i in range(cycle + 1):
            store.charge(cid, f"c{cycle}-job-{i}", 1.0, start + timedelta(hours=i))
    after = store.refresh_cycle(cid, T0 + 3 * CYCLE)
    assert after == stored(store, cid)
    history = after.metadata.cycle_history
    assert [s.jobs for s in history] == [1, 2, 3]
    assert [len(s.entries) for s in history] == [0, 0, 3]
    assert [e.job_id for e in history[-1].entries] == ["c2-job-0", "c2-job-1", "c2-job-2"]
    assert store.charge(cid, "c2-job-1", 1.0, T0 + 3 * CYCLE).replayed
    assert_invariants(store)


def test_a_job_id_from_two_cycles_back_is_never_charged_twice_silently(store: Store) -> None:
    """Backends differ here, legitimately: the JSON store keeps the ledger of the current and
    the previous cycle only (the file stays bounded), so a job id from two cycles back is
    charged as new; the SQL ledger keeps every job id unique, so it is replayed. Both guarantee
    the current and the previous cycle, and consistent books either way."""
    record, _ = add_client(store)
    cid = record.client_id
    first = store.charge(cid, "job-ancient", 1.0, T1)
    store.charge(cid, "job-prev", 1.0, END + SECOND)
    now = END + CYCLE + SECOND
    assert store.charge(cid, "job-prev", 1.0, now).replayed  # the previous cycle: all backends
    result = store.charge(cid, "job-ancient", 1.0, now)
    after = stored(store, cid)
    if result.replayed:  # SQL: every cycle's job ids
        assert result == first._replace(credits_remaining=200, replayed=True)
        assert (after.credits_remaining, ledger_ids(after)) == (200, [])
    else:  # JSON: the current and previous cycle's job ids
        assert result == ChargeResult(cid, "job-ancient", 1.0, now, 199, False)
        assert (after.credits_remaining, ledger_ids(after)) == (199, ["job-ancient"])
    assert len(after.metadata.cycle_history) == 2
    assert_invariants(store)


# -- Stripe ----------------------------------------------------------------------------------


def test_find_client_by_stripe_prefers_the_subscription(store: Store) -> None:
    store.create_client(linked_record("a", now=T0))
    b = linked_record("b", customer="cus_b", subscription="sub_b", now=T0 + SECOND)
    c = linked_record("c", customer="cus_c", now=T0 + 2 * SECOND)
    store.create_client(b)
    store.create_client(c)
    assert store.find_client_by_stripe(subscription_id="sub_b") == b
    assert store.find_client_by_stripe(customer_id="cus_b") == b
    assert store.find_client_by_stripe(customer_id="cus_c") == c
    assert store.find_client_by_stripe(customer_id="cus_c", subscription_id="sub_b") == b
    assert store.find_client_by_stripe(customer_id="cus_c", subscription_id="sub_nope") == c
    assert store.find_client_by_stripe(customer_id="cus_nope", subscription_id="sub_nope") is None
    assert store.find_client_by_stripe() is None
    assert_invariants(store)


def test_an_event_is_applied_once_then_is_a_duplicate(store: Store, store_url: str) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    calls: list[str] = []
    ref = StripeRef(cid, None, None)
    outcome = store.apply_stripe_event("evt_1", ref, 1_000, set_status("active", calls), T1)
    assert outcome == (EventOutcome.APPLIED, cid)
    after = stored(store, cid)
    assert after.metadata.subscription_status == "active"
    assert after.metadata.stripe_event_at == 1_000

    def redeliver(target: Store, now: datetime) -> tuple[EventOutcome, str | None]:
        # A newer `created` and another change: neither matters for a known id.
        return target.apply_stripe_event("evt_1", ref, 5_000, set_status("canceled", calls), now)

    def assert_duplicate(outcome: tuple[EventOutcome, str | None]) -> None:
        # Store.apply_stripe_event says the client id is None only when UNMATCHED, but both
        # backends answer None for a duplicate (they stop before the lookup): only the outcome
        # is shared.
        assert outcome[0] == EventOutcome.DUPLICATE
        assert outcome[1] in (cid, None)

    assert_duplicate(redeliver(store, T1 + SECOND))
    assert calls == ["active"]  # the change never ran again
    assert stored(store, cid) == after  # and nothing was written
    # After a restart, and up to EVENT_ID_RETENTION later (Stripe retries for up to 3 days),
    # still a duplicate. (That late, the cycle has ended: whether a duplicate rolls it is not
    # specified, so only the event's own effects are compared.)
    with reopen(store_url) as again:
        assert_duplicate(redeliver(again, T1 + EVENT_ID_RETENTION - SECOND))
        meta = stored(again, cid).metadata
    assert calls == ["active"]
    assert (meta.subscription_status, meta.stripe_event_at) == ("active", 1_000)
    assert_invariants(store)


def test_an_older_event_is_stale_recorded_and_changes_nothing(store: Store) -> None:
    cid = "c1"
    store.create_client(linked_record(cid, subscription="sub_1"))
    ref = StripeRef(None, "sub_1", None)
    calls: list[str] = []
    assert store.apply_stripe_event("evt_new", ref, 2_000, set_status("active", calls), T1) == (
        EventOutcome.APPLIED,
        cid,
    )
    before = stored(store, cid)
    late = store.apply_stripe_event("evt_old", ref, 1_999, set_status("canceled", calls), T1)
    assert late == (EventOutcome.STALE, cid)
    assert stored(store, cid) == before
    assert before.metadata.stripe_event_at == 2_000
    # A stale event's id is recorded: its redelivery is a duplicate.
    again = store.apply_stripe_event("evt_old", ref, 1_999, set_status("canceled", calls), T1)
    assert again[0] == EventOutcome.DUPLICATE
    # Not older than the newest (the same second): applied.
    same = store.apply_stripe_event("evt_same", ref, 2_000, set_status("trialing", calls), T1)
    assert same == (EventOutcome.APPLIED, cid)
    assert calls == ["active", "trialing"]
    assert stored(store, cid).metadata.subscription_status == "trialing"
    assert_invariants(store)


def test_an_unmatched_event_changes_nothing_and_is_not_recorded(store: Store) -> None:
    store.create_client(linked_record("c1", customer="cus_1", subscription="sub_1"))
    before = all_clients(store)
    calls: list[str] = []
    ref = StripeRef("nobody", "sub_nope", "cus_nope")
    assert store.apply_stripe_event("evt_x", ref, 1_000, set_status("active", calls), T1) == (
        EventOutcome.UNMATCHED,
        None,
    )
    assert store.apply_stripe_event(
        "evt_y", StripeRef(None, None, None), 1_000, set_status("active", calls), T1
    ) == (EventOutcome.UNMATCHED, None)
    assert calls == []
    assert all_clients(store) == before
    # Its id was not recorded: once the customer exists, the same event applies.
    store.create_client(linked_record("c2", customer="cus_nope", now=T1))
    assert store.apply_stripe_event(
        "evt_x", ref, 1_000, set_status("active", calls), T1 + SECOND
    ) == (EventOutcome.APPLIED, "c2")
    assert calls == ["active"]
    assert_invariants(store)


def test_an_event_finds_its_client_by_id_then_subscription_then_customer(store: Store) -> None:
    store.create_client(linked_record("a", now=T0))
    store.create_client(linked_record("b", customer="cus_b", subscription="sub_b", now=T0 + US))
    store.create_client(linked_record("c", customer="cus_c", now=T0 + 2 * US))
    cases = [
        (StripeRef("a", "sub_b", "cus_c"), "a"),
        (StripeRef("unknown", "sub_b", "cus_c"), "b"),
        (StripeRef(None, "sub_b", "cus_c"), "b"),
        (StripeRef(None, "sub_nope", "cus_c"), "c"),
        (StripeRef(None, None, "cus_b"), "b"),
    ]
    for n, (ref, expected) in enumerate(cases):
        outcome = store.apply_stripe_event(f"evt_{n}", ref, 1_000 + n, set_status(f"s{n}"), T1)
        assert outcome == (EventOutcome.APPLIED, expected), ref
        assert stored(store, expected).metadata.subscription_status == f"s{n}"
    assert stored(store, "a").metadata.stripe_event_at == 1_000
    assert stored(store, "b").metadata.stripe_event_at == 1_004
    assert stored(store, "c").metadata.stripe_event_at == 1_003
    assert_invariants(store)


def test_an_event_sees_the_cycle_already_rolled(store: Store) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    store.charge(cid, "job-1", 1.0, T1)
    seen: list[tuple[datetime, int | None, int]] = []

    def change(r: ClientRecord) -> None:
        seen.append((r.billing_cycle_start, r.credits_remaining, len(r.metadata.cycle_history)))
        r.metadata.subscription_status = "active"

    outcome = store.apply_stripe_event("evt_1", StripeRef(cid, None, None), 1, change, END + US)
    assert outcome == (EventOutcome.APPLIED, cid)
    assert seen == [(END, 200, 1)]
    after = stored(store, cid)
    assert (after.billing_cycle_start, after.metadata.subscription_status) == (END, "active")
    assert_invariants(store)


def test_the_change_and_the_event_id_land_together(store: Store, store_url: str) -> None:
    record, _ = add_client(store)
    cid = record.client_id
    ref = StripeRef(cid, None, None)

    def broken(r: ClientRecord) -> None:
        r.plan = PlanId.ENTERPRISE
        r.stripe_customer_id = "cus_half"
        raise RuntimeError("the change failed half way")

    before = stored(store, cid)
    with pytest.raises(RuntimeError, match="half way"):
        store.apply_stripe_event("evt_1", ref, 1_000, broken, T1)
    assert stored(store, cid) == before  # neither the change ...
    outcome = store.apply_stripe_event("evt_1", ref, 1_000, link("cus_1", "sub_1"), T1 + SECOND)
    assert outcome == (EventOutcome.APPLIED, cid)  # ... nor the event id landed
    with reopen(store_url) as again:  # both landed, and both survive a restart
        after = stored(again, cid)
        assert (after.stripe_customer_id, after.stripe_subscription_id) == ("cus_1", "sub_1")
        assert after.metadata.stripe_event_at == 1_000
        assert again.find_client_by_stripe(subscription_id="sub_1") == after
        duplicate = again.apply_stripe_event("evt_1", ref, 1_000, broken, T1 + 2 * SECOND)
        assert duplicate[0] == EventOutcome.DUPLICATE
    assert_invariants(store)


def test_plan_changes_through_events_keep_the_books(store: Store) -> None:
    """The Stripe handler's real transitions (ledger.change_plan) as ``change``: a new paid
    period starts a new cycle; a prorated change within it is an adjustment."""
    record, _ = add_client(store, PlanId.FREE)
    cid = record.client_id
    for i in range(3):
        store.charge(cid, f"free-{i}", 0.5, T1 + i * SECOND)
    start = T0 + timedelta(days=10)
    end = start + CYCLE
    ref = StripeRef(cid, "sub_1", "cus_1")

    def upgrade(r: ClientRecord) -> None:
        link("cus_1", "sub_1")(r)
        ledger.change_plan(r, PlanId.PRO, start, end, start)

    assert store.apply_stripe_event("evt_up", ref, 100, upgrade, start) == (
        EventOutcome.APPLIED,
        cid,
    )
    after = stored(store, cid)
    assert (after.plan, after.credits_remaining, after.metadata.cycle_allowance) == (
        PlanId.PRO,
        200,
        200,
    )
    assert (after.billing_cycle_start, after.billing_cycle_end) == (start, end)
    (summary,) = after.metadata.cycle_history
    assert (summary.plan, summary.allowance, summary.jobs, summary.credits_left) == (
        PlanId.FREE,
        5,
        3,
        2,
    )
    assert store.charge(cid, "free-1", 0.5, start + SECOND).replayed  # the previous cycle's
    assert store.charge(cid, "pro-1", 0.5, start + SECOND).credits_remaining == 199

    def downgrade(r: ClientRecord) -> None:
        ledger.change_plan(r, PlanId.STARTER, start, end, start + 2 * SECOND)

    assert store.apply_stripe_event("evt_down", ref, 200, downgrade, start + 2 * SECOND) == (
        EventOutcome.APPLIED,
        cid,
    )
    after = stored(store, cid)
    assert (after.plan, after.credits_remaining) == (PlanId.STARTER, 49)
    assert [(a.amount, a.reason) for a in after.metadata.credit_adjustments] == [
        (-150, "plan change pro -> starter")
    ]
    assert ledger_ids(after) == ["pro-1"]
    assert after.total_spent == 2.0
    assert_invariants(store)


def test_processed_event_ids_export_and_import(store: Store, store_url: str) -> None:
    """For migration between backends. (The JSON store refuses to import into a store with no
    client yet, ``ClientNotFound``; this test imports after a client exists, which every
    backend supports.) Every backend has the capability."""
    assert isinstance(store, EventIdTransfer)
    record, _ = add_client(store)
    cid = record.client_id
    ref = StripeRef(cid, None, None)
    store.apply_stripe_event("evt_applied", ref, 2_000, set_status("active"), T1)
    store.apply_stripe_event("evt_stale", ref, 1_000, set_status("canceled"), T1 + SECOND)
    store.apply_stripe_event("evt_lost", StripeRef("nobody", None, None), 1, link("x"), T1)
    # Applied and stale ids are remembered, with when they were processed; unmatched are not.
    assert store.stripe_event_ids() == {"evt_applied": T1, "evt_stale": T1 + SECOND}
    before = all_clients(store)
    store.import_stripe_event_ids({"evt_applied": T1 + 5 * SECOND, "evt_old": T1 - SECOND})
    expected = {"evt_applied": T1, "evt_stale": T1 + SECOND, "evt_old": T1 - SECOND}
    assert store.stripe_event_ids() == expected  # ids already known stay as they were
    assert all_clients(store) == before  # importing ids changes no client
    calls: list[str] = []
    late = store.apply_stripe_event("evt_old", ref, 3_000, set_status("x", calls), T1 + SECOND)
    assert late[0] == EventOutcome.DUPLICATE
    assert calls == []
    with reopen(store_url) as again:
        assert isinstance(again, EventIdTransfer)
        assert again.stripe_event_ids() == expected
    assert_invariants(store)


# -- persistence and health ------------------------------------------------------------------


def test_everything_survives_a_restart(store_url: str) -> None:
    with reopen(store_url) as first:
        a, key_a = add_client(first, PlanId.PRO, now=T0, name="A")
        b, _ = add_client(first, PlanId.ENTERPRISE, now=T0 + US, name="B")
        c, _ = add_client(first, PlanId.FREE, now=T0 + 2 * US, name="C")
        ida, idb, idc = a.client_id, b.client_id, c.client_id
        first.charge(ida, "a-1", 1.5, T1)
        first.charge(ida, "a-2", 2.5, T1 + SECOND)
        first.refund(ida, "a-2", T1 + 2 * SECOND)
        first.add_credits(ida, 7, "goodwill", T1 + 3 * SECOND)
        first.charge(idb, "b-1", 3.0, T1)
        first.set_active(idc, False, T1)
        ref_b = StripeRef(idb, None, None)
        first.apply_stripe_event("evt_b", ref_b, 1_000, link("cus_b", "sub_b"), T1)
        first.charge(ida, "a-3", 1.0, END - US)
        first.refresh_cycle(ida, END + SECOND)
        first.charge(ida, "a-4", 0.75, END + 2 * SECOND)
        before = all_clients(first)
    with reopen(store_url) as again:
        again.check()
        assert all_clients(again) == before
        for record in before:
            assert again.get_client(record.client_id) == record
            assert again.get_client_by_key_digest(record.api_key_hash) == record
        assert again.get_client_by_key_digest(digest_key(key_a)) == before[0]
        assert [r.client_id for r in before] == [ida, idb, idc]
        assert again.list_clients(ClientQuery(active=False)) == ([before[2]], 1)
        assert again.find_client_by_stripe(subscription_id="sub_b") == before[1]
        assert again.apply_stripe_event("evt_b", ref_b, 1_000, link("x", "y"), T1)[0] == (
            EventOutcome.DUPLICATE
        )
        assert again.charge(ida, "a-3", 1.0, END + 3 * SECOND).replayed  # the previous cycle
        assert again.charge(ida, "a-4", 1.0, END + 3 * SECOND).replayed  # this one
        assert again.charge(idb, "b-1", 1.0, END).replayed
        assert again.refund(ida, "a-1", END + 3 * SECOND) is False
        assert all_clients(again) == before
        records = assert_invariants(again)
    assert (records[0].credits_remaining, records[0].total_spent) == (199, 1.5 + 1.0 + 0.75)
    assert records[0].metadata.cycle_history[0].credits_left == 200 - 2 + 7


def test_two_instances_on_one_location_see_each_others_writes(store: Store, store_url: str) -> None:
    with reopen(store_url) as other:
        record, key = add_client(store)
        cid = record.client_id
        assert other.get_client_by_key_digest(digest_key(key)) == record
        other.charge(cid, "job-b", 1.0, T1)
        assert store.charge(cid, "job-b", 1.0, T1).replayed
        store.charge(cid, "job-a", 1.0, T1 + SECOND)
        assert other.charge(cid, "job-a", 1.0, T1 + SECOND).replayed
        ref = StripeRef(cid, None, None)
        assert store.apply_stripe_event("evt_1", ref, 1, link("cus_1"), T1)[0] == (
            EventOutcome.APPLIED
        )
        assert other.apply_stripe_event("evt_1", ref, 1, link("cus_2"), T1)[0] == (
            EventOutcome.DUPLICATE
        )
        second, _ = add_client(other, now=T1, name="Second")
        assert [r.client_id for r in all_clients(store)] == [cid, second.client_id]
        assert stored(store, cid) == stored(other, cid)
        assert stored(store, cid).credits_remaining == 198
        other.check()
    store.check()
    assert_invariants(store)


# -- concurrency -----------------------------------------------------------------------------


def run_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(0..count-1)`` on as many threads, released together by a barrier; re-raise
    the first error of any of them."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(WAIT)
            work(index)
        except BaseException as exc:  # reported to the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]


def test_threads_charge_exactly_the_credits(store: Store) -> None:
    credits, threads, attempts = 100, 12, 150
    store.create_client(make_record("c1", allowance=credits)[0])
    batches = [[(f"t{t}-{i}", T1) for i in range(t, attempts, threads)] for t in range(threads)]
    assert sum(len(b) for b in batches) == attempts
    outcomes = charge_in_threads(store, "c1", batches, threading.Barrier(threads))
    assert len(outcomes) == attempts
    kinds = Counter(kind for _, kind, _ in outcomes)
    assert kinds == Counter({"ok": credits, "limit": attempts - credits}), kinds
    ok = [job_id for job_id, kind, _ in outcomes if kind == "ok"]
    (record,) = assert_invariants(store)
    assert record.credits_remaining == 0
    assert sorted(ledger_ids(record)) == sorted(ok)
    assert len(record.metadata.cost_log) == credits
    assert record.total_spent == 0.5 * credits
    # Each success saw a distinct "credits left": credits-1 ... 0.
    left = sorted(
        r.credits_remaining
        for _, _, r in outcomes
        if r is not None and r.credits_remaining is not None
    )
    assert left == list(range(credits))


def test_threads_charging_one_job_id_charge_it_once(store: Store) -> None:
    threads = 8
    store.create_client(make_record("c1")[0])
    # Each caller brings its own time: only the first one's is recorded.
    batches = [[("job-same", T1 + t * SECOND)] for t in range(threads)]
    outcomes: list[Outcome] = charge_in_threads(store, "c1", batches, threading.Barrier(threads))
    results = [r for _, _, r in outcomes if r is not None]
    assert len(results) == threads, outcomes  # no errors at all
    (first,) = [r for r in results if not r.replayed]
    assert all(r == first._replace(replayed=r.replayed) for r in results)
    assert first.credits_remaining == 199
    (record,) = assert_invariants(store)
    assert record.credits_remaining == 199
    assert record.metadata.cost_log == [
        CostEntry(timestamp=first.charged_at, cost=0.5, job_id="job-same")
    ]
    assert record.total_spent == 0.5


def test_threads_refreshing_an_expired_cycle_reset_it_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openclaw_billing")
    threads = 8
    store.create_client(make_record("c1")[0])
    store.charge("c1", "job-1", 1.0, T1)
    now = END + timedelta(minutes=1)
    seen: list[ClientRecord] = []
    run_threads(threads, lambda _: seen.append(store.refresh_cycle("c1", now)))
    assert len(seen) == threads
    assert all(r == seen[0] for r in seen)
    (record,) = assert_invariants(store)
    assert record == seen[0]
    assert len(record.metadata.cycle_history) == 1
    assert (record.billing_cycle_start, record.credits_remaining) == (END, 200)
    assert resets_logged(caplog) == 1


def test_charges_racing_across_the_cycle_end_reset_once_and_lose_nothing(store: Store) -> None:
    """R20: charges stamped just before and just after the end race; exactly one reset, and
    every accepted charge lands in exactly one cycle."""
    # 12 credits left in the ending cycle (so some "before" charges hit the limit there); the
    # new cycle has the plan's 200, more than all the charges together.
    store.create_client(make_record("c1", allowance=12)[0])
    before, after = END - SECOND, END + SECOND
    threads, per_thread = 8, 8
    batches = [
        [
            (f"t{t}-{i}-{'b' if i % 2 == 0 else 'a'}", before if i % 2 == 0 else after)
            for i in range(per_thread)
        ]
        for t in range(threads)
    ]
    outcomes = charge_in_threads(store, "c1", batches, threading.Barrier(threads))
    assert len(outcomes) == threads * per_thread
    assert all(kind in ("ok", "limit") for _, kind, _ in outcomes), outcomes
    ok = {job_id for job_id, kind, _ in outcomes if kind == "ok"}
    refused = {job_id for job_id, kind, _ in outcomes if kind != "ok"}
    assert all(job_id.endswith("-b") for job_id in refused), "only the old cycle ran out"

    (record,) = assert_invariants(store)
    (old,) = record.metadata.cycle_history  # exactly one reset
    assert (old.start, old.end) == (T0, END)
    assert (record.billing_cycle_start, record.billing_cycle_end) == (END, END + CYCLE)
    in_new = set(ledger_ids(record))
    in_old = ok - in_new
    # No charge lost or doubled: what is not in the new cycle is in the old one.
    assert in_new <= ok
    assert old.jobs == len(in_old) <= 12
    assert all(job_id.endswith("-b") for job_id in in_old)
    assert old.credits_left == 12 - old.jobs
    assert record.credits_remaining == 200 - len(in_new)
    assert record.total_spent == 0.5 * len(ok)
    # Every accepted job is remembered, whichever cycle it landed in.
    late = after + SECOND
    assert all(store.charge("c1", job_id, 0.5, late).replayed for job_id in sorted(ok))
    assert stored(store, "c1") == record


def test_charges_that_each_roll_a_cycle_at_once_all_succeed(store_url: str) -> None:
    """Clients whose cycles end together, each charged at the same instant from its own
    thread: every charge rolls its cycle and succeeds, with no wait for a connection (the SQL
    charge that rolls a cycle once took a second pooled connection while holding one, so 10
    of them at once on PostgreSQL waited out the lock timeout and got 503s)."""
    count = 12
    with reopen(store_url) as setup:
        records = [make_record(f"c{i}")[0] for i in range(count)]
        for record in records:
            setup.create_client(record)
    ids = [record.client_id for record in records]
    later = END + timedelta(minutes=1)
    barrier = threading.Barrier(count, timeout=WAIT)
    results: dict[str, str] = {}
    store = open_store(store_url, lock_timeout=2.0)
    try:

        def charge(client_id: str) -> None:
            barrier.wait()
            try:
                store.charge(client_id, "job-at-the-turn", 0.5, later)
                results[client_id] = "charged"
            except BillingError as exc:
                results[client_id] = type(exc).__name__

        threads = [threading.Thread(target=charge, args=(cid,)) for cid in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 2)
        assert results == dict.fromkeys(ids, "charged")
        for cid in ids:
            record = stored(store, cid)
            assert len(record.metadata.cycle_history) == 1
            assert ledger_ids(record) == ["job-at-the-turn"]
        assert_invariants(store)
    finally:
        store.close()
