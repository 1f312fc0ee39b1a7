"""Parts of the benchmark report that stand apart from the main rows: the in-process steps,
the committer comparison, the operator's reads and what limits the billed throughput (from
this run's numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from config import (
    ADDED_LATENCY_GOALS,
    BACKEND_NAMES,
    CONSOLE_GOAL_MS,
    FLOOR_BATCH,
    HISTORY_ROWS,
    JSON_GOAL_CLIENTS,
    OPEN_RATE,
    THROUGHPUT_GOALS,
)
from results import OpenRow, Row

#: The in-process steps of ``bench/breakdown.py``, in the table's order.
STEPS = (
    "authenticate",
    "authenticate_cached",
    "charge",
    "accept",
    "settle",
    "authenticate_with_history",
)


def _step(b: dict[str, Any], step: str, measure: str = "cpu_us") -> float:
    value: float = b[step][measure] if step in b else 0.0
    return value


def breakdown_table(breakdowns: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| Backend | Clients | authenticate, store read µs (CPU) | authenticate, key cache µs "
        "(CPU) | charge: the single charge µs (CPU) | accept: the hold with its job µs (CPU) "
        "| settle: the outcome µs (CPU) | authenticate, store read, client with "
        f"{HISTORY_ROWS:,} ledger rows µs (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in breakdowns:
        cells = [
            f"{b[s]['wall_us']:,.0f} ({b[s]['cpu_us']:,.0f})" if s in b else "—" for s in STEPS
        ]
        lines.append(
            f"| {BACKEND_NAMES[b['backend']]} | {b['clients']:,} | " + " | ".join(cells) + " |"
        )
    return lines


def _fixed(row: Row) -> OpenRow | None:
    return next((o for o in row.open_rows if o.kind == "fixed"), None)


def committer_table(rows: Sequence[Row]) -> list[str]:
    """The intake rows run with each committer (``OPENCLAW_COMMITTER``): a committer row and
    the main row of the same configuration, measured in the same run."""
    main = {r.config.partner: r for r in rows if r.config.section == "main"}
    pairs = [
        (main[r.config.partner], r)
        for r in rows
        if r.config.section == "committer" and r.config.partner in main
    ]
    if not pairs:
        return ["(not measured in this run)"]
    pcts = " / ".join(f"p{p}" for p in ADDED_LATENCY_GOALS)
    lines = [
        f"| Backend | Clients | Workers | Committer | Bare req/s | Billing req/s | Ratio "
        f"| Billing {pcts} ms | CPU µs/req bare → billing | Open loop at {OPEN_RATE:g} req/s: "
        f"billing {pcts} ms | Added {pcts} ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for pair in pairs:
        for row in pair:
            c, o = row.config, _fixed(row)
            open_cells = (
                " / ".join(f"{o.billing.pct(p):.2f}" for p in ADDED_LATENCY_GOALS)
                + " | "
                + " / ".join(f"{o.added(p):+.2f}" for p in ADDED_LATENCY_GOALS)
                + (" (saturated)" if o.saturated else "")
                if o is not None
                else "— | —"
            )
            cpu = row.bare.cpu_us(row.bare.cpu_s), row.billing.cpu_us(row.billing.cpu_s)
            lines.append(
                f"| {BACKEND_NAMES[c.backend]} | {c.clients:,} | {c.workers} | `{c.committer}` "
                f"| {row.bare.rps:,.0f} | {row.billing.rps:,.1f} | {row.ratio:.2f} | "
                + " / ".join(f"{row.billing.pct(p):.1f}" for p in ADDED_LATENCY_GOALS)
                + f" | {cpu[0]:,.0f} → {cpu[1]:,.0f} | {open_cells} |"
            )
        base, other = pair
        if base.billing.rps:
            notes.append(
                f"{other.config.workers} worker(s): `{other.config.committer}` served "
                f"{other.billing.rps / base.billing.rps:.2f}x the billed req/s of "
                f"`{base.config.committer}` (ratio to bare {other.ratio:.2f} against "
                f"{base.ratio:.2f})"
            )
    return [*lines, "", "; ".join(notes) + "." if notes else ""]


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


def _cpu_line(backend: str, clients: int, row: Row, b: dict[str, Any] | None) -> tuple[float, str]:
    """One backend's CPU budget against what billing costs, in process and under load."""
    goal = THROUGHPUT_GOALS[backend]
    bare = row.bare.cpu_us(row.bare.cpu_s)
    billed = row.billing.cpu_us(row.billing.cpu_s)
    budget = bare * (1 / goal - 1)
    db = (
        f" (and postgres {row.billing.cpu_us(row.billing.db_cpu_s):,.0f} µs)"
        if backend == "postgresql"
        else ""
    )
    line = (
        f"- {BACKEND_NAMES[backend]}, {clients:,} clients, 1 worker, 16 conns: the bare request "
        f"costs {bare:,.0f} µs of CPU, so a ratio of {goal:.2f} leaves billing at most "
        f"{budget:,.0f} µs per request (bare x (1 ÷ {goal:.2f} - 1)). Under load the gateway "
        f"spent {billed:,.0f} µs per billed request{db}: {billed - bare:,.0f} µs more than the "
        f"bare request, {(billed - bare) / budget:.1f}x the budget; the ratio measured "
        f"{row.ratio:.2f}."
    )
    if b is None:
        return budget, line
    cached, accept = _step(b, "authenticate_cached"), _step(b, "accept")
    steps = cached + accept
    line += (
        f" In one thread without HTTP, the key check and the charge alone take {steps:,.0f} µs of "
        f"CPU ({steps / budget:.1f}x the budget): the key check from the worker's key cache "
        f"{cached:,.0f} µs (from the store, on a cache miss: "
        f"{_step(b, 'authenticate'):,.0f} µs) and the charge with its job (its price held) in "
        f"one atomic step (`Store.accept`) {accept:,.0f} µs. Were CPU the only limit, the "
        f"steps alone would cap the ratio at {bare / (bare + steps):.2f} (bare ÷ (bare + steps))."
    )
    return budget, line


