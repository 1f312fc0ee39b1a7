"""Process control for the benchmark: CPU accounting of a process tree and of PostgreSQL, the
quiet wait, fsync latency, and starting and stopping uvicorn servers. What runs on them is in
``rounds.py`` (the HTTP rows) and ``inproc.py`` (the measurements in processes of their own)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from config import ADMIN_TOKEN, BUSY, PYTHON, REPO, START_TIMEOUT, STOP_TIMEOUT


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
            raise RuntimeError(f"{name} exited at start:\n{tail(log)}")
        started = log.read_bytes().count(b"Application startup complete") >= workers
        if started and _accepts(port):  # one worker binds its socket after its startup
            break
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"{name} did not start in {START_TIMEOUT:.0f} s:\n{tail(log)}")
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


def tail(path: Path, lines: int = 20) -> str:
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
