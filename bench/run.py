"""Benchmark ``POST /api/intake`` with auth and charge against a bare endpoint; write
BENCHMARKS.md.

For every configuration (backend x clients in the store x uvicorn workers x connections) the
gateway (``uvicorn gateway:app``) over a freshly reset, seeded store and the bare app
(``uvicorn bench.bare_app:app``, same worker count) are loaded alternately by the same
generator (``bench/load.py``, its own process): bare, billing, bare, billing, ... Each row's
billing/bare ratio comes from those interleaved rounds. Before them, in processes of their own:
the floor (``bench/floor.py``), the store's batch primitive (``bench/batch.py``), the
operator's reads (``bench/console_store.py``, 100,000 clients on SQLite and the JSON store) and
the console's pages over HTTP (``bench/console_pages.py``, 100,000 clients on SQLite).

    .venv/bin/python bench/run.py            # the full set (make bench), about 16 minutes
    .venv/bin/python bench/run.py --quick    # a smoke run, about two minutes

Everything it makes lives in bench/results/ (git-ignored) and a /dev/shm directory removed at
the end; PostgreSQL schemas it creates are dropped. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import seed
from config import (
    DEFAULT_PG,
    FULL,
    QUICK,
    REPO,
    RESULTS,
    Row,
    full_configs,
    quick_configs,
)
from machine import machine, postgres_info
from procs import (
    QuietWait,
    Server,
    fsync_latency_ms,
    run_breakdown,
    run_config,
    run_console_pages,
    run_console_store,
    run_floor,
    run_store_batch,
    start_server,
    stop_server,
)
from report import write_report

# -- orchestration ---------------------------------------------------------------------------


@contextlib.contextmanager
def _stores() -> Iterator[dict[tuple[str, int, bool], seed.SeededStore]]:
    """The seeded stores by ``Config.store_key``; PostgreSQL schemas are dropped at exit."""
    made: dict[tuple[str, int, bool], seed.SeededStore] = {}
    try:
        yield made
    finally:
        for store in made.values():
            with contextlib.suppress(Exception):
                seed.drop(store)


def _seed(
    key: tuple[str, int, bool], work: Path, shm: Path, pg_url: str | None
) -> seed.SeededStore:
    backend, clients, on_tmpfs = key
    where = shm if on_tmpfs else work
    if backend == "json":
        return seed.seed_json(where / f"clients-{clients}.json", clients)
    if backend == "sqlite":
        return seed.seed_sqlite(where / f"billing-{clients}.db", clients)
    assert pg_url is not None
    return seed.seed_postgres(pg_url, clients)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--output",
        type=Path,
        help="the report (default: BENCHMARKS.md; bench/results/BENCHMARKS.quick.md for --quick)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENCLAW_BENCH_POSTGRES_URL", DEFAULT_PG),
        help="a PostgreSQL server on loopback to create (and drop) schemas in",
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    timing = QUICK if args.quick else FULL
    configs = quick_configs() if args.quick else full_configs()
    output = args.output or (
        RESULTS / "BENCHMARKS.quick.md" if args.quick else REPO / "BENCHMARKS.md"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shm = Path("/dev/shm") / f"openclaw-bench-{os.getpid()}"
    shm.mkdir(exist_ok=True)

    pg_info = postgres_info(args.postgres_url)
    pg_url = args.postgres_url if pg_info else None
    absent = ["SQL with 1,000 clients: the issue's sizes for SQL are 100, 10,000 and 100,000."]
    if pg_url is None:
        configs = [c for c in configs if c.backend != "postgresql"]
        absent.append(f"PostgreSQL: no server answered at {args.postgres_url}.")
    fsync_ms = fsync_latency_ms(work)
    shm_fsync_ms = fsync_latency_ms(shm)
    info = machine(pg_info, fsync_ms, shm_fsync_ms)
    floor = run_floor(work, timing)
    floor["store_batch"] = run_store_batch(work, timing, pg_url)
    print(f"floor: {floor}", flush=True)
    console = run_console_store(work, timing)
    console["pages"] = run_console_pages(work, timing)
    print(f"console reads: {console}", flush=True)
    print(f"{len(configs)} configurations; writing {output}", flush=True)

    rows: list[Row] = []
    bare_servers: dict[int, Server] = {}
    json_bytes_per_client = 0.0
    breakdowns: list[dict[str, Any]] = []
    quiet = QuietWait(timing.quiet_wait, total=4 * timing.quiet_wait)
    try:
        with _stores() as stores:
            order = sorted(configs, key=lambda c: (c.store_key, c.section != "main"))
            for config in order:
                if config.store_key not in stores:
                    for old in list(stores):  # one store at a time: drop the previous one
                        seed.drop(stores.pop(old))
                    t0 = time.monotonic()
                    stores[config.store_key] = made = _seed(config.store_key, work, shm, pg_url)
                    if made.json_raw is not None:
                        json_bytes_per_client = len(made.json_raw) / made.clients
                    print(
                        f"  seeded {config.backend} {config.clients:,} "
                        f"in {time.monotonic() - t0:.1f} s",
                        flush=True,
                    )
                    if not config.tmpfs:
                        history = made.backend != "json" and made.clients == 10_000
                        breakdowns.append(run_breakdown(made, timing, work, history=history))
                        print(f"    in-process: {breakdowns[-1]}", flush=True)
                if config.workers not in bare_servers:
                    bare_servers[config.workers] = start_server(
                        f"bare-{config.workers}",
                        "bench.bare_app:app",
                        config.workers,
                        {},
                        work / f"bare-{config.workers}.log",
                    )
                row = run_config(
                    config,
                    stores[config.store_key],
                    bare_servers[config.workers],
                    timing,
                    work,
                    shm,
                    quiet,
                )
                rows.append(row)
                print(
                    f"  {config.label}: bare {row.bare.rps:,.0f} req/s, billing "
                    f"{row.billing.rps:,.1f} req/s, ratio {row.ratio:.2f}, p99 "
                    f"{row.bare.pct(99):.1f} / {row.billing.pct(99):.1f} ms"
                    + (f"  [{'; '.join(row.problems)}]" if row.problems else ""),
                    flush=True,
                )
    finally:
        for server in bare_servers.values():
            stop_server(server)
        shutil.rmtree(shm, ignore_errors=True)

    absent.insert(
        0,
        "JSON file with 100,000 clients: not a sensible configuration, so not run. The JSON "
        "store keeps every client in one file that each charge writes whole and fsyncs (only "
        "the charged client is serialised again; the other lines are copied as bytes), and "
        "that every other worker then re-reads and compares line by line: at "
        f"{json_bytes_per_client:,.0f} bytes per seeded client that is "
        f"{json_bytes_per_client * 100_000 / 1e6:,.0f} MB written per charge. The "
        "10,000-client rows show where it already stands.",
    )
    rank = {c: i for i, c in enumerate(configs)}
    rows.sort(key=lambda r: rank[r.config])
    order_of = {"json": 0, "sqlite": 1, "postgresql": 2}
    breakdowns.sort(key=lambda b: (order_of[b["backend"]], b["clients"]))
    verdicts = write_report(
        output,
        rows,
        breakdowns,
        info,
        timing,
        args.quick,
        absent,
        fsync_ms,
        floor,
        time.monotonic() - began,
        console,
    )
    raw = {
        "machine": info,
        "timing": asdict(timing),
        "rows": [r.summary() for r in rows],
        "in_process": breakdowns,
        "floor": floor,
        "console": console,
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = "quick" if args.quick else "latest"
    (RESULTS / f"{name}.json").write_text(json.dumps(raw, indent=1))
    (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps(raw, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    print("\n".join(verdicts))
    print(f"wrote {output} in {(time.monotonic() - began) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
