"""HTTP/1.1 load generator for ``POST /api/intake`` (or ``GET /api/jobs``, or intake + outcome
pairs): closed or open loop.

Closed loop (the default): ``concurrency`` keep-alive connections each send one request at a
time, for ``warmup`` seconds (not recorded) and then ``duration`` seconds (recorded); every
request's latency is kept. Open loop (``--rate R``): R requests a second on a schedule, over at
most ``--connections`` keep-alive connections, latency measured from each request's scheduled
send time (``bench/openloop.py``). ``--route pair`` (closed loop only): each connection sends
an intake and then the job runner's outcome report for its job (``bench/pairs.py``); the
latencies are the pairs', and ``--outcome-latencies-out`` gets the outcomes' own. Either way
the result is printed as one JSON object on stdout, and ``--latencies-out`` gets every
recorded latency. A sample of the first non-2xx answers' bodies is in ``error_samples``.

The client is a minimal HTTP/1.1 speaker on asyncio streams (uvloop when installed,
``bench/http1.py``): the requests are pre-built bytes and the answers are read by
``Content-Length``. It costs a fraction of the CPU of a general-purpose client such as httpx,
which matters because the generator shares the machine's cores with the server it measures.
``--client httpx`` uses ``httpx.AsyncClient`` instead (closed loop only, to cross-check).

Bounded: it stops by itself at ``warmup + duration`` (requests in flight then finish, each
bounded by ``--timeout``; in the open loop, by ``--grace``), and never sends more than
``--max-requests``. Loopback only.

    python bench/load.py --url http://127.0.0.1:8000 --keys-file keys.txt --duration 5
    python bench/load.py --url http://127.0.0.1:8000 --keys-file keys.txt --rate 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from http1 import (
    CONNECTION_ERRORS,
    JOB_BODY,
    ROUTES,
    ClosedLoopWindow,
    KeepAlive,
    build_requests,
    check_loopback,
    closed_loop_target,
    percentile,
    turns,
)
from openloop import run_open
from pairs import run_pairs

DEFAULT_MAX_REQUESTS = 2_000_000


@dataclass
class LoadResult:
    """What one run measured. Latencies are in milliseconds."""

    url: str
    concurrency: int
    warmup_s: float
    duration_s: float
    client: str
    requests: int = 0
    elapsed_s: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    non_2xx: int = 0
    errors: int = 0
    #: 2xx answers over the whole run, warm-up included (every one of them was charged).
    total_2xx: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)


class _Recorder(ClosedLoopWindow):
    """Shared by every connection: the clock window, the counters and the latencies."""

    def __init__(self, warmup: float, duration: float, max_requests: int) -> None:
        super().__init__(warmup, duration, max_requests)
        self.latencies: list[float] = []

    def done(self, began: float, ended: float, status: int, body: bytes = b"") -> None:
        ok = 200 <= status < 300
        if ok:
            self.total_2xx += 1
        if began < self.record_from:
            return
        self.latencies.append((ended - began) * 1000)
        self.last_done = max(self.last_done, ended)
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if not ok:  # which refusal: its code is in the body
            self.sample(f"{status}: {body[:160].decode(errors='replace')}")


async def _raw_connection(
    host: str,
    port: int,
    requests: list[bytes],
    offset: int,
    stride: int,
    rec: _Recorder,
    timeout: float,
) -> None:
    conn = KeepAlive(host, port, timeout)
    try:
        for payload in turns(rec, requests, offset, stride):
            began = time.perf_counter()
            try:
                status, body = await conn.exchange(payload)
            except CONNECTION_ERRORS as exc:
                rec.failed(began, f"{type(exc).__name__}: {exc}"[:200])
                await conn.drop()
                continue
            rec.done(began, time.perf_counter(), status, body)
    finally:
        await conn.close()


async def _httpx_connection(
    client: httpx.AsyncClient,
    url: str,
    route: str,
    keys: Sequence[str],
    offset: int,
    stride: int,
    rec: _Recorder,
) -> None:
    index = offset
    method = ROUTES[route][0]
    body = JOB_BODY if method == "POST" else None
    while rec.next_slot():
        key = keys[index % len(keys)]
        index += stride
        began = time.perf_counter()
        try:
            response = await client.request(method, url, json=body, headers={"X-Client-Key": key})
        except httpx.HTTPError as exc:
            rec.failed(began, f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(0.05)
            continue
        rec.done(began, time.perf_counter(), response.status_code, response.content)


async def run_load(
    url: str,
    keys: Sequence[str],
    *,
    concurrency: int,
    warmup: float,
    duration: float,
    timeout: float = 30.0,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    client: str = "raw",
    route: str = "intake",
    latencies_out: Path | None = None,
) -> LoadResult:
    """The closed loop."""
    host, port = closed_loop_target(url, keys)
    rec = _Recorder(warmup, duration, max_requests)
    if client == "raw":
        requests = build_requests(host, port, keys, route)
        await asyncio.gather(
            *(
                _raw_connection(host, port, requests, i, concurrency, rec, timeout)
                for i in range(concurrency)
            )
        )
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
            target = url.rstrip("/") + ROUTES[route][1]
            await asyncio.gather(
                *(
                    _httpx_connection(http, target, route, keys, i, concurrency, rec)
                    for i in range(concurrency)
                )
            )
    _write_latencies(latencies_out, rec.latencies)
    lat = sorted(rec.latencies)
    elapsed = max(rec.last_done - rec.record_from, 1e-9)
    ok = sum(n for status, n in rec.statuses.items() if status.startswith("2"))
    return LoadResult(
        url=url,
        concurrency=concurrency,
        warmup_s=warmup,
        duration_s=duration,
        client=client,
        requests=len(lat),
        elapsed_s=round(elapsed, 3),
        rps=round(ok / elapsed, 1),
        p50_ms=round(percentile(lat, 50), 2),
        p90_ms=round(percentile(lat, 90), 2),
        p99_ms=round(percentile(lat, 99), 2),
        max_ms=round(lat[-1], 2) if lat else 0.0,
        mean_ms=round(sum(lat) / len(lat), 2) if lat else 0.0,
        non_2xx=len(lat) - ok,
        errors=rec.errors,
        total_2xx=rec.total_2xx,
        statuses=rec.statuses,
        error_samples=rec.error_samples,
    )


def _write_latencies(path: Path | None, latencies: Sequence[float]) -> None:
    if path is not None:
        with path.open("wb") as handle:
            array("d", latencies).tofile(handle)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--keys-file", type=Path, required=True, help="client keys, one a line")
    parser.add_argument("--route", choices=(*ROUTES, "pair"), default="intake")
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop: connections")
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--connections", type=int, default=64, help="open loop: at most")
    parser.add_argument(
        "--grace", type=float, default=1.0, help="open loop: seconds to wait for the last answers"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds, not recorded")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds, recorded")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument(
        "--latencies-out", type=Path, help="write every recorded latency (ms, float64) here"
    )
    parser.add_argument(
        "--outcome-latencies-out", type=Path, help="--route pair: the outcomes' latencies"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 1024 or not 1 <= args.connections <= 1024:
        parser.error("--concurrency and --connections must be 1 to 1024")
    if not (0 <= args.warmup <= 300 and 0 < args.duration <= 600):
        parser.error("--warmup must be 0-300 s and --duration 0-600 s")
    if args.rate is not None and not (
        0 < args.rate <= 50_000 and args.rate * (args.warmup + args.duration) <= args.max_requests
    ):
        parser.error("--rate must be above 0, at most 50,000, and within --max-requests")
    if args.route == "pair" and (args.rate is not None or args.client != "raw"):
        parser.error("--route pair is a closed loop of the raw client")
    keys = [k.strip() for k in args.keys_file.read_text().splitlines() if k.strip()]
    if not keys:
        parser.error("no client keys")
    _install_uvloop()
    closed: dict[str, Any] = {
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "duration": args.duration,
        "timeout": args.timeout,
        "max_requests": args.max_requests,
    }
    if args.route == "pair":
        result, pairs, outcomes = asyncio.run(run_pairs(args.url, keys, **closed))
        _write_latencies(args.latencies_out, pairs)
        _write_latencies(args.outcome_latencies_out, outcomes)
    elif args.rate is None:
        load = run_load(
            args.url,
            keys,
            **closed,
            client=args.client,
            route=args.route,
            latencies_out=args.latencies_out,
        )
        result = asdict(asyncio.run(load))
    else:
        parts = urlsplit(args.url)
        host, port = parts.hostname or "", parts.port or 80
        check_loopback(host)
        result = asyncio.run(
            run_open(
                host,
                port,
                build_requests(host, port, keys, args.route),
                rate=args.rate,
                warmup=args.warmup,
                duration=args.duration,
                connections=args.connections,
                grace=args.grace,
                timeout=args.timeout,
            )
        )
        _write_latencies(args.latencies_out, result.pop("latencies"))
        result["url"] = args.url
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
