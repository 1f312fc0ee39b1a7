"""Where a billed request's time goes, in one process and one thread (no HTTP, no contention).

Times each step of the gateway's intake on an already seeded store, each as wall and CPU time
per call:

* ``authenticate``: the ``X-Client-Key`` lookup as the HTTP dependency makes it (without the
  ledger), reading the store each time (the worker's key cache off: a cache miss);
* ``authenticate_cached``: the same from the worker's key cache (``OPENCLAW_KEY_CACHE_SECONDS``),
  as most of a busy client's requests are answered;
* ``charge``: ``BillingService.charge``, the single charge (one credit taken at once, no job:
  what ``deduct_job_credit`` does for a host), through the committer;
* ``accept``: ``Store.accept(Charge(..., job=NewJob(fields=..., price=...), key_id=...))``, the
  job's price reserved as a hold (checked against the client's concurrency cap) with its job
  in one atomic step and one durable write, the key re-checked: what the gateway's intake
  hands its worker's committer for each request (a batch of one here);
* ``settle``: ``BillingService.report_job(job_id, Report(succeeded))`` for each job the
  ``accept`` step reserved, found by its id alone and settled through the committer with its
  audit event: what the job runner's ``POST /api/admin/jobs/{job_id}/outcome`` does.

With ``--history N`` it also times ``authenticate`` (a store read) for a client whose ledger
holds N rows from past cycles (on SQL stores), to show what a client's history costs.

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

from http1 import JOB_BODY
from sqlalchemy import create_engine, insert, update

from openclaw_billing.cycles import utcnow
from openclaw_billing.jobs import JobStatus, NewJob
from openclaw_billing.keycache import KeyCache
from openclaw_billing.outcomes import Report
from openclaw_billing.plans import PLANS, PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store import open_store
from openclaw_billing.store.sql_schema import clients, ledger_rows


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
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--history", type=int, default=0, help="ledger rows (SQL only)")
    args = parser.parse_args(argv)
    keys = [k for k in args.keys_file.read_text().split() if k]
    # The key cache off: every authenticate reads the store. A second service over the same
    # store keeps its answers (for the cached step) far longer than the run.
    service = BillingService(open_store(args.url), key_cache=KeyCache(0))
    cached = BillingService(service.store, key_cache=KeyCache(60))
    ids: list[str] = []
    key_ids: list[str] = []
    for key in keys:
        verified = service.verify_key(key)
        assert verified is not None, "a benchmark key does not authenticate"
        ids.append(verified.client.client_id)
        key_ids.append(verified.key_id)
    count, warmup = max(10, args.count), 20

    def auth(i: int) -> object:
        # As the X-Client-Key dependency does: the account and its keys, not the ledger.
        return service.authenticate(keys[i % len(keys)], ledger=False)

    def auth_cached(i: int) -> object:
        return cached.authenticate(keys[i % len(keys)], ledger=False)

    def charge(i: int) -> object:
        return service.charge(ids[i % len(ids)], job_id=str(uuid.uuid4()))

    price = PLANS[PlanId.PRO].price(JOB_BODY["task_type"], JOB_BODY["priority"])
    reserved: list[str] = []

    def accept(i: int) -> object:
        # As the gateway's intake builds it: the body's fields and the plan's price of the
        # job (the benchmarked clients are pro), the key it was checked with.
        job = NewJob(fields=JOB_BODY, price=price)
        n = i % len(ids)
        charged = service.store.accept(service.charge_of(ids[n], job=job, key_id=key_ids[n]))
        reserved.append(charged.charge.job_id)
        return charged

    def settle(i: int) -> object:
        # As the outcome route does with {"status": "succeeded"}: the job found by its id.
        return service.report_job(reserved[i], Report(JobStatus.SUCCEEDED))

    for key in keys:  # fill the cache: the cached step times hits only
        cached.authenticate(key, ledger=False)
    out: dict[str, Any] = {
        "authenticate": timed(auth, count, warmup),
        "authenticate_cached": timed(auth_cached, count, warmup),
        "charge": timed(charge, count, warmup),
        "accept": timed(accept, count, warmup),
        "settle": timed(settle, count, warmup),  # every job the accept step reserved
    }
    if args.history and not args.url.startswith(("json:", "/")):
        # The last key's client: the steps above charged it count/len(keys) times at most.
        _add_history(args.url, ids[-1], args.history, cycles=12)
        out["authenticate_with_history"] = timed(
            lambda _i: service.authenticate(keys[-1], ledger=False), count, warmup
        )
        out["history_rows"] = args.history
    service.close()
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
