"""The machine a benchmark ran on, for the report: CPU, RAM, OS, file system, packages,
PostgreSQL and the commit."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from config import (
    REPO,
    RESULTS,
)
from sqlalchemy import create_engine, text

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


def machine(pg: str | None, fsync_ms: float) -> dict[str, str]:
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
        "(median of 100)",
        "Commit": _git(),
    }
