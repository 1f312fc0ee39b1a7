"""The operator's reads on every backend (tests/backends.py): ``Store.list_clients`` with a
``ClientQuery`` (search, filters, each order and its ties, pages and totals) and
``Store.overview``, against the answers worked out by hand in tests/console_data.py; and each
SQL backend gives the JSON store's answers, query for query, on the same data."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from openclaw_billing.jobs import JobStatus, NewJob
from openclaw_billing.models import CostEntry
from openclaw_billing.outcomes import Report
from openclaw_billing.plans import PLANS, PlanId
from openclaw_billing.store import ClientQuery, ClientSort, ClientStatus, Store, open_store
from openclaw_billing.store.base import Charge, Settle
from openclaw_billing.store.json_file import JsonFileStore
from openclaw_billing.store.migrate import copy_store
from openclaw_billing.store.query import MAX_SEARCH_LENGTH, OVERVIEW_DAYS, DayJobs, PlanFigures
from tests.backends import (  # noqa: F401 - the fixtures "store" and "store_url"
    SQL_BACKENDS,
    add_client,
    assert_invariants,
    reopen,
    store_fixture,
    store_url_fixture,
)
from tests.console_data import (
    BY_CREDITS_LEFT,
    BY_NAME,
    BY_SPEND,
    BY_USAGE,
    CREDITS_USED,
    DAY,
    FIRST_DAY,
    IDS,
    JOBS_ON,
    JOBS_THIS_CYCLE,
    LAST_DAY,
    NOW,
    PLAN_FIGURES,
    build,
    days,
)
from tests.store_helpers import T0, make_record

#: (search, the clients it finds, in creation order).
SEARCHES = [
    ("acme", ["c01", "c05", "acme-8"]),  # a name, an email, an id prefix
    ("ACME", ["c01", "c05"]),  # any case in names and emails; an id prefix is exact
    ("aCmE cOrP", ["c01"]),
    ("seven seas", ["acme-8", "c09"]),
    ("billing@sub", ["c05"]),  # an email
    ("DÉJÀ", ["c04"]),  # folded beyond ASCII, by Python's rules on every backend
    ("STRASSE", ["c07"]),
    ("%", ["c06"]),  # LIKE's wildcards and escape are literal
    ("_", ["c02", "c07"]),
    ("\\", ["c06"]),
    ("100%", ["c06"]),
    ("c0", ["c01", "c02", "c03", "c04", "c05", "c06", "c07", "c09"]),  # id prefixes
    ("c10", ["c10"]),  # a whole id
    ("01", []),  # inside an id, not its start
    (".example", IDS),
    ("zzz", []),
    ("", IDS),  # no search
]
SORTS = {
    ClientSort.CREATED: IDS,
    ClientSort.NEWEST: IDS[::-1],
    ClientSort.NAME: BY_NAME,
    ClientSort.CREDITS_LEFT: BY_CREDITS_LEFT,
    ClientSort.USAGE: BY_USAGE,
    ClientSort.SPEND: BY_SPEND,
}


@pytest.fixture
def built(store: Store) -> Store:
    build(store)
    return store


def page_ids(store: Store, query: ClientQuery) -> tuple[list[str], int]:
    records, total = store.list_clients(query)
    return [r.client_id for r in records], total


def ids(store: Store, **fields: Any) -> tuple[list[str], int]:
    return page_ids(store, ClientQuery(**fields))


def test_the_default_is_every_client_in_creation_order_as_stored(built: Store) -> None:
    assert ids(built) == (IDS, 10)
    page, _ = built.list_clients()
    assert page == [built.get_client(cid) for cid in IDS]  # whole records, as get_client
    assert_invariants(built)


def test_search_finds_names_and_emails_in_any_case_and_id_prefixes(built: Store) -> None:
    for search, expected in SEARCHES:
        assert ids(built, search=search) == (expected, len(expected)), search
    assert ids(built, search="acme", sort=ClientSort.NAME) == (["c01", "c05", "acme-8"], 3)


def test_each_filter_and_their_combinations(built: Store) -> None:
    everyone_but_c04 = [cid for cid in IDS if cid != "c04"]
    assert ids(built, status=ClientStatus.ACTIVE) == (everyone_but_c04, 9)
    assert ids(built, status=ClientStatus.INACTIVE) == (["c04"], 1)
    assert ids(built, status=ClientStatus.PAST_DUE) == (["c05"], 1)
    assert ids(built, status=ClientStatus.AT_LIMIT) == (["c02"], 1)
    assert ids(built, active=False) == (["c04"], 1)
    assert ids(built, plan=PlanId.STARTER) == (["c04", "c05", "c07"], 3)
    assert ids(built, plan=PlanId.STARTER, active=True) == (["c05", "c07"], 2)
    assert ids(built, plan=PlanId.STARTER, status=ClientStatus.PAST_DUE) == (["c05"], 1)
    assert ids(built, plan=PlanId.PRO, status=ClientStatus.PAST_DUE) == ([], 0)
    assert ids(built, active=True, status=ClientStatus.INACTIVE) == ([], 0)
    assert ids(built, search="seas", plan=PlanId.PRO) == (["acme-8", "c09"], 2)
    assert ids(built, search="acme", status=ClientStatus.PAST_DUE) == (["c05"], 1)


def test_each_order_breaks_ties_by_creation(built: Store) -> None:
    for sort, expected in SORTS.items():
        assert ids(built, sort=sort) == (expected, 10), sort
    # Unlimited plans come last however few credits the others have left.
    assert ids(built, sort=ClientSort.CREDITS_LEFT, plan=PlanId.ENTERPRISE) == (["c03"], 1)
    active = [cid for cid in BY_SPEND if cid != "c04"]
    assert ids(built, sort=ClientSort.SPEND, status=ClientStatus.ACTIVE) == (active, 9)


def test_pages_and_totals(built: Store, store_url: str) -> None:
    assert ids(built, sort=ClientSort.USAGE, offset=3, limit=3) == (["c04", "c06", "acme-8"], 10)
    assert ids(built, sort=ClientSort.SPEND, status=ClientStatus.ACTIVE, offset=7, limit=5) == (
        ["c05", "c07"],
        9,
    )
    assert ids(built, sort=ClientSort.NEWEST, offset=9) == (["c01"], 10)
    assert ids(built, offset=10) == ([], 10)
    assert ids(built, search="acme", offset=50) == ([], 3)
    assert ids(built, status=ClientStatus.AT_LIMIT, offset=1) == ([], 1)
    assert ids(built, search="acme", limit=0) == ([], 3)
    assert ids(built, limit=0) == ([], 10)
    for sort, expected in SORTS.items():  # pages of 3 add up to the whole order
        pages = [ids(built, sort=sort, offset=o, limit=3)[0] for o in range(0, 10, 3)]
        assert list(itertools.chain(*pages)) == expected, sort
    with reopen(store_url) as again:
        assert ids(again, sort=ClientSort.NAME, offset=5, limit=2) == (["acme-8", "c09"], 10)


def test_a_query_out_of_bounds_is_refused_when_made() -> None:
    for fields in (
        {"offset": -1},
        {"offset": 1_000_000_001},
        {"limit": -1},
        {"limit": 1001},
        {"search": "x" * (MAX_SEARCH_LENGTH + 1)},
        {"search": "a\nb"},
        {"search": "\x00"},
    ):
        with pytest.raises(ValueError, match="must be"):
            ClientQuery(**fields)
    assert ClientQuery(search="x" * MAX_SEARCH_LENGTH, limit=1000).limit == 1000


# -- the overview ------------------------------------------------------------------------------


def test_the_overview_counts_what_the_store_holds(built: Store) -> None:
    overview = built.overview(NOW)
    assert overview.plans == tuple(PlanFigures(*figures) for figures in PLAN_FIGURES)
    assert overview.jobs_this_cycle == JOBS_THIS_CYCLE
    assert overview.credits_used_this_cycle == CREDITS_USED
    assert (overview.at_limit, overview.past_due) == (1, 1)
    assert overview.jobs_by_day == tuple(
        DayJobs(day, JOBS_ON.get(day, 0)) for day in days(FIRST_DAY, LAST_DAY)
    )
    assert len(overview.jobs_by_day) == OVERVIEW_DAYS
    assert sum(d.jobs for d in overview.jobs_by_day) == 17
    # A day later, the first day leaves the window and a new, empty one ends it.
    later = built.overview(NOW + DAY)
    assert later.jobs_by_day[0].day == date(2026, 2, 6)
    assert later.jobs_by_day[-1] == DayJobs(date(2026, 3, 7), 0)
    assert later.jobs_by_day[:-1] == overview.jobs_by_day[1:]


def test_credits_used_are_what_the_jobs_take_held_or_charged(store: Store) -> None:
    """Not one credit per ledger entry: a held job takes its price, a released one nothing,
    a settled one what it was charged; an admin's adjustment uses none."""
    made, _ = add_client(store, PlanId.PRO)
    cid = made.client_id
    store.set_policy(cid, T0, rate_limit_per_minute=None, ip_allowlist=[], max_active_jobs=10)
    store.add_credits(cid, 7, "goodwill", T0)
    for job_id, price in (("held", 3), ("released", 2), ("charged", 4)):
        job = NewJob({"prompt": "p"}, price=price)
        store.mutate_batch([Charge(cid, job_id, 0.5, T0, job=job)])[0].unwrap()
    for job_id, report in (
        ("released", Report(JobStatus.FAILED, "infrastructure")),
        ("charged", Report(JobStatus.SUCCEEDED)),
    ):
        store.mutate_batch([Settle(cid, job_id, T0, report, lambda _: None)])[0].unwrap()
    assert_invariants(store)
    # A record from before cycles kept their allowance: the plan's is the allowance.
    legacy, _ = make_record("legacy", PlanId.STARTER)
    legacy.metadata.cycle_allowance = None
    legacy.credits_remaining = (PLANS[PlanId.STARTER].jobs_per_month or 0) - 2
    legacy.metadata.cost_log = [
        CostEntry(timestamp=T0, cost=0.0, job_id=f"old-{n}") for n in range(2)
    ]
    store.create_client(legacy)
    overview = store.overview(T0)
    assert (overview.jobs_this_cycle, overview.credits_used_this_cycle) == (3 + 2, 3 + 4 + 2)


