"""The operator console's reads at scale: ``BillingService.list_clients`` (each sort, a search,
a status filter, a deep page) and ``BillingService.overview`` over a store of ``--clients``
clients, timed in-process (no HTTP, one thread): median and p95 wall milliseconds over
``--runs`` calls each, after one warm-up call.

The store is seeded straight in its storage format (as ``bench/seed.py`` does): the JSON file
rendered by ``render_store``, the SQL rows inserted in bulk (``sql_write.columns`` for the
clients, so every column a release adds is filled). The clients are a mix of plans, 5 %
inactive, a third of the paid ones subscribed through Stripe (a few past due or unpaid), 30 %
with 1 to 8 jobs in their current cycle spread over its days, 10 % with a previous cycle and
its jobs; names and emails in mixed case. Prints one JSON object (``--table``: a Markdown
table instead).

    python bench/console_store.py --dir /tmp/console --clients 100000 --backend sqlite json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from config import DEFAULT_PG
from http1 import percentile
from seed import SeededStore, analyze, drop, seed_postgres
from sqlalchemy import create_engine, insert

from openclaw_billing.access import new_client
from openclaw_billing.cycles import utcnow
from openclaw_billing.keys import generate_key
from openclaw_billing.models import ClientRecord, CostEntry, CycleSummary
from openclaw_billing.plans import PlanId, get_plan
from openclaw_billing.service import BillingService
from openclaw_billing.store import ClientQuery, ClientSort, ClientStatus, open_store
from openclaw_billing.store.json_format import render_store
from openclaw_billing.store.sql import SqlStore
from openclaw_billing.store.sql_schema import api_key_rows, clients, ledger_rows, summary_rows
from openclaw_billing.store.sql_write import columns, key_row

#: The console's page size.
PAGE = 50
BATCH = 5_000
_PLANS = (PlanId.FREE,) * 4 + (PlanId.STARTER,) * 3 + (PlanId.PRO,) * 2 + (PlanId.ENTERPRISE,)
_WORDS = ("Acme", "Globex", "initech", "UMBRELLA", "Hooli", "Stark", "wayne", "Tyrell", "Soylent")
_STATUSES = ("active",) * 14 + ("trialing", "past_due", "unpaid", "canceled")


def _record(i: int, total: int, now: datetime) -> ClientRecord:
    """Client ``i`` (of ``total``, in creation order), consistent with the ledger rules."""
    plan = _PLANS[i % len(_PLANS)]
    word = _WORDS[i % len(_WORDS)]
    record = new_client(
        client_id=str(uuid.uuid4()),
        name=f"{word} Client {i}",
        email=f"Ops{i}@{word.lower()}.example",
        plan=plan,
        key=generate_key(),
        now=now - timedelta(days=60, seconds=total - i),
    )
    record.active = i % 20 != 7
    start = now - timedelta(days=i % 30, hours=i % 24)
    record.billing_cycle_start, record.billing_cycle_end = start, start + timedelta(days=30)
    allowance = get_plan(plan).jobs_per_month
    meta = record.metadata
    if i % 10 == 3:  # a previous cycle, with its jobs
        previous = start - timedelta(days=30)
        entries = [
            CostEntry(timestamp=previous + timedelta(days=n * 3), cost=0.5, job_id=f"old-{n}")
            for n in range(min(5, allowance or 5))
        ]
        meta.cycle_history.append(
            CycleSummary(
                start=previous,
                end=start,
                plan=plan,
                allowance=allowance,
                jobs=len(entries),
                spend=0.5 * len(entries),
                credits_left=None if allowance is None else allowance - len(entries),
                entries=entries,
            )
        )
    jobs = 1 + i % 8 if i % 10 < 3 else 0
    jobs = jobs if allowance is None else min(jobs, allowance)
    elapsed = now - start
    meta.cost_log = [
        CostEntry(timestamp=start + elapsed * (n + 1) / (jobs + 1), cost=0.25, job_id=f"job-{n}")
        for n in range(jobs)
    ]
    record.credits_remaining = None if allowance is None else allowance - jobs
    record.total_spent = 0.25 * jobs + 0.5 * sum(s.jobs for s in meta.cycle_history)
    if plan in (PlanId.STARTER, PlanId.PRO) and i % 3 == 0:
        record.stripe_customer_id, record.stripe_subscription_id = f"cus_{i}", f"sub_{i}"
        meta.subscription_status = _STATUSES[i % len(_STATUSES)]
    return record


def _records(total: int, now: datetime) -> Iterator[ClientRecord]:
    return (_record(i, total, now) for i in range(total))


def _sql_rows(record: ClientRecord) -> dict[str, list[dict[str, Any]]]:
    """The rows of one record in each table (as ``sql_write.save`` writes a new record)."""
    cid, meta = record.client_id, record.metadata
    current = len(meta.cycle_history)
    cycles = [*((n, s.entries) for n, s in enumerate(meta.cycle_history)), (current, meta.cost_log)]
    ledger = [
        {
            "client_id": cid,
            "job_id": e.job_id,
            "cycle_no": no,
            "cost": e.cost,
            "charged_at": e.timestamp,
        }
        for no, entries in cycles
        for e in entries
    ]
    summaries = [
        {
            "client_id": cid,
            "cycle_no": n,
            "start": s.start,
            "end": s.end,
            "plan": s.plan.value,
            "allowance": s.allowance,
            "adjustments": [],
            "jobs": s.jobs,
            "spend": s.spend,
            "credits_left": s.credits_left,
        }
        for n, s in enumerate(meta.cycle_history)
    ]
    return {
        "clients": [columns(record)],
        "keys": [key_row(cid, k) for k in record.api_keys],
        "ledger": ledger,
        "summaries": summaries,
    }


def _fill_sql(url: str, total: int, now: datetime) -> None:
    SqlStore(url).close()  # creates the schema
    engine = create_engine(url)
    tables = {
        "clients": clients,
        "keys": api_key_rows,
        "ledger": ledger_rows,
        "summaries": summary_rows,
    }
    pending: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
    try:
        with engine.begin() as conn:
            for n, record in enumerate(_records(total, now), 1):
                for name, rows in _sql_rows(record).items():
                    pending[name] += rows
                if n % BATCH == 0 or n == total:
                    for name, table in tables.items():  # clients first: the others refer to it
                        if pending[name]:
                            conn.execute(insert(table), pending[name])
                        pending[name] = []
    finally:
        engine.dispose()


def seeded(backend: str, folder: Path, total: int, now: datetime) -> SeededStore:
    folder.mkdir(parents=True, exist_ok=True)
    if backend == "json":
        path = folder / "console.json"
        path.write_bytes(render_store(list(_records(total, now))))
        return SeededStore("json", str(path), total, [], [])
    if backend == "sqlite":
        path = folder / "console.db"
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{path}"
        _fill_sql(url, total, now)
        return SeededStore("sqlite", url, total, [], [])
    store = seed_postgres(os.environ.get("OPENCLAW_TEST_PG_URL") or DEFAULT_PG, 0)
    _fill_sql(store.url, total, now)
    analyze(store.url)
    return store


def cases(total: int, sample_id: str) -> dict[str, Callable[[BillingService], object]]:
    """What the console asks, by label."""

    def listing(**fields: Any) -> Callable[[BillingService], object]:
        query = ClientQuery(limit=PAGE, **fields)
        return lambda service: service.list_clients(query)

    found: dict[str, Callable[[BillingService], object]] = {
        f"sort={sort.value}": listing(sort=sort) for sort in ClientSort
    }
    found |= {
        "search=client 4242 (name)": listing(search="client 4242"),
        "search=id prefix": listing(search=sample_id[:8]),
        "search=acme, sort=usage": listing(search="acme", sort=ClientSort.USAGE),
        "status=past_due": listing(status=ClientStatus.PAST_DUE),
        "status=at_limit, sort=spend": listing(status=ClientStatus.AT_LIMIT, sort=ClientSort.SPEND),
        f"offset={total - PAGE:,} (last page)": listing(offset=max(0, total - PAGE)),
        f"sort=name, offset={total // 2:,}": listing(sort=ClientSort.NAME, offset=total // 2),
        "overview": lambda service: service.overview(),
    }
    return found


def timed(call: Callable[[], object], runs: int) -> dict[str, float]:
    """Wall milliseconds (median, p95) and this process's CPU milliseconds (median: what the
    read costs when the machine's other work competes for its cores)."""
    call()  # warm-up: caches, the JSON store's first parse
    walls, cpus = [], []
    for _ in range(runs):
        began, began_cpu = time.perf_counter(), time.process_time()
        call()
        walls.append((time.perf_counter() - began) * 1000)
        cpus.append((time.process_time() - began_cpu) * 1000)
    walls.sort()
    cpus.sort()
    return {
        "median_ms": round(percentile(walls, 50), 1),
        "p95_ms": round(percentile(walls, 95), 1),
        "cpu_ms": round(percentile(cpus, 50), 1),
    }


