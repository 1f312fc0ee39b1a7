"""docs/ARCHITECTURE.md R1/R2 and R8 on every backend, and R20: several uvicorn workers, many client
processes.

A client with 500 credits; 8 processes x 100 concurrent intakes with its key, released
together by a barrier: exactly 500 accepted, the rest 402, no 5xx, credits 0, 500 ledger
entries, 500 jobs. Meanwhile readers poll /api/billing/usage: no errors, and the credits they
see never go up.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_TOKEN
from openclaw_billing.cycles import CYCLE_LENGTH
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from tests.backends import all_jobs, assert_invariants, reopen, store_url_fixture  # noqa: F401
from tests.factories import JOB_BODY, UNCAPPED, create_client_at
from tests.invariants import check_store_file
from tests.server import running_gateway

WORKERS = 4
PROCESSES = 8
PER_PROCESS = 100
CREDITS = 500
READERS = 2


async def _burst(base: str, key: str, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def one() -> int:
            response = await client.post(
                "/api/intake", headers={"X-Client-Key": key}, json=JOB_BODY
            )
            return response.status_code

        return await asyncio.gather(*(one() for _ in range(count)))


def _client_process(base: str, key: str, barrier: Barrier, out: mp.Queue[list[int]]) -> None:
    barrier.wait(timeout=60)
    out.put(asyncio.run(_burst(base, key, PER_PROCESS)))


def _reader_process(
    base: str, key: str, barrier: Barrier, out: mp.Queue[list[int]], seen: mp.Queue[list[int]]
) -> None:
    """Poll usage until the credits reach 0; report statuses and the credits seen in order."""
    barrier.wait(timeout=60)
    statuses: list[int] = []
    credits: list[int] = []
    with httpx.Client(base_url=base, timeout=60) as client:
        while not credits or credits[-1] > 0:
            response = client.get("/api/billing/usage", headers={"X-Client-Key": key})
            statuses.append(response.status_code)
            if response.status_code != 200 or len(statuses) > 5000:
                break
            credits.append(response.json()["credits_remaining"])
    out.put(statuses)
    seen.put(credits)


def _unthrottled(store_url: str, client_id: str) -> None:
    """These scenarios are about credits, not request rates or jobs at once: the load client
    gets the highest rate-limit override and concurrency cap (those have their own tests,
    tests/test_ratelimit.py and tests/test_outcomes.py)."""
    with reopen(store_url) as store:
        store.set_policy(
            client_id,
            datetime.now(UTC),
            rate_limit_per_minute=1_000_000,
            ip_allowlist=[],
            max_active_jobs=UNCAPPED,
        )


@pytest.mark.slow
def test_r1_exactly_the_credits_are_sold_across_workers_and_processes(
    tmp_path: Path, store_url: str
) -> None:
    extra = {"OPENCLAW_BILLING_DB": store_url}
    with running_gateway(tmp_path, workers=WORKERS, extra_env=extra) as base:
        admin = {"X-Auth-Token": ADMIN_TOKEN}
        created = create_client_at(base, "pro")
        client_id, key = created["client_id"], created["api_key"]
        topped = httpx.put(
            f"{base}/api/admin/clients/{client_id}/credits",
            headers=admin,
            json={"credits": CREDITS - 200, "reason": "load test allowance"},
        )
        assert topped.json()["credits_remaining"] == CREDITS
        _unthrottled(store_url, client_id)

        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(PROCESSES + READERS)
        out: mp.Queue[list[int]] = ctx.Queue()
        reads: mp.Queue[list[int]] = ctx.Queue()
        seen: mp.Queue[list[int]] = ctx.Queue()
        procs = [
            ctx.Process(target=_client_process, args=(base, key, barrier, out))
            for _ in range(PROCESSES)
        ]
        readers = [
            ctx.Process(target=_reader_process, args=(base, key, barrier, reads, seen))
            for _ in range(READERS)
        ]
        for proc in procs + readers:
            proc.start()
        statuses = Counter(code for _ in procs for code in out.get(timeout=300))
        read_statuses = Counter(code for _ in readers for code in reads.get(timeout=300))
        observed = [seen.get(timeout=60) for _ in readers]
        for proc in procs + readers:
            proc.join(timeout=30)
            assert proc.exitcode == 0

        usage = httpx.get(f"{base}/api/billing/usage", headers={"X-Client-Key": key}).json()
        detail = httpx.get(f"{base}/api/admin/clients/{client_id}", headers=admin).json()

    assert statuses == {201: CREDITS, 402: PROCESSES * PER_PROCESS - CREDITS}, statuses
    assert set(read_statuses) == {200}, read_statuses
    for credits in observed:
        assert credits[-1] == 0
        assert all(a >= b for a, b in itertools.pairwise(credits)), "credits went up"
    assert usage["credits_remaining"] == 0
    ledger = detail["metadata"]["cost_log"]
    assert len(ledger) == CREDITS
    assert len({entry["job_id"] for entry in ledger}) == CREDITS
    if store_url.endswith(".json"):
        check_store_file(tmp_path / "clients.json", keys=[key])
    with reopen(store_url) as store:
        assert_invariants(store)
        jobs = all_jobs(store, tmp_path / "jobs.jsonl")
    assert len(jobs) == CREDITS
    assert {job_id for _, job_id in jobs} == {entry["job_id"] for entry in ledger}


@pytest.mark.slow
def test_r20_a_cycle_ending_under_load_resets_once(tmp_path: Path, store_url: str) -> None:
    """The client's cycle ends 3 s into a 6 s burst from 16 threads across 4 workers: exactly
    one reset, and every accepted job is in exactly one of the two cycles' ledgers."""
    extra = {"OPENCLAW_BILLING_DB": store_url}
    with running_gateway(tmp_path, workers=WORKERS, extra_env=extra) as base:
        # Created once the workers are up, so a slow start cannot use up the 3 s.
        with reopen(store_url) as store:
            service = BillingService(store)
            boundary = datetime.now(UTC) + timedelta(seconds=3)
            record, key = service.create_client(
                name="Edge",
                email="edge@acmecorp.com",
                plan=PlanId.PRO,
                now=boundary - CYCLE_LENGTH,
            )
        _unthrottled(store_url, record.client_id)
        wait = (boundary - datetime.now(UTC)).total_seconds() - 2.5
        if wait > 0:
            time.sleep(wait)
        stop = time.monotonic() + 6
        statuses: list[int] = []
        lock = threading.Lock()
        barrier = threading.Barrier(16)

        def submit() -> None:
            with httpx.Client(base_url=base, timeout=60) as http:
                barrier.wait(timeout=30)
                while time.monotonic() < stop:
                    code = http.post(
                        "/api/intake", headers={"X-Client-Key": key}, json=JOB_BODY
                    ).status_code
                    with lock:
                        statuses.append(code)

        threads = [threading.Thread(target=submit) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    with reopen(store_url) as store:
        after = store.get_client(record.client_id)
        assert after is not None
        assert_invariants(store)
    accepted = statuses.count(201)
    assert set(statuses) <= {201, 402}, Counter(statuses)
    [old] = after.metadata.cycle_history  # exactly one reset
    assert old.end == boundary
    assert after.billing_cycle_start == boundary
    assert old.jobs >= 1, "the burst must straddle the boundary"
    assert len(after.metadata.cost_log) >= 1, "the burst must straddle the boundary"
    assert old.jobs + len(after.metadata.cost_log) == accepted
    assert after.credits_remaining == 200 - len(after.metadata.cost_log)