def limits(
    rows: Sequence[Row],
    breakdowns: Sequence[dict[str, Any]],
    fsync_ms: float,
    floor: dict[str, Any] | None,
) -> list[str]:
    """What this run's numbers say limits billed throughput; every figure is from this run."""
    main = {r.config.partner: r for r in rows if r.config.section == "main"}
    lines: list[str] = []
    budgets: dict[str, float] = {}
    chosen = _stores(main)
    for backend, clients in chosen:
        row = main[(backend, clients, 1, 16)]
        if not row.bare.total_2xx or not row.billing.total_2xx:
            continue
        b = next(
            (x for x in breakdowns if x["backend"] == backend and x["clients"] == clients), None
        )
        budgets[backend], line = _cpu_line(backend, clients, row, b)
        lines.append(line)
    if floor is not None:
        one, grouped = floor["batch_1"]["cpu_us"], floor[f"batch_{FLOOR_BATCH}"]["cpu_us"]
        budget = budgets.get("sqlite")
        versus = (
            f" Against the SQLite budget above ({budget:,.0f} µs) that is {one / budget:.1f}x "
            f"and {grouped / budget:.1f}x."
            if budget
            else ""
        )
        lines.append(
            "- The floor under any implementation (`bench/floor.py`: one thread, no HTTP, "
            "straight through the `sqlite3` module with no SQLAlchemy or pydantic, "
            f"{floor['clients']:,} clients): the key's digest and lookup, then the conditional "
            "UPDATE, the ledger INSERT and the job's row INSERT in one transaction, and its "
            f"commit with its fsync. {one:,.0f} µs of CPU per request when each request is "
            f"durable alone, {grouped:,.0f} µs when {FLOOR_BATCH} requests share one commit "
            f"(group commit, as the worker's committer batches the requests that queue up "
            f"while a commit runs).{versus}"
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
            "`Store.mutate_batch`, one transaction or one journal write per batch), CPU per "
            "change: " + "; ".join(each) + ". The worker's committer "
            "(`openclaw_billing/committer.py`) commits the intake's charges, each with its job, "
            "through it."
        )
    lines.append(_fsync_line(main, chosen, fsync_ms))
    return lines


#: The store each backend's limits are read on: its latency store (JSON at its goal's size).
LIMIT_STORES = {"sqlite": 10_000, "json": JSON_GOAL_CLIENTS, "postgresql": 10_000}


