"""The operator's reads as SQL statements (for :class:`.sql.SqlStore`): a page of clients and
the overview, by the rules of :mod:`.query`, computed by the database (filters, orders,
counts and sums), never by loading every record. The JSON store answers the same over its
records (:mod:`.json_query`); the contract suite holds the two to the same answers.

Case-insensitive search and the name order read ``name_key`` and ``email_key``, the folded
name and email written with every record (:func:`.query.fold`), so no backend's own idea of
case or collation decides: both columns have PostgreSQL's "C" collation (bytes, which is
code point order in UTF-8), as SQLite and Python compare.

Needs SQLite 3.25 or later (a window function counts a search's matches).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
)

from ..errors import StoreCorrupt
from ..plans import PLANS, PlanId
from .query import (
    PAST_DUE_STATUSES,
    PAYING_STATUSES,
    ClientQuery,
    ClientSort,
    ClientStatus,
    DayJobs,
    PlanFigures,
    StoreOverview,
    day_start,
    fold,
    overview_days,
)
from .sql_schema import adjustment_rows, clients, ledger_rows

_c = clients.c
#: LIKE's escape character: a search's ``%``, ``_`` and ``\\`` are literal.
_ESCAPE = "\\"

_AT_LIMIT = and_(_c.active.is_(True), _c.credits_remaining.is_not(None), _c.credits_remaining <= 0)
_PAST_DUE = _c.subscription_status.in_(sorted(PAST_DUE_STATUSES))
_PAYING = and_(
    _c.stripe_subscription_id.is_not(None), _c.subscription_status.in_(sorted(PAYING_STATUSES))
)
_STATUS: dict[ClientStatus, ColumnElement[bool]] = {
    ClientStatus.ACTIVE: _c.active.is_(True),
    ClientStatus.INACTIVE: _c.active.is_(False),
    ClientStatus.PAST_DUE: _PAST_DUE,
    ClientStatus.AT_LIMIT: _AT_LIMIT,
}


def _literal(text: str) -> str:
    """``text`` as a LIKE pattern that matches itself only."""
    for special in (_ESCAPE, "%", "_"):
        text = text.replace(special, _ESCAPE + special)
    return text


def conditions(query: ClientQuery) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a query's filters."""
    found: list[ColumnElement[bool]] = []
    if query.plan is not None:
        found.append(_c.plan == query.plan.value)
    if query.active is not None:
        found.append(_c.active.is_(query.active))
    if query.status is not None:
        found.append(_STATUS[query.status])
    needle = query.needle
    if needle is not None:
        pattern = f"%{_literal(fold(needle))}%"
        found.append(
            or_(
                _c.name_key.like(pattern, escape=_ESCAPE),
                _c.email_key.like(pattern, escape=_ESCAPE),
                func.substr(_c.client_id, 1, len(needle)) == needle,
            )
        )
    return found


def order(sort: ClientSort) -> list[ColumnElement[Any]]:
    """The ORDER BY of a sort, ending with creation order. (``name_key`` compares by code
    point on every backend; unlimited plans' NULL credits go last without NULLS LAST, which
    SQLite has only since 3.30.)"""
    if sort is ClientSort.NEWEST:
        return [_c.seq.desc()]
    keys: dict[ClientSort, list[ColumnElement[Any]]] = {
        ClientSort.CREATED: [],
        ClientSort.NAME: [_c.name_key],
        ClientSort.CREDITS_LEFT: [_c.credits_remaining.is_(None), _c.credits_remaining],
        ClientSort.USAGE: [_c.cycle_jobs.desc()],
        ClientSort.SPEND: [_c.total_spent.desc()],
    }
    return [*keys[sort], _c.seq.asc()]


def page(conn: Connection, query: ClientQuery) -> tuple[list[Row[Any]], int]:
    """The client rows of one page, and how many match (in the caller's read transaction).

    A search (a substring has no index) or ``at_limit`` (its credits change with every charge,
    so no index holds them) reads every client, and is expected to match few: its page and
    its count come from one pass, the ids of the page with the count of all matches (a window
    function), then those rows. Any other query counts from an index or one cheap pass and
    reads its page in order."""
    where = conditions(query)
    one_pass = query.needle is not None or query.status is ClientStatus.AT_LIMIT
    if one_pass and query.limit > 0:
        picked = conn.execute(_paged(select(_c.seq, func.count().over()), where, query)).all()
        if picked:
            seqs = [seq for seq, _ in picked]
            by_seq = {r.seq: r for r in conn.execute(select(clients).where(_c.seq.in_(seqs)))}
            return [by_seq[seq] for seq in seqs], int(picked[0][1])
    total = int(conn.execute(select(func.count()).select_from(clients).where(*where)).scalar_one())
    if one_pass or query.limit == 0:  # nothing on this page (past the last match, or none)
        return [], total
    return list(conn.execute(_paged(select(clients), where, query)).all()), total


