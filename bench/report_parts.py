"""Parts of the benchmark report that stand apart from the rows: the in-process steps, the
operator's reads and what limits the billed throughput (from this run's numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from config import (
    BACKEND_NAMES,
    CONSOLE_GOAL_MS,
    FLOOR_BATCH,
    HISTORY_ROWS,
    JSON_GOAL_CLIENTS,
    THROUGHPUT_GOALS,
    TMPFS_NAMES,
)
from results import Row


def breakdown_table(breakdowns: Sequence[dict[str, Any]]) -> list[str]:
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


def console_section(console: dict[str, Any]) -> list[str]:
    """The operator's reads (``bench/console_store.py``) and the console's pages
    (``bench/console_pages.py``): their tables (their goals are in the Goals table)."""
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
    return lines


def limits(
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
            f"fsync (group commit).{versus}"
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
            + ". The gateway's committer (`openclaw_billing/committer.py`) uses it: the "
            "charges that arrive while a batch commits go in the next one."
        )
    lines.append(
        f"- One fsync on this disk took {fsync_ms:.2f} ms (median) when measured at the start; "
        "a billed request is answered once its charge and its job are durable, committed "
        "together in the store (the worker's committer groups the charges that queue up "
        "meanwhile into one commit)."
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
