"""The operator's reads over records in memory (the JSON store): a page of clients and the
overview, by the rules of :mod:`.query`. The SQL store answers the same with statements
(:mod:`.sql_query`); the contract suite holds the two to the same answers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import chain
from typing import Any

from ..ledger import credits_used
from ..models import ClientRecord
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
    fold,
    overview_days,
)


def at_limit(record: ClientRecord) -> bool:
    """Active, on a limited plan, with no credit left (as stored)."""
    credits = record.credits_remaining
    return record.active and credits is not None and credits <= 0


def past_due(record: ClientRecord) -> bool:
    return record.metadata.subscription_status in PAST_DUE_STATUSES


def paying(record: ClientRecord) -> bool:
    """A Stripe subscription that is paid for, or being asked for payment."""
    return (
        record.stripe_subscription_id is not None
        and record.metadata.subscription_status in PAYING_STATUSES
    )


_STATUS: dict[ClientStatus, Callable[[ClientRecord], bool]] = {
    ClientStatus.ACTIVE: lambda r: r.active,
    ClientStatus.INACTIVE: lambda r: not r.active,
    ClientStatus.PAST_DUE: past_due,
    ClientStatus.AT_LIMIT: at_limit,
}


def _matcher(query: ClientQuery) -> Callable[[ClientRecord], bool]:
    needle = query.needle
    folded = None if needle is None else fold(needle)
    status = None if query.status is None else _STATUS[query.status]

    def matches(r: ClientRecord) -> bool:
        if query.plan is not None and r.plan != query.plan:
            return False
        if query.active is not None and r.active != query.active:
            return False
        if status is not None and not status(r):
            return False
        if needle is None or folded is None:
            return True
        return folded in fold(r.name) or folded in fold(r.email) or r.client_id.startswith(needle)

    return matches


#: Unlimited plans have no credits to count: after every number.
_UNLIMITED = float("inf")
#: Each order's key of a record. The matches are sorted in creation order already and the
#: sort is stable, so equal keys keep it. Every key is a plain number or string: a store of
#: 100,000 clients sorted by tuples would hold 100,000 more objects for the cycle collector to
#: walk, with every record of the store, on the read's next collection (seconds, measured).
_ORDER: dict[ClientSort, Callable[[ClientRecord], Any]] = {
    ClientSort.NAME: lambda r: fold(r.name),
    ClientSort.CREDITS_LEFT: lambda r: (
        _UNLIMITED if r.credits_remaining is None else r.credits_remaining
    ),
    ClientSort.USAGE: lambda r: -len(r.metadata.cost_log),
    ClientSort.SPEND: lambda r: -r.total_spent,
}


def select_clients(
    records: Iterable[ClientRecord], query: ClientQuery
) -> tuple[list[ClientRecord], int]:
    """One page of ``records`` (given in creation order) and how many match. The page holds
    the records themselves: the caller copies what it hands out."""
    matches = _matcher(query)
    found = [r for r in records if matches(r)]
    if query.sort is ClientSort.NEWEST:
        found.reverse()
    elif query.sort is not ClientSort.CREATED:
        found.sort(key=_ORDER[query.sort])
    return found[query.offset : query.offset + query.limit], len(found)


def overview_of(records: Sequence[ClientRecord], now: datetime) -> StoreOverview:
    """The figures of :class:`.query.StoreOverview` over every record."""
    counts = {plan: [0, 0, 0] for plan in PlanId}  # active, inactive, paying
    jobs = credits = limited = due = 0
    days = dict.fromkeys(overview_days(now), 0)
    for r in records:
        figures = counts[r.plan]
        figures[0 if r.active else 1] += 1
        figures[2] += paying(r)
        limited += at_limit(r)
        due += past_due(r)
        meta = r.metadata
        if r.active:
            jobs += len(meta.cost_log)
            credits += credits_used(r) or 0
        previous = meta.cycle_history[-1].entries if meta.cycle_history else []
        for entry in chain(meta.cost_log, previous):
            day = entry.timestamp.date()  # stored in UTC
            if day in days:
                days[day] += 1
    return StoreOverview(
        plans=tuple(PlanFigures(plan, *figures) for plan, figures in counts.items()),
        jobs_this_cycle=jobs,
        credits_used_this_cycle=credits,
        at_limit=limited,
        past_due=due,
        jobs_by_day=tuple(DayJobs(day, n) for day, n in days.items()),
    )
