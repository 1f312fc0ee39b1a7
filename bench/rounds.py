"""Running one configuration's HTTP rows: the gateway started over the seeded store, then the
bare app and the gateway loaded alternately by ``bench/load.py`` (its own process), closed
loop (``run_round``: requests, or intake + outcome pairs) and, for the configurations that
have it, open loop at fixed rates (``run_open_round``); the store's charges, holds and settled
jobs are then checked against the answers."""

from __future__ import annotations

import http.client
import json
import resource
import subprocess
import urllib.error
import urllib.request
from array import array
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import seed
from config import BENCH, OPEN_CONNECTIONS, OPEN_RATE, PYTHON, Config, Timing
from http1 import JOB_BODY, JOBS_PER_CLIENT, ROUTES
from procs import QuietWait, Server, get_ok, postgres_cpu, start_server, stop_server, tail, tree_cpu
from results import OpenRow, OpenSide, Row, Side


def _load(server: Server, keys_file: Path, route: str, lat_file: Path, *args: str) -> Any:
    """One run of ``bench/load.py``; its JSON result, its latencies into ``lat_file``."""
    cmd = [
        PYTHON,
        str(BENCH / "load.py"),
        "--url",
        server.url,
        "--keys-file",
        str(keys_file),
        "--route",
        route,
        "--latencies-out",
        str(lat_file),
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def _latencies(lat_file: Path) -> array[float]:
    values = array("d")
    with lat_file.open("rb") as handle:
        values.frombytes(handle.read())
    lat_file.unlink()
    return values


def run_round(
    server: Server,
    keys_file: Path,
    config: Config,
    timing: Timing,
    lat_file: Path,
    side: Side,
    pg: bool,
) -> None:
    """One closed-loop round (``config.concurrency`` connections) into ``side``."""
    cpu0, db0 = tree_cpu(server.proc.pid), postgres_cpu() if pg else 0.0
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    outcome_file = lat_file.with_name("outcome-" + lat_file.name)
    pairs = ["--outcome-latencies-out", str(outcome_file)] if config.route == "pair" else []
    result = _load(
        server,
        keys_file,
        config.route,
        lat_file,
        "--concurrency",
        str(config.concurrency),
        "--warmup",
        str(timing.warmup),
        "--duration",
        str(timing.duration),
        *pairs,
    )
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    side.cpu_s += tree_cpu(server.proc.pid) - cpu0
    if pg:
        side.db_cpu_s += postgres_cpu() - db0
    side.load_cpu_s += (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    side.rounds.append(result)
    side.latencies.extend(_latencies(lat_file))
    if pairs:
        side.outcome_latencies.extend(_latencies(outcome_file))


def run_open_round(
    server: Server, keys_file: Path, rate: float, timing: Timing, lat_file: Path, side: OpenSide
) -> None:
    """One open-loop round at ``rate`` requests a second into ``side``."""
    result = _load(
        server,
        keys_file,
        "intake",
        lat_file,
        "--rate",
        f"{rate:.3f}",
        "--connections",
        str(OPEN_CONNECTIONS),
        "--warmup",
        str(timing.open_warmup),
        "--duration",
        str(timing.open_duration),
        "--grace",
        str(timing.open_grace),
    )
    side.rounds.append(result)
    side.latencies.extend(_latencies(lat_file))


def read_jobs(server: Server, key: str) -> tuple[str, bytes]:
    """One ``GET /api/jobs`` with a benchmarked client's key: the ``RateLimit-Limit`` it was
    answered with ("" if none: the limits are off or the override not in effect) and the body
    (b"" if it failed)."""
    request = urllib.request.Request(server.url + ROUTES["jobs"][1], headers={"X-Client-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
            return str(response.headers.get("RateLimit-Limit", "")), response.read()
    except (urllib.error.URLError, OSError):
        return "", b""


def submit_jobs(server: Server, keys: list[str], per_key: int) -> tuple[int, dict[int, int]]:
    """``per_key`` jobs for every key, one request at a time over one keep-alive connection
    (so every benchmarked client has a job list to read). Returns the 2xx count and the other
    statuses."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    body = json.dumps(JOB_BODY)
    ok, other = 0, {}
    try:
        for _ in range(per_key):
            for key in keys:
                headers = {"Content-Type": "application/json", "X-Client-Key": key}
                conn.request("POST", ROUTES["intake"][1], body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if 200 <= response.status < 300:
                    ok += 1
                else:
                    other[response.status] = other.get(response.status, 0) + 1
    finally:
        conn.close()
    return ok, other


def _open_rows(
    config: Config,
    row: Row,
    bare: Server,
    gateway: Server,
    keys_file: Path,
    timing: Timing,
    lat: Path,
) -> None:
    """The open-loop rows: at ``OPEN_RATE`` and (but for a committer row) at half the bare
    closed-loop throughput just measured, each round bare then billing at the same rate."""
    rates = [("fixed", OPEN_RATE)]
    if row.bare.rps and config.section != "committer":
        rates.append(("half", row.bare.rps / 2))
    for kind, rate in rates:
        opened = OpenRow(config, kind, rate)
        for _ in range(timing.open_rounds):
            run_open_round(bare, keys_file, rate, timing, lat, opened.bare)
            run_open_round(gateway, keys_file, rate, timing, lat, opened.billing)
        row.open_rows.append(opened)


def run_config(
    config: Config,
    store: seed.SeededStore,
    bare: Server,
    timing: Timing,
    work: Path,
    quiet: QuietWait,
    *,
    open_loop: bool = False,
) -> Row:
    """One configuration's rows, on a gateway started over ``store`` reset to its seed (the
    store keeps each accepted job with its charge: no job file is written)."""
    seed.reset(store)
    keys_file = work / "keys.txt"
    keys_file.write_text("\n".join(store.keys) + "\n")
    busy = quiet()
    gateway = start_server(
        "gateway",
        "gateway:app",
        config.workers,
        {
            "OPENCLAW_BILLING_DB": store.url,
            "OPENCLAW_COMMITTER": config.committer,
            # Only an earlier release's job file, imported once at start: none here (and
            # nothing under ~/.openclaw is touched).
            "OPENCLAW_JOBS_FILE": str(work / "no-earlier-jobs.jsonl"),
        },
        work / "gateway.log",
    )
    row = Row(config, Side(), Side(), busy)
    submitted = 0
    try:
        if not get_ok(gateway.url + "/health"):
            raise RuntimeError(f"gateway unhealthy:\n{tail(gateway.log)}")
        if config.section == "read":
            submitted, refused = submit_jobs(gateway, store.keys, JOBS_PER_CLIENT)
            if refused:
                row.problems.append(f"submitting the jobs to read: non-2xx {refused}")
        row.rate_limit, body = read_jobs(gateway, store.keys[0])
        if row.rate_limit != str(seed.BENCH_RATE_LIMIT):
            row.problems.append(
                f"RateLimit-Limit {row.rate_limit!r}, not the override {seed.BENCH_RATE_LIMIT}"
            )
        if config.section == "read":
            row.answer_bytes = (len(read_jobs(bare, store.keys[0])[1]), len(body))
            listed = len(json.loads(body)["jobs"]) if body else -1
            if listed != JOBS_PER_CLIENT:
                row.problems.append(f"a client's job list holds {listed}, not {JOBS_PER_CLIENT}")
        pg = config.backend == "postgresql"
        lat = work / "latencies.bin"
        for _ in range(timing.rounds):
            run_round(bare, keys_file, config, timing, lat, row.bare, pg)
            run_round(gateway, keys_file, config, timing, lat, row.billing, pg)
        if open_loop:
            _open_rows(config, row, bare, gateway, keys_file, timing, lat)
    finally:
        stop_server(gateway)
    _check(row, store, submitted)
    return row


def _check(row: Row, store: seed.SeededStore, submitted: int) -> None:
    """The store holds a charge for every 2xx intake answer (and at most the unanswered
    requests more) and, for pairs, a succeeded job for every 2xx outcome answer; the
    benchmarked clients' concurrency cap is the override; every answer of every round was 2xx
    (no 429: the limits are on, the benchmarked clients' overrides high enough)."""
    if row.config.section == "read":
        row.ledger_expected = submitted
    else:
        row.ledger_expected = row.billing.total_2xx + sum(
            r["total_2xx"] for o in row.open_rows for r in o.billing.rounds
        )
        row.ledger_slack = sum(
            r["total_unanswered"] + r["errors"] for o in row.open_rows for r in o.billing.rounds
        ) + sum(r["errors"] for r in row.billing.rounds)
    row.ledger_found = seed.count_ledger(store)
    if not row.ledger_expected <= row.ledger_found <= row.ledger_expected + row.ledger_slack:
        slack = f" (+ up to {row.ledger_slack} unanswered)" if row.ledger_slack else ""
        row.problems.append(
            f"ledger holds {row.ledger_found} charges, {row.ledger_expected} were answered 2xx"
            + slack
        )
    _check_holds(row, seed.holds(store))
    for side, counts in row.non_2xx().items():
        rounds = getattr(row, side).rounds + [
            r for o in row.open_rows for r in getattr(o, side).rounds
        ]
        samples = [s for r in rounds for s in r["error_samples"]][:2]
        limited = (
            f"; {counts['429']} of them 429 (rate limited, or at the concurrency cap: see the "
            "samples)"
            if "429" in counts
            else ""
        )
        row.problems.append(
            f"{side} non-2xx {counts}{limited}" + (f" {samples}" if samples else "")
        )


def _check_holds(row: Row, held: seed.Holds) -> None:
    """The caps are the override; a pair row's outcomes all settled (its jobs succeeded, no
    hold left open beyond the pairs that failed midway)."""
    row.most_held = held.most_held
    row.caps = tuple(sorted(held.caps, key=str))
    if held.caps != {seed.BENCH_MAX_ACTIVE_JOBS}:
        row.problems.append(
            f"the benchmarked clients' concurrency caps are {list(row.caps)}, not the override "
            f"{seed.BENCH_MAX_ACTIVE_JOBS}"
        )
    if row.config.section != "settle":
        return
    row.settled_expected = row.billing.settled_2xx
    row.settled_found = held.succeeded
    slack = row.ledger_slack
    if not row.settled_expected <= row.settled_found <= row.settled_expected + slack:
        row.problems.append(
            f"the store holds {row.settled_found} succeeded jobs, {row.settled_expected} "
            "outcomes were answered 2xx" + (f" (+ up to {slack} unanswered)" if slack else "")
        )
    left_open = row.billing.total_2xx - row.billing.settled_2xx
    if abs(held.held - left_open) > slack:
        row.problems.append(
            f"{held.held} holds left open, {left_open} intakes answered 2xx were not settled"
        )
