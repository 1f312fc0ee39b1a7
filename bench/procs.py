"""Process control for the benchmark: CPU accounting of a process tree and of PostgreSQL, the
quiet wait, fsync latency, starting and stopping uvicorn servers, and running one
configuration's rounds, the in-process breakdown and the floor, each in its own process."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from array import array
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import seed
from config import (
    ADMIN_TOKEN,
    BENCH,
    BUSY,
    FLOOR_BATCH,
    HISTORY_ROWS,
    PYTHON,
    REPO,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Config,
    Row,
    Side,
    Timing,
)


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


def run_store_batch(work: Path, timing: Timing, postgres_url: str | None) -> dict[str, Any]:
    """``bench/batch.py`` (a store change alone vs in a batch of ``FLOOR_BATCH``, one durable
    write each), in its own process, on 1,000 clients of each backend."""
    backends = ["json", "sqlite", *(["postgresql"] if postgres_url else [])]
    cmd = [
        PYTHON,
        str(BENCH / "batch.py"),
        "--dir",
        str(work / "batch"),
        "--count",
        str(timing.breakdown_calls * 2),
        "--batch",
        "1",
        str(FLOOR_BATCH),
        "--backend",
        *backends,
    ]
    env = {**os.environ, **({"OPENCLAW_TEST_PG_URL": postgres_url} if postgres_url else {})}
    done = subprocess.run(
        cmd, cwd=BENCH, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"store batch failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_console_store(work: Path, timing: Timing) -> dict[str, Any]:
    """``bench/console_store.py`` (the operator's reads: each order of the client list, a
    search, a status filter, a deep page, the overview) on SQLite and the JSON store, in its
    own process."""
    cmd = [
        PYTHON,
        str(BENCH / "console_store.py"),
        "--dir",
        str(work / "console"),
        "--clients",
        str(timing.console_clients),
        "--runs",
        str(timing.console_runs),
        "--backend",
        "sqlite",
        "json",
    ]
    done = subprocess.run(cmd, cwd=BENCH, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"console store failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_console_pages(work: Path, timing: Timing) -> dict[str, Any]:
    """``bench/console_pages.py`` (the console's pages over HTTP on SQLite at
    ``timing.console_clients`` clients), in its own process. Its exit status 1 (a clients
    page's p95 over the goal) is a result, not a failure: the report says MISSED."""
    cmd = [
        PYTHON,
        str(BENCH / "console_pages.py"),
        "--dir",
        str(work / "console-pages"),
        "--clients",
        str(timing.console_clients),
        "--runs",
        str(2 * timing.console_runs),
    ]
    done = subprocess.run(cmd, cwd=BENCH, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"console pages failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result
