"""Benchmark ``POST /api/intake`` with auth and charge against a bare endpoint; write
BENCHMARKS.md.

For every configuration (backend x clients in the store x uvicorn workers x connections) the
gateway (``uvicorn gateway:app``) over a freshly reset, seeded store and the bare app
(``uvicorn bench.bare_app:app``, same worker count) are loaded alternately by the same
generator (``bench/load.py``, its own process): bare, billing, bare, billing, ... Each row's
billing/bare ratio comes from those interleaved rounds.

    .venv/bin/python bench/run.py            # the full set (make bench), about 13 minutes
    .venv/bin/python bench/run.py --quick    # a smoke run, about a minute

Everything it makes lives in bench/results/ (git-ignored) and a /dev/shm directory removed at
the end; PostgreSQL schemas it creates are dropped. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

import seed
from load import percentile
from sqlalchemy import create_engine, text

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


FULL = Timing(rounds=3, warmup=0.5, duration=3.0, quiet_wait=20.0, breakdown_calls=300)
QUICK = Timing(rounds=1, warmup=0.3, duration=1.0, quiet_wait=0.0, breakdown_calls=50)
#: "Busy" for the quiet check: share of both cores used by something else.
BUSY = 0.15
#: Ledger rows of the client whose history is timed: a year of a pro client (12 x 200 jobs).
HISTORY_ROWS = 2_400
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


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces: the fields after it start at the last ")".
    return raw[raw.rfind(")") + 2 :].split()


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and every live descendant."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields is not None:
            stats[int(entry.name)] = fields
            parents[int(entry.name)] = int(fields[1])
    wanted = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in wanted and pid not in wanted:
                wanted.add(pid)
                grew = True
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in wanted if p in stats)
    return ticks / _clock_ticks()


def postgres_cpu() -> float:
    """CPU seconds of every postgres process, reaped backends included (via the postmaster)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(f"/proc/{entry.name}/comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        fields = _proc_stat(int(entry.name))
        if fields is not None:
            total += sum(int(x) for x in fields[11:15])
    return total / _clock_ticks()


def cpu_busy(interval: float = 0.5) -> float:
    """Share of the machine's CPU busy over ``interval`` (other work disturbs a benchmark)."""

    def sample() -> tuple[int, int]:
        values = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = values[3] + values[4]
        return sum(values), idle

    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


class QuietWait:
    """Waits for other work on the machine to calm down before a row: at most ``per_row``
    seconds each time and ``total`` seconds over the run, so a busy machine cannot stretch
    the run much (its rows are flagged in the report instead)."""

    def __init__(self, per_row: float, total: float) -> None:
        self.per_row = per_row
        self.left = total

    def __call__(self) -> float:
        """The share of the CPU busy when the wait ended."""
        began = time.monotonic()
        deadline = began + min(self.per_row, self.left)
        busy = cpu_busy()
        while busy > BUSY and time.monotonic() < deadline:
            busy = cpu_busy(1.0)
        self.left = max(0.0, self.left - (time.monotonic() - began))
        return busy


def fsync_latency_ms(directory: Path, count: int = 100) -> float:
    """Median time of one small append + fsync on ``directory``'s filesystem."""
    path = directory / ".fsync-probe"
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            os.write(fd, b"x" * 200)
            began = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - began) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return median(times)


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def _server_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "STRIPE_"))}
    env["OPENCLAW_ADMIN_TOKEN"] = ADMIN_TOKEN
    return env | extra


