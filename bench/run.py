"""Benchmark ``POST /api/intake`` with auth and charge against a bare endpoint; write
BENCHMARKS.md.

For every configuration (backend x clients in the store x uvicorn workers x connections) the
gateway (``uvicorn gateway:app``, rate limits on) over a freshly reset, seeded store and the
bare app (``uvicorn bench.bare_app:app``, same worker count) are loaded alternately by the same
generator (``bench/load.py``, its own process): bare, billing, bare, billing, ...

* closed loop (every configuration): N connections, each sending when its last answer came;
  each row's billing/bare throughput ratio comes from the interleaved rounds;
* open loop (JSON at 1,000 clients, SQLite and PostgreSQL at 10,000; 1 and 2 workers): after
  the closed-loop rounds, on the same servers, requests at 100 req/s and at half the bare
  endpoint's closed-loop throughput, latency from each request's scheduled send time; the
  latency billing adds at p50 and p99 (``bench/openloop.py``);
* authenticated read (same stores and workers): ``GET /api/jobs`` with the client's key, each
  benchmarked client holding a few jobs, against the bare app's ``GET /api/jobs``;
* the committers (SQLite at 10,000 clients, 1 and 2 workers): the intake rows, closed loop and
  open loop at 100 req/s, once more with ``OPENCLAW_COMMITTER=loop`` (the main rows run the
  default, ``thread``);
* reserve then settle (every backend and intake store size, 1 worker, and the latency stores
  with 2): closed loop, each connection sending an intake and then the job runner's outcome
  report for that job (``bench/pairs.py``), against the bare app's intake and outcome; pairs
  a second, the pair's and the outcome's own latency.

Every row checks that the gateway's limit for a benchmarked client is its override (the
limits stay on; the override keeps the load under them) and counts every answer that is not
2xx; the benchmarked clients' concurrency cap is an override too (``bench/seed.py``), and each
row reports how many jobs one of them held at once. Before the rows, in processes of their
own: the floor (``bench/floor.py``), the store's batch primitive (``bench/batch.py``), the
operator's reads (``bench/console_store.py``, 100,000 clients on SQLite and the JSON store)
and the console's pages over HTTP (``bench/console_pages.py``, 100,000 clients on SQLite); per
seeded store, the in-process breakdown (``bench/breakdown.py``). The report ends with a Goals
table (``bench/goals.py``).

    .venv/bin/python bench/run.py            # the full set (make bench), about 25 minutes
    .venv/bin/python bench/run.py --quick    # a smoke run, about three minutes
    .venv/bin/python bench/run.py --only open --only sqlite   # a part of it
    .venv/bin/python bench/run.py --only intake --only sqlite --clients 10000 --workers 1

``--only`` (repeatable) names parts (intake, settle, open, read, concurrency, committer,
breakdown, floor, console) and backends (json, sqlite, postgresql): the parts named (every
per-backend part if none) on the backends named (every one if none). ``open`` runs its
configurations' closed-loop rounds too (its second rate comes from them); ``committer`` runs
the main rows it compares with too. ``--clients N`` and ``--workers N`` (repeatable) narrow the
per-backend parts to those store sizes and worker counts (one row, say). A partial or quick
run writes its report to bench/results/ and never to BENCHMARKS.md.

Everything it makes lives in bench/results/ (git-ignored); PostgreSQL schemas it creates are
dropped. Only loopback addresses are used.
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
    BACKENDS,
    DEFAULT_PG,
    FULL,
    QUICK,
    REPO,
    RESULTS,
    SECTIONS,
    Selection,
    full_configs,
    quick_configs,
)
from inproc import run_breakdown, run_console_pages, run_console_store, run_floor, run_store_batch
from machine import machine, postgres_info
from procs import QuietWait, Server, fsync_latency_ms, start_server, stop_server
from report import write_report
from results import Row
from rounds import run_config

# -- orchestration ---------------------------------------------------------------------------


@contextlib.contextmanager
def _stores() -> Iterator[dict[tuple[str, int], seed.SeededStore]]:
    """The seeded stores by ``Config.store_key``; PostgreSQL schemas are dropped at exit."""
    made: dict[tuple[str, int], seed.SeededStore] = {}
    try:
        yield made
    finally:
        for store in made.values():
            with contextlib.suppress(Exception):
                seed.drop(store)


def _seed(key: tuple[str, int], work: Path, pg_url: str | None) -> seed.SeededStore:
    backend, clients = key
    if backend == "json":
        return seed.seed_json(work / f"clients-{clients}.json", clients)
    if backend == "sqlite":
        return seed.seed_sqlite(work / f"billing-{clients}.db", clients)
    assert pg_url is not None
    return seed.seed_postgres(pg_url, clients)


def _print_row(row: Row) -> None:
    print(
        f"  {row.config.label}: bare {row.bare.rps:,.0f} req/s, billing "
        f"{row.billing.rps:,.1f} req/s, ratio {row.ratio:.2f}, p99 "
        f"{row.bare.pct(99):.1f} / {row.billing.pct(99):.1f} ms"
        + (
            f", outcome alone p50 {row.bare.outcome_pct(50):.1f} / "
            f"{row.billing.outcome_pct(50):.1f} ms, p99 {row.bare.outcome_pct(99):.1f} / "
            f"{row.billing.outcome_pct(99):.1f} ms"
            if row.config.section == "settle"
            else ""
        )
        + f", most held {row.most_held}"
        + (f"  [{'; '.join(row.problems)}]" if row.problems else ""),
        flush=True,
    )
    for o in row.open_rows:
        print(
            f"    open loop at {o.rate:,.0f} req/s: p50 {o.bare.pct(50):.2f} / "
            f"{o.billing.pct(50):.2f} ms, p99 {o.bare.pct(99):.2f} / {o.billing.pct(99):.2f} ms, "
            f"added {o.added(50):+.2f} / {o.added(99):+.2f} ms, censored "
            f"{o.bare.censored} / {o.billing.censored}, generator lateness p99 "
            f"{o.generator_late('p99'):.2f} ms",
            flush=True,
        )


def _outputs(args: argparse.Namespace, selection: Selection) -> tuple[Path, str]:
    """The report's path and the raw results' name. A quick or partial run never writes
    BENCHMARKS.md."""
    name = "quick" if args.quick else "latest"
    if selection.partial:
        parts = sorted(set(args.only or ()))
        parts += [f"{n}c" for n in sorted(selection.clients)]
        parts += [f"{n}w" for n in sorted(selection.workers)]
        name = ("quick-" if args.quick else "") + "only-" + "-".join(parts)
    default = RESULTS / f"BENCHMARKS.{name}.md" if name != "latest" else REPO / "BENCHMARKS.md"
    output: Path = args.output or default
    if name != "latest" and output.resolve() == (REPO / "BENCHMARKS.md").resolve():
        raise SystemExit("a quick or partial run does not write BENCHMARKS.md")
    return output, name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS + BACKENDS,
        metavar="PART",
        help="run a part (repeatable): a section "
        f"({', '.join(SECTIONS)}) or a backend ({', '.join(BACKENDS)})",
    )
    for name, rows in (("clients", "on stores of N clients"), ("workers", "with N workers")):
        parser.add_argument(
            f"--{name}",
            action="append",
            type=int,
            default=[],
            metavar="N",
            help=f"only the rows {rows} (repeatable)",
        )
    parser.add_argument(
        "--output",
        type=Path,
        help="the report (default: BENCHMARKS.md; for --quick or --only, bench/results/...)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENCLAW_BENCH_POSTGRES_URL", DEFAULT_PG),
        help="a PostgreSQL server on loopback to create (and drop) schemas in",
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    selection = Selection.of(args.only, args.clients, args.workers)
    timing = QUICK if args.quick else FULL
    every = quick_configs() if args.quick else full_configs()
    output, name = _outputs(args, selection)
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()

    pg_info = postgres_info(args.postgres_url)
    pg_url = args.postgres_url if pg_info else None
    absent = ["SQL with 1,000 clients: the issue's sizes for SQL are 100, 10,000 and 100,000."]
    if pg_url is None:
        every = [c for c in every if c.backend != "postgresql"]
        absent.append(f"PostgreSQL: no server answered at {args.postgres_url}.")
    configs = selection.configs(every)
    timed = selection.breakdown_sizes(every)
    fsync_ms = fsync_latency_ms(work)
    info = machine(pg_info, fsync_ms)
    floor: dict[str, Any] | None = None
    if selection.wants("floor"):
        floor = run_floor(work, timing)
        floor["store_batch"] = run_store_batch(work, timing, pg_url)
        print(f"floor: {floor}", flush=True)
    console: dict[str, Any] | None = None
    if selection.wants("console"):
        console = run_console_store(work, timing)
        console["pages"] = run_console_pages(work, timing)
        print(f"console reads: {console}", flush=True)
    print(f"{len(configs)} configurations; writing {output}", flush=True)

    rows: list[Row] = []
    bare_servers: dict[int, Server] = {}
    json_bytes_per_client = 0.0
    breakdowns: list[dict[str, Any]] = []
    quiet = QuietWait(timing.quiet_wait, total=4 * timing.quiet_wait)
    keys = {c.store_key for c in configs} | timed
    try:
        with _stores() as stores:
            for key in sorted(keys):
                for old in list(stores):  # one store at a time: drop the previous one
                    seed.drop(stores.pop(old))
                t0 = time.monotonic()
                stores[key] = made = _seed(key, work, pg_url)
                if made.json_raw is not None:
                    json_bytes_per_client = len(made.json_raw) / made.clients
                print(f"  seeded {key[0]} {key[1]:,} in {time.monotonic() - t0:.1f} s", flush=True)
                if key in timed:
                    history = made.backend != "json" and made.clients == 10_000
                    breakdowns.append(run_breakdown(made, timing, work, history=history))
                    print(f"    in-process: {breakdowns[-1]}", flush=True)
                here = [c for c in configs if c.store_key == key]
                for config in sorted(here, key=lambda c: c.section not in ("main", "committer")):
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
                        made,
                        bare_servers[config.workers],
                        timing,
                        work,
                        quiet,
                        open_loop=selection.open_loop(config, every),
                    )
                    rows.append(row)
                    _print_row(row)
    finally:
        for server in bare_servers.values():
            stop_server(server)

    if json_bytes_per_client:
        absent.insert(
            0,
            "JSON file with 100,000 clients: not run (the issue's sizes for the JSON store are "
            "100, 1,000 and 10,000). Every worker holds the whole store in memory, parses the "
            "whole snapshot at start and writes it whole at each compaction: at "
            f"{json_bytes_per_client:,.0f} bytes per seeded client that is "
            f"{json_bytes_per_client * 100_000 / 1e6:,.0f} MB at 100,000 clients.",
        )
    rank = {c: i for i, c in enumerate(every)}
    rows.sort(key=lambda r: rank[r.config])
    order_of = {"json": 0, "sqlite": 1, "postgresql": 2}
    breakdowns.sort(key=lambda b: (order_of[b["backend"]], b["clients"]))
    command = (
        "make bench"
        if name == "latest"
        else ".venv/bin/python bench/run.py "
        + " ".join(
            (["--quick"] if args.quick else [])
            + [f"--only {o}" for o in args.only or ()]
            + [f"--clients {n}" for n in args.clients]
            + [f"--workers {n}" for n in args.workers]
        )
    )
    note = ""
    if args.quick:
        note += "**Quick smoke run: too short to judge the goals.** "
    if selection.partial:
        note += "**Partial run: only what `--only` named; the other goals are not measured.**"
    verdicts = write_report(
        output,
        rows,
        breakdowns,
        info,
        timing,
        command,
        absent,
        fsync_ms,
        floor,
        time.monotonic() - began,
        console,
        note=note,
        raw=f"bench/results/{name}.json",
    )
    raw = {
        "machine": info,
        "timing": asdict(timing),
        "only": sorted(set(args.only or ())),
        "clients": args.clients,
        "workers": args.workers,
        "rows": [r.summary() for r in rows],
        "in_process": breakdowns,
        "floor": floor,
        "console": console,
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{name}.json").write_text(json.dumps(raw, indent=1))
    (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps(raw, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    print("\n".join(verdicts))
    print(f"wrote {output} in {(time.monotonic() - began) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
