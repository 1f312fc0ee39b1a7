"""The issue's goals, each judged on the worst row of this run that it applies to: the Goals
table of the report (:func:`judge`, :func:`goals_table`), and the per-charge cost by store
size that one of them reads (:func:`flatness_table`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from config import (
    ADDED_LATENCY_GOALS,
    BACKEND_NAMES,
    CONSOLE_GOAL_MS,
    FLAT_GOAL,
    FLAT_SIZES,
    JSON_GOAL_CLIENTS,
    OPEN_RATE,
    P99_GOAL,
    READ_GOAL,
    THROUGHPUT_GOALS,
)
from results import OpenRow, Row


@dataclass(frozen=True)
class Goal:
    name: str
    #: The goal as the report states it, e.g. "≥ 0.85x".
    target: str
    #: None: not measured in this run.
    met: bool | None
    #: The worst relevant row's value, as shown (e.g. "0.17x"), and which row that is.
    value: str = "—"
    where: str = ""

    @property
    def verdict(self) -> str:
        return "not measured" if self.met is None else "met" if self.met else "**missed**"

    def line(self) -> str:
        verdict = "not measured" if self.met is None else "met" if self.met else "MISSED"
        where = f" on {self.where}" if self.where else ""
        return f"{self.name} {self.target}: {verdict} ({self.value}{where})"


def _worst(
    name: str,
    target: str,
    limit: float,
    items: Sequence[tuple[float, str]],
    *,
    at_most: bool,
    show: Callable[[float], str],
) -> Goal:
    """The goal judged on the worst of ``items`` (value, where): the largest if the goal is
    an upper bound (``at_most``), else the smallest."""
    if not items:
        return Goal(name, target, None)
    value, where = max(items) if at_most else min(items)
    met = value <= limit if at_most else value >= limit
    return Goal(name, target, met, show(value), where)


#: The in-process step the per-charge cost goal reads (``bench/breakdown.py``): the charge
#: with its job (``Store.accept``), what the gateway's intake commits for every request.
FLAT_STEP = "accept"


def step_us(
    breakdowns: Sequence[dict[str, Any]],
    backend: str,
    clients: int,
    step: str = FLAT_STEP,
    measure: str = "wall_us",
) -> float:
    """An in-process step's µs on that store: median wall (``wall_us``) or mean CPU
    (``cpu_us``); 0.0 if not timed."""
    for b in breakdowns:
        if b["backend"] == backend and b["clients"] == clients and step in b:
            value: float = b[step][measure]
            return value
    return 0.0


#: The step's two measures in ``bench/breakdown.py``: both must stay flat.
FLAT_MEASURES = {"wall_us": "median wall", "cpu_us": "mean CPU"}


def flat_ratios(
    breakdowns: Sequence[dict[str, Any]], backends: Sequence[str]
) -> list[tuple[float, str]]:
    """Per-charge cost (``FLAT_STEP``: the charge with its job) at the largest store over the
    smallest, per backend timed at both and per measure (median wall µs, mean CPU µs: the
    mean carries the share of any occasional larger write among the timed calls)."""
    out = []
    for backend in backends:
        small, large = FLAT_SIZES[backend]
        for measure, name in FLAT_MEASURES.items():
            a = step_us(breakdowns, backend, small, measure=measure)
            b = step_us(breakdowns, backend, large, measure=measure)
            if a and b:
                out.append(
                    (
                        b / a,
                        f"{BACKEND_NAMES[backend]}, {name}: {a:,.0f} → {b:,.0f} µs per charge "
                        f"with its job at {small:,} → {large:,} clients",
                    )
                )
    return out


def judge(
    rows: Sequence[Row],
    breakdowns: Sequence[dict[str, Any]],
    console: dict[str, Any] | None,
) -> list[Goal]:
    """Every goal of the issue, on this run's rows."""
    main = [r for r in rows if r.config.section == "main"]
    reads = [r for r in rows if r.config.section == "read"]
    fixed = [o for r in main for o in r.open_rows if o.kind == "fixed"]  # not the committer's
    goals = []
    for backend in ("sqlite", "json", "postgresql"):
        goal = THROUGHPUT_GOALS[backend]
        at = f" at {JSON_GOAL_CLIENTS:,} clients" if backend == "json" else ""
        goals.append(
            _worst(
                f"Billed intake throughput vs bare, {BACKEND_NAMES[backend]}{at}",
                f"≥ {goal:.2f}x",
                goal,
                [
                    (r.ratio, r.config.label)
                    for r in main
                    if r.throughput_goal == goal and r.config.backend == backend
                ],
                at_most=False,
                show=lambda v: f"{v:.2f}x",
            )
        )
    goals.append(
        _worst(
            "Billed intake p99 vs bare p99 (closed loop)",
            f"≤ {P99_GOAL:g}x",
            P99_GOAL,
            [(r.p99_ratio, r.config.label) for r in main],
            at_most=True,
            show=lambda v: f"{v:.1f}x",
        )
    )
    for pct, limit in ADDED_LATENCY_GOALS.items():
        goals.append(_added(pct, limit, fixed))
    goals.append(
        _worst(
            "Authenticated read (`GET /api/jobs`) throughput vs bare",
            f"≥ {READ_GOAL:.2f}x",
            READ_GOAL,
            [(r.ratio, r.config.label) for r in reads],
            at_most=False,
            show=lambda v: f"{v:.2f}x",
        )
    )
    for label, backends in (("SQL", ("sqlite", "postgresql")), ("JSON", ("json",))):
        small, large = FLAT_SIZES[backends[0]]
        goals.append(
            _worst(
                f"Per-charge cost flat from {small:,} to {large:,} clients, {label} "
                "(in-process charge with its job, `Store.accept`, largest ÷ smallest store, "
                "wall and CPU)",
                f"≤ {FLAT_GOAL:g}x",
                FLAT_GOAL,
                flat_ratios(breakdowns, backends),
                at_most=True,
                show=lambda v: f"{v:.2f}x",
            )
        )
    if console:
        goals += _console_goals(console)
    return goals


