"""The load generators' HTTP/1.1: pre-built requests, a response read by ``Content-Length``,
the loopback check and the percentile every report uses.

Three requests are spoken: ``POST /api/intake`` with a job body (the billed intake) and
``GET /api/jobs`` (the client's job list, the authenticated read), both with the client's
``X-Client-Key``, and the job runner's ``POST /api/admin/jobs/{job_id}/outcome`` with the
admin token (``X-Auth-Token``) and a small JSON body, for a job an intake answered
(``bench/pairs.py``). No dependency beyond the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

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
#: The job runner's report of a job's end (``POST /api/admin/jobs/{job_id}/outcome``): the
#: plan's outcome policy charges a succeeded job its reservation.
OUTCOME_PATH = "/api/admin/jobs/{job_id}/outcome"
OUTCOME_BODY: dict[str, str] = {"status": "succeeded"}
ADMIN_TOKEN_HEADER = "X-Auth-Token"
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


def closed_loop_target(url: str, keys: Sequence[str]) -> tuple[str, int]:
    """The host and port a closed loop loads: loopback only, and some client keys."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    check_loopback(host)
    if not keys:
        raise SystemExit("no client keys")
    return host, port


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


def build_outcome(host: str, port: int, job_id: str, token: str) -> bytes:
    """The runner's outcome report for ``job_id``, as bytes ready to write."""
    body = json.dumps(OUTCOME_BODY, separators=(",", ":")).encode()
    return (
        f"POST {OUTCOME_PATH.format(job_id=job_id)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\n{ADMIN_TOKEN_HEADER}: {token}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response; returns its status. Raises on anything but a Content-Length body."""
    status, _ = await read_answer(reader)
    return status


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one response; returns its status and body. Raises on anything but a
    Content-Length body."""
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
    return status, await reader.readexactly(length)


class ClosedLoopWindow:
    """What every closed-loop recorder shares (``bench/load.py``, ``bench/pairs.py``): the
    clock window (``warmup`` seconds not recorded, then ``duration`` recorded), the bound on
    what is sent, the 2xx count over the whole run, statuses, failures and their samples."""

    def __init__(self, warmup: float, duration: float, max_requests: int) -> None:
        self.start = time.perf_counter()
        self.record_from = self.start + warmup
        self.stop_at = self.record_from + duration
        self.max_requests = max_requests
        self.sent = 0
        self.last_done = self.record_from
        self.statuses: dict[str, int] = {}
        self.errors = 0
        self.error_samples: list[str] = []
        self.total_2xx = 0

    def next_slot(self) -> bool:
        """May another request (or pair) be sent now?"""
        if time.perf_counter() >= self.stop_at or self.sent >= self.max_requests:
            return False
        self.sent += 1
        return True

    def sample(self, problem: str) -> None:
        """Keep the first few problems (a failure, or a non-2xx answer and its code)."""
        if len(self.error_samples) < 5:
            self.error_samples.append(problem)

    def failed(self, began: float, problem: str) -> None:
        if began < self.record_from:
            return
        self.errors += 1
        self.sample(problem)


#: What a broken connection raises while a request is written or its answer read.
CONNECTION_ERRORS = (OSError, ValueError, IndexError, TimeoutError, asyncio.IncompleteReadError)


def turns(
    rec: ClosedLoopWindow, requests: Sequence[bytes], offset: int, stride: int
) -> Iterator[bytes]:
    """A closed-loop connection's requests: ``offset``, ``offset + stride``, ... round the
    list, for as long as ``rec`` allows another."""
    index = offset
    while rec.next_slot():
        yield requests[index % len(requests)]
        index += stride


class KeepAlive:
    """One keep-alive connection of a closed loop: opened when a request needs it, dropped
    after a failure (and reopened by the next request)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, payload: bytes) -> tuple[int, bytes]:
        """Send one request and read its answer: status and body. Raises
        ``CONNECTION_ERRORS``."""
        if self.conn is None:
            opening = asyncio.open_connection(self.host, self.port)
            self.conn = await asyncio.wait_for(opening, self.timeout)
        reader, writer = self.conn
        writer.write(payload)
        return await asyncio.wait_for(read_answer(reader), self.timeout)

    async def drop(self) -> None:
        """After a failure: close the connection, and pause (a refused one must not spin)."""
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None
        await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            with contextlib.suppress(OSError):
                await self.conn[1].wait_closed()
            self.conn = None
