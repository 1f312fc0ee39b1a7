"""Closed-loop load of reserve then settle, for ``bench/load.py --route pair``.

Each of ``concurrency`` keep-alive connections sends an intake (``POST /api/intake`` with the
client's key: the job's price is reserved as a hold), reads the job id from its answer, sends
the job runner's report of that job's end (``POST /api/admin/jobs/{job_id}/outcome`` with the
admin token and ``{"status": "succeeded"}``: the hold is settled), and then its next intake.
One pair is the unit: it counts when both answers are 2xx, and its latency runs from the
intake's send to the outcome's answer; the outcome's own latency (its send to its answer) is
kept too. Requests go round-robin over the keys as in the intake's closed loop.

A pair whose intake is not answered 2xx has no job to settle: it is counted (its status,
a sample of its answer) and not timed. Over the whole run, warm-up included, it counts the
intakes answered 2xx (each reserved a hold) and the outcomes answered 2xx (each settled one),
for the store to be checked against.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from config import ADMIN_TOKEN
from http1 import (
    CONNECTION_ERRORS,
    ClosedLoopWindow,
    KeepAlive,
    build_outcome,
    build_requests,
    closed_loop_target,
    percentile,
    turns,
)

#: What a failed pair raises: a broken connection, or an intake answer without a job id.
PAIR_ERRORS = (*CONNECTION_ERRORS, KeyError, TypeError)


def _ok(status: int) -> bool:
    return 200 <= status < 300


class PairRecorder(ClosedLoopWindow):
    """Shared by every connection: the clock window, the counters and the latencies (ms).
    ``statuses`` holds every recorded answer's status, intakes and outcomes together; the
    outcomes' alone are in ``outcome_statuses``."""

    def __init__(self, warmup: float, duration: float, max_pairs: int) -> None:
        super().__init__(warmup, duration, max_pairs)
        self.pair_latencies: list[float] = []
        self.outcome_latencies: list[float] = []
        self.outcome_statuses: dict[str, int] = {}
        self.pairs = 0
        self.pairs_ok = 0
        self.settled_2xx = 0
        #: Connections, each sending every ``concurrency``-th intake of the list.
        self.concurrency = 1

    def _count(self, kind: str, status: int, body: bytes, into: dict[str, int]) -> None:
        into[str(status)] = into.get(str(status), 0) + 1
        if not _ok(status):
            self.sample(f"{kind} {status}: {body[:160].decode(errors='replace')}")

    def intake(self, began: float, status: int, body: bytes) -> None:
        """An intake's answer; a non-2xx one ends its pair."""
        if _ok(status):
            self.total_2xx += 1
        if began < self.record_from:
            return
        self._count("intake", status, body, self.statuses)
        if not _ok(status):
            self.pairs += 1

    def outcome(self, began: float, sent: float, ended: float, status: int, body: bytes) -> None:
        """The outcome's answer, which ends the pair that began at ``began``."""
        if _ok(status):
            self.settled_2xx += 1
        if began < self.record_from:
            return
        self._count("outcome", status, body, self.statuses)
        self.outcome_statuses[str(status)] = self.outcome_statuses.get(str(status), 0) + 1
        self.pairs += 1
        self.pairs_ok += _ok(status)
        self.pair_latencies.append((ended - began) * 1000)
        self.outcome_latencies.append((ended - sent) * 1000)
        self.last_done = max(self.last_done, ended)

    def result(self, url: str, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
        """What the run measured, in the closed loop's keys (``requests`` are pairs) plus the
        outcome's own latency, its statuses and the settled count."""
        pairs, outcomes = sorted(self.pair_latencies), sorted(self.outcome_latencies)
        elapsed = max(self.last_done - self.record_from, 1e-9)
        return {
            "url": url,
            "concurrency": concurrency,
            "warmup_s": warmup,
            "duration_s": duration,
            "client": "raw",
            "requests": self.pairs,
            "elapsed_s": round(elapsed, 3),
            "rps": round(self.pairs_ok / elapsed, 1),
            "p50_ms": round(percentile(pairs, 50), 2),
            "p90_ms": round(percentile(pairs, 90), 2),
            "p99_ms": round(percentile(pairs, 99), 2),
            "max_ms": round(pairs[-1], 2) if pairs else 0.0,
            "mean_ms": round(sum(pairs) / len(pairs), 2) if pairs else 0.0,
            "outcome_p50_ms": round(percentile(outcomes, 50), 2),
            "outcome_p99_ms": round(percentile(outcomes, 99), 2),
            "non_2xx": self.pairs - self.pairs_ok,
            "errors": self.errors,
            "total_2xx": self.total_2xx,
            "settled_2xx": self.settled_2xx,
            "statuses": self.statuses,
            "outcome_statuses": self.outcome_statuses,
            "error_samples": self.error_samples,
        }


async def _connection(conn: KeepAlive, intakes: list[bytes], first: int, rec: PairRecorder) -> None:
    """One connection's pairs: its intakes from ``first`` on, every ``concurrency``-th."""
    host, port, stride = conn.host, conn.port, rec.concurrency
    try:
        for payload in turns(rec, intakes, first, stride):
            began = time.perf_counter()
            try:
                status, body = await conn.exchange(payload)
                rec.intake(began, status, body)
                if not _ok(status):
                    continue
                report = build_outcome(host, port, json.loads(body)["job_id"], ADMIN_TOKEN)
                sent = time.perf_counter()
                status, body = await conn.exchange(report)
            except PAIR_ERRORS as exc:
                rec.failed(began, f"{type(exc).__name__}: {exc}"[:200])
                await conn.drop()
                continue
            rec.outcome(began, sent, time.perf_counter(), status, body)
    finally:
        await conn.close()


async def run_pairs(
    url: str,
    keys: Sequence[str],
    *,
    concurrency: int,
    warmup: float,
    duration: float,
    timeout: float,
    max_requests: int,
) -> tuple[dict[str, Any], list[float], list[float]]:
    """The closed loop of pairs: its result, and every recorded pair's and outcome's
    latency (ms)."""
    host, port = closed_loop_target(url, keys)
    rec = PairRecorder(warmup, duration, max_requests)
    rec.concurrency = concurrency
    intakes = build_requests(host, port, keys, "intake")
    conns = [KeepAlive(host, port, timeout) for _ in range(concurrency)]
    await asyncio.gather(*(_connection(c, intakes, i, rec) for i, c in enumerate(conns)))
    result = rec.result(url, concurrency, warmup, duration)
    return result, rec.pair_latencies, rec.outcome_latencies
