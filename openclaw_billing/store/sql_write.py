"""Writing client records to the SQL tables (for :class:`.sql.SqlStore`).

A change is written as what it changed: the client's row is updated whole, and of its child
rows (ledger, adjustments, summaries, keys) only the new ones are inserted (one batched
statement per table), the changed keys updated and the refunded jobs deleted, all in the
caller's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, update

from ..models import ApiKeyRecord, ClientRecord, CostEntry
from .query import fold
from .sql_schema import adjustment_rows, api_key_rows, clients, ledger_rows, summary_rows


def columns(record: ClientRecord) -> dict[str, Any]:
    """The ``openclaw_clients`` row of a record."""
    meta = record.metadata
    return {
        "client_id": record.client_id,
        "name": record.name,
        "email": record.email,
        "api_key_hash": record.api_key_hash,
        "api_key_prefix": record.api_key_prefix,
        "plan": record.plan.value,
        "credits_remaining": record.credits_remaining,
        "total_spent": record.total_spent,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "active": record.active,
        "stripe_customer_id": record.stripe_customer_id,
        "stripe_subscription_id": record.stripe_subscription_id,
        "billing_cycle_start": record.billing_cycle_start,
        "billing_cycle_end": record.billing_cycle_end,
        "cycle_no": len(meta.cycle_history),
        "cycle_allowance": meta.cycle_allowance,
        "subscription_status": meta.subscription_status,
        "stripe_event_at": meta.stripe_event_at,
        "metadata_extra": dict(meta.model_extra or {}),
        "rate_limit_per_minute": record.rate_limit_per_minute,
        "ip_allowlist": list(record.ip_allowlist),
        "name_key": fold(record.name),
        "email_key": fold(record.email),
        "cycle_jobs": len(meta.cost_log),
        "max_active_jobs": record.max_active_jobs,
    }


def save(
    conn: Connection,
    before: ClientRecord,
    after: ClientRecord,
    *,
    new_record: bool = False,
) -> None:
    """Write back what a ledger transition changed in ``before`` to make ``after``. For a
    new (or imported) record, the newest summary's ledger entries are written too; after a
    reset they are already there, as the old cycle's rows."""
    cid = after.client_id
    conn.execute(update(clients).where(clients.c.client_id == cid).values(columns(after)))
    summaries, entries = _new_summaries(before, after, new_record=new_record)
    old_no, new_no = len(before.metadata.cycle_history), len(after.metadata.cycle_history)
    same_cycle = old_no == new_no
    if not same_cycle and not new_record:  # the record no longer holds the cycles before these
        conn.execute(
            update(ledger_rows)
            .where(
                ledger_rows.c.client_id == cid,
                ledger_rows.c.cycle_no < new_no - 1,
                ~ledger_rows.c.archived,
            )
            .values(archived=True)
        )
    kept = {e.job_id for e in before.metadata.cost_log} if same_cycle else set()
    gone = kept - {e.job_id for e in after.metadata.cost_log}
    if not new_record:  # a hold closed; in the previous cycle too, one this change rolled
        _settled_entries(conn, before, after)
    if gone:  # a refund
        conn.execute(
            delete(ledger_rows).where(
                ledger_rows.c.client_id == cid, ledger_rows.c.job_id.in_(gone)
            )
        )
    entries += [
        _ledger_row(cid, new_no, e) for e in after.metadata.cost_log if e.job_id not in kept
    ]
    done = len(before.metadata.credit_adjustments) if same_cycle else 0
    adjustments = [
        {
            "client_id": cid,
            "cycle_no": new_no,
            "amount": a.amount,
            "reason": a.reason,
            "timestamp": a.timestamp,
        }
        for a in after.metadata.credit_adjustments[done:]
    ]
    new_keys = _save_keys(conn, before, after)
    # One batched statement per table: a 200-entry ledger is one round trip, not 200.
    for table, rows in (
        (summary_rows, summaries),
        (ledger_rows, entries),
        (adjustment_rows, adjustments),
        (api_key_rows, new_keys),
    ):
        if rows:
            conn.execute(insert(table), rows)


def _new_summaries(
    before: ClientRecord, after: ClientRecord, *, new_record: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The summary rows of the cycles that ended between ``before`` and ``after`` and, for a
    new record, the ledger rows of those cycles."""
    cid = after.client_id
    old_no, new_no = len(before.metadata.cycle_history), len(after.metadata.cycle_history)
    summaries, entries = [], []
    for no in range(old_no, new_no):
        s = after.metadata.cycle_history[no]
        summaries.append(
            {
                "client_id": cid,
                "cycle_no": no,
                "start": s.start,
                "end": s.end,
                "plan": s.plan.value,
                "allowance": s.allowance,
                "adjustments": [a.model_dump(mode="json") for a in s.adjustments],
                "jobs": s.jobs,
                "credits": s.credits,
                "spend": s.spend,
                "credits_left": s.credits_left,
            }
        )
        if new_record:
            entries += [_ledger_row(cid, no, e, archived=no < new_no - 1) for e in s.entries]
    return summaries, entries


def _save_keys(conn: Connection, before: ClientRecord, after: ClientRecord) -> list[dict[str, Any]]:
    """Update the keys that changed, only in the columns that changed (``touch_key`` writes
    ``last_used_at`` without the client's lock: writing back the value read would undo a use
    recorded meanwhile); return the rows of the new ones, for the caller to insert."""
    cid = after.client_id
    known = {k.key_id: k for k in before.api_keys}
    for k in after.api_keys:
        old = known.get(k.key_id)
        if old is None or k == old:
            continue
        changed = {
            name: getattr(k, name)
            for name in ("label", "expires_at", "revoked_at", "last_used_at")
            if getattr(k, name) != getattr(old, name)
        }
        if changed:
            conn.execute(
                update(api_key_rows)
                .where(api_key_rows.c.client_id == cid, api_key_rows.c.key_id == k.key_id)
                .values(**changed)
            )
    return [key_row(cid, k) for k in after.api_keys if k.key_id not in known]


def _ledger_row(
    client_id: str, cycle_no: int, entry: CostEntry, *, archived: bool = False
) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "job_id": entry.job_id,
        "cycle_no": cycle_no,
        "cost": entry.cost,
        "charged_at": entry.timestamp,
        "archived": archived,
        "credits": entry.credits,
        "held": entry.held,
    }


def _settled_entries(conn: Connection, before: ClientRecord, after: ClientRecord) -> None:
    """Update the ledger rows whose hold was settled (their credits and ``held``): of this
    cycle, and of the one before it (a hold taken before the cycle rolled, by this change or
    an earlier one)."""

    def holds(record: ClientRecord) -> dict[str, tuple[int, bool]]:
        meta = record.metadata
        last = meta.cycle_history[-1].entries if meta.cycle_history else []
        return {e.job_id: (e.credits, e.held) for e in (*last, *meta.cost_log)}

    old = holds(before)
    for job_id, (credits, held) in holds(after).items():
        if job_id in old and old[job_id] != (credits, held):
            conn.execute(
                update(ledger_rows)
                .where(ledger_rows.c.client_id == after.client_id, ledger_rows.c.job_id == job_id)
                .values(credits=credits, held=held)
            )


def key_row(client_id: str, key: ApiKeyRecord) -> dict[str, Any]:
    return {"client_id": client_id, **key.model_dump()}
