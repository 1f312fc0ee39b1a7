"""Issue 15's concurrency cap with real processes on every backend: "under 8 processes of
concurrent intakes a client never exceeds it".

A gateway with 4 worker processes and a Pro client (cap 5, the plan's; unthrottled, so that
only the cap refuses). Eight client processes send the intakes (tests/intake_load.py):

1. 100 intakes released together by a barrier: exactly 5 answered 201 and 95 answered 429
   ``concurrency_limit_reached`` with ``Retry-After``; the store holds exactly the holds of
   those 5 jobs, and allowance - held == remaining.
2. The runner ends two of them (a success, an infrastructure failure) and the client cancels a
   third: 100 more at once, and exactly 3 are accepted (the places freed, never more).
3. The race: the eight processes send intakes back to back while the runner ends the oldest
   open job every 0.2 s (10 ends, of jobs accepted during the race too; a job it works on is
   reported running 0.1 s before its end) and a reader samples ``credits_reserved``, which
   must never pass 5. Starting full, each acceptance needs a place an end freed, and an end
   frees its place only after it was sent: so the i-th acceptance to arrive must arrive after
   the runner sent its i-th end (all times on the machine's one monotonic clock). A job let in
   over the cap at any moment breaks that order, even if it ended later (a cap that did not
   count running jobs fails here: 7 of 10 acceptances came before their end was sent); a
   refused intake while a place was free shows as fewer acceptances than ends (every place
   freed is taken again).

Every round ends with the store's invariants and its credits: the allowance less what was
charged and held is what remains.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ADMIN_TOKEN
from openclaw_billing.errors import ConcurrencyLimitReached
from openclaw_billing.plans import PLANS, PlanId
from openclaw_billing.store.capabilities import JobStorage
from tests.backends import assert_invariants, reopen, store_url_fixture  # noqa: F401
from tests.factories import JOB_BODY, create_client_at
from tests.intake_load import Reply, burst, flood, mp_context, sample_reserved
from tests.invariants import check_store_file
from tests.server import running_gateway
from tests.store_helpers import collect

WORKERS = 4
PROCESSES = 8
BURST = 100
CAP = PLANS[PlanId.PRO].max_active_jobs or 0
ALLOWANCE = PLANS[PlanId.PRO].jobs_per_month or 0
#: The race: ends the runner reports, the pause before each, connections per client process,
#: and how long intakes go on after the last end (every freed place must be taken again).
RACE_ENDS = 10
PAUSE = 0.2
CONNECTIONS = 1
TAIL = 1.0
#: How the runner ends jobs, in turn; the ends the default policy charges.
ENDS = ("succeeded", "failed:infrastructure", "cancel", "failed:client_error", "timed_out")
CHARGED = {"succeeded", "failed:client_error"}
#: The ends of jobs the runner started: reported running first, then ended WORK s later (a
#: running job still holds its place: one let in meanwhile arrives before the end is sent).
STARTED = {"succeeded", "failed:client_error", "timed_out"}
WORK = 0.1
ADMIN = {"X-Auth-Token": ADMIN_TOKEN}
OPEN = {"queued", "running"}


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if n < total % parts else 0) for n in range(parts)]


def _burst(base: str, key: str) -> list[Reply]:
    """:data:`BURST` intakes from :data:`PROCESSES` processes, released together."""
    ctx = mp_context()
    barrier = ctx.Barrier(PROCESSES)
    out: Any = ctx.Queue()
    procs = [
        ctx.Process(target=burst, args=(base, key, JOB_BODY, n, barrier, out))
        for n in _shares(BURST, PROCESSES)
    ]
    for proc in procs:
        proc.start()
    replies: list[Reply] = collect(procs, out)
    return replies


def _check_refusals(replies: list[Reply]) -> None:
    """Every intake not accepted was refused by the cap, with the time to wait."""
    refused = [r for r in replies if r.status != 201]
    assert {(r.status, r.code) for r in refused} <= {(429, "concurrency_limit_reached")}
    retry = str(ConcurrencyLimitReached.RETRY_AFTER_SECONDS)
    assert all(r.retry_after == retry for r in refused)


def _holds(store_url: str, client_id: str) -> tuple[set[str], int, int | None]:
    """The store's open holds of the client (job ids), the credits it charged, and the
    credits left; checks the invariants, and that the ledger holds what the jobs hold."""
    with reopen(store_url) as store:
        assert isinstance(store, JobStorage)
        [record] = [r for r in assert_invariants(store) if r.client_id == client_id]
        jobs = store.client_jobs(client_id)
    holding = {job.job_id for job in jobs if job.holding}
    log = record.metadata.cost_log
    assert {e.job_id for e in log if e.held} == holding
    assert {e.job_id for e in log} == {job.job_id for job in jobs}
    assert all(job.status.open == job.holding for job in jobs)
    return holding, sum(e.credits for e in log if not e.held), record.credits_remaining


def _end(http: httpx.Client, key: str, job_id: str, end: str) -> float:
    """The runner (or, for ``cancel``, the client) ends a queued job; a job the runner works
    on is reported running first, :data:`WORK` s before its end. Returns when the end was
    sent."""
    status, _, failure = end.partition(":")
    if end in STARTED:
        running = http.post(
            f"/api/admin/jobs/{job_id}/outcome", headers=ADMIN, json={"status": "running"}
        )
        assert running.status_code == 200, running.text
        time.sleep(WORK)
    sent = time.monotonic()
    if status == "cancel":
        answer = http.post(f"/api/jobs/{job_id}/cancel", headers={"X-Client-Key": key})
    else:
        body = {"status": status} | ({"failure_class": failure} if failure else {})
        answer = http.post(f"/api/admin/jobs/{job_id}/outcome", headers=ADMIN, json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["changed"] is True
    assert answer.json()["status"] not in OPEN
    return sent


def _run_ends(base: str, key: str, count: int) -> list[float]:
    """The runner of the race: ``count`` times, wait :data:`PAUSE`, list the client's jobs and
    end the oldest open one (as :data:`ENDS` says, in turn). Returns when each end was sent."""
    sent: list[float] = []
    client = {"X-Client-Key": key}
    with httpx.Client(base_url=base, timeout=60) as http:
        for n in range(count):
            time.sleep(PAUSE)
            deadline = time.monotonic() + 10
            while True:  # a place just freed may not be taken again yet
                jobs = http.get("/api/jobs", headers=client).json()["jobs"]
                listed = [job["job_id"] for job in jobs if job["status"] in OPEN]
                assert len(listed) <= CAP, f"{len(listed)} open jobs listed"
                if listed or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            assert listed, "no open job to end: the intakes stopped taking freed places"
            sent.append(_end(http, key, listed[0], ENDS[n % len(ENDS)]))
    return sent


def _race(base: str, key: str) -> tuple[list[Reply], list[float], list[int]]:
    """Round 3: the flood of intakes, the runner's ends and the reader's samples."""
    ctx = mp_context()
    barrier = ctx.Barrier(PROCESSES + 2)
    stop = ctx.Event()
    out: Any = ctx.Queue()
    samples: Any = ctx.Queue()
    procs = [
        ctx.Process(target=flood, args=(base, key, JOB_BODY, CONNECTIONS, barrier, stop, out))
        for _ in range(PROCESSES)
    ]
    reader = ctx.Process(target=sample_reserved, args=(base, key, barrier, stop, samples))
    for proc in [*procs, reader]:
        proc.start()
    try:
        barrier.wait(60)
        sent = _run_ends(base, key, RACE_ENDS)
        time.sleep(TAIL)
    finally:
        stop.set()
    replies: list[Reply] = collect(procs, out)
    seen: list[int] = collect([reader], samples)
    return replies, sent, seen


@pytest.mark.slow
def test_the_cap_holds_under_concurrent_intakes_from_8_processes(
    tmp_path: Path, store_url: str
) -> None:
    assert (CAP, ALLOWANCE) == (5, 200)
    extra = {"OPENCLAW_BILLING_DB": store_url}
    with running_gateway(tmp_path, workers=WORKERS, extra_env=extra) as base:
        created = create_client_at(base, "pro", max_active_jobs=None)  # the plan's cap: 5
        cid, key = created["client_id"], created["api_key"]
        policy = httpx.put(
            f"{base}/api/admin/clients/{cid}/policy",
            headers=ADMIN,
            json={"rate_limit_per_minute": 1_000_000, "ip_allowlist": []},
        )
        assert policy.status_code == 200, policy.text

        # 1. 100 at once: exactly the cap.
        started = time.monotonic()
        first = _burst(base, key)
        first_s = time.monotonic() - started
        assert Counter(r.status for r in first) == {201: CAP, 429: BURST - CAP}
        _check_refusals(first)
        accepted = [r.job_id for r in first if r.status == 201]
        holding, charged, remaining = _holds(store_url, cid)
        assert holding == set(accepted)
        assert (charged, remaining) == (0, ALLOWANCE - CAP)
        usage = httpx.get(f"{base}/api/billing/usage", headers={"X-Client-Key": key}).json()
        assert (usage["credits_reserved"], usage["credits_remaining"]) == (CAP, ALLOWANCE - CAP)

        # 2. Three places freed: exactly three more, whichever worker answers.
        freed = ["succeeded", "failed:infrastructure", "cancel"]
        with httpx.Client(base_url=base, timeout=60) as http:
            for job_id, end in zip(accepted, freed, strict=False):
                _end(http, key, str(job_id), end)
        second = _burst(base, key)
        assert Counter(r.status for r in second) == {201: 3, 429: BURST - 3}
        _check_refusals(second)
        holding, charged, remaining = _holds(store_url, cid)
        assert holding == {*accepted[3:], *(r.job_id for r in second if r.status == 201)}
        assert (charged, remaining) == (1, ALLOWANCE - 1 - CAP)

        # 3. Intakes race the runner's ends.
        started = time.monotonic()
        race, sent, seen = _race(base, key)
        race_s = time.monotonic() - started

    statuses = Counter(r.status for r in race)
    _check_refusals(race)
    arrived = sorted(r.at for r in race if r.status == 201)
    late = [
        (n, at - sent[n - 1] if n <= len(sent) else None)
        for n, at in enumerate(arrived, start=1)
        if n > len(sent) or at <= sent[n - 1]
    ]
    assert late == [], "accepted before the end that freed its place was sent (cap exceeded)"
    assert len(arrived) == RACE_ENDS, "a place freed in the race was not taken again"
    assert max(seen) <= CAP, f"credits_reserved reached {max(seen)}"
    assert len(seen) > 10, "the reader hardly read"
    holding, charged, remaining = _holds(store_url, cid)
    assert len(holding) == CAP
    race_charged = sum(ENDS[n % len(ENDS)] in CHARGED for n in range(RACE_ENDS))
    assert charged == 1 + race_charged
    assert remaining == ALLOWANCE - charged - CAP
    if store_url.endswith(".json"):
        check_store_file(Path(store_url), keys=[key])
    print(  # the measured numbers, shown with -s
        f"\n[{store_url.split(':')[0]}] burst 1: {Counter(r.status for r in first)} in "
        f"{first_s:.2f} s; burst 2: {Counter(r.status for r in second)}; race: {statuses} in "
        f"{race_s:.2f} s, {len(seen)} usage samples (max reserved {max(seen)})"
    )