def test_the_overview_of_an_empty_store_is_zeros(store: Store) -> None:
    overview = store.overview(datetime(2026, 1, 1, 0, 0, tzinfo=UTC))
    assert overview.plans == tuple(PlanFigures(plan, 0, 0, 0) for plan in PlanId)
    assert (overview.jobs_this_cycle, overview.credits_used_this_cycle) == (0, 0)
    assert (overview.at_limit, overview.past_due) == (0, 0)
    assert [d.jobs for d in overview.jobs_by_day] == [0] * OVERVIEW_DAYS
    assert overview.jobs_by_day[-1].day.isoformat() == "2026-01-01"


# -- the same answers on every backend ---------------------------------------------------------


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_sql_gives_the_json_stores_answers_to_every_query(store: Store, tmp_path: Path) -> None:
    """The same data built on both (and copied from JSON into another SQL store, the import
    path): every combination of search, filter and order, page by page, and the overview."""
    reference = JsonFileStore(tmp_path / "reference.json")
    build(reference)
    build(store)
    copied = open_store(f"sqlite:///{tmp_path}/copied.db")
    copy_store(reference, copied)
    searches = [s for s, _ in SEARCHES] + ["S", "ss", "é", "\\d", "%_"]
    filters: list[dict[str, Any]] = [
        {},
        {"active": True},
        {"plan": PlanId.PRO},
        *({"status": status} for status in ClientStatus),
    ]
    try:
        for search, where, sort in itertools.product(searches, filters, ClientSort):
            for offset in (0, 4):
                query = ClientQuery(search=search, sort=sort, offset=offset, limit=4, **where)
                expected = page_ids(reference, query)
                assert page_ids(store, query) == expected, query
                assert page_ids(copied, query) == expected, query
        for moment in (NOW, T0, NOW.replace(month=4)):
            assert store.overview(moment) == reference.overview(moment), moment
            assert copied.overview(moment) == reference.overview(moment), moment
    finally:
        copied.close()
