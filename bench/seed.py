"""Seed billing stores fast, straight in their storage format, for the benchmark.

* JSON: the file of :mod:`openclaw_billing.store.json_file`, rendered by its ``render_store``
  (the layout the store writes) and written in one go.
* SQL (SQLite, PostgreSQL): the schema is created by opening :class:`SqlStore` once, then the
  ``openclaw_clients`` rows (the shape of ``store.sql_write.columns``) are inserted in bulk.

Most clients are a mix of plans with a little history; ``BENCH_CLIENTS`` of them, spread
evenly over the store, are pro clients with a very large ``credits_remaining`` (charged for
real on every request, never running out) and an empty ledger. Their plaintext keys are kept.

Two per-client overrides (what an operator sets with ``PUT /api/admin/clients/{id}/policy``)
keep the load of a benchmarked client inside the limits that stay on: its rate limit
(``BENCH_RATE_LIMIT``) and its concurrency cap (``BENCH_MAX_ACTIVE_JOBS``). Intake reserves
each job's price as a hold until the job's outcome is reported; an intake row reports none, so
a client's holds pile up (about 150 each over a full row) and the pro plan's cap of 5 would
refuse all but its first 5 jobs with 429 ``concurrency_limit_reached``. The clients stay pro
(the enterprise plan has no cap, but it is the log-only path: no credits taken or held).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, func, insert, select, text, update
from sqlalchemy.engine import make_url

from openclaw_billing.access import MAX_ACTIVE_JOBS, new_client
from openclaw_billing.cycles import utcnow
from openclaw_billing.jobs import JobStatus
from openclaw_billing.keys import generate_key
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId, get_plan
from openclaw_billing.store import open_store
from openclaw_billing.store.capabilities import JobStorage
from openclaw_billing.store.json_format import render_store
from openclaw_billing.store.sql import SqlStore
from openclaw_billing.store.sql_schema import api_key_rows, clients, job_rows, ledger_rows
from openclaw_billing.store.sql_write import columns, key_row

#: The clients the load is spread over (as many as the smallest store holds).
BENCH_CLIENTS = 100
#: Credits of a benchmarked client: a pro client that never runs out during a run.
BENCH_CREDITS = 1_000_000_000
#: Their rate-limit override (``rate_limit_per_minute`` on the record), the highest allowed: the
#: gateway's limits stay on and are checked on every request, but the load never meets them.
BENCH_RATE_LIMIT = 1_000_000
#: Their concurrency cap override (``max_active_jobs`` on the record), the highest allowed: the
#: cap is checked on every intake, in the reservation's atomic step, but never reached.
BENCH_MAX_ACTIVE_JOBS = MAX_ACTIVE_JOBS
BATCH = 5_000
_OTHER_PLANS = (PlanId.FREE, PlanId.STARTER, PlanId.PRO, PlanId.ENTERPRISE)


@dataclass
class SeededStore:
    """A store ready for the gateway: its ``OPENCLAW_BILLING_DB`` and the benchmark keys."""

    backend: str
    url: str
    clients: int
    keys: list[str]
    bench_ids: list[str]
    #: PostgreSQL only: the schema to drop afterwards, and the server's base URL.
    schema: str | None = None
    base_url: str | None = None
    #: JSON only: the seeded file, to restore between runs.
    json_raw: bytes | None = field(default=None, repr=False)


def bench_indices(total: int) -> list[int]:
    """Which clients (by creation order) are benchmarked: evenly spread over the store."""
    count = min(BENCH_CLIENTS, total)
    return [i * total // count for i in range(count)]


def _records(total: int, now: datetime) -> Iterator[tuple[ClientRecord, str | None]]:
    """Every client record in creation order, with the plaintext key of benchmarked ones."""
    chosen = set(bench_indices(total))
    start = now - timedelta(days=1)
    end = start + timedelta(days=30)
    for i in range(total):
        key = generate_key()
        bench = i in chosen
        plan = PlanId.PRO if bench else _OTHER_PLANS[i % len(_OTHER_PLANS)]
        allowance = get_plan(plan).jobs_per_month
        credits: int | None
        if bench:
            credits = BENCH_CREDITS
        else:
            credits = None if allowance is None else max(0, allowance - i % 7)
        created = now - timedelta(days=3, seconds=total - i)
        record = new_client(
            client_id=str(uuid.uuid4()),
            name=f"Client {i}",
            email=f"client{i}@example.com",
            plan=plan,
            key=key,
            now=created,
        )
        record.credits_remaining = credits
        record.billing_cycle_start, record.billing_cycle_end = start, end
        record.rate_limit_per_minute = BENCH_RATE_LIMIT if bench else None
        record.max_active_jobs = BENCH_MAX_ACTIVE_JOBS if bench else None
        yield record, (key if bench else None)


# -- JSON ------------------------------------------------------------------------------------


def seed_json(path: Path, total: int) -> SeededStore:
    path.parent.mkdir(parents=True, exist_ok=True)
    records: list[ClientRecord] = []
    keys: list[str] = []
    ids: list[str] = []
    for record, key in _records(total, utcnow()):
        records.append(record)
        if key is not None:
            keys.append(key)
            ids.append(record.client_id)
    raw = render_store(records)  # the layout the store writes, so no first write re-lays it
    path.write_bytes(raw)
    return SeededStore("json", str(path), total, keys, ids, json_raw=raw)


# -- SQL -------------------------------------------------------------------------------------


def _engine(url: str) -> Engine:
    return create_engine(url)


def _fill_sql(url: str, total: int) -> tuple[list[str], list[str]]:
    SqlStore(url).close()  # creates the schema (and its version row)
    keys: list[str] = []
    ids: list[str] = []
    engine = _engine(url)
    try:
        batch: list[dict[str, Any]] = []
        key_batch: list[dict[str, Any]] = []
        with engine.begin() as conn:
            for record, key in _records(total, utcnow()):
                batch.append(columns(record))
                key_batch += [key_row(record.client_id, k) for k in record.api_keys]
                if key is not None:
                    keys.append(key)
                    ids.append(record.client_id)
                if len(batch) >= BATCH:
                    conn.execute(insert(clients), batch)
                    conn.execute(insert(api_key_rows), key_batch)
                    batch, key_batch = [], []
            if batch:
                conn.execute(insert(clients), batch)
                conn.execute(insert(api_key_rows), key_batch)
    finally:
        engine.dispose()
    return keys, ids


def seed_sqlite(path: Path, total: int) -> SeededStore:
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    keys, ids = _fill_sql(url, total)
    return SeededStore("sqlite", url, total, keys, ids)


def seed_postgres(base_url: str, total: int) -> SeededStore:
    """A fresh schema on the server ``base_url`` names; drop it with :func:`drop`."""
    schema = f"openclaw_bench_{secrets.token_hex(4)}"
    engine = _engine(base_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        engine.dispose()
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    keys, ids = _fill_sql(rendered, total)
    analyze(rendered)
    return SeededStore("postgresql", rendered, total, keys, ids, schema=schema, base_url=base_url)


def analyze(url: str) -> None:
    """Refresh PostgreSQL's planner statistics and clean dead rows (what autovacuum does)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


