"""The report's Setup section: how the rows were measured (:func:`setup`) and what every row
checked of the limits that stay on (:func:`validity`)."""

from __future__ import annotations

from collections.abc import Sequence

from config import OPEN_CONNECTIONS, OPEN_RATE, Timing
from http1 import JOBS_PER_CLIENT
from results import Row
from seed import BENCH_MAX_ACTIVE_JOBS, BENCH_RATE_LIMIT


def validity(rows: Sequence[Row]) -> list[str]:
    """Rate limits on, and every answer 2xx: what the rows checked."""
    checked = sum(r.rate_limit == str(BENCH_RATE_LIMIT) for r in rows)
    totals: dict[str, int] = {}
    for r in rows:
        for counts in r.non_2xx().values():
            for status, n in counts.items():
                totals[status] = totals.get(status, 0) + n
    answers = (
        "none"
        if not totals
        else "**"
        + ", ".join(f"{n:,} x {s}" for s, n in sorted(totals.items()))
        + "** (see Anomalies)"
    )
    capped = sum(r.caps == (BENCH_MAX_ACTIVE_JOBS,) for r in rows)
    unsettled = [r for r in rows if r.config.section not in ("read", "settle")]
    most = max((r.most_held for r in unsettled), default=-1)
    return [
        "- Concurrency caps are on: every intake reserves its job's price checked against the "
        "client's cap of jobs queued or running (the pro plan's is 5); the benchmarked "
        "clients carry a per-client override (`max_active_jobs` = "
        f"{BENCH_MAX_ACTIVE_JOBS:,} on the record, what `PUT /api/admin/clients/{{id}}/policy` "
        "sets) so that the holds an intake row leaves open never meet it. The clients stay "
        "pro, not enterprise (no cap, but no credits taken or held). "
        f"{capped} of {len(rows)} row(s) found the override on every benchmarked client after "
        "the row; the most jobs one benchmarked client held at once (at the end of an intake "
        "row, which settles none): " + (f"{most:,}." if most >= 0 else "—."),
        "- Rate limits are on: the gateway runs with its defaults (`OPENCLAW_RATE_LIMIT_STORAGE` "
        "unset: `memory://`, per worker) and checks every benchmarked request against its "
        "client's limit; the benchmarked clients carry a per-client override "
        f"(`rate_limit_per_minute` = {BENCH_RATE_LIMIT:,} on the record) so that the load "
        f"never meets it. {checked} of {len(rows)} row(s) saw the gateway answer "
        f"`RateLimit-Limit: {BENCH_RATE_LIMIT}` for a benchmarked client.",
        f"- Answers other than 2xx in this run (every round of every row, bare and billing, "
        f"closed and open loop; 429 would be rate limiting or the concurrency cap): {answers}.",
    ]


def setup(timing: Timing) -> list[str]:
    return [
        "- *Billing*: the reference gateway, `uvicorn gateway:app --workers N`, over a seeded "
        "store (`OPENCLAW_BILLING_DB`). Every intake request authenticates its `X-Client-Key`, "
        "is checked against the client's rate limit, reserves the job's price (1 credit) as a "
        "hold, checked against the client's concurrency cap (pro clients with ample credits: "
        "the limited-plan path, not the enterprise log-only one), and stores the job with its "
        "hold in the same atomic step (`Store.accept`: one transaction on SQL, one journal "
        "write on the JSON store; no job file), and answers 201 once that is durable. The "
        "intake rows report no outcome, so each benchmarked client's holds pile up over a row; "
        "the *intake + outcome* rows settle each job (see below the results). Each worker "
        "commits the charges that arrive together as one batch (its group committer, "
        "`OPENCLAW_COMMITTER`, default `thread`) and keeps verified keys for "
        "`OPENCLAW_KEY_CACHE_SECONDS` (default 1 s); both run at their defaults, but the "
        "committer comparison runs `loop`. Requests go round-robin over 100 clients spread "
        "evenly over the store; every row starts from the seeded state (empty ledgers, no jobs).",
        "- *Bare*: `uvicorn bench.bare_app:app --workers N`: the same route shapes "
        "(`gateway_jobs.JobCreate` body, `X-Client-Key` header, a `gateway_jobs.JobAccepted` "
        "answer with the job's receipt; `GET /api/jobs` answering a `gateway_jobs.JobList`; "
        "`POST /api/admin/jobs/{job_id}/outcome` with the admin token checked, an "
        "`OutcomeReport` body and a `JobStatePublic` answer; sync routes in the thread pool) "
        "with no client auth and no storage.",
        f"- Closed loop (the throughput rows): both run with the same flags (`--no-access-log`; "
        f"uvloop + httptools) and are loaded alternately, bare then billing, {timing.rounds} "
        f"round(s) each of {timing.warmup:g} s warm-up + {timing.duration:g} s measured, by "
        "`bench/load.py`: N keep-alive connections, each sending its next request when its "
        "last answer arrives (a minimal asyncio HTTP/1.1 client: httpx.AsyncClient tops out "
        "near 500 req/s on this machine, far below the bare app). Ratio = billing req/s ÷ bare "
        "req/s over the row's rounds, per-round spread in brackets; p50/p99 pool every "
        "measured request of the row. Latency ≈ connections ÷ throughput plus queueing, so "
        "this p99 is latency at saturation, not at a fixed offered rate.",
        f"- Open loop (the latency rows): `bench/load.py --rate R` sends R requests a second "
        f"on a fixed schedule over at most {OPEN_CONNECTIONS} keep-alive connections, and a "
        "request's latency runs from its *scheduled* send time: when the server (or the "
        "generator) falls behind, the lateness counts (no coordinated omission). Rates: "
        f"{OPEN_RATE:g} req/s, and half the bare endpoint's closed-loop throughput measured for "
        "the same configuration just before. On the closed-loop rows' servers, alternately "
        f"bare then billing at the same rate, {timing.open_rounds} round(s) each of "
        f"{timing.open_warmup:g} s warm-up + {timing.open_duration:g} s measured. Added "
        "latency = billing's percentile - bare's. A request still unanswered "
        f"{timing.open_grace:g} s after the last scheduled send is *censored*: counted, and in "
        "the percentiles at a lower bound (its schedule to that deadline), so a saturated "
        "side's percentiles read \"≥\". The generator's own lateness (hand-off - schedule: "
        "timer granularity and its own CPU) is shown per row; it is in both sides' latencies "
        "alike.",
        "- Authenticated read: `GET /api/jobs` with the client's key against the bare app's "
        f"`GET /api/jobs` (reads the header, answers a `JobList` of {JOBS_PER_CLIENT} jobs built "
        "in memory), closed loop, alternating as above. Before its rounds each benchmarked "
        f"client submits {JOBS_PER_CLIENT} jobs, so its list holds {JOBS_PER_CLIENT}.",
        "- **The load generator shares the machine's 2 cores with the server** (and, for "
        "PostgreSQL, with the database server): bare throughput is capped by the machine, not "
        "by FastAPI alone. The ratio is what both see under the same conditions.",
        "- CPU µs/req: user + system CPU of the uvicorn processes (for PostgreSQL also of the "
        "postgres processes) per answered request, from /proc.",
    ]
