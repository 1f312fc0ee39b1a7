"""The SQL store's hot path: a charge and its job as a few statements on the locked client
row, in the batch's transaction (for :class:`.sql.SqlStore`), and the jobs' reads.

The statements ask the questions of :func:`openclaw_billing.jobs.accept` in its order: the
job stored under the id (a retry: the first answer), the key re-checked, the ledger row of
the id (a replay), the refusal (:func:`openclaw_billing.ledger.refusal`), then one conditional
``UPDATE ... WHERE credits_remaining > 0``, the ledger row and the job row. A refusal is
decided before anything is written, so it needs no savepoint to be undone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql import Executable

from .. import ledger
from ..errors import CreditLimitReached, InvalidApiKey
from ..jobs import Charged, JobStatus, MeterState, StoredJob, new_job, reservation
from ..models import ChargeResult, key_usable
from .base import Charge
from .capabilities import MAX_SAME_ID
from .sql_schema import api_key_rows, clients, job_rows, ledger_rows

# Built once: constructing a statement costs more in Python than SQLite takes to run it.
LOCK_ROW = select(clients).where(clients.c.client_id == bindparam("b_client")).with_for_update()
_FIND_CHARGE = select(ledger_rows.c.cost, ledger_rows.c.charged_at).where(
    ledger_rows.c.client_id == bindparam("b_client"), ledger_rows.c.job_id == bindparam("b_job")
)
_FIND_JOB = select(job_rows).where(
    job_rows.c.client_id == bindparam("b_client"), job_rows.c.job_id == bindparam("b_job")
)
_KEY_ROW = (api_key_rows.c.client_id == bindparam("b_client")) & (
    api_key_rows.c.key_id == bindparam("b_key")
)
_JOB_ROW = (job_rows.c.client_id == bindparam("b_client")) & (
    job_rows.c.job_id == bindparam("b_job")
)
_CHARGE_ROW = (ledger_rows.c.client_id == bindparam("b_client")) & (
    ledger_rows.c.job_id == bindparam("b_job")
)
#: The three questions asked before a charge, in one round trip (each statement costs a round
#: trip to PostgreSQL and about 60 us of Python): is a job stored under the id, is the key
#: there and when was it revoked or does it expire, was the id charged and when, for how much.
_PROBE = select(
    select(job_rows.c.id).where(_JOB_ROW).scalar_subquery().label("job"),
    select(api_key_rows.c.id).where(_KEY_ROW).scalar_subquery().label("key"),
    select(api_key_rows.c.revoked_at).where(_KEY_ROW).scalar_subquery().label("revoked_at"),
    select(api_key_rows.c.expires_at).where(_KEY_ROW).scalar_subquery().label("expires_at"),
    select(ledger_rows.c.cost).where(_CHARGE_ROW).scalar_subquery().label("cost"),
    select(ledger_rows.c.charged_at).where(_CHARGE_ROW).scalar_subquery().label("charged_at"),
)
#: Charge a limited plan: one conditional UPDATE (not enough credits left: no row).
_TAKE_CREDIT = (
    update(clients)
    .where(
        clients.c.client_id == bindparam("b_client"),
        clients.c.credits_remaining >= bindparam("b_credits"),
    )
    .values(
        credits_remaining=clients.c.credits_remaining - bindparam("b_credits"),
        cycle_jobs=clients.c.cycle_jobs + 1,
        total_spent=bindparam("b_spent"),
        updated_at=bindparam("b_now"),
    )
)
#: An unlimited plan: log the spend only.
_LOG_ONLY = (
    update(clients)
    .where(clients.c.client_id == bindparam("b_client"))
    .values(
        cycle_jobs=clients.c.cycle_jobs + 1,
        total_spent=bindparam("b_spent"),
        updated_at=bindparam("b_now"),
    )
)
_INSERT_LEDGER = insert(ledger_rows)
_INSERT_JOB = insert(job_rows)
#: The statuses of a job that may hold credits.
_OPEN = [s.value for s in JobStatus if s.open]
#: The client's jobs holding credits now (a job charged at intake has no hold).
_ACTIVE = select(func.count()).where(
    job_rows.c.client_id == bindparam("b_client"),
    job_rows.c.status.in_(_OPEN),
    job_rows.c.hold_until.is_not(None),
)
_UPDATE_JOB = (
    update(job_rows)
    .where(_JOB_ROW)
    .values(
        status=bindparam("b_status"),
        hold_until=bindparam("b_hold"),
        outcome=bindparam("b_outcome"),
        meter_state=bindparam("b_meter"),
    )
)


def lock_row(conn: Connection, client_id: str) -> Row[Any] | None:
    """Lock the client's row for the transaction and read it (None: no such client)."""
    return conn.execute(LOCK_ROW, {"b_client": client_id}).first()


