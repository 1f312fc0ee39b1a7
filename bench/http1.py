"""The load generators' HTTP/1.1: pre-built requests, a response read by ``Content-Length``,
the loopback check and the percentile every report uses.

Two requests are spoken: ``POST /api/intake`` with a job body (the billed intake) and
``GET /api/jobs`` (the client's job list, the authenticated read), both with the client's
``X-Client-Key``. No dependency beyond the standard library.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

#: The routes the generators load, by name: (method, path).
ROUTES: dict[str, tuple[str, str]] = {
    "intake": ("POST", "/api/intake"),
    "jobs": ("GET", "/api/jobs"),
}
#: The job every intake request submits (a few hundred bytes, like a real job description).
JOB_BODY: dict[str, str] = {
    "project_name": "Benchmark project",
    "description": (
        "Add a CSV export to the monthly report page, with the same filters as the on-screen "
        "table, streamed so that large months do not time out; include a test."
    ),
    "task_type": "feature_build",
    "priority": "P2",
}
#: Jobs each benchmarked client holds when its job list is read (``GET /api/jobs``): the bench
#: submits them before the read rounds, and the bare endpoint answers as many.
JOBS_PER_CLIENT = 5
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def check_loopback(host: str) -> None:
    if host not in LOOPBACK_HOSTS:
        raise SystemExit(f"refusing to load {host!r}: the benchmark only targets loopback")


def build_requests(host: str, port: int, keys: Sequence[str], route: str) -> list[bytes]:
    """One request per key, as bytes ready to write."""
    method, path = ROUTES[route]
    if method == "GET":
        return [
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-Client-Key: {key}\r\n\r\n".encode()
            for key in keys
        ]
    body = json.dumps(JOB_BODY, separators=(",", ":")).encode()
    return [
        (
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json"
            f"\r\nX-Client-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for key in keys
    ]


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response; returns its status. Raises on anything but a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError("response without Content-Length")
    await reader.readexactly(length)
    return status


#: What a broken connection raises while a request is written or its answer read.
CONNECTION_ERRORS = (OSError, ValueError, IndexError, TimeoutError, asyncio.IncompleteReadError)
