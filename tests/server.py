"""Run the real gateway under uvicorn in a subprocess, for tests that need real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from conftest import ADMIN_TOKEN
from tests.processes import stop

REPO_ROOT = Path(__file__).resolve().parent.parent


def clean_env() -> dict[str, str]:
    """This process's environment without any billing or Stripe setting of the developer's."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENCLAW_", "STRIPE_"))
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_gateway(
    state_dir: Path,
    **options: Any,
) -> Iterator[str]:
    """:func:`gateway_process`, yielding only its base URL."""
    with gateway_process(state_dir, **options) as (base, _):
        yield base


@contextmanager
def gateway_process(
    state_dir: Path,
    *,
    workers: int = 1,
    admin_token: str = ADMIN_TOKEN,
    extra_env: dict[str, str] | None = None,
    log_level: str = "warning",
    app: str = "gateway:app",
    ready_path: str = "/health",
    port: int | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``uvicorn gateway:app`` (or another ``app``, a host app of the tests, ready when
    ``ready_path`` answers 200) on a free loopback port (or ``port``, for a test that must name
    the gateway's address in its settings, e.g. ``OPENCLAW_PUBLIC_URL``) over a store in
    ``state_dir``; yields its base URL and the server's process. Start-up failures carry the
    server's output, which is kept in :func:`log_path` (``log_level="info"`` writes the access
    log there too).

    The server leads its own process group and is stopped with SIGTERM (never SIGINT, which a
    suite started in the background ignores), then SIGKILL, and whatever of its group is left
    (workers) is killed: nothing outlives the block, even when the test fails."""
    port = free_port() if port is None else port
    env = clean_env() | {
        "OPENCLAW_BILLING_DB": str(state_dir / "clients.json"),
        "OPENCLAW_JOBS_FILE": str(state_dir / "jobs.jsonl"),
        "OPENCLAW_ADMIN_TOKEN": admin_token,
        **(extra_env or {}),
    }
    log_file = log_path(state_dir, port)
    log = log_file.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            log_level,
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {proc.returncode}:\n{log_file.read_text()}"
                )
            try:
                if httpx.get(f"{base}{ready_path}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not healthy after 30 s:\n{log_file.read_text()}")
            time.sleep(0.1)
        # With several workers, /health answering once does not mean every worker is up:
        # give the others a moment by polling a few more times.
        for _ in range(workers * 3):
            httpx.get(f"{base}{ready_path}", timeout=5)
        yield base, proc
    except BaseException:
        # A failing test shows what the server said (a 500's traceback, say): pytest prints
        # a failing test's captured stderr, and the log file goes with the test's tmp dir.
        print_server_log(log_file)
        raise
    finally:
        stop(proc, timeout=15)
        log.close()


def print_server_log(log_file: Path, *, lines: int = 200) -> None:
    """The last ``lines`` lines of a server's log, on stderr."""
    try:
        tail = log_file.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    if tail:
        print(f"--- the last {len(tail)} lines of {log_file.name} ---", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)


def log_path(state_dir: Path, port: int | str) -> Path:
    """Where :func:`running_gateway` keeps the output of its server on ``port``."""
    return state_dir / f"uvicorn-{port}.log"