def _paged(
    statement: Select[Any], where: list[ColumnElement[bool]], query: ClientQuery
) -> Select[Any]:
    return (
        statement.where(*where).order_by(*order(query.sort)).offset(query.offset).limit(query.limit)
    )


def overview(conn: Connection, now: datetime, location: str) -> StoreOverview:
    """The figures of :class:`.query.StoreOverview` (in the caller's read transaction: one
    snapshot). From indexes: the clients by plan and standing, the paying subscriptions by
    plan, the clients past due, the jobs of each day. What the charge changes (credits left,
    the cycle's jobs) has no index: one pass over the clients sums it, without grouping
    (sorting 100,000 rows into groups costs more than the pass)."""
    counts = {plan: [0, 0, 0] for plan in PlanId}  # active, inactive, paying
    for plan, active, number in conn.execute(
        select(_c.plan, _c.active, func.count()).group_by(_c.plan, _c.active)
    ):
        _figures(counts, plan, location)[0 if active else 1] += int(number)
    for plan, number in conn.execute(
        select(_c.plan, func.count()).where(_PAYING).group_by(_c.plan)
    ):
        _figures(counts, plan, location)[2] = int(number)
    due = conn.execute(select(func.count()).where(_PAST_DUE)).scalar_one()
    active, limited_plan = _c.active.is_(True), _c.credits_remaining.is_not(None)
    counted = and_(active, limited_plan)
    limited, jobs, taken = conn.execute(
        select(
            _count_if(_AT_LIMIT),
            _sum_if(active, _c.cycle_jobs),
            _sum_if(
                counted, func.coalesce(_c.cycle_allowance, _PLAN_ALLOWANCE) - _c.credits_remaining
            ),
        )
    ).one()
    # Credits used (``ledger.credits_used``): allowance + adjustments - credits left; the
    # current cycles' adjustments are few (an admin's), read by their (client, cycle) index.
    adjusted = conn.execute(
        select(func.coalesce(func.sum(adjustment_rows.c.amount), 0))
        .select_from(adjustment_rows)
        .join(
            clients,
            and_(
                _c.client_id == adjustment_rows.c.client_id,
                _c.cycle_no == adjustment_rows.c.cycle_no,
            ),
        )
        .where(counted)
    ).scalar_one()
    return StoreOverview(
        plans=tuple(PlanFigures(plan, *figures) for plan, figures in counts.items()),
        jobs_this_cycle=int(jobs),
        credits_used_this_cycle=int(taken) + int(adjusted),
        at_limit=int(limited),
        past_due=int(due),
        jobs_by_day=tuple(DayJobs(day, _jobs_on(conn, day)) for day in overview_days(now)),
    )


#: A cycle's allowance when the row has none of its own (``ledger.cycle_allowance``).
_PLAN_ALLOWANCE = case(
    {plan.value: PLANS[plan].jobs_per_month or 0 for plan in PlanId}, value=_c.plan, else_=0
)


def _figures(counts: dict[PlanId, list[int]], plan: str, location: str) -> list[int]:
    try:
        return counts[PlanId(plan)]
    except ValueError:
        raise StoreCorrupt(
            f"The billing database {location} holds an unknown plan {plan!r}"
        ) from None


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return _sum_if(condition, literal_column("1"))


def _sum_if(condition: ColumnElement[bool], value: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, value), else_=0)), 0)


#: The ledger rows records hold, charged in ``[b_from, b_to)``: from the index alone
#: (``ix_openclaw_ledger_day``, on the rows not archived).
_JOBS_BETWEEN = select(func.count()).where(
    ~ledger_rows.c.archived,
    ledger_rows.c.charged_at >= bindparam("b_from", type_=ledger_rows.c.charged_at.type),
    ledger_rows.c.charged_at < bindparam("b_to", type_=ledger_rows.c.charged_at.type),
)


def _jobs_on(conn: Connection, day: date) -> int:
    """Jobs charged on ``day`` (UTC) among each client's stored cycle and the one before it."""
    start = day_start(day)
    found = conn.execute(_JOBS_BETWEEN, {"b_from": start, "b_to": start + timedelta(days=1)})
    return int(found.scalar_one())