def _added(pct: int, limit: float, fixed: Sequence[OpenRow]) -> Goal:
    """Latency billing adds at ``OPEN_RATE``, at percentile ``pct``: worst open-loop row. A
    saturated row's percentiles are lower bounds: its verdict stands if it is missed."""
    return _worst(
        f"Latency billing adds at {OPEN_RATE:g} req/s (open loop), p{pct}",
        f"≤ {limit:g} ms",
        limit,
        [(o.added(pct), o.label + (" (saturated)" if o.saturated else "")) for o in fixed],
        at_most=True,
        show=lambda v: f"{v:+.2f} ms",
    )


def _console_goals(console: dict[str, Any]) -> list[Goal]:
    goals = []
    reads = console.get("sqlite", {})
    goals.append(
        _worst(
            f"Operator's reads on SQLite at {console['clients']:,} clients, median",
            f"≤ {CONSOLE_GOAL_MS:.0f} ms",
            CONSOLE_GOAL_MS,
            [(m["median_ms"], f"`{label}`") for label, m in reads.items()],
            at_most=True,
            show=lambda v: f"{v:,.1f} ms",
        )
    )
    pages = console.get("pages")
    if pages:
        goals.append(
            _worst(
                f"Console clients pages on SQLite at {pages['clients']:,} clients, p95",
                f"≤ {pages['goal_ms']:.0f} ms",
                pages["goal_ms"],
                [
                    (m["p95_ms"], f"`{label}`")
                    for label, m in pages["pages"].items()
                    if label.startswith("clients")
                ],
                at_most=True,
                show=lambda v: f"{v:,.1f} ms",
            )
        )
    return goals


def goals_table(goals: Sequence[Goal]) -> list[str]:
    judged = [g for g in goals if g.met is not None]
    lines = [
        f"{sum(bool(g.met) for g in judged)} of {len(judged)} goals measured in this run met"
        + (f"; {len(goals) - len(judged)} not measured." if len(judged) < len(goals) else "."),
        "Each is judged on the worst row of this run it applies to.",
        "",
        "| Goal | Target | Verdict | Measured (worst row) | Worst row |",
        "|---|---|---|---|---|",
    ]
    for g in goals:
        lines.append(f"| {g.name} | {g.target} | {g.verdict} | {g.value} | {g.where or '—'} |")
    return lines


# -- per-charge cost by store size -----------------------------------------------------------


def _http_ms(rows: Sequence[Row], backend: str, clients: int, workers: int) -> float:
    for r in rows:
        c = r.config
        if (c.section, c.backend, c.clients, c.workers) == ("main", backend, clients, workers):
            return 1000 / r.billing.rps if r.billing.rps else 0.0
    return 0.0


def flatness_table(rows: Sequence[Row], breakdowns: Sequence[dict[str, Any]]) -> list[str]:
    """Per-charge cost at the smallest and largest store, per backend: in process (the goal's
    measure: median wall and mean CPU µs) and over HTTP (1 / billed req/s, for information)."""
    lines = [
        "| Backend | Clients | in-process accept (charge with its job), median wall µs | ratio "
        "| mean CPU µs | ratio | in-process authenticate + accept, wall µs | ratio "
        "| HTTP ms per billed request, 1 / 2 "
        f"workers | ratio, 1 / 2 workers | ≤ {FLAT_GOAL:g}x |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend in ("sqlite", "postgresql", "json"):
        small, large = FLAT_SIZES[backend]
        cells, ratios = [], []
        for measure in FLAT_MEASURES:
            a = step_us(breakdowns, backend, small, measure=measure)
            b = step_us(breakdowns, backend, large, measure=measure)
            if a and b:
                cells.append(f"{a:,.0f} → {b:,.0f} | {b / a:.2f}")
                ratios.append(b / a)
        if len(ratios) < len(FLAT_MEASURES):
            continue
        a_small = step_us(breakdowns, backend, small) + step_us(
            breakdowns, backend, small, "authenticate"
        )
        a_large = step_us(breakdowns, backend, large) + step_us(
            breakdowns, backend, large, "authenticate"
        )
        http, http_ratio = [], []
        for workers in (1, 2):
            t_small = _http_ms(rows, backend, small, workers)
            t_large = _http_ms(rows, backend, large, workers)
            http.append(f"{t_small:.2f} → {t_large:.2f}" if t_small and t_large else "—")
            http_ratio.append(f"{t_large / t_small:.2f}" if t_small and t_large else "—")
        met = max(ratios) <= FLAT_GOAL
        lines.append(
            f"| {BACKEND_NAMES[backend]} | {small:,} → {large:,} | {' | '.join(cells)} "
            f"| {a_small:,.0f} → {a_large:,.0f} | {a_large / a_small:.2f} | {' / '.join(http)} "
            f"| {' / '.join(http_ratio)} | {'met' if met else '**missed**'} |"
        )
    return lines
