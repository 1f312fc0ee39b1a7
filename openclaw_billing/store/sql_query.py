"""The operator's reads as SQL statements (for :class:`.sql.SqlStore`): a page of clients and
the overview, by the rules of :mod:`.query`, computed by the database (filters, orders,
counts and sums), never by loading every record. The JSON store answers the same over its
records (:mod:`.json_query`); the contract suite holds the two to the same answers.

Case-insensitive search and the name order read ``name_key`` and ``email_key``, the folded
name and email written with every record (:func:`.query.fold`), so no backend's own idea of
case or collation decides; on PostgreSQL the name order compares bytes (``COLLATE "C"``), as
SQLite and Python compare code points.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
)

from ..errors import StoreCorrupt
from ..plans import PlanId
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
from .sql_schema import clients, ledger_rows

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


def order(sort: ClientSort, dialect: str) -> list[ColumnElement[Any]]:
    """The ORDER BY of a sort, ending with creation order."""
    if sort is ClientSort.NEWEST:
        return [_c.seq.desc()]
    keys: dict[ClientSort, list[ColumnElement[Any]]] = {
        ClientSort.CREATED: [],
        ClientSort.NAME: [_c.name_key.collate("C") if dialect == "postgresql" else _c.name_key],
        ClientSort.CREDITS_LEFT: [_c.credits_remaining.asc().nulls_last()],
        ClientSort.USAGE: [_c.cycle_jobs.desc()],
        ClientSort.SPEND: [_c.total_spent.desc()],
    }
    return [*keys[sort], _c.seq.asc()]


def page(conn: Connection, query: ClientQuery, dialect: str) -> tuple[list[Row[Any]], int]:
    """The client rows of one page, and how many match (in the caller's read transaction)."""
    where = conditions(query)
    total = conn.execute(select(func.count()).select_from(clients).where(*where)).scalar_one()
    if query.limit == 0:
        return [], int(total)
    rows = conn.execute(
        select(clients)
        .where(*where)
        .order_by(*order(query.sort, dialect))
        .offset(query.offset)
        .limit(query.limit)
    ).all()
    return list(rows), int(total)


def overview(conn: Connection, now: datetime, location: str) -> StoreOverview:
    """The figures of :class:`.query.StoreOverview` (in the caller's read transaction: one
    snapshot): one pass over the clients, grouped by plan and standing, and a count of the
    ledger's index per day."""
    counts = {plan: [0, 0, 0] for plan in PlanId}  # active, inactive, paying
    limited = due = jobs = credits = 0
    active, limited_plan = _c.active.is_(True), _c.credits_remaining.is_not(None)
    for row in conn.execute(
        select(
            _c.plan,
            _c.active,
            func.count(),
            _count_if(_PAYING),
            _count_if(_AT_LIMIT),
            _count_if(_PAST_DUE),
            _sum_if(active, _c.cycle_jobs),
            _sum_if(and_(active, limited_plan), _c.cycle_jobs),
        ).group_by(_c.plan, _c.active)
    ):
        try:
            figures = counts[PlanId(row[0])]
        except ValueError:
            raise StoreCorrupt(
                f"The billing database {location} holds an unknown plan {row[0]!r}"
            ) from None
        figures[0 if row[1] else 1] += int(row[2])
        figures[2] += int(row[3])
        limited, due = limited + int(row[4]), due + int(row[5])
        jobs, credits = jobs + int(row[6]), credits + int(row[7])
    return StoreOverview(
        plans=tuple(PlanFigures(plan, *figures) for plan, figures in counts.items()),
        jobs_this_cycle=jobs,
        credits_used_this_cycle=credits,
        at_limit=limited,
        past_due=due,
        jobs_by_day=tuple(DayJobs(day, _jobs_on(conn, day)) for day in overview_days(now)),
    )


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