def start_server(name: str, app: str, workers: int, env: dict[str, str], log: Path) -> Server:
    """``uvicorn APP --workers N`` on a free loopback port; returns once every worker has
    started (each logs "Application startup complete")."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "uvicorn",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--no-access-log",
            ],
            cwd=REPO,
            env=_server_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start:\n{_tail(log)}")
        started = log.read_bytes().count(b"Application startup complete") >= workers
        if started and _accepts(port):  # one worker binds its socket after its startup
            break
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"{name} did not start in {START_TIMEOUT:.0f} s:\n{_tail(log)}")
        time.sleep(0.1)
    return server


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def stop_server(server: Server) -> None:
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group this script created
            proc.wait(STOP_TIMEOUT)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # loopback only
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# -- one configuration -----------------------------------------------------------------------


def run_round(
    server: Server,
    keys_file: Path,
    config: Config,
    timing: Timing,
    lat_file: Path,
    side: Side,
    pg: bool,
) -> None:
    cpu0, db0 = tree_cpu(server.proc.pid), postgres_cpu() if pg else 0.0
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [
        PYTHON,
        str(BENCH / "load.py"),
        "--url",
        server.url,
        "--keys-file",
        str(keys_file),
        "--concurrency",
        str(config.concurrency),
        "--warmup",
        str(timing.warmup),
        "--duration",
        str(timing.duration),
        "--latencies-out",
        str(lat_file),
    ]
    limit = timing.warmup + timing.duration + 120  # requests in flight are bounded by 30 s
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    side.cpu_s += tree_cpu(server.proc.pid) - cpu0
    if pg:
        side.db_cpu_s += postgres_cpu() - db0
    side.load_cpu_s += (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    side.rounds.append(result)
    values = array("d")
    with lat_file.open("rb") as handle:
        values.frombytes(handle.read())
    side.latencies.extend(values)
    lat_file.unlink()


def run_config(
    config: Config,
    store: seed.SeededStore,
    bare: Server,
    timing: Timing,
    work: Path,
    shm: Path,
    quiet: QuietWait,
) -> Row:
    seed.reset(store)
    jobs_dir = shm if config.tmpfs else work
    jobs = jobs_dir / f"jobs-{os.getpid()}-{time.monotonic_ns()}.jsonl"
    keys_file = work / "keys.txt"
    keys_file.write_text("\n".join(store.keys) + "\n")
    busy = quiet()
    gateway = start_server(
        "gateway",
        "gateway:app",
        config.workers,
        {"OPENCLAW_BILLING_DB": store.url, "OPENCLAW_JOBS_FILE": str(jobs)},
        work / "gateway.log",
    )
    row = Row(config, Side(), Side(), busy)
    try:
        if not get_ok(gateway.url + "/health"):
            raise RuntimeError(f"gateway unhealthy:\n{_tail(gateway.log)}")
        pg = config.backend == "postgresql"
        for _ in range(timing.rounds):
            lat = work / "latencies.bin"
            run_round(bare, keys_file, config, timing, lat, row.bare, pg)
            run_round(gateway, keys_file, config, timing, lat, row.billing, pg)
    finally:
        stop_server(gateway)
        jobs.unlink(missing_ok=True)
        jobs.with_name(jobs.name + ".lock").unlink(missing_ok=True)
    row.ledger_expected = row.billing.total_2xx
    row.ledger_found = seed.count_ledger(store)
    if row.ledger_found != row.ledger_expected:
        row.problems.append(
            f"ledger holds {row.ledger_found} charges, {row.ledger_expected} were answered 2xx"
        )
    if row.billing.non_2xx:
        statuses: dict[str, int] = {}
        for r in row.billing.rounds:
            for status, n in r["statuses"].items():
                if not status.startswith("2"):
                    statuses[status] = statuses.get(status, 0) + n
        samples = [s for r in row.billing.rounds for s in r["error_samples"]][:2]
        row.problems.append(f"billing non-2xx {statuses} errors {samples}")
    return row


def run_breakdown(
    store: seed.SeededStore, timing: Timing, work: Path, *, history: bool
) -> dict[str, Any]:
    """``bench/breakdown.py`` on ``store`` (reset before and after), in its own process."""
    seed.reset(store)
    keys_file = work / "keys.txt"
    keys_file.write_text("\n".join(store.keys) + "\n")
    calls = timing.breakdown_calls
    if store.backend == "json":  # a JSON charge writes the whole file: fewer calls
        calls = max(20, calls * 100 // max(100, store.clients // 10))
    jobs = work / "breakdown-jobs.jsonl"
    cmd = [
        PYTHON,
        str(BENCH / "breakdown.py"),
        "--url",
        store.url,
        "--keys-file",
        str(keys_file),
        "--jobs-file",
        str(jobs),
        "--count",
        str(calls),
    ]
    if history:
        cmd += ["--history", str(HISTORY_ROWS)]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    jobs.unlink(missing_ok=True)
    jobs.with_name(jobs.name + ".lock").unlink(missing_ok=True)
    seed.reset(store)
    if done.returncode != 0:
        raise RuntimeError(f"breakdown failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["backend"], result["clients"], result["calls"] = store.backend, store.clients, calls
    return result


def run_floor(work: Path, timing: Timing) -> dict[str, Any]:
    """``bench/floor.py`` (the least a durable billed request costs), in its own process."""
    cmd = [
        PYTHON,
        str(BENCH / "floor.py"),
        "--dir",
        str(work / "floor"),
        "--count",
        str(timing.breakdown_calls * 4),
        "--batch",
        "1",
        str(FLOOR_BATCH),
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"floor failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- machine ---------------------------------------------------------------------------------

PACKAGES = (
    "openclaw-billing",
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic-core",
    "uvicorn",
    "uvloop",
    "httptools",
    "anyio",
    "sqlalchemy",
    "psycopg",
    "psycopg-binary",
    "httpx",
)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    return platform.platform()


def _filesystem(path: Path) -> str:
    best = ("", "unknown", "unknown")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            if str(path).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, fstype, device)
    return f"{best[1]} on {best[2]} (mounted at {best[0]})"


def _git() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def postgres_info(url: str) -> str | None:
    """The server's version and durability settings, or None if it cannot be reached."""
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
            settings = {
                name: conn.execute(text(f"SHOW {name}")).scalar_one()
                for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections")
            }
    except Exception:  # any failure means: no PostgreSQL rows
        return None
    finally:
        engine.dispose()
    return f"PostgreSQL {version} ({', '.join(f'{k}={v}' for k, v in settings.items())})"


def machine(pg: str | None, fsync_ms: float, shm_fsync_ms: float) -> dict[str, str]:
    versions = []
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{name} {importlib.metadata.version(name)}")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    return {
        "Date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": _cpu_model(),
        "Cores": f"{os.cpu_count()} logical ({affinity} usable by this process)",
        "RAM": f"{_ram_gib():.1f} GiB",
        "OS": _os_name(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "Packages": ", ".join(versions),
        "SQLite": f"{sqlite3.sqlite_version} (the stdlib module's library)",
        "PostgreSQL": pg or "not reachable: PostgreSQL rows skipped",
        "Disk": f"{_filesystem(RESULTS)}; one small append + fsync takes {fsync_ms:.2f} ms "
        f"(median of 100), on /dev/shm {shm_fsync_ms:.3f} ms",
        "Commit": _git(),
    }


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
        "```",
        "",
        "Raw numbers (every round, CPU, statuses, in-process steps): "
        f"`bench/results/{'quick' if quick else 'latest'}.json`.",
        "",
    ]
    path.write_text("\n".join(out))
    return verdicts


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
    print(f"floor: {floor}", flush=True)
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
    )
    raw = {
        "machine": info,
        "timing": asdict(timing),
        "rows": [r.summary() for r in rows],
        "in_process": breakdowns,
        "floor": floor,
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
