"""Reading whole client records from the SQL tables (for :class:`.sql.SqlStore`).

A record is its ``openclaw_clients`` row with its keys, the current and previous cycles' ledger
rows, the current cycle's adjustments and the cycle summaries: several statements, so the
caller runs them in one read transaction, which on PostgreSQL is REPEATABLE READ (one
snapshot: a charge committed meanwhile is in all of them or in none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Row, select

from ..errors import StoreCorrupt
from ..models import (
    ApiKeyRecord,
    ClientMetadata,
    ClientRecord,
    CostEntry,
    CreditAdjustment,
    CycleSummary,
)
from ..plans import PlanId
from .sql import adjustment_rows, api_key_rows, clients, ledger_rows, summary_rows


def load_records(conn: Connection, rows: Sequence[Row[Any]], location: str) -> list[ClientRecord]:
    """Whole records for client rows, in three queries however many rows."""
    if not rows:
        return []
    ids = [r.client_id for r in rows]
    entries: dict[tuple[str, int], list[CostEntry]] = {}
    # Only the current and the previous cycle's rows belong in a record; a long history
    # stays in the table (authenticating a client must not cost more as it ages).
    recent = (
        select(ledger_rows)
        .join(clients, clients.c.client_id == ledger_rows.c.client_id)
        .where(
            ledger_rows.c.client_id.in_(ids),
            ledger_rows.c.cycle_no >= clients.c.cycle_no - 1,
        )
        .order_by(ledger_rows.c.id)
    )
    for e in conn.execute(recent):
        entries.setdefault((e.client_id, e.cycle_no), []).append(
            CostEntry(timestamp=e.charged_at, cost=e.cost, job_id=e.job_id)
        )
    adjustments: dict[tuple[str, int], list[CreditAdjustment]] = {}
    for a in conn.execute(
        select(adjustment_rows)
        .join(clients, clients.c.client_id == adjustment_rows.c.client_id)
        .where(
            adjustment_rows.c.client_id.in_(ids),
            adjustment_rows.c.cycle_no == clients.c.cycle_no,
        )
        .order_by(adjustment_rows.c.id)
    ):
        adjustments.setdefault((a.client_id, a.cycle_no), []).append(
            CreditAdjustment(timestamp=a.timestamp, amount=a.amount, reason=a.reason)
        )
    keys: dict[str, list[ApiKeyRecord]] = {}
    for k in conn.execute(
        select(api_key_rows).where(api_key_rows.c.client_id.in_(ids)).order_by(api_key_rows.c.id)
    ):
        fields = {name: getattr(k, name) for name in ApiKeyRecord.model_fields}
        keys.setdefault(k.client_id, []).append(ApiKeyRecord(**fields))
    summaries: dict[str, list[CycleSummary]] = {}
    for s in conn.execute(
        select(summary_rows)
        .where(summary_rows.c.client_id.in_(ids))
        .order_by(summary_rows.c.cycle_no)
    ):
        summaries.setdefault(s.client_id, []).append(
            CycleSummary(
                start=s.start,
                end=s.end,
                plan=PlanId(s.plan),
                allowance=s.allowance,
                adjustments=[CreditAdjustment.model_validate(a) for a in s.adjustments],
                jobs=s.jobs,
                spend=s.spend,
                credits_left=s.credits_left,
            )
        )
    records = []
    for r in rows:
        history = summaries.get(r.client_id, [])
        if history:  # as in the JSON store: the newest summary keeps its ledger
            history[-1].entries = entries.get((r.client_id, r.cycle_no - 1), [])
        records.append(
            record_from_row(
                r,
                keys.get(r.client_id, []),
                cost_log=entries.get((r.client_id, r.cycle_no), []),
                adjustments=adjustments.get((r.client_id, r.cycle_no), []),
                history=history,
                location=location,
            )
        )
    return records


def record_from_row(
    r: Row[Any],
    keys: list[ApiKeyRecord],
    *,
    cost_log: list[CostEntry],
    adjustments: list[CreditAdjustment],
    history: list[CycleSummary],
    location: str,
) -> ClientRecord:
    """A record from its ``clients`` row, its keys and the ledger parts given."""
    try:
        return ClientRecord(
            client_id=r.client_id,
            name=r.name,
            email=r.email,
            api_key_hash=r.api_key_hash,
            api_key_prefix=r.api_key_prefix,
            plan=PlanId(r.plan),
            credits_remaining=r.credits_remaining,
            total_spent=r.total_spent,
            created_at=r.created_at,
            updated_at=r.updated_at,
            active=r.active,
            stripe_customer_id=r.stripe_customer_id,
            stripe_subscription_id=r.stripe_subscription_id,
            billing_cycle_start=r.billing_cycle_start,
            billing_cycle_end=r.billing_cycle_end,
            metadata=ClientMetadata(
                credit_adjustments=adjustments,
                cost_log=cost_log,
                cycle_history=history,
                cycle_allowance=r.cycle_allowance,
                subscription_status=r.subscription_status,
                stripe_event_at=r.stripe_event_at,
                **(r.metadata_extra or {}),
            ),
            api_keys=keys,
            rate_limit_per_minute=r.rate_limit_per_minute,
            ip_allowlist=r.ip_allowlist or [],
        )
    except (ValidationError, ValueError) as exc:
        raise StoreCorrupt(
            f"The billing database {location} holds an invalid client {r.client_id}: {exc}"
        ) from None