def measure(url: str, total: int, runs: int) -> dict[str, dict[str, float]]:
    store = open_store(url)
    try:
        service = BillingService(store)
        [first], _ = store.list_clients(ClientQuery(limit=1))
        results: dict[str, dict[str, float]] = {}
        for label, case in cases(total, first.client_id).items():
            results[label] = timed(functools.partial(case, service), runs)
            print(f"  {label}: {results[label]}", file=sys.stderr, flush=True)
        return results
    finally:
        store.close()


def table(out: dict[str, Any]) -> str:
    backends = [b for b in ("sqlite", "postgresql", "json") if b in out]
    head = " | ".join(f"{b} median / p95 (CPU) ms" for b in backends)
    lines = [f"| Read ({out['clients']:,} clients, page {PAGE}) | {head} |"]
    lines.append("|---" * (len(backends) + 1) + "|")
    for label in out[backends[0]]:
        cells = " | ".join(
            f"{out[b][label]['median_ms']:,.1f} / {out[b][label]['p95_ms']:,.1f} "
            f"({out[b][label]['cpu_ms']:,.1f})"
            for b in backends
        )
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the scratch files go")
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--backend", nargs="+", default=["sqlite", "json"], help="which stores")
    parser.add_argument("--table", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"clients": args.clients, "runs": args.runs, "page": PAGE}
    now = utcnow()
    for backend in args.backend:
        began = time.perf_counter()
        seed = seeded(backend, args.dir, args.clients, now)
        print(f"{backend}: seeded in {time.perf_counter() - began:.1f} s", file=sys.stderr)
        try:
            out[backend] = measure(seed.url, args.clients, args.runs)
        finally:
            drop(seed)
    sys.stdout.write((table(out) if args.table else json.dumps(out)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
