"""The benchmark report: BENCHMARKS.md from the rows (closed loop, open loop, the authenticated
read), the in-process breakdowns, the floor, the operator's reads and the machine, with the
Goals table (``goals.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config import (
    ADDED_LATENCY_GOALS,
    ANALYSIS,
    BACKEND_NAMES,
    BUSY,
    FLAT_GOAL,
    HISTORY_ROWS,
    OPEN_RATE,
    OTHER_COMMITTER,
    P99_GOAL,
    Timing,
)
from goals import flatness_table, goals_table, judge
from report_parts import (
    breakdown_table,
    committer_table,
    console_section,
    limits,
    settle_notes,
)
from report_setup import setup, validity
from results import OpenRow, OpenSide, Row


def _goal(value: float, goal: float | None, *, at_most: bool = False) -> str:
    if goal is None:
        return "—"
    met = value <= goal if at_most else value >= goal
    return "met" if met else "**missed**"


def _ratio_cell(row: Row) -> str:
    ratios = row.round_ratios
    spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    return f"{row.ratio:.2f}{spread}"


def _table(rows: Sequence[Row], *, goals: bool, p99: bool = True, paths: bool = False) -> list[str]:
    """Closed-loop rows; with ``paths``, intake rows and intake + outcome pair rows together
    (a pair row's req/s are pairs a second, its latency and CPU per pair)."""
    path_head = " Per request |" if paths else ""
    outcome_head = " Outcome alone p50 / p99 ms, bare → billing |" if paths else ""
    head = (
        f"| Backend | Clients | Workers | Conns |{path_head} Bare req/s | Billing req/s "
        "| Ratio (rounds) | Goal | Bare p50 / p99 ms | Billing p50 / p99 ms | p99 ratio "
        f"| p99 ≤ 2x |{outcome_head} Non-2xx bare / billing | CPU µs/req bare → billing |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for row in rows:
        c = row.config
        pair = c.section == "settle"
        tgoal = row.throughput_goal
        goal = f"≥ {tgoal:.2f}: {_goal(row.ratio, tgoal)}" if goals and tgoal else "—"
        judged = goals and p99 and not pair
        p99_goal = _goal(row.p99_ratio, P99_GOAL, at_most=True) if judged else "—"
        cpu = (
            f"{row.bare.cpu_us(row.bare.cpu_s):,.0f} → {row.billing.cpu_us(row.billing.cpu_s):,.0f}"
        )
        if c.backend == "postgresql":
            cpu += f" + {row.billing.cpu_us(row.billing.db_cpu_s):,.0f} in postgres"
        path = ""
        if paths:
            path = f" {'intake + outcome' if pair else 'intake'} |"
        outcome = ""
        if paths:
            outcome = (
                f" {row.bare.outcome_pct(50):.1f} / {row.bare.outcome_pct(99):.1f} → "
                f"{row.billing.outcome_pct(50):.1f} / {row.billing.outcome_pct(99):.1f} |"
                if pair
                else " — |"
            )
        lines.append(
            f"| {BACKEND_NAMES[c.backend]} | {c.clients:,} | {c.workers} | {c.concurrency} "
            f"|{path} {row.bare.rps:,.0f} | {row.billing.rps:,.1f} | {_ratio_cell(row)} | {goal} "
            f"| {row.bare.pct(50):.1f} / {row.bare.pct(99):.1f} "
            f"| {row.billing.pct(50):.1f} / {row.billing.pct(99):.1f} | {row.p99_ratio:.1f} "
            f"| {p99_goal} |{outcome} {row.bare.non_2xx} / {row.billing.non_2xx} | {cpu} |"
        )
    return lines


def _beside(main: Sequence[Row], settles: Sequence[Row]) -> list[Row]:
    """The intake rows, each followed by the pair row of the same configuration (pair rows
    without an intake row in this run come last)."""
    pairs = {r.config.partner: r for r in settles}
    out: list[Row] = []
    for row in main:
        out.append(row)
        if row.config.partner in pairs:
            out.append(pairs.pop(row.config.partner))
    return out + list(pairs.values())


def _pcts(side: OpenSide, saturated: bool) -> str:
    bound = "≥ " if saturated else ""
    return f"{bound}{side.pct(50):.1f} / {bound}{side.pct(99):.1f}"


def _open_table(rows: Sequence[Row]) -> list[str]:
    head = (
        "| Backend | Clients | Workers | Rate req/s | Bare p50 / p99 ms | Billing p50 / p99 ms "
        "| Added p50 / p99 ms | Goal (≤ "
        + " / ≤ ".join(f"{v:g}" for v in ADDED_LATENCY_GOALS.values())
        + " ms) | Billing answered req/s | Censored bare / billing | Non-2xx bare / billing "
        "| Generator lateness p99 / max ms | Wait for a connection p99 ms bare / billing |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for row in rows:
        if row.config.section == "main":  # the committer rows have a table of their own
            lines.extend(_open_line(o) for o in row.open_rows)
    return lines


def _open_line(o: OpenRow) -> str:
    c = o.config
    # Billing censored, bare not: the added latency is a lower bound. Bare censored: neither.
    bound = "≥ " if o.billing.censored and not o.bare.censored else ""
    if o.bare.censored:
        bound = "bare saturated: "
    if o.kind == "fixed":
        met = all(o.added(p) <= limit for p, limit in ADDED_LATENCY_GOALS.items())
        goal = "met" if met else "**missed**"
    else:
        goal = "— (half of bare)"
    late, worst = o.generator_late("p99"), o.generator_late("max")
    added = " / ".join(f"{o.added(p):+.1f}" for p in ADDED_LATENCY_GOALS)
    return (
        f"| {BACKEND_NAMES[c.backend]} | {c.clients:,} | {c.workers} | {o.rate:,.0f} "
        f"| {_pcts(o.bare, o.bare.censored > 0)} | {_pcts(o.billing, o.billing.censored > 0)} "
        f"| {bound}{added} | {goal} | {o.billing.rps:,.1f} "
        f"| {o.bare.censored} / {o.billing.censored} | {o.bare.non_2xx} / {o.billing.non_2xx} "
        f"| {late:.2f} / {worst:.2f} | {o.bare.generator('conn_wait_ms', 'p99'):.2f} / "
        f"{o.billing.generator('conn_wait_ms', 'p99'):.2f} |"
    )


def write_report(
    path: Path,
    rows: Sequence[Row],
    breakdowns: Sequence[dict[str, Any]],
    info: dict[str, str],
    timing: Timing,
    command: str,
    absent: Sequence[str],
    fsync_ms: float,
    floor: dict[str, Any] | None,
    elapsed_s: float,
    console: dict[str, Any] | None = None,
    *,
    note: str = "",
    raw: str = "bench/results/latest.json",
) -> list[str]:
    """Write the report; returns the goals' verdicts, one line each."""
    main = [r for r in rows if r.config.section == "main"]
    reads = [r for r in rows if r.config.section == "read"]
    more = [r for r in rows if r.config.section == "concurrency"]
    committers = [r for r in rows if r.config.section == "committer"]
    settles = [r for r in rows if r.config.section == "settle"]
    results = _beside(main, settles)
    goals = judge(rows, breakdowns, console)
    flat = flatness_table(rows, breakdowns)
    out = [
        "# Benchmarks: `POST /api/intake` with auth and charge vs a bare endpoint",
        "",
        f"Written by `{command}` ({elapsed_s / 60:.1f} min) on {info['Date']}; regenerate "
        f"rather than edit. {note}".rstrip(),
        "",
        "## Setup",
        "",
        *setup(timing),
        *validity(rows),
        "",
        "## Goals",
        "",
        *goals_table(goals),
        "",
        "## Results",
        "",
        *(
            _table(results, goals=True, paths=bool(settles))
            if results
            else ["(no intake rows in this run)"]
        ),
        "",
        *(settle_notes(main, settles) if settles else []),
    ]
    if absent:
        out += ["Absent cells:", "", *[f"- {a}" for a in absent], ""]
    if any(r.open_rows for r in rows):
        out += [
            f"### Open loop: latency billing adds at a fixed rate (goal at {OPEN_RATE:g} req/s)",
            "",
            *_open_table(rows),
            "",
        ]
    if reads:
        out += [
            "### Authenticated read: `GET /api/jobs`",
            "",
            *_table(reads, goals=True, p99=False),
            "",
            "One answer's size, bare / billing: "
            + "; ".join(
                f"{BACKEND_NAMES[r.config.backend]} {r.config.clients:,}, {r.config.workers} "
                f"worker(s): {r.answer_bytes[0]:,} / {r.answer_bytes[1]:,} bytes"
                for r in reads
            )
            + ".",
            "",
        ]
    if more:
        out += ["### More connections (not goal rows)", "", *_table(more, goals=False), ""]
    if committers:
        out += [
            "### Thread vs loop committer (not goal rows)",
            "",
            "The same intake rows, on the same store in the same run, with the worker's group "
            f"committer as `OPENCLAW_COMMITTER=thread` (the default: a thread of its own "
            f"commits each batch; the rows above) and `{OTHER_COMMITTER}` (the event loop's "
            "thread commits the batch itself: no hand-off, but the loop waits for the commit "
            "and its fsync). Closed loop as above, then the open loop at "
            f"{OPEN_RATE:g} req/s; each row's bare rounds alternate with its own billed ones.",
            "",
            *committer_table(rows),
            "",
        ]
    out += [
        "### Per-charge cost vs store size",
        "",
        f"Goal: at most {FLAT_GOAL:g}x from the smallest store to the largest (100 → 100,000 "
        "clients on SQL, 100 → 10,000 on the JSON store), judged on the in-process charge "
        "with its job (`Store.accept` with a priced `NewJob`: the job's price held, checked "
        "against the concurrency cap; `bench/breakdown.py`, the table below): that is the step "
        "the gateway's intake commits for every request, so the goal is judged on it rather "
        "than on a charge without a job. Its median wall µs and "
        "its mean CPU µs (the mean carries the share of any occasional larger write among "
        "the timed calls) must both hold. Authenticate + accept and the HTTP time per "
        "billed request (1 ÷ billed req/s) are for information.",
        "",
        *(flat if len(flat) > 2 else ["(not measured in this run)"]),
        "",
        "### In-process cost per step (one thread, no HTTP, no contention)",
        "",
        "`bench/breakdown.py` on each seeded store: median wall µs per call (mean CPU µs in "
        "brackets). *Authenticate*: the `X-Client-Key` check without the ledger, reading the "
        "store (a key-cache miss), and from the worker's key cache (a hit, as most of a busy "
        "client's requests are). *Charge*: `BillingService.charge`, the single charge (one "
        "credit taken at once, no job: what `deduct_job_credit` does for a host), through the "
        "committer. *Accept*: `Store.accept(Charge(..., job=NewJob(fields=..., price=...), "
        "key_id=...))`, the job's price held (the concurrency cap checked) with its job in one "
        "atomic step and one durable write, the key re-checked: what the intake's committer "
        "commits per request (alone here). *Settle*: `BillingService.report_job` with "
        "`succeeded` for each job the accept step held, found by its id, through the "
        "committer with its audit event: what the runner's outcome report does. The "
        f"last column gives one client a year of pro history ({HISTORY_ROWS:,} ledger rows "
        "over 12 past cycles) and authenticates it from the store.",
        "",
        *(breakdown_table(breakdowns) if breakdowns else ["(not measured in this run)"]),
        "",
        "### The operator's reads (SQLite, and the JSON store for information)",
        "",
        *(console_section(console) if console else ["(not measured in this run)"]),
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
        *limits(rows, breakdowns, fsync_ms, floor),
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
        ".venv/bin/python bench/run.py --only open --only sqlite   # a part; writes bench/results/",
        "cd bench && ../.venv/bin/python console_store.py --dir /tmp/console --table"
        "  # the operator's reads alone",
        "```",
        "",
        f"Raw numbers (every round, CPU, statuses, in-process steps): `{raw}`.",
        "",
    ]
    path.write_text("\n".join(out))
    return [g.line() for g in goals]
