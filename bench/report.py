"""The benchmark report: BENCHMARKS.md from the rows, the in-process breakdowns, the floor, the
operator's reads and the machine, with each goal's verdict."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config import (
    ANALYSIS,
    BACKEND_NAMES,
    BUSY,
    CONSOLE_GOAL_MS,
    FLAT_GOAL,
    FLOOR_BATCH,
    HISTORY_ROWS,
    JSON_GOAL_CLIENTS,
    P99_GOAL,
    THROUGHPUT_GOALS,
    TMPFS_NAMES,
    Row,
    Timing,
)

# -- the report ------------------------------------------------------------------------------


def _goal(value: float, goal: float | None, *, at_most: bool = False) -> str:
    if goal is None:
        return "—"
    met = value <= goal if at_most else value >= goal
    return "met" if met else "**missed**"


def _ratio_cell(row: Row) -> str:
    ratios = row.round_ratios
    spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    return f"{row.ratio:.2f}{spread}"


def _table(rows: Sequence[Row], *, goals: bool) -> list[str]:
    head = (
        "| Backend | Clients | Workers | Conns | Bare req/s | Billing req/s | Ratio (rounds) "
        "| Goal | Bare p50 / p99 ms | Billing p50 / p99 ms | p99 ratio | p99 ≤ 2x "
        "| Non-2xx | CPU µs/req bare → billing |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for row in rows:
        c = row.config
        tgoal = row.throughput_goal
        goal = f"≥ {tgoal:.2f}: {_goal(row.ratio, tgoal)}" if goals and tgoal else "—"
        p99_goal = _goal(row.p99_ratio, P99_GOAL, at_most=True) if goals else "—"
        cpu = (
            f"{row.bare.cpu_us(row.bare.cpu_s):,.0f} → {row.billing.cpu_us(row.billing.cpu_s):,.0f}"
        )
        if c.backend == "postgresql":
            cpu += f" + {row.billing.cpu_us(row.billing.db_cpu_s):,.0f} in postgres"
        name = BACKEND_NAMES[c.backend] + (f" ({TMPFS_NAMES[c.tmpfs]})" if c.tmpfs else "")
        lines.append(
            f"| {name} | {c.clients:,} | {c.workers} | {c.concurrency} "
            f"| {row.bare.rps:,.0f} | {row.billing.rps:,.1f} | {_ratio_cell(row)} | {goal} "
            f"| {row.bare.pct(50):.1f} / {row.bare.pct(99):.1f} "
            f"| {row.billing.pct(50):.1f} / {row.billing.pct(99):.1f} | {row.p99_ratio:.1f} "
            f"| {p99_goal} | {row.billing.non_2xx} | {cpu} |"
        )
    return lines


def _step_us(b: dict[str, Any], step: str) -> float:
    value: float = b[step]["wall_us"]
    return value


def _in_process(breakdowns: Sequence[dict[str, Any]], backend: str, clients: int) -> float:
    """authenticate + charge, wall µs, in one thread (0.0 if not measured)."""
    for b in breakdowns:
        if b["backend"] == backend and b["clients"] == clients:
            return _step_us(b, "authenticate") + _step_us(b, "charge")
    return 0.0


def _flatness(
    rows: Sequence[Row], breakdowns: Sequence[dict[str, Any]]
) -> tuple[list[str], list[str]]:
    """Per-charge cost at 100 vs 100,000 clients on SQL; returns table lines and verdicts."""
    main = {
        (r.config.backend, r.config.clients, r.config.workers): r
        for r in rows
        if r.config.section == "main"
    }
    lines = [
        "| Backend | Workers | HTTP: ms per billed request (1 / req/s), 100 → 100,000 clients "
        "| ratio | in-process auth + charge µs, 100 → 100,000 | ratio "
        "| HTTP: CPU µs billing adds per request (gateway + postgres - bare) | ratio "
        "| ≤ 1.3x |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts: list[str] = []

    def charge_cpu(row: Row) -> float:
        b = row.billing
        return b.cpu_us(b.cpu_s) + b.cpu_us(b.db_cpu_s) - row.bare.cpu_us(row.bare.cpu_s)

    for backend in ("sqlite", "postgresql"):
        p_small, p_large = (
            _in_process(breakdowns, backend, 100),
            _in_process(breakdowns, backend, 100_000),
        )
        p_ratio = p_large / p_small if p_small else 0.0
        for workers in (1, 2):
            small, large = main.get((backend, 100, workers)), main.get((backend, 100_000, workers))
            if small is None or large is None or not small.billing.rps or not large.billing.rps:
                continue
            t_small, t_large = 1000 / small.billing.rps, 1000 / large.billing.rps
            c_small, c_large = charge_cpu(small), charge_cpu(large)
            t_ratio = t_large / t_small
            c_ratio = c_large / c_small if c_small > 0 else 0.0
            met = t_ratio <= FLAT_GOAL and (not p_ratio or p_ratio <= FLAT_GOAL)
            lines.append(
                f"| {BACKEND_NAMES[backend]} | {workers} | {t_small:.2f} → {t_large:.2f} "
                f"| {t_ratio:.2f} | {p_small:,.0f} → {p_large:,.0f} | {p_ratio:.2f} "
                f"| {c_small:,.0f} → {c_large:,.0f} | {c_ratio:.2f} "
                f"| {'met' if met else '**missed**'} |"
            )
            verdicts.append(
                f"per-charge cost flat from 100 to 100,000 clients on {BACKEND_NAMES[backend]}, "
                f"{workers} worker(s): {'met' if met else 'MISSED'} (HTTP {t_ratio:.2f}x, "
                f"in-process {p_ratio:.2f}x; CPU {c_ratio:.2f}x, for information)"
            )
    return lines, verdicts


def _breakdown_table(breakdowns: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| Backend | Clients | authenticate µs (CPU) | charge µs (CPU) | job-file append µs "
        f"(CPU) | authenticate, client with {HISTORY_ROWS:,} ledger rows µs (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for b in breakdowns:

        def cell(step: str, b: dict[str, Any] = b) -> str:
            if step not in b:
                return "—"
            return f"{b[step]['wall_us']:,.0f} ({b[step]['cpu_us']:,.0f})"

        lines.append(
            f"| {BACKEND_NAMES[b['backend']]} | {b['clients']:,} | {cell('authenticate')} "
            f"| {cell('charge')} | {cell('job_append')} | {cell('authenticate_with_history')} |"
        )
    return lines


def _console(console: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The operator's reads (``bench/console_store.py``): a table, and the SQLite verdicts."""
    backends = [b for b in ("sqlite", "json") if b in console]
    lines = [
        f"`bench/console_store.py`: `BillingService.list_clients` (a page of {console['page']}) "
        "and `BillingService.overview` in one thread, no HTTP, over a store of "
        f"{console['clients']:,} clients (a mix of plans and standings, a third of them with "
        f"jobs this cycle); {console['runs']} calls each after a warm-up: median / p95 wall "
        "ms, and the median CPU ms of the process in brackets. Goal on SQLite: the median "
        f"at most {CONSOLE_GOAL_MS:.0f} ms (the console's page answers within 300 ms). The "
        "JSON store's numbers are for information.",
        "",
        "| Read | " + " | ".join(BACKEND_NAMES[b] for b in backends) + " |",
        "|---" * (len(backends) + 1) + "|",
    ]
    verdicts = []
    for label in console[backends[0]]:
        cells = []
        for b in backends:
            m = console[b][label]
            cells.append(f"{m['median_ms']:,.1f} / {m['p95_ms']:,.1f} ({m['cpu_ms']:,.1f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    pages = console.get("pages")
    if pages:
        lines += [
            "",
            f"`bench/console_pages.py`: the console's pages over HTTP (`uvicorn gateway:app`, one "
            f"worker, a signed-in session) on SQLite with {pages['clients']:,} clients, "
            f"{pages['runs']} requests each after a warm-up. Goal: every clients page's p95 at "
            f"most {pages['goal_ms']:.0f} ms.",
            "",
            "| Page | median ms | p95 ms |",
            "|---|---|---|",
        ]
        for label, m in pages["pages"].items():
            lines.append(f"| {label} | {m['median_ms']:,.1f} | {m['p95_ms']:,.1f} |")
            if label.startswith("clients"):
                met = m["p95_ms"] <= pages["goal_ms"]
                verdicts.append(
                    f"console page `{label}` p95 at {pages['clients']:,} clients on SQLite ≤ "
                    f"{pages['goal_ms']:.0f} ms: {'met' if met else 'MISSED'} "
                    f"({m['p95_ms']:,.1f} ms)"
                )
    for label, m in console.get("sqlite", {}).items():
        met = m["median_ms"] <= CONSOLE_GOAL_MS
        verdicts.append(
            f"console read `{label}` at {console['clients']:,} clients on SQLite ≤ "
            f"{CONSOLE_GOAL_MS:.0f} ms: {'met' if met else 'MISSED'} ({m['median_ms']:,.1f} ms)"
        )
    return lines, verdicts


def _limits(
    rows: Sequence[Row],
    breakdowns: Sequence[dict[str, Any]],
    fsync_ms: float,
    floor: dict[str, Any] | None,
) -> list[str]:
    """What the numbers of this run say limits billing throughput."""
    main = {
        (r.config.backend, r.config.clients, r.config.workers, r.config.concurrency): r
        for r in rows
        if r.config.section == "main"
    }
    lines: list[str] = []
    budgets: dict[str, float] = {}
    for backend, clients in (
        ("sqlite", 10_000),
        ("json", JSON_GOAL_CLIENTS),
        ("postgresql", 10_000),
    ):
        row = main.get((backend, clients, 1, 16))
        b = next(
            (x for x in breakdowns if x["backend"] == backend and x["clients"] == clients), None
        )
        if row is None or b is None:
            continue
        goal = THROUGHPUT_GOALS[backend]
        bare_cpu = row.bare.cpu_us(row.bare.cpu_s)
        budget = bare_cpu * (1 / goal - 1)
        budgets[backend] = budget
        steps = sum(b[s]["cpu_us"] for s in ("authenticate", "charge", "job_append"))
        lines.append(
            f"- {BACKEND_NAMES[backend]}, {clients:,} clients, 1 worker: the bare request costs "
            f"{bare_cpu:,.0f} µs of CPU, so reaching {goal:.2f}x leaves billing at most "
            f"{budget:,.0f} µs per request. In one thread without HTTP, authenticate + charge + "
            f"job-file append alone take {steps:,.0f} µs of CPU "
            f"({b['authenticate']['cpu_us']:,.0f} + {b['charge']['cpu_us']:,.0f} + "
            f"{b['job_append']['cpu_us']:,.0f}); under load the gateway spent "
            f"{row.billing.cpu_us(row.billing.cpu_s):,.0f} µs per billed request"
            + (
                f" (and postgres {row.billing.cpu_us(row.billing.db_cpu_s):,.0f} µs)"
                if backend == "postgresql"
                else ""
            )
            + "."
        )
    if floor is not None:
        one, grouped = floor["batch_1"]["cpu_us"], floor[f"batch_{FLOOR_BATCH}"]["cpu_us"]
        sqlite_budget = budgets.get("sqlite")
        versus = (
            f" The SQLite budget above is {sqlite_budget:,.0f} µs."
            if sqlite_budget is not None
            else ""
        )
        lines.append(
            "- The floor under any implementation (`bench/floor.py`: one thread, no HTTP, "
            "straight through the `sqlite3` module with no SQLAlchemy or pydantic; the key's "
            "digest and lookup, the conditional UPDATE, the ledger INSERT, the commit with its "
            "fsync, and the job line with its fsync): "
            f"{one:,.0f} µs of CPU per request when each request is durable on its own before "
            "it is answered, as the gateway's are, and "
            f"{grouped:,.0f} µs when {FLOOR_BATCH} requests share one commit and one job-file "
            f"fsync (group commit, which the gateway does not do).{versus}"
        )
    batch = (floor or {}).get("store_batch")
    if batch:
        each = [
            f"{BACKEND_NAMES[b]} {batch[b]['batch_1']['cpu_us']:,.0f} µs alone, "
            f"{batch[b][f'batch_{FLOOR_BATCH}']['cpu_us']:,.0f} µs in a batch"
            for b in ("json", "sqlite", "postgresql")
            if b in batch
        ]
        lines.append(
            "- The store's batch primitive (`bench/batch.py`: one thread, no HTTP, "
            f"{batch['clients']:,} clients; a credit adjustment through `Store.mutate`, one "
            f"durable write each, or {FLOOR_BATCH} of them for different clients through "
            "`Store.mutate_batch`, one transaction or one file write per batch), CPU per change: "
            + "; ".join(each)
            + ". The gateway does not batch yet."
        )
    lines.append(
        f"- One fsync on this disk took {fsync_ms:.2f} ms (median) when measured at the start; "
        "the gateway fsyncs at least twice per billed request (the store's commit and the job "
        "file), each under a lock that serialises every worker."
    )
    for r in rows:
        if r.config.section != "diagnostic":
            continue
        c = r.config
        ref = main.get((c.backend, c.clients, c.workers, c.concurrency))
        versus = f" (on disk: {ref.billing.rps:,.1f} req/s, ratio {ref.ratio:.2f})" if ref else ""
        lines.append(
            f"- {BACKEND_NAMES[c.backend]}, {c.clients:,} clients, {c.workers} worker, "
            f"{TMPFS_NAMES[c.tmpfs]} (fsync free; diagnostic only): billing "
            f"{r.billing.rps:,.1f} req/s, ratio {r.ratio:.2f}, p99 {r.billing.pct(99):.1f} ms"
            f"{versus}."
        )
    return lines


def write_report(
    path: Path,
    rows: Sequence[Row],
    breakdowns: Sequence[dict[str, Any]],
    info: dict[str, str],
    timing: Timing,
    quick: bool,
    absent: Sequence[str],
    fsync_ms: float,
    floor: dict[str, Any] | None,
    elapsed_s: float,
    console: dict[str, Any] | None = None,
) -> list[str]:
    main = [r for r in rows if r.config.section == "main"]
    more = [r for r in rows if r.config.section == "concurrency"]
    diag = [r for r in rows if r.config.section == "diagnostic"]
    verdicts: list[str] = []
    for r in main:
        goal = r.throughput_goal
        if goal is not None:
            verdicts.append(
                f"throughput ≥ {goal:.2f}x bare on {r.config.label}: "
                f"{'met' if r.ratio >= goal else 'MISSED'} ({r.ratio:.2f})"
            )
    for r in main:
        verdicts.append(
            f"p99 ≤ 2x bare on {r.config.label}: "
            f"{'met' if r.p99_ratio <= P99_GOAL else 'MISSED'} ({r.p99_ratio:.1f}x)"
        )
    flat_lines, flat_verdicts = _flatness(main, breakdowns)
    verdicts += flat_verdicts
    console_lines, console_verdicts = _console(console) if console else ([], [])
    verdicts += console_verdicts
    met = sum(v.split(": ", 1)[1].startswith("met") for v in verdicts)
    command = ".venv/bin/python bench/run.py --quick" if quick else "make bench"
    out = [
        "# Benchmarks: `POST /api/intake` with auth and charge vs a bare endpoint",
        "",
        f"Written by `{command}` ({elapsed_s / 60:.1f} min) on {info['Date']}; regenerate "
        "rather than edit. "
        + ("**Quick smoke run: too short to judge the goals.**" if quick else ""),
        "",
        "## Setup",
        "",
        "- *Billing*: the reference gateway, `uvicorn gateway:app --workers N`, over a seeded "
        "store (`OPENCLAW_BILLING_DB`). Every request authenticates its `X-Client-Key`, "
        "charges one credit (pro clients with ample credits: the limited-plan path, not the "
        "enterprise log-only one), appends the job to the gateway's job file and answers 201. "
        "Requests go round-robin over 100 clients spread evenly over the store; every row "
        "starts from the seeded state (empty ledgers).",
        "- *Bare*: `uvicorn bench.bare_app:app --workers N`: the same route shape "
        "(`gateway.JobCreate` body, `X-Client-Key` header, a `gateway.JobAccepted` answer, a "
        "sync route in the thread pool) with no auth and no storage.",
        f"- Both run with the same flags (`--no-access-log`; uvloop + httptools) and are "
        f"loaded alternately, bare then billing, {timing.rounds} round(s) each of "
        f"{timing.warmup:g} s warm-up + {timing.duration:g} s measured, by `bench/load.py`: "
        "a closed loop of N keep-alive connections, each sending its next request when its "
        "last answer arrives (a minimal asyncio HTTP/1.1 client: httpx.AsyncClient tops out "
        "near 500 req/s on this machine, far below the bare app). Ratio = billing req/s ÷ bare "
        "req/s over the row's rounds, per-round spread in brackets; p50/p99 pool every "
        "measured request of the row.",
        "- **The load generator shares the machine's 2 cores with the server** (and, for "
        "PostgreSQL, with the database server): bare throughput is capped by the machine, not "
        "by FastAPI alone. The ratio is what both see under the same conditions.",
        "- Closed loop: latency ≈ connections ÷ throughput plus queueing, so p99 is latency "
        "at saturation, not at a fixed offered rate.",
        "- CPU µs/req: user + system CPU of the uvicorn processes (for PostgreSQL also of the "
        "postgres processes) per answered request, from /proc.",
        "",
        "## Results",
        "",
        *_table(main, goals=True),
        "",
    ]
    if absent:
        out += ["Absent cells:", "", *[f"- {a}" for a in absent], ""]
    if more:
        out += ["### More connections (not goal rows)", "", *_table(more, goals=False), ""]
    out += [
        "### Per-charge cost vs store size (SQL)",
        "",
        "Goal: at most 1.3x from 100 to 100,000 clients. Judged on the HTTP time per billed "
        "request and on the in-process authenticate + charge time (both must hold); the CPU "
        "column (a difference of two measurements, so noisier) is for information.",
        "",
        *(flat_lines if len(flat_lines) > 2 else ["(not measured in this run)"]),
        "",
        "### In-process cost per step (one thread, no HTTP, no contention)",
        "",
        "`bench/breakdown.py` on each seeded store: median wall µs per call (mean CPU µs in "
        "brackets). The last column gives one client a year of pro history "
        f"({HISTORY_ROWS:,} ledger rows over 12 past cycles) and authenticates it.",
        "",
        *_breakdown_table(breakdowns),
        "",
        "### The operator's reads (SQLite, and the JSON store for information)",
        "",
        *(console_lines or ["(not measured in this run)"]),
        "",
        "## Goals",
        "",
        f"{met} of {len(verdicts)} met.",
        "",
        *[f"- {v}" for v in verdicts],
        "",
    ]
    problems = [f"- {r.config.label}: {p}" for r in rows for p in r.problems]
    busy = [
        f"- {r.config.label}: {100 * r.busy_before:.0f}% of the CPU was busy with other work "
        "just before the row (after waiting for it to calm down)"
        for r in rows
        if r.busy_before > BUSY
    ]
    if problems or busy:
        out += ["## Anomalies", "", *problems, *busy, ""]
    out += [
        "## What limits it",
        "",
        "From this run's numbers:",
        "",
        *_limits(rows, breakdowns, fsync_ms, floor),
        "",
    ]
    if diag:
        out += [
            "### Diagnostic rows (files moved to tmpfs; not a supported configuration)",
            "",
            *_table(diag, goals=False),
            "",
        ]
    out += ["### Where the time goes (profile)", ""]
    if ANALYSIS.exists():
        out += [ANALYSIS.read_text().strip(), ""]
    else:
        out += ["Not profiled yet: see `bench/profile_run.py`.", ""]
    out += ["## Machine", "", *[f"- **{k}**: {v}" for k, v in info.items()], ""]
    out += [
        "## Reproduce",
        "",
        "```",
        "make bench                              # the full run; writes BENCHMARKS.md",
        ".venv/bin/python bench/run.py --quick   # smoke run; writes bench/results/",
        "cd bench && ../.venv/bin/python console_store.py --dir /tmp/console --table"
        "  # the operator's reads alone",
        "```",
        "",
        "Raw numbers (every round, CPU, statuses, in-process steps): "
        f"`bench/results/{'quick' if quick else 'latest'}.json`.",
        "",
    ]
    path.write_text("\n".join(out))
    return verdicts
