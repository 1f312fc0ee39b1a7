"""The least a durable billed request can cost on this machine: the floor under any gateway.

One thread, no HTTP, no framework, no SQLAlchemy, no pydantic: a billed request written
straight through Python's ``sqlite3`` module, on a SQLite database set up as the store sets
up its own (WAL, ``synchronous = FULL``) with ``--clients`` clients:

1. the key's SHA-256 digest, and the client looked up by it (one indexed ``SELECT``);
2. ``BEGIN IMMEDIATE``, the conditional ``UPDATE`` of the client's credits, the ledger
   ``INSERT`` (job id unique per client), the job's row ``INSERT`` (its fields as one JSON
   text, as the store keeps them), ``COMMIT`` (an fsync of the WAL): the charge and its job
   durable together, in one transaction, as every built-in store keeps them.

With ``--batch N`` every N requests share one transaction and one fsync (group commit), as
the gateway's committer does with the requests that queue up while a commit runs; a batch of
one is a request durable alone (an idle committer's lone request). Prints one JSON object:
CPU and wall time per request, in microseconds, for each batch size. ``bench/run.py``
compares them with the CPU a bare request costs.

    python bench/floor.py --dir /tmp/floor --clients 10000 --count 2000 --batch 1 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sqlite3
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from http1 import JOB_BODY

SCHEMA = (
    "CREATE TABLE clients (client_id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, "
    "active INTEGER NOT NULL, credits INTEGER NOT NULL, total_spent REAL NOT NULL, "
    "cycle_no INTEGER NOT NULL, updated_at TEXT)",
    "CREATE TABLE ledger (id INTEGER PRIMARY KEY, client_id TEXT NOT NULL, "
    "job_id TEXT NOT NULL, cycle_no INTEGER NOT NULL, cost REAL NOT NULL, "
    "charged_at TEXT NOT NULL, UNIQUE (client_id, job_id))",
    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, client_id TEXT NOT NULL, "
    "job_id TEXT NOT NULL, created_at TEXT NOT NULL, fields TEXT NOT NULL, request_hash TEXT, "
    "credits_remaining INTEGER, UNIQUE (client_id, job_id))",
)
LOOKUP = "SELECT client_id, active, credits, cycle_no FROM clients WHERE digest = ?"
TAKE_CREDIT = (
    "UPDATE clients SET credits = credits - 1, total_spent = total_spent + ?, updated_at = ? "
    "WHERE client_id = ? AND active = 1 AND credits > 0"
)
INSERT_LEDGER = (
    "INSERT INTO ledger (client_id, job_id, cycle_no, cost, charged_at) VALUES (?, ?, ?, ?, ?)"
)
INSERT_JOB = (
    "INSERT INTO jobs (client_id, job_id, created_at, fields, credits_remaining) "
    "VALUES (?, ?, ?, ?, ?)"
)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def open_db(path: Path, clients: int) -> tuple[sqlite3.Connection, list[str]]:
    """A fresh database of ``clients`` clients with plenty of credits; their keys."""
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    for statement in SCHEMA:
        db.execute(statement)
    keys = ["oc_live_" + secrets.token_hex(16) for _ in range(clients)]
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO clients VALUES (?, ?, 1, 1000000000, 0.0, 0, NULL)",
        ((str(uuid.uuid4()), _digest(k)) for k in keys),
    )
    db.execute("COMMIT")
    return db, keys


def run(db: sqlite3.Connection, keys: Sequence[str], count: int, batch: int) -> Any:
    """``count`` billed requests, ``batch`` per transaction (and fsync)."""
    began_cpu, began = time.process_time(), time.perf_counter()
    done = 0
    while done < count:
        db.execute("BEGIN IMMEDIATE")
        end = min(count, done + batch)
        for i in range(done, end):
            row = db.execute(LOOKUP, (_digest(keys[i % len(keys)]),)).fetchone()
            client_id, active, credits, cycle_no = row
            now = datetime.now(UTC).isoformat()
            job_id = str(uuid.uuid4())
            if not active or db.execute(TAKE_CREDIT, (0.0, now, client_id)).rowcount != 1:
                raise RuntimeError("a floor client ran out of credits")
            db.execute(INSERT_LEDGER, (client_id, job_id, cycle_no, 0.0, now))
            fields = json.dumps(JOB_BODY)
            db.execute(INSERT_JOB, (client_id, job_id, now, fields, credits - 1))
        db.execute("COMMIT")
        done = end
    cpu, wall = time.process_time() - began_cpu, time.perf_counter() - began
    return {"cpu_us": round(1e6 * cpu / count, 1), "wall_us": round(1e6 * wall / count, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the scratch files go")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--count", type=int, default=2_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    db_path = args.dir / "floor.db"
    db, keys = open_db(db_path, args.clients)
    try:
        run(db, keys, min(200, args.count), 1)  # warm the caches
        out = {f"batch_{n}": run(db, keys, args.count, n) for n in args.batch}
    finally:
        db.close()
        for path in (db_path, *args.dir.glob("floor.db-*")):
            path.unlink(missing_ok=True)
    json.dump(out | {"clients": args.clients, "count": args.count}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
