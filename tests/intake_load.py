"""Client processes for the process tests of charging by outcome (tests/test_concurrency_cap.py,
tests/test_dead_runner.py): intakes and usage reads sent over real HTTP to a running gateway.

Children come from the "forkserver" context with this module preloaded (:func:`mp_context`), so
starting one costs milliseconds and never inherits the test's threads. Every function a child
runs is defined here, importable by name; each puts exactly one result on its queue: ``("ok",
value)`` or ``("error", traceback)``, as ``tests.store_helpers.collect`` takes them (an error
fails the test).

Every answer is timed with ``time.monotonic()`` as it arrives: Linux's monotonic clock is one
clock for every process of the machine, so answers from different children, and the test's own
requests, can be put in one order.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import ForkServerContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import httpx

#: A job's body (the tests pass ``tests.factories.JOB_BODY``).
Body = dict[str, str]

#: Bound on any wait for a child, a barrier or an answer: a hang fails the test, never blocks it.
WAIT = 120.0


@dataclass(frozen=True)
class Reply:
    """One intake's answer: its status, the error code (None for a 201), ``Retry-After``, the
    job id (a 201), and when it arrived (``time.monotonic()``)."""

    status: int
    code: str | None
    retry_after: str | None
    job_id: str | None
    at: float


def mp_context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


async def intake(http: httpx.AsyncClient, key: str, body: Body) -> Reply:
    """Submit the job ``body`` with the client's key."""
    response = await http.post("/api/intake", headers={"X-Client-Key": key}, json=body)
    at = time.monotonic()
    body = response.json()
    if response.status_code == 201:
        return Reply(201, None, None, body["job_id"], at)
    return Reply(
        response.status_code, body.get("code"), response.headers.get("Retry-After"), None, at
    )


def _client(base: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base, timeout=WAIT, limits=limits)


async def _connect(http: httpx.AsyncClient, connections: int) -> None:
    """Open the client's connections before the start, so the burst sends at once."""
    await asyncio.gather(*(http.get("/health") for _ in range(connections)))


def _report(out: Queue[Any], work: Callable[[], Any]) -> None:
    try:
        out.put(("ok", work()))
    except BaseException:
        out.put(("error", traceback.format_exc()))


def burst(base: str, key: str, body: Body, count: int, barrier: Barrier, out: Queue[Any]) -> None:
    """Child: ``count`` intakes at once, over ``count`` connections opened before the
    ``barrier`` releases every child together; puts the list of :class:`Reply`."""

    async def run() -> list[Reply]:
        async with _client(base, count) as http:
            await _connect(http, count)
            await asyncio.to_thread(barrier.wait, WAIT)
            return await asyncio.gather(*(intake(http, key, body) for _ in range(count)))

    _report(out, lambda: asyncio.run(run()))


def flood(
    base: str,
    key: str,
    body: Body,
    connections: int,
    barrier: Barrier,
    stop: Event,
    out: Queue[Any],
) -> None:
    """Child: intakes back to back on each of ``connections`` connections, from the
    ``barrier`` until ``stop`` is set; puts the list of :class:`Reply`."""

    async def run() -> list[Reply]:
        replies: list[Reply] = []
        async with _client(base, connections) as http:
            await _connect(http, connections)
            await asyncio.to_thread(barrier.wait, WAIT)

            async def connection() -> None:
                while not stop.is_set():
                    replies.append(await intake(http, key, body))

            await asyncio.gather(*(connection() for _ in range(connections)))
        return replies

    _report(out, lambda: asyncio.run(run()))


def sample_reserved(base: str, key: str, barrier: Barrier, stop: Event, out: Queue[Any]) -> None:
    """Child: read the client's usage back to back from the ``barrier`` until ``stop``; puts
    the ``credits_reserved`` of every answer (every status other than 200 fails)."""

    def run() -> list[int]:
        seen: list[int] = []
        with httpx.Client(base_url=base, timeout=WAIT) as http:
            barrier.wait(WAIT)
            while not stop.is_set():
                response = http.get("/api/billing/usage", headers={"X-Client-Key": key})
                assert response.status_code == 200, response.text
                seen.append(response.json()["credits_reserved"])
        return seen

    _report(out, run)
