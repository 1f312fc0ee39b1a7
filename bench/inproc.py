"""The measurements that run in processes of their own, each started here and read back as
one JSON object: the in-process breakdown (``breakdown.py``), the floor (``floor.py``), the
store's batch primitive (``batch.py``) and the operator's reads (``console_store.py``,
``console_pages.py``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import seed
from config import BENCH, FLOOR_BATCH, HISTORY_ROWS, PYTHON, REPO, Timing


def run_breakdown(
    store: seed.SeededStore, timing: Timing, work: Path, *, history: bool
) -> dict[str, Any]:
    """``bench/breakdown.py`` on ``store`` (reset before and after), in its own process."""
    seed.reset(store)
    keys_file = work / "keys.txt"
    keys_file.write_text("\n".join(store.keys) + "\n")
    # The same number of calls on every backend: a JSON store's charge appends one journal
    # line, whatever the store's size.
    calls = timing.breakdown_calls
    cmd = [
        PYTHON,
        str(BENCH / "breakdown.py"),
        "--url",
        store.url,
        "--keys-file",
        str(keys_file),
        "--count",
        str(calls),
    ]
    if history:
        cmd += ["--history", str(HISTORY_ROWS)]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
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
