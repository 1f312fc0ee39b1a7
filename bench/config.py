"""The benchmark's configuration: paths, goals, timings, the configurations of the full and
quick runs, and which of them a ``--only`` selection keeps (:class:`Selection`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
#: Latency billing may add at the fixed rate ``OPEN_RATE`` (billing - bare, ms), by percentile.
ADDED_LATENCY_GOALS = {50: 1.0, 99: 3.0}
#: The authenticated read (``GET /api/jobs``): billing / bare throughput.
READ_GOAL = 0.8
#: The open loop's fixed rate (requests a second); the other rate is half the bare endpoint's
#: closed-loop throughput measured for the same configuration in the same run.
OPEN_RATE = 100.0
#: At most this many connections in the open loop (more requests wait at the generator).
OPEN_CONNECTIONS = 64
#: Store sizes of the per-charge cost goal: smallest and largest, by backend.
FLAT_SIZES = {"sqlite": (100, 100_000), "postgresql": (100, 100_000), "json": (100, 10_000)}
BACKEND_NAMES = {"json": "JSON file", "sqlite": "SQLite", "postgresql": "PostgreSQL"}
#: The worker's group committers (``OPENCLAW_COMMITTER``, see openclaw_billing/committer.py):
#: the default, and the one the committer comparison runs once more with.
DEFAULT_COMMITTER = "thread"
OTHER_COMMITTER = "loop"


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
    #: The open loop: rounds (each bare then billing, at each rate), seconds of warm-up and
    #: measurement per round, and how long to wait for the last answers after the schedule.
    open_rounds: int
    open_warmup: float
    open_duration: float
    open_grace: float


FULL = Timing(
    rounds=3,
    warmup=0.5,
    duration=3.0,
    quiet_wait=20.0,
    breakdown_calls=300,
    console_clients=100_000,
    console_runs=11,
    open_rounds=2,
    open_warmup=0.5,
    open_duration=4.0,
    open_grace=1.0,
)
QUICK = Timing(
    rounds=1,
    warmup=0.3,
    duration=1.0,
    quiet_wait=0.0,
    breakdown_calls=50,
    console_clients=10_000,
    console_runs=3,
    open_rounds=1,
    open_warmup=0.3,
    open_duration=2.0,
    open_grace=0.5,
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
    #: "main" (the intake goals), "read" (``GET /api/jobs``), "concurrency" (more connections),
    #: "committer" (a main row once more with ``OTHER_COMMITTER``), "settle" (reserve then
    #: settle: each intake followed by the runner's outcome report for its job, as a pair).
    section: str = "main"
    #: The gateway's ``OPENCLAW_COMMITTER``.
    committer: str = DEFAULT_COMMITTER
    #: After the closed-loop rounds, the open-loop ones on the same gateway (intake rows only;
    #: a committer row runs the fixed rate only).
    open_loop: bool = False

    @property
    def store_key(self) -> tuple[str, int]:
        return self.backend, self.clients

    @property
    def partner(self) -> tuple[str, int, int, int]:
        """What pairs a committer row with its main row: backend, clients, workers, conns."""
        return self.backend, self.clients, self.workers, self.concurrency

    @property
    def route(self) -> str:
        """What the load generator requests: a route of ``http1.ROUTES``, or "pair" (an
        intake, then the outcome report for its job: ``bench/pairs.py``)."""
        return {"read": "jobs", "settle": "pair"}.get(self.section, "intake")

    @property
    def label(self) -> str:
        extra = f", {self.committer} committer" if self.committer != DEFAULT_COMMITTER else ""
        what = {"read": "GET /api/jobs, ", "settle": "intake + outcome, "}.get(self.section, "")
        return (
            f"{what}{BACKEND_NAMES[self.backend]}, {self.clients:,} clients, "
            f"{self.workers} worker(s), {self.concurrency} conns{extra}"
        )


#: Where the open-loop and read rows are measured: one store size per backend (JSON at the size
#: of its throughput goal), 1 worker and 2 (the usual count).
LATENCY_STORES = (("json", JSON_GOAL_CLIENTS), ("sqlite", 10_000), ("postgresql", 10_000))
#: The store sizes of the intake rows, by backend.
INTAKE_SIZES = {
    "json": (100, 1_000, 10_000),
    "sqlite": (100, 10_000, 100_000),
    "postgresql": (100, 10_000, 100_000),
}


def full_configs() -> list[Config]:
    configs: list[Config] = []
    latency = set(LATENCY_STORES)
    for backend, sizes in INTAKE_SIZES.items():
        for clients in sizes:
            for workers in (1, 2):
                configs.append(
                    Config(backend, clients, workers, 16, open_loop=(backend, clients) in latency)
                )
    configs += [
        Config(backend, clients, workers, 16, "read")
        for backend, clients in LATENCY_STORES
        for workers in (1, 2)
    ]
    configs += [
        Config("json", 1_000, 2, 64, "concurrency"),
        Config("sqlite", 10_000, 2, 64, "concurrency"),
        Config("postgresql", 10_000, 2, 64, "concurrency"),
    ]
    configs += committer_configs("sqlite", 10_000)
    configs += settle_configs()
    return configs


def settle_configs() -> list[Config]:
    """Reserve then settle (intake + outcome pairs, closed loop, 16 conns): every intake
    store size with 1 worker (does settling cost more in a larger store?) and the latency
    stores with 2 workers too; each beside the intake row of the same configuration."""
    latency = set(LATENCY_STORES)
    return [
        Config(backend, clients, workers, 16, "settle")
        for backend, each in INTAKE_SIZES.items()
        for clients in each
        for workers in ((1, 2) if (backend, clients) in latency else (1,))
    ]


def committer_configs(backend: str, clients: int) -> list[Config]:
    """The committer comparison: the main intake rows of one store (1 and 2 workers, 16
    conns, open loop at ``OPEN_RATE``) once more with ``OTHER_COMMITTER``."""
    return [
        Config(backend, clients, workers, 16, "committer", OTHER_COMMITTER, open_loop=True)
        for workers in (1, 2)
    ]


def quick_configs() -> list[Config]:
    return [
        Config("json", 100, 1, 16),
        Config("json", 1_000, 1, 16, open_loop=True),
        Config("sqlite", 100, 1, 16, open_loop=True),
        Config("sqlite", 100, 2, 16, open_loop=True),
        Config("postgresql", 100, 1, 16, open_loop=True),
        Config("json", 1_000, 1, 16, "read"),
        Config("sqlite", 100, 1, 16, "read"),
        Config("postgresql", 100, 1, 16, "read"),
        *committer_configs("sqlite", 100),
        Config("json", 1_000, 1, 16, "settle"),
        Config("sqlite", 100, 1, 16, "settle"),
        Config("postgresql", 100, 1, 16, "settle"),
    ]


# -- --only ----------------------------------------------------------------------------------

#: What ``--only`` names: parts of the run, or backends (whose rows, of every part, run).
SECTIONS = (
    "intake",
    "settle",
    "open",
    "read",
    "concurrency",
    "committer",
    "breakdown",
    "floor",
    "console",
)
BACKENDS = tuple(BACKEND_NAMES)
#: The parts a run makes when ``--only`` names backends alone (floor and console have none).
_PER_BACKEND = ("intake", "settle", "open", "read", "concurrency", "committer", "breakdown")


@dataclass(frozen=True)
class Selection:
    """What a run makes: the parts (``SECTIONS``) on the backends. ``--only`` values are
    parts or backends; the parts named (all per-backend parts if none) on the backends named
    (all if none). No ``--only``: everything. ``clients`` and ``workers`` (empty: any) narrow
    the per-backend parts to those store sizes and worker counts (``--clients``,
    ``--workers``), e.g. to run one row."""

    sections: frozenset[str]
    backends: frozenset[str]
    partial: bool
    clients: frozenset[int] = frozenset()
    workers: frozenset[int] = frozenset()

    @classmethod
    def of(
        cls,
        only: Sequence[str] | None,
        clients: Iterable[int] = (),
        workers: Iterable[int] = (),
    ) -> Selection:
        names = set(only or ())
        unknown = names - set(SECTIONS) - set(BACKENDS)
        if unknown:
            raise ValueError(f"--only: unknown {sorted(unknown)}; use {SECTIONS + BACKENDS}")
        sizes, counts = frozenset(clients), frozenset(workers)
        narrowed = bool(sizes or counts)
        default = _PER_BACKEND if names or narrowed else SECTIONS
        sections = names & set(SECTIONS) or set(default)
        backends = frozenset(names & set(BACKENDS) or BACKENDS)
        return cls(frozenset(sections), backends, bool(names) or narrowed, sizes, counts)

    def wants(self, section: str, backend: str | None = None) -> bool:
        return section in self.sections and (backend is None or backend in self.backends)

    def _narrows_out(self, config: Config) -> bool:
        return bool(
            (self.clients and config.clients not in self.clients)
            or (self.workers and config.workers not in self.workers)
        )

    def configs(self, configs: Iterable[Config]) -> list[Config]:
        """The HTTP rows to run: an open-loop configuration runs for ``open`` too (its rate
        comes from its closed-loop rounds), a main row for ``intake``, and for ``committer``
        the committer rows with the main rows they are compared with."""
        configs = list(configs)
        kept = []
        for c in configs:
            part = "intake" if c.section == "main" else c.section
            if self._narrows_out(c):
                continue
            if (
                self.wants(part, c.backend)
                or (c.open_loop and self.wants("open", c.backend))
                or self.compares(c, configs)
            ):
                kept.append(c)
        return kept

    def compares(self, config: Config, configs: Iterable[Config]) -> bool:
        """Whether ``config`` is a main row a selected committer row is compared with."""
        return (
            config.section == "main"
            and self.wants("committer", config.backend)
            and any(c.section == "committer" and c.partner == config.partner for c in configs)
        )

    def open_loop(self, config: Config, configs: Iterable[Config]) -> bool:
        """Whether ``config``'s open-loop rounds run in this selection."""
        return config.open_loop and (
            self.wants("open", config.backend)
            or (config.section == "committer" and self.wants("committer", config.backend))
            or self.compares(config, configs)
        )

    def breakdown_sizes(self, configs: Iterable[Config]) -> set[tuple[str, int]]:
        """The stores to time in process (``bench/breakdown.py``): every on-disk store size of
        the run's configurations, on the backends selected."""
        if "breakdown" not in self.sections:
            return set()
        return {
            (c.backend, c.clients)
            for c in configs
            if c.backend in self.backends and not (self.clients and c.clients not in self.clients)
        }
