"""Open-loop load: requests sent at a fixed rate whatever the server does, latency measured from
each request's *scheduled* send time (no coordinated omission).

Request ``i`` is scheduled at ``start + i / rate``. One dispatcher hands each request, once its
time has come, to a pool of keep-alive connections (at most ``connections``, each with one
request in flight); when every connection is busy the request waits at the generator, and that
wait counts in its latency, as does any lateness of the dispatcher itself. A request's latency
is ``answer time - scheduled time``, never ``answer time - send time``.

The run is bounded: nothing is scheduled after ``warmup + duration``, and the generator waits
at most ``grace`` seconds more for what is still queued or in flight. A request that has no
answer by then (never sent because every connection stayed busy, or sent and unanswered) is
*censored*: it keeps the time from its schedule to that deadline as its latency, a lower
bound, and is counted, so an overloaded server shows as such instead of vanishing from the
percentiles.

What the generator itself contributes is measured and reported: the dispatcher's lateness
(hand-off time - scheduled time; timer granularity and the generator's own load) and the wait
for a free connection (send time - hand-off time).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from http1 import CONNECTION_ERRORS, percentile, read_response

NAN = math.nan


@dataclass
class OpenAccount:
    """What one open-loop run measured, from its per-request times (seconds, ``perf_counter``)."""

    #: Latencies (ms, from the scheduled time) of every recorded request: the answered ones and
    #: the censored ones (their lower bound). Failed requests are counted, not timed.
    latencies: list[float] = field(default_factory=list, repr=False)
    scheduled: int = 0
    answered: int = 0
    non_2xx: int = 0
    errors: int = 0
    #: Recorded requests never sent: every connection stayed busy until the deadline.
    unsent: int = 0
    #: Recorded requests sent but not answered by the deadline.
    unanswered: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    #: Over the whole run, warm-up included: 2xx answers, and requests sent but never answered
    #: (a billing server may have charged those too).
    total_2xx: int = 0
    total_unanswered: int = 0
    #: The dispatcher's lateness and the wait for a connection, recorded requests only (ms).
    dispatch_late_ms: dict[str, float] = field(default_factory=dict)
    conn_wait_ms: dict[str, float] = field(default_factory=dict)

    @property
    def censored(self) -> int:
        return self.unsent + self.unanswered


def _spread(values: list[float]) -> dict[str, float]:
    values.sort()
    return {
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(values[-1], 3) if values else 0.0,
    }


def account(
    sched: Sequence[float],
    dispatched: Sequence[float],
    sent: Sequence[float],
    ended: Sequence[float],
    status: Sequence[int],
    *,
    record_from: float,
    deadline: float,
) -> OpenAccount:
    """The run's figures from its per-request times (NaN: did not happen) and statuses
    (0: failed). Requests scheduled before ``record_from`` (the warm-up) are not recorded."""
    out = OpenAccount()
    late: list[float] = []
    wait: list[float] = []
    for i, t in enumerate(sched):
        answered = not math.isnan(ended[i])
        was_sent = not math.isnan(sent[i])
        code = status[i]
        if answered and 200 <= code < 300:
            out.total_2xx += 1
        if was_sent and not answered:
            out.total_unanswered += 1
        if t < record_from:
            continue
        out.scheduled += 1
        if not math.isnan(dispatched[i]):
            late.append(1000 * (dispatched[i] - t))
            if was_sent:
                wait.append(1000 * (sent[i] - dispatched[i]))
        if answered and code == 0:  # the connection failed: counted, not timed
            out.errors += 1
            continue
        if answered:
            out.answered += 1
            out.latencies.append(1000 * (ended[i] - t))
            out.statuses[str(code)] = out.statuses.get(str(code), 0) + 1
            if not 200 <= code < 300:
                out.non_2xx += 1
            continue
        if was_sent:
            out.unanswered += 1
        else:
            out.unsent += 1
        out.latencies.append(1000 * max(0.0, deadline - t))
    out.dispatch_late_ms, out.conn_wait_ms = _spread(late), _spread(wait)
    return out


class _Run:
    """The per-request times of one run, filled in by the dispatcher and the connections."""

    def __init__(self, count: int) -> None:
        self.sched = array("d", [NAN]) * count
        self.dispatched = array("d", [NAN]) * count
        self.sent = array("d", [NAN]) * count
        self.ended = array("d", [NAN]) * count
        self.status = array("i", [0]) * count
        self.error_samples: list[str] = []
        self.busy = 0
        self.most_busy = 0


async def _connection(
    host: str,
    port: int,
    requests: Sequence[bytes],
    queue: asyncio.Queue[int],
    run: _Run,
    timeout: float,
) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while True:
            i = await queue.get()
            run.sent[i] = time.perf_counter()
            run.busy += 1
            run.most_busy = max(run.most_busy, run.busy)
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port), timeout
                    )
                writer.write(requests[i % len(requests)])
                code = await asyncio.wait_for(read_response(reader), timeout)
            except CONNECTION_ERRORS as exc:
                run.ended[i] = time.perf_counter()  # answered with a failure (status 0)
                if len(run.error_samples) < 5:
                    run.error_samples.append(f"{type(exc).__name__}: {exc}"[:200])
                if writer is not None:
                    writer.close()
                writer = reader = None
                continue
            finally:
                run.busy -= 1
            run.ended[i] = time.perf_counter()
            run.status[i] = code
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _stop(workers: Sequence[asyncio.Task[None]]) -> None:
    """Cancel the connections' tasks until every one has ended: on Python 3.11
    ``asyncio.wait_for`` can swallow a cancellation that arrives as its answer does, and the
    task would then wait for the next request forever (a quick run once hung 300 s so)."""
    pending = [t for t in workers if not t.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.5)
        pending = [t for t in pending if not t.done()]
    for task in workers:  # retrieve each outcome (cancelled, or an error already counted)
        if not task.cancelled():
            task.exception()


async def run_open(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float,
    warmup: float,
    duration: float,
    connections: int,
    grace: float,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Send ``rate`` requests a second for ``warmup + duration`` seconds; returns the summary
    (see :class:`OpenAccount`) and, under ``latencies``, every recorded latency (ms)."""
    count = max(1, math.ceil(rate * (warmup + duration)))
    run = _Run(count)
    queue: asyncio.Queue[int] = asyncio.Queue()
    workers = [
        asyncio.create_task(_connection(host, port, requests, queue, run, timeout))
        for _ in range(connections)
    ]
    start = time.perf_counter() + 0.05
    for i in range(count):
        run.sched[i] = start + i / rate
    i = 0
    while i < count:
        now = time.perf_counter()
        while i < count and run.sched[i] <= now:  # everything due: never early, never skipped
            run.dispatched[i] = now
            queue.put_nowait(i)
            i += 1
        if i < count:
            await asyncio.sleep(run.sched[i] - time.perf_counter())
    deadline = run.sched[count - 1] + grace
    while time.perf_counter() < deadline and not _all_done(run):
        await asyncio.sleep(min(0.01, max(0.0, deadline - time.perf_counter())))
    await _stop(workers)
    acc = account(
        run.sched,
        run.dispatched,
        run.sent,
        run.ended,
        run.status,
        record_from=start + warmup,
        deadline=deadline,
    )
    lat = sorted(acc.latencies)
    return {
        "mode": "open",
        "rate": rate,
        "connections": connections,
        "most_busy": run.most_busy,
        "warmup_s": warmup,
        "duration_s": duration,
        "requests": acc.scheduled,
        "answered": acc.answered,
        "elapsed_s": duration,
        "rps": round((acc.answered - acc.non_2xx) / duration, 1),
        "p50_ms": round(percentile(lat, 50), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(lat[-1], 2) if lat else 0.0,
        "non_2xx": acc.non_2xx,
        "errors": acc.errors,
        "unsent": acc.unsent,
        "unanswered": acc.unanswered,
        "total_2xx": acc.total_2xx,
        "total_unanswered": acc.total_unanswered,
        "statuses": acc.statuses,
        "error_samples": run.error_samples,
        "dispatch_late_ms": acc.dispatch_late_ms,
        "conn_wait_ms": acc.conn_wait_ms,
        "latencies": acc.latencies,
    }


def _all_done(run: _Run) -> bool:
    last = len(run.ended) - 1
    # Answers arrive nearly in order: check the last one first, then the whole run.
    return not math.isnan(run.ended[last]) and not any(math.isnan(t) for t in run.ended)
