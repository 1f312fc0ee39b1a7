"""Where a billed request's time goes, in one process and one thread (no HTTP, no contention).

Times each step of the gateway's intake on an already seeded store: ``authenticate`` (the
``X-Client-Key`` lookup, as the HTTP dependency makes it: without the ledger), ``charge``, and
the job-file append (``JobStore.add``), each as wall and CPU time per call. With
``--history N`` it also times ``authenticate`` for a client whose ledger holds N rows from
past cycles (on SQL stores), to show what a client's history costs.

Prints one JSON object. Run from the repository root (it imports ``gateway``)::

    python bench/breakdown.py --url sqlite:///bench/results/work/billing-100.db --keys-file k
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from statistics import median
from typing import Any

from sqlalchemy import create_engine, insert, update

from gateway import JobRecord, JobStore
from openclaw_billing.cycles import utcnow
from openclaw_billing.service import BillingService
from openclaw_billing.store import open_store
from openclaw_billing.store.sql_schema import clients, ledger_rows

BODY = {
    "project_name": "Benchmark project",
    "description": "Add a CSV export to the monthly report page; include a test.",
    "task_type": "feature_build",
    "priority": "P2",
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(step: Callable[[int], object], count: int, warmup: int) -> dict[str, float]:
    """Median wall time and mean CPU time per call, in microseconds."""
    for i in range(warmup):
        step(i)
    walls: list[float] = []
    cpu0 = _cpu()
    for i in range(warmup, warmup + count):
        began = time.perf_counter()
        step(i)
        walls.append(time.perf_counter() - began)
    cpu = _cpu() - cpu0
    return {"wall_us": round(1e6 * median(walls), 1), "cpu_us": round(1e6 * cpu / count, 1)}


def _add_history(url: str, client_id: str, rows: int, cycles: int) -> None:
    """Give a client ``rows`` ledger rows spread over ``cycles`` past cycles."""
    engine = create_engine(url)
    now = utcnow()
    try:
        with engine.begin() as conn:
            conn.execute(
                update(clients).where(clients.c.client_id == client_id).values(cycle_no=cycles)
            )
            conn.execute(
                insert(ledger_rows),
                [
                    {
                        "client_id": client_id,
                        "job_id": f"history-{i}",
                        "cycle_no": i % cycles,
                        "cost": 0.0,
                        "charged_at": now - timedelta(days=30 * cycles),
                        "archived": i % cycles < cycles - 1,  # older than the previous cycle
                    }
                    for i in range(rows)
                ],
            )
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the seeded store (OPENCLAW_BILLING_DB)")
    parser.add_argument("--keys-file", type=Path, required=True)
    parser.add_argument("--jobs-file", type=Path, required=True)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--history", type=int, default=0, help="ledger rows (SQL only)")
    args = parser.parse_args(argv)
    keys = [k for k in args.keys_file.read_text().split() if k]
    service = BillingService(open_store(args.url))
    jobs = JobStore(args.jobs_file)
    ids: list[str] = []
    for key in keys:
        record = service.authenticate(key)
        assert record is not None, "a benchmark key does not authenticate"
        ids.append(record.client_id)
    count, warmup = max(10, args.count), 20

    def auth(i: int) -> object:
        # As the X-Client-Key dependency does: the account and its keys, not the ledger.
        return service.authenticate(keys[i % len(keys)], ledger=False)

    def charge(i: int) -> object:
        return service.charge(ids[i % len(ids)], job_id=str(uuid.uuid4()))

    def append(i: int) -> None:
        jobs.add(
            JobRecord(
                **BODY, job_id=str(uuid.uuid4()), client_id=ids[i % len(ids)], created_at=utcnow()
            )
        )

    out: dict[str, Any] = {
        "authenticate": timed(auth, count, warmup),
        "charge": timed(charge, count, warmup),
        "job_append": timed(append, count, warmup),
    }
    if args.history and not args.url.startswith(("json:", "/")):
        # The last key's client: the steps above charged it count/len(keys) times at most.
        _add_history(args.url, ids[-1], args.history, cycles=12)
        out["authenticate_with_history"] = timed(
            lambda _i: service.authenticate(keys[-1], ledger=False), count, warmup
        )
        out["history_rows"] = args.history
    service.store.close()
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
