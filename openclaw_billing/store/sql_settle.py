"""The SQL store's settlement path: a :class:`~.base.Settle` (or a :class:`~.base.MarkMeter`)
on the client's locked row, the job's row and the job's ledger row only, in the batch's
transaction (for :class:`.sql.SqlStore`); the cost does not grow with the client's ledger.

The rules are not written again here: :func:`openclaw_billing.outcomes.apply` (and
:func:`~openclaw_billing.outcomes.mark_meter`) decide on a partial record, the locked row with,
for its ledger, only the job's entry, where the whole record would hold it (the current cycle's
ledger, or the newest summary's entries for a hold taken before the cycle rolled; an older
entry is not in a record). What the rules changed of it is written back as statements: the
ledger row's ``credits`` and ``held``; the credits given back, relative to the locked row
(``credits_remaining + :back``), the spend and ``updated_at`` of the client's row; the job's
row. That is what ``sql_write.save`` of the whole record writes for a settlement (no summary
row changes: closing a hold of the previous cycle changes its entry alone);
``tests/store/test_contract_settle.py`` checks the two agree.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, update

from .. import outcomes
from ..errors import JobNotFound
from ..models import ClientRecord, CostEntry, CycleSummary
from ..outcomes import Settled
from ..plans import PlanId
from .base import MarkMeter, Settle
from .sql_batch import Write
from .sql_charge import find_job, job_of, job_update
from .sql_read import record_from_row
from .sql_schema import clients, job_rows, ledger_rows

# Built once: constructing a statement costs more in Python than SQLite takes to run it.
#: The job's row with its ledger row (None columns: no ledger row), in one round trip.
_JOB_AND_ENTRY = (
    select(
        job_rows,
        ledger_rows.c.cycle_no.label("l_cycle"),
        ledger_rows.c.cost.label("l_cost"),
        ledger_rows.c.charged_at.label("l_at"),
        ledger_rows.c.credits.label("l_credits"),
        ledger_rows.c.held.label("l_held"),
    )
    .select_from(
        job_rows.outerjoin(
            ledger_rows,
            (ledger_rows.c.client_id == job_rows.c.client_id)
            & (ledger_rows.c.job_id == job_rows.c.job_id),
        )
    )
    .where(job_rows.c.client_id == bindparam("b_client"), job_rows.c.job_id == bindparam("b_job"))
)
_CLOSE_ENTRY = (
    update(ledger_rows)
    .where(
        ledger_rows.c.client_id == bindparam("b_client"),
        ledger_rows.c.job_id == bindparam("b_job"),
    )
    .values(credits=bindparam("b_credits"), held=bindparam("b_held"))
)
#: The credits given back, relative to the locked row (NULL, unlimited, stays NULL).
_GIVE_BACK = (
    update(clients)
    .where(clients.c.client_id == bindparam("b_client"))
    .values(
        credits_remaining=clients.c.credits_remaining + bindparam("b_back"),
        total_spent=bindparam("b_spent"),
        updated_at=bindparam("b_now"),
    )
)


def move_on_row(
    conn: Connection, row: Row[Any], op: Settle | MarkMeter, location: str
) -> tuple[Settled, list[Write]]:
    """The move of ``op``'s job on the client's locked ``row`` (its cycle current), and the
    statements that store it (none: nothing changed). Raises ``JobNotFound`` and the rules'
    refusals, having written nothing."""
    if isinstance(op, MarkMeter):
        stored = find_job(conn, row.client_id, op.job_id)
        if stored is None:
            raise JobNotFound()
        settled = outcomes.mark_meter(stored, op.mark, op.now)
        return settled, [job_update(settled.job)] if settled.changed else []
    found = conn.execute(_JOB_AND_ENTRY, {"b_client": row.client_id, "b_job": op.job_id}).first()
    if found is None:
        raise JobNotFound()
    entry = (
        None
        if found.l_cycle is None
        else CostEntry(
            timestamp=found.l_at,
            cost=found.l_cost,
            job_id=op.job_id,
            credits=found.l_credits,
            held=found.l_held,
        )
    )
    view = _view(row, entry, found.l_cycle, location)
    settled = outcomes.apply(view, job_of(found), op.report, op.now)
    if not settled.changed:
        return settled, []
    writes = [job_update(settled.job)]
    closed = _entry_of(view)
    if entry is not None and closed is not None and closed != entry:
        closing = {"b_credits": closed.credits, "b_held": closed.held}
        writes.append((_CLOSE_ENTRY, {"b_client": row.client_id, "b_job": op.job_id, **closing}))
    if (view.credits_remaining, view.total_spent, view.updated_at) != (
        row.credits_remaining,
        row.total_spent,
        row.updated_at,
    ):
        back = (
            0
            if view.credits_remaining is None or row.credits_remaining is None
            else view.credits_remaining - row.credits_remaining
        )
        values = {"b_back": back, "b_spent": view.total_spent, "b_now": view.updated_at}
        writes.append((_GIVE_BACK, {"b_client": row.client_id, **values}))
    return settled, writes


def _view(
    row: Row[Any], entry: CostEntry | None, cycle_no: int | None, location: str
) -> ClientRecord:
    """The client as the rules read it: its row, with the job's ledger ``entry`` where the
    whole record would hold it (the entry of cycle ``cycle_no``; the row's ``cycle_no`` is the
    current one's)."""
    current = entry is not None and cycle_no == row.cycle_no
    previous = entry is not None and row.cycle_no >= 1 and cycle_no == row.cycle_no - 1
    history = []
    if previous:
        assert entry is not None
        # Only its entries are read (``outcomes.settle_hold``); the rest stands in.
        history.append(
            CycleSummary(
                start=row.billing_cycle_start,
                end=row.billing_cycle_start,
                plan=PlanId(row.plan),
                allowance=None,
                jobs=0,
                spend=0.0,
                credits_left=None,
                entries=[entry],
            )
        )
    return record_from_row(
        row,
        [],
        cost_log=[entry] if current and entry is not None else [],
        adjustments=[],
        history=history,
        location=location,
    )


def _entry_of(view: ClientRecord) -> CostEntry | None:
    """The job's ledger entry in the view, as the rules left it."""
    meta = view.metadata
    for entries in (meta.cost_log, *(s.entries for s in meta.cycle_history)):
        if entries:
            return entries[0]
    return None