# -- between runs ----------------------------------------------------------------------------


def reset(store: SeededStore) -> None:
    """Back to the seeded state: empty ledgers, no jobs, full credits (so every run starts
    alike). A JSON store's snapshot is written again and every file beside it (its journals,
    lock, audit log, temp files) removed."""
    if store.backend == "json":
        assert store.json_raw is not None
        path = Path(store.url)
        for beside in path.parent.glob(f"{path.name}.*"):
            beside.unlink()
        path.write_bytes(store.json_raw)
        return
    engine = _engine(store.url)
    try:
        with engine.begin() as conn:
            conn.execute(delete(ledger_rows))
            conn.execute(delete(job_rows))
            conn.execute(
                update(clients)
                .where(clients.c.client_id.in_(store.bench_ids))
                .values(credits_remaining=BENCH_CREDITS, total_spent=0.0, cycle_no=0, cycle_jobs=0)
            )
    finally:
        engine.dispose()
    if store.backend == "postgresql":
        analyze(store.url)


def count_ledger(store: SeededStore) -> int:
    """How many charges the store holds (a run's charges must all be there)."""
    if store.backend == "json":  # the snapshot with its journal replayed, as the store reads
        opened = open_store(store.url)
        try:
            found = (opened.get_client(cid) for cid in store.bench_ids)
            return sum(len(r.metadata.cost_log) for r in found if r is not None)
        finally:
            opened.close()
    engine = _engine(store.url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM openclaw_ledger")).scalar_one())
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Holds:
    """The benchmarked clients' jobs after a row: how many still hold credits (queued, hold
    open), the most one client holds, how many were settled as ``succeeded``, and the caps
    the store holds for them (``BENCH_MAX_ACTIVE_JOBS`` each, if the override is in effect)."""

    held: int
    most_held: int
    succeeded: int
    caps: frozenset[int | None]


def holds(store: SeededStore) -> Holds:
    """The benchmarked clients' holds and settled jobs, as the store holds them."""
    if store.backend == "json":
        opened = open_store(store.url)
        try:
            assert isinstance(opened, JobStorage)
            jobs = {cid: opened.client_jobs(cid) for cid in store.bench_ids}
            records = [opened.get_client(cid) for cid in store.bench_ids]
        finally:
            opened.close()
        held = [sum(job.holding for job in each) for each in jobs.values()]
        succeeded = sum(j.status is JobStatus.SUCCEEDED for each in jobs.values() for j in each)
        caps = frozenset(r.max_active_jobs if r is not None else None for r in records)
        return Holds(sum(held), max(held, default=0), succeeded, caps)
    engine = _engine(store.url)
    try:
        with engine.connect() as conn:
            per_client = conn.execute(  # a ledger row is held while its job's hold is open
                select(func.count()).where(ledger_rows.c.held).group_by(ledger_rows.c.client_id)
            ).scalars()
            counts = list(per_client)
            succeeded = conn.execute(
                select(func.count()).where(job_rows.c.status == JobStatus.SUCCEEDED.value)
            ).scalar_one()
            found = conn.execute(
                select(clients.c.max_active_jobs)
                .where(clients.c.client_id.in_(store.bench_ids))
                .distinct()
            ).scalars()
            return Holds(sum(counts), max(counts, default=0), int(succeeded), frozenset(found))
    finally:
        engine.dispose()


def drop(store: SeededStore) -> None:
    """Remove what seeding made (the PostgreSQL schema; files are the caller's directory)."""
    if store.backend != "postgresql" or store.schema is None or store.base_url is None:
        return
    engine = _engine(store.base_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{store.schema}" CASCADE'))
    finally:
        engine.dispose()
