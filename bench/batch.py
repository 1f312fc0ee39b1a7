"""What a batch of mutations saves, per backend: the same admin change (a credit adjustment of
one of the benchmark clients) made ``--count`` times through ``Store.mutate``, one durable write
each, and through ``Store.mutate_batch`` in batches of ``--batch`` different clients, one
durable write per batch (one transaction, or one file write and fsync).

No HTTP, one thread: this measures the store's write path that a group-committing gateway
would use. Prints one JSON object: CPU and wall time per mutation, in microseconds.

    python bench/batch.py --dir /tmp/batch --clients 1000 --count 400 --batch 1 8 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config import DEFAULT_PG
from seed import SeededStore, drop, seed_json, seed_postgres, seed_sqlite

from openclaw_billing.cycles import utcnow
from openclaw_billing.store import Store, changes, open_store
from openclaw_billing.store.base import Mutation


def run(store: Store, ids: Sequence[str], count: int, batch: int) -> dict[str, float]:
    """``count`` credit adjustments, ``batch`` per ``mutate_batch`` (1: ``mutate``)."""
    began_cpu, began = time.process_time(), time.perf_counter()
    for start in range(0, count, batch):
        now = utcnow()
        size = min(batch, count - start)
        picked = [ids[(start + i) % len(ids)] for i in range(size)]
        if batch == 1:
            store.mutate(picked[0], now, changes.add_credits(1, "bench", now))
            continue
        mutations = [Mutation(cid, now, changes.add_credits(1, "bench", now)) for cid in picked]
        for outcome in store.mutate_batch(mutations):
            outcome.unwrap()
    cpu, wall = time.process_time() - began_cpu, time.perf_counter() - began
    return {"cpu_us": round(1e6 * cpu / count, 1), "wall_us": round(1e6 * wall / count, 1)}


def seeded(backend: str, folder: Path, clients: int) -> SeededStore:
    if backend == "json":
        return seed_json(folder / "batch.json", clients)
    if backend == "sqlite":
        return seed_sqlite(folder / "batch.db", clients)
    return seed_postgres(os.environ.get("OPENCLAW_TEST_PG_URL") or DEFAULT_PG, clients)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the scratch files go")
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--backend", nargs="+", default=["json", "sqlite", "postgresql"], help="which stores"
    )
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"clients": args.clients, "count": args.count}
    for backend in args.backend:
        seed = seeded(backend, args.dir, args.clients)
        store = open_store(seed.url)
        try:
            run(store, seed.bench_ids, min(50, args.count), 1)  # warm the caches
            out[backend] = {
                f"batch_{n}": run(store, seed.bench_ids, args.count, n) for n in args.batch
            }
        finally:
            store.close()
            drop(seed)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