def charge_locked(conn: Connection, row: Row[Any], op: Charge) -> Charged:
    """One charge on the client's locked ``row`` (its cycle current). Raises the refusal,
    having written nothing."""
    cid, job_id, now = row.client_id, op.job_id, op.now
    probe = conn.execute(_PROBE, {"b_client": cid, "b_job": job_id, "b_key": op.key_id}).one()
    if probe.job is not None:
        stored = conn.execute(_FIND_JOB, {"b_client": cid, "b_job": job_id}).one()
        return _replayed(conn, row, job_of(stored))
    if op.key_id is not None and (
        probe.key is None or not key_usable(probe.revoked_at, probe.expires_at, now)
    ):
        raise InvalidApiKey()
    if probe.cost is not None:
        result = ChargeResult(
            cid, job_id, probe.cost, probe.charged_at, row.credits_remaining, True
        )
    else:
        result = _take(conn, row, job_id, op.cost, now, reservation(op.job))
    if op.job is None:
        return Charged(result, None)
    job = new_job(cid, job_id, op.job, result, row.plan)
    conn.execute(_INSERT_JOB, job_values(job))
    return Charged(result, job)


def _take(
    conn: Connection,
    row: Row[Any],
    job_id: str,
    cost: float,
    now: datetime,
    reserved: int | None,
) -> ChargeResult:
    """The charge (``reserved``: the credits to hold; None: one credit, charged now)."""
    cid = row.client_id
    cap = None if reserved is None else ledger.concurrency_cap(row.plan, row.max_active_jobs)
    refused = ledger.refusal(
        active=row.active,
        subscription_status=row.subscription_status,
        disputed=bool(ledger.dispute_ids(row.metadata_extra)),
        credits_remaining=row.credits_remaining,
        price=1 if reserved is None else reserved,
        active_jobs=0 if cap is None else active_jobs(conn, cid),
        cap=cap,
    )
    if refused is not None:
        raise refused.error()
    remaining, credits = row.credits_remaining, 1 if reserved is None else reserved
    spent = round(row.total_spent + cost, ledger.SPEND_DECIMALS)
    statement = _LOG_ONLY if remaining is None else _TAKE_CREDIT
    values = {"b_client": cid, "b_spent": spent, "b_now": now, "b_credits": credits}
    if conn.execute(statement, values).rowcount != 1:
        raise CreditLimitReached()
    conn.execute(
        _INSERT_LEDGER,
        {
            "client_id": cid,
            "job_id": job_id,
            "cycle_no": row.cycle_no,
            "cost": cost,
            "charged_at": now,
            "credits": credits,
            "held": reserved is not None,
        },
    )
    left = None if remaining is None else remaining - credits
    return ChargeResult(cid, job_id, cost, now, left, replayed=False)


def active_jobs(conn: Connection, client_id: str) -> int:
    """How many of the client's jobs hold credits, as the transaction sees them."""
    return int(conn.execute(_ACTIVE, {"b_client": client_id}).scalar_one())


def _replayed(conn: Connection, row: Row[Any], job: StoredJob) -> Charged:
    charge = conn.execute(_FIND_CHARGE, {"b_client": row.client_id, "b_job": job.job_id}).first()
    cost, at = (charge.cost, charge.charged_at) if charge is not None else (0.0, job.created_at)
    result = ChargeResult(row.client_id, job.job_id, cost, at, row.credits_remaining, True)
    return Charged(result, job)


#: What the ``outcome`` column holds of a job.
_LIFE = {"receipt", "failure_class", "usage", "started_at", "ended_at"}


def _life(job: StoredJob) -> dict[str, Any]:
    """The job's status, hold and the rest of its life, as its row's columns."""
    outcome = job.model_dump(mode="json", include=_LIFE, exclude_none=True)
    receipt = job.receipt
    meter = None if receipt is None else receipt.meter
    return {
        "status": job.status.value,
        "hold_until": None if receipt is None else receipt.hold_until,
        "outcome": json.dumps(outcome, separators=(",", ":")) if outcome else None,
        "meter_state": None if meter is None else meter.state.value,
    }


def job_values(job: StoredJob) -> dict[str, Any]:
    """The ``openclaw_jobs`` row of a job."""
    return {
        "client_id": job.client_id,
        "job_id": job.job_id,
        "created_at": job.created_at,
        "fields": json.dumps(job.fields, ensure_ascii=False, separators=(",", ":")),
        "request_hash": job.request_hash,
        "credits_remaining": job.credits_remaining,
        **_life(job),
    }


