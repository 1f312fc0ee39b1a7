"""The benchmark's configuration: paths, goals, timings, the configurations of the full and
quick runs, and what one configuration's rounds measure (:class:`Side`, :class:`Row`)."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from load import percentile

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
ANALYSIS = BENCH / "analysis.md"
PYTHON = sys.executable
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN_TOKEN = "bench-admin-token-not-a-secret-0123456789"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0

#: Throughput goals (billing / bare) by backend; JSON's applies at 1,000 clients only.
THROUGHPUT_GOALS = {"sqlite": 0.85, "json": 0.75, "postgresql": 0.6}
JSON_GOAL_CLIENTS = 1_000
P99_GOAL = 2.0
FLAT_GOAL = 1.3
BACKEND_NAMES = {"json": "JSON file", "sqlite": "SQLite", "postgresql": "PostgreSQL"}
TMPFS_NAMES = {"": "", "jobs": "job file on tmpfs", "all": "store and job file on tmpfs"}


@dataclass(frozen=True)
class Timing:
    rounds: int
    warmup: float
    duration: float
    #: Seconds to wait, at most, for other work on the machine to calm down before a row.
    quiet_wait: float
    #: Calls per step of the in-process breakdown.
    breakdown_calls: int
    #: The operator's reads (``bench/console_store.py``): clients in the store, calls per read.
    console_clients: int
    console_runs: int


FULL = Timing(
    rounds=3,
    warmup=0.5,
    duration=3.0,
    quiet_wait=20.0,
    breakdown_calls=300,
    console_clients=100_000,
    console_runs=11,
)
QUICK = Timing(
    rounds=1,
    warmup=0.3,
    duration=1.0,
    quiet_wait=0.0,
    breakdown_calls=50,
    console_clients=10_000,
    console_runs=3,
)
#: "Busy" for the quiet check: share of both cores used by something else.
BUSY = 0.15
#: Ledger rows of the client whose history is timed: a year of a pro client (12 x 200 jobs).
HISTORY_ROWS = 2_400
#: What the operator's reads must stay under on SQLite (the page answers within 300 ms; half
#: of it is the headroom ``bench/console_store.py`` is judged by).
CONSOLE_GOAL_MS = 150.0
#: Requests per commit in the group-commit line of ``bench/floor.py``.
FLOOR_BATCH = 8


@dataclass(frozen=True)
class Config:
    backend: str
    clients: int
    workers: int
    concurrency: int
    #: "main" (the goals), "concurrency" (more connections), "diagnostic" (what-ifs).
    section: str = "main"
    #: Diagnostic only: "jobs" puts the gateway's job file on tmpfs, "all" the store too.
    tmpfs: str = ""

    @property
    def store_key(self) -> tuple[str, int, bool]:
        return self.backend, self.clients, self.tmpfs == "all"

    @property
    def label(self) -> str:
        extra = f", {TMPFS_NAMES[self.tmpfs]}" if self.tmpfs else ""
        return (
            f"{BACKEND_NAMES[self.backend]}, {self.clients:,} clients, {self.workers} worker(s), "
            f"{self.concurrency} conns{extra}"
        )


def full_configs() -> list[Config]:
    configs: list[Config] = []
    for backend, sizes in (
        ("json", (100, 1_000, 10_000)),
        ("sqlite", (100, 10_000, 100_000)),
        ("postgresql", (100, 10_000, 100_000)),
    ):
        for clients in sizes:
            for workers in (1, 2):
                configs.append(Config(backend, clients, workers, 16))
    configs += [
        Config("json", 1_000, 2, 64, "concurrency"),
        Config("sqlite", 10_000, 2, 64, "concurrency"),
        Config("postgresql", 10_000, 2, 64, "concurrency"),
        Config("json", 1_000, 1, 16, "diagnostic", "jobs"),
        Config("json", 1_000, 1, 16, "diagnostic", "all"),
        Config("sqlite", 10_000, 1, 16, "diagnostic", "jobs"),
        Config("sqlite", 10_000, 1, 16, "diagnostic", "all"),
        Config("postgresql", 10_000, 1, 16, "diagnostic", "jobs"),
    ]
    return configs


def quick_configs() -> list[Config]:
    return [
        Config("json", 100, 1, 16),
        Config("sqlite", 100, 1, 16),
        Config("sqlite", 100, 2, 16),
        Config("postgresql", 100, 1, 16),
        Config("sqlite", 100, 1, 16, "diagnostic", "jobs"),
    ]


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Side:
    """One kind (bare or billing) of one configuration, all its rounds pooled."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list, repr=False)
    cpu_s: float = 0.0
    db_cpu_s: float = 0.0
    load_cpu_s: float = 0.0

    @property
    def ok(self) -> int:
        return sum(r["requests"] - r["non_2xx"] for r in self.rounds)

    @property
    def rps(self) -> float:
        elapsed = sum(r["elapsed_s"] for r in self.rounds)
        return self.ok / elapsed if elapsed else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(r["non_2xx"] + r["errors"] for r in self.rounds)

    @property
    def total_2xx(self) -> int:
        return sum(r["total_2xx"] for r in self.rounds)

    def pct(self, p: float) -> float:
        return percentile(sorted(self.latencies), p)

    def cpu_us(self, seconds: float) -> float:
        """CPU per answered request (warm-up included: the CPU was measured over it too)."""
        return 1e6 * seconds / self.total_2xx if self.total_2xx else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.pct(50), 2),
            "p99_ms": round(self.pct(99), 2),
            "requests": len(self.latencies),
            "non_2xx_or_errors": self.non_2xx,
            "server_cpu_us_per_req": round(self.cpu_us(self.cpu_s), 1),
            "db_cpu_us_per_req": round(self.cpu_us(self.db_cpu_s), 1),
            "loadgen_cpu_us_per_req": round(self.cpu_us(self.load_cpu_s), 1),
            "rounds": self.rounds,
        }


@dataclass
class Row:
    config: Config
    bare: Side
    billing: Side
    busy_before: float
    ledger_expected: int = 0
    ledger_found: int = -1
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.billing.rps / self.bare.rps if self.bare.rps else 0.0

    @property
    def round_ratios(self) -> list[float]:
        return [
            b["rps"] / a["rps"] if a["rps"] else 0.0
            for a, b in zip(self.bare.rounds, self.billing.rounds, strict=True)
        ]

    @property
    def p99_ratio(self) -> float:
        bare = self.bare.pct(99)
        return self.billing.pct(99) / bare if bare else 0.0

    @property
    def throughput_goal(self) -> float | None:
        c = self.config
        if c.section == "diagnostic":
            return None
        if c.backend == "json" and c.clients != JSON_GOAL_CLIENTS:
            return None
        return THROUGHPUT_GOALS[c.backend]

    def summary(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "ratio": round(self.ratio, 3),
            "round_ratios": [round(r, 3) for r in self.round_ratios],
            "p99_ratio": round(self.p99_ratio, 2),
            "busy_before_pct": round(100 * self.busy_before, 1),
            "ledger_expected": self.ledger_expected,
            "ledger_found": self.ledger_found,
            "problems": self.problems,
            "bare": self.bare.summary(),
            "billing": self.billing.summary(),
        }
