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
from sqlalchemy import Connection, Row, Select, bindparam, select

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
from .base import StripeRef
from .sql_schema import adjustment_rows, api_key_rows, clients, ledger_rows, summary_rows


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
            CostEntry(
                timestamp=e.charged_at,
                cost=e.cost,
                job_id=e.job_id,
                credits=e.credits,
                held=e.held,
            )
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
    summaries = _summaries(conn, ids)
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


def _summaries(conn: Connection, ids: list[str]) -> dict[str, list[CycleSummary]]:
    """Each client's cycle summaries, oldest first (their ledgers are not filled in)."""
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
                credits=s.credits,
                spend=s.spend,
                credits_left=s.credits_left,
            )
        )
    return summaries


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
            max_active_jobs=r.max_active_jobs,
        )
    except (ValidationError, ValueError) as exc:
        raise StoreCorrupt(
            f"The billing database {location} holds an invalid client {r.client_id}: {exc}"
        ) from None


_KEY_FIELDS = tuple(ApiKeyRecord.model_fields)


def _account_by_digest() -> Select[Any]:
    """Authentication's one query: the client's row with each of its keys (a result row per
    key), found by one key's digest; its cost does not depend on the client's ledger."""
    found, every = api_key_rows.alias("found"), api_key_rows.alias("every")
    return (
        select(clients, *(every.c[name].label(f"key_{name}") for name in _KEY_FIELDS))
        .join_from(found, clients, found.c.client_id == clients.c.client_id)
        .join(every, every.c.client_id == clients.c.client_id)
        .where(found.c.digest == bindparam("digest"))
        .order_by(every.c.id)
    )


#: Built once: constructing a statement costs more in Python than SQLite takes to run it.
_ACCOUNT_BY_DIGEST = _account_by_digest()


def load_account(conn: Connection, digest: str, location: str) -> ClientRecord | None:
    """The client a key digest belongs to, with its keys but without its ledger (one query)."""
    rows = conn.execute(_ACCOUNT_BY_DIGEST, {"digest": digest}).all()
    if not rows:
        return None
    keys = [ApiKeyRecord(**{n: getattr(r, f"key_{n}") for n in _KEY_FIELDS}) for r in rows]
    return record_from_row(
        rows[0], keys, cost_log=[], adjustments=[], history=[], location=location
    )


def key_missing(conn: Connection, client_id: str, key_id: str) -> bool:
    """Whether the client has no key ``key_id`` (a touch that updated nothing asks)."""
    query = select(api_key_rows.c.id).where(
        api_key_rows.c.client_id == client_id, api_key_rows.c.key_id == key_id
    )
    return conn.execute(query).first() is None


def locate(conn: Connection, ref: StripeRef) -> str | None:
    """The client a Stripe reference names: by client id, else subscription, else customer."""
    for column, wanted in (
        (clients.c.client_id, ref.client_id),
        (clients.c.stripe_subscription_id, ref.subscription_id),
        (clients.c.stripe_customer_id, ref.customer_id),
    ):
        if wanted is None:
            continue
        found = conn.execute(
            select(clients.c.client_id).where(column == wanted).order_by(clients.c.seq)
        ).first()
        if found is not None:
            return str(found.client_id)
    return None
