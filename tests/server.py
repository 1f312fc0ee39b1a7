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

import httpx

from conftest import ADMIN_TOKEN

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
    *,
    workers: int = 1,
    admin_token: str = ADMIN_TOKEN,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start ``uvicorn gateway:app`` on a free loopback port over a store in ``state_dir``;
    yields its base URL. Start-up failures carry the server's output."""
    port = free_port()
    env = clean_env() | {
        "OPENCLAW_BILLING_DB": str(state_dir / "clients.json"),
        "OPENCLAW_JOBS_FILE": str(state_dir / "jobs.jsonl"),
        "OPENCLAW_ADMIN_TOKEN": admin_token,
        **(extra_env or {}),
    }
    log_path = state_dir / f"uvicorn-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "gateway:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {proc.returncode}:\n{log_path.read_text()}"
                )
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not healthy after 30 s:\n{log_path.read_text()}")
            time.sleep(0.1)
        # With several workers, /health answering once does not mean every worker is up:
        # give the others a moment by polling a few more times.
        for _ in range(workers * 3):
            httpx.get(f"{base}/health", timeout=5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