def _stores(main: dict[tuple[str, int, int, int], Row]) -> list[tuple[str, int]]:
    """Per backend, the store whose 1-worker, 16-conn intake row the limits read: the one in
    ``LIMIT_STORES`` if this run has it, else the smallest it has (a quick run)."""
    chosen = []
    for backend, clients in LIMIT_STORES.items():
        sizes = sorted(n for (b, n, w, c) in main if (b, w, c) == (backend, 1, 16))
        if sizes:
            chosen.append((backend, clients if clients in sizes else sizes[0]))
    return chosen


def _fsync_line(
    main: dict[tuple[str, int, int, int], Row], chosen: Sequence[tuple[str, int]], fsync_ms: float
) -> str:
    """The fsync's latency, and how much of a second it would fill at the billed rates of
    the stores whose writers take turns (SQLite, the JSON journal) were each request
    committed alone."""
    line = (
        f"- One small append + fsync on this disk took {fsync_ms:.2f} ms (median, measured at "
        "the start). A billed request is answered once its charge and its job are durable "
        "together: one commit (SQL) or one journal write (JSON) for the batch it is in."
    )
    shares = []
    for (backend, clients, workers, conns), row in sorted(main.items()):
        if backend == "postgresql" or (backend, clients) not in chosen or conns != 16:
            continue
        share = row.billing.rps * fsync_ms / 1000
        shares.append(
            f"{BACKEND_NAMES[backend]} {clients:,}, {workers} worker(s): "
            f"{row.billing.rps:,.0f} req/s, {100 * share:.0f}%"
        )
    if shares:
        line += (
            " The SQLite and JSON stores' writers take turns (one at a time across workers), "
            "so one fsync per request would keep the disk's fsync busy for billed req/s times "
            "fsync of each second: " + "; ".join(shares) + "."
        )
    return line


def settle_notes(main: Sequence[Row], settles: Sequence[Row]) -> list[str]:
    """What the intake + outcome rows measure, and per configuration with both rows in this
    run what settling adds to a job: time (1 ÷ throughput) and CPU, billed and bare."""
    lines = [
        "*intake + outcome* rows (reserve then settle; not goal rows): each connection sends "
        "an intake (the job's price reserved as a hold, as in the intake rows) and, once it "
        "is answered, the job runner's `POST /api/admin/jobs/{job_id}/outcome` for that job "
        '(`X-Auth-Token`, `{"status": "succeeded"}`: the hold settled by the plan\'s outcome '
        "policy, found by the job's id alone), then its next intake. Their req/s are pairs a "
        "second (both answers 2xx), their p50 / p99 and CPU per pair (intake sent → outcome "
        "answered); the outcome's own latency (its send → its answer) has its column. The bare "
        "side is the bare app's intake then its outcome endpoint (the same path, admin token "
        "check, body and answer models; no job looked up, moved, settled or audited).",
        "",
    ]
    intake = {r.config.partner: r for r in main}
    for pair in settles:
        row = intake.get(pair.config.partner)
        if row is None or not (row.billing.rps and pair.billing.rps and pair.bare.rps):
            continue
        c = pair.config
        per_job, per_pair = 1000 / row.billing.rps, 1000 / pair.billing.rps
        cpu = [side.cpu_us(side.cpu_s) for side in (row.bare, pair.bare, row.billing, pair.billing)]
        lines.append(
            f"- {BACKEND_NAMES[c.backend]}, {c.clients:,} clients, {c.workers} worker(s): "
            f"billed, a pair takes {per_pair:.2f} ms of the gateway's time (1 ÷ pairs a "
            f"second) against {per_job:.2f} ms for an intake alone, {per_pair / per_job:.2f}x; "
            f"settling adds {cpu[3] - cpu[2]:,.0f} µs of CPU per job ({cpu[2]:,.0f} → "
            f"{cpu[3]:,.0f}), the bare outcome {cpu[1] - cpu[0]:,.0f} µs ({cpu[0]:,.0f} → "
            f"{cpu[1]:,.0f}). Pairs to bare pairs: {pair.ratio:.2f}, intakes to bare intakes: "
            f"{row.ratio:.2f}."
        )
    return [*lines, ""]