def update_job(conn: Connection, job: StoredJob) -> None:
    """Write a stored job's new status, hold and outcome."""
    conn.execute(*job_update(job))


def job_update(job: StoredJob) -> tuple[Executable, dict[str, Any]]:
    """The statement that writes a stored job's new status, hold and outcome, with its
    parameters."""
    life = _life(job)
    return _UPDATE_JOB, {
        "b_client": job.client_id,
        "b_job": job.job_id,
        "b_status": life["status"],
        "b_hold": life["hold_until"],
        "b_outcome": life["outcome"],
        "b_meter": life["meter_state"],
    }


def job_of(row: Row[Any]) -> StoredJob:
    if row.outcome is not None or row.status != JobStatus.QUEUED:
        life = json.loads(row.outcome) if row.outcome is not None else {}
        return StoredJob.model_validate(
            {
                "client_id": row.client_id,
                "job_id": row.job_id,
                "created_at": row.created_at,
                "fields": json.loads(row.fields),
                "request_hash": row.request_hash,
                "credits_remaining": row.credits_remaining,
                "status": row.status,
                **life,
            }
        )
    return StoredJob.model_construct(
        client_id=row.client_id,
        job_id=row.job_id,
        created_at=row.created_at,
        fields=json.loads(row.fields),
        request_hash=row.request_hash,
        credits_remaining=row.credits_remaining,
    )


_BY_ID = select(job_rows).where(job_rows.c.job_id == bindparam("b_job")).limit(MAX_SAME_ID)
_OVERDUE = (
    select(job_rows)
    .where(job_rows.c.status.in_(_OPEN), job_rows.c.hold_until < bindparam("b_now"))
    .order_by(job_rows.c.hold_until)
    .limit(bindparam("b_limit"))
)


#: The meter outbox, read from its index: the pending reports, in the order their jobs were
#: stored (close to the order they settled).
_PENDING_METERS = (
    select(job_rows)
    .where(job_rows.c.meter_state == MeterState.PENDING.value)
    .order_by(job_rows.c.id)
    .limit(bindparam("b_limit"))
)


def pending_meter_reports(conn: Connection, limit: int) -> list[StoredJob]:
    rows = conn.execute(_PENDING_METERS, {"b_limit": max(limit, 0)})
    return [job_of(r) for r in rows]


def jobs_by_id(conn: Connection, job_id: str) -> list[StoredJob]:
    return [job_of(r) for r in conn.execute(_BY_ID, {"b_job": job_id})]


def expired_holds(conn: Connection, now: datetime, limit: int) -> list[StoredJob]:
    rows = conn.execute(_OVERDUE, {"b_now": now, "b_limit": limit})
    return [job_of(r) for r in rows]


def find_job(conn: Connection, client_id: str, job_id: str) -> StoredJob | None:
    row = conn.execute(_FIND_JOB, {"b_client": client_id, "b_job": job_id}).first()
    return None if row is None else job_of(row)


_CLIENT_JOBS = (
    select(job_rows)
    .where(job_rows.c.client_id == bindparam("b_client"))
    .order_by(job_rows.c.created_at, job_rows.c.id)
)
_CLIENT_JOBS_SINCE = _CLIENT_JOBS.where(job_rows.c.created_at >= bindparam("b_since"))


def client_jobs(conn: Connection, client_id: str, since: datetime | None) -> list[StoredJob]:
    if since is None:
        rows = conn.execute(_CLIENT_JOBS, {"b_client": client_id})
    else:
        rows = conn.execute(_CLIENT_JOBS_SINCE, {"b_client": client_id, "b_since": since})
    return [job_of(r) for r in rows]


def import_jobs(conn: Connection, jobs: Sequence[StoredJob]) -> int:
    """Insert the jobs not stored yet (by client and id) whose client exists; returns how many
    this call stored."""
    known_clients = set(conn.execute(select(clients.c.client_id)).scalars())
    have = {
        (r.client_id, r.job_id)
        for r in conn.execute(select(job_rows.c.client_id, job_rows.c.job_id))
    }
    fresh: dict[tuple[str, str], StoredJob] = {}
    for job in jobs:
        key = (job.client_id, job.job_id)
        if job.client_id in known_clients and key not in have:
            fresh.setdefault(key, job)
    if not fresh:
        return 0
    # Another worker may be importing the same file at the same moment (PostgreSQL reads
    # committed rows only): a job it stored first is skipped, not an error.
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = (
        dialect_insert(job_rows)
        .on_conflict_do_nothing(index_elements=[job_rows.c.client_id, job_rows.c.job_id])
        .returning(job_rows.c.id)
    )
    rows = conn.execute(statement, [job_values(j) for j in fresh.values()])
    return len(rows.all())
