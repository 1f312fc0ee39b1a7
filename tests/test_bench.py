"""The benchmark's own arithmetic (bench/, run by ``make bench``): the open loop's accounting
from scheduled send times (no coordinated omission), checked on hand-made times and against a
server that stalls, the Goals table's verdicts (each goal on its worst row), ``--only``, and
reserve then settle: the pair generator against a server speaking as the gateway does, the
bare outcome endpoint against the gateway's (real HTTP through both apps), a pair row's
checks of the store, and its place in the report (beside its intake row, not a goal row).

The bench modules import each other as top-level modules (``bench/`` is their directory when
they run), so they are loaded here by name with ``bench/`` on the path.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import factories

BENCH = Path(__file__).resolve().parent.parent / "bench"
NAN = math.nan


def bench(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    return importlib.import_module(name)


# -- the open loop's accounting ----------------------------------------------------------------


def test_latency_runs_from_the_scheduled_time_not_the_send() -> None:
    openloop = bench("openloop")
    # 100 req/s from t=1.0; a warm-up request at 0.99 is charged (2xx) but not recorded.
    sched = [0.99, 1.00, 1.01, 1.02, 1.03, 1.04]
    dispatched = [0.99, 1.0002, 1.0105, 1.0201, 1.0301, 1.0401]
    sent = [0.99, 1.0002, 1.05, 1.0202, 1.0302, NAN]  # 1.01 waited 39.5 ms for a connection
    ended = [0.995, 1.0052, 1.06, NAN, 1.031, NAN]
    status = [201, 201, 201, 0, 0, 0]  # 1.03: the connection failed (answered, status 0)
    acc = openloop.account(sched, dispatched, sent, ended, status, record_from=1.0, deadline=1.10)
    assert acc.scheduled == 5
    assert acc.answered == 2
    assert acc.errors == 1
    assert acc.unanswered == 1
    assert acc.unsent == 1
    assert acc.censored == 2
    # 5 ms; 50 ms from its schedule (10 ms from its send); the censored ones at their lower
    # bound, schedule to deadline: 80 ms and 60 ms.
    assert [round(x, 3) for x in acc.latencies] == [5.2, 50.0, 80.0, 60.0]
    assert acc.total_2xx == 3
    assert acc.total_unanswered == 1
    assert acc.statuses == {"201": 2}
    assert acc.dispatch_late_ms["max"] == pytest.approx(0.5)
    assert acc.conn_wait_ms["max"] == pytest.approx(39.5)


def test_a_non_2xx_answer_is_timed_and_counted() -> None:
    openloop = bench("openloop")
    acc = openloop.account(
        [0.0, 0.01], [0.0, 0.01], [0.0, 0.01], [0.002, 0.013], [429, 201],
        record_from=0.0, deadline=1.0,
    )  # fmt: skip
    assert acc.non_2xx == 1
    assert acc.statuses == {"429": 1, "201": 1}
    assert [round(x, 3) for x in acc.latencies] == [2.0, 3.0]


async def _stalling_server(stall: float) -> tuple[asyncio.Server, int]:
    """HTTP/1.1 on loopback: the first request waits ``stall`` seconds, the others none."""
    first = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if not first.is_set():
                    first.set()
                    await asyncio.sleep(stall)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:  # also when the run ends with this answer still stalled (cancelled)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


def _open_against_stall(stall: float, route: str, **schedule: float) -> dict[str, Any]:
    """``run_open`` over one connection against :func:`_stalling_server`."""
    openloop, http1 = bench("openloop"), bench("http1")

    async def run() -> dict[str, Any]:
        server, port = await _stalling_server(stall)
        try:
            requests = http1.build_requests("127.0.0.1", port, ["k"], route)
            result: dict[str, Any] = await openloop.run_open(
                "127.0.0.1", port, requests, connections=1, warmup=0.0, **schedule
            )
            return result
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(run())


def test_a_stall_counts_for_every_request_scheduled_behind_it() -> None:
    """One connection, 100 req/s, the first answer 300 ms late: the requests scheduled during
    the stall wait for the connection, and their latency counts that wait (a closed loop
    would have timed each of them from its late send, about 0 ms)."""
    result = _open_against_stall(0.3, "jobs", rate=100, duration=0.6, grace=1.0)
    lat = result["latencies"]
    assert result["requests"] == 60
    assert result["answered"] == 60
    assert not result["unsent"]
    assert lat[0] >= 300  # the stalled one
    assert lat[10] >= 190  # scheduled 100 ms in, answered after the stall: about 200 ms
    assert sorted(lat)[len(lat) // 2] < 300  # most were not behind the stall
    assert result["p99_ms"] >= 290
    assert result["conn_wait_ms"]["max"] >= 250  # the wait is the generator's queue


def test_requests_without_an_answer_by_the_deadline_are_censored() -> None:
    # The server never answers within the run.
    result = _open_against_stall(5.0, "intake", rate=50, duration=0.2, grace=0.2)
    assert result["requests"] == 10
    assert result["answered"] == 0
    assert result["unanswered"] == 1
    assert result["unsent"] == 9
    assert result["total_unanswered"] == 1
    # Lower bounds: the first from its schedule to the deadline (0.18 s + 0.2 s of grace).
    assert result["max_ms"] == pytest.approx(380, abs=15)


# -- the goals -----------------------------------------------------------------------------


def _side(rps: float, p99_ms: float = 10.0) -> Any:
    results = bench("results")
    side = results.Side()
    side.rounds.append(
        {"requests": int(rps), "non_2xx": 0, "errors": 0, "elapsed_s": 1.0, "rps": rps,
         "total_2xx": int(rps), "statuses": {}, "error_samples": []}
    )  # fmt: skip
    side.latencies.extend([1.0] * 98 + [p99_ms] * 2)
    return side


def _row(backend: str, clients: int, bare: float, billing: float, **kw: Any) -> Any:
    config, results = bench("config"), bench("results")
    section = kw.pop("section", "main")
    cfg = config.Config(backend, clients, kw.pop("workers", 1), 16, section)
    return results.Row(cfg, _side(bare), _side(billing, kw.pop("p99", 10.0)), 0.0)


def _open(row: Any, bare_ms: float, billing_ms: float) -> Any:
    results = bench("results")
    opened = results.OpenRow(row.config, "fixed", 100.0)
    for side, ms in ((opened.bare, bare_ms), (opened.billing, billing_ms)):
        side.rounds.append({"unsent": 0, "unanswered": 0, "requests": 100})
        side.latencies.extend([ms] * 100)
    row.open_rows.append(opened)
    return opened


def _breakdown(backend: str, clients: int, wall: float, cpu: float) -> dict[str, Any]:
    """In-process steps: the per-charge goal reads the charge with its job (``accept``)."""
    return {
        "backend": backend, "clients": clients,
        "accept": {"wall_us": wall, "cpu_us": cpu},
        "charge": {"wall_us": 1.0, "cpu_us": 1.0 if clients == 100 else 9.0},  # not judged
        "authenticate": {"wall_us": 100.0, "cpu_us": 100.0},
    }  # fmt: skip


def test_each_goal_is_judged_on_its_worst_row() -> None:
    goals = bench("goals")
    sqlite_1 = _row("sqlite", 100, 1000, 900)  # 0.90
    sqlite_2 = _row("sqlite", 10_000, 1000, 800, workers=2)  # 0.80: the worst
    json_small = _row("json", 100, 1000, 100)  # not the goal's size: ignored
    json_goal = _row("json", 1_000, 1000, 760)
    pg = _row("postgresql", 10_000, 1000, 700, p99=25.0)  # p99 2.5x: the worst
    read = _row("sqlite", 10_000, 1000, 850, section="read")
    _open(sqlite_1, 2.0, 2.5)  # +0.5 ms
    _open(pg, 2.0, 3.5)  # +1.5 ms: over the p50 goal
    breakdowns = [
        _breakdown("sqlite", 100, 1000, 800),
        _breakdown("sqlite", 100_000, 1100, 1200),  # CPU 1.5x: the worst measure
        _breakdown("postgresql", 100, 2000, 1000),
        _breakdown("postgresql", 100_000, 2200, 1100),
        _breakdown("json", 100, 500, 400),
        _breakdown("json", 10_000, 550, 420),
    ]
    rows = [sqlite_1, sqlite_2, json_small, json_goal, pg, read]
    judged = {g.name.split(" (")[0] + g.target: g for g in goals.judge(rows, breakdowns, None)}
    sqlite = judged["Billed intake throughput vs bare, SQLite≥ 0.85x"]
    assert (sqlite.met, sqlite.value, sqlite.where) == (False, "0.80x", sqlite_2.config.label)
    json_ = judged["Billed intake throughput vs bare, JSON file at 1,000 clients≥ 0.75x"]
    assert (json_.met, json_.value) == (True, "0.76x")
    assert judged["Billed intake throughput vs bare, PostgreSQL≥ 0.60x"].met is True
    p99 = judged["Billed intake p99 vs bare p99≤ 2x"]
    assert (p99.met, p99.value, p99.where) == (False, "2.5x", pg.config.label)
    p50 = judged["Latency billing adds at 100 req/s≤ 1 ms"]
    assert (p50.met, p50.value) == (False, "+1.50 ms")
    assert p50.where.startswith(pg.config.label)
    assert judged["Latency billing adds at 100 req/s≤ 3 ms"].met is True
    read_goal = judged["Authenticated read≥ 0.80x"]
    assert (read_goal.met, read_goal.value) == (True, "0.85x")
    flat_sql = judged["Per-charge cost flat from 100 to 100,000 clients, SQL≤ 1.3x"]
    assert (flat_sql.met, flat_sql.value) == (False, "1.50x")
    assert "SQLite, mean CPU" in flat_sql.where
    flat_json = judged["Per-charge cost flat from 100 to 10,000 clients, JSON≤ 1.3x"]
    assert (flat_json.met, flat_json.value) == (True, "1.10x")


def test_a_goal_without_its_rows_is_not_measured() -> None:
    goals = bench("goals")
    judged = goals.judge([_row("sqlite", 100, 1000, 800)], [], None)  # 0.80: missed
    unmeasured = [g.name for g in judged if g.met is None]
    assert len(unmeasured) == len(judged) - 2  # SQLite throughput and p99 are measured
    table = "\n".join(goals.goals_table(judged))
    assert "1 of 2 goals measured in this run met" in table
    assert "| not measured | — | — |" in table


# -- --only ----------------------------------------------------------------------------------


def test_only_selects_parts_on_backends() -> None:
    config = bench("config")
    every = config.full_configs()
    both = config.Selection.of(["open", "sqlite"])
    picked = both.configs(every)
    assert picked
    assert all(c.open_loop and c.backend == "sqlite" for c in picked)
    assert both.partial
    assert not both.wants("floor")
    assert not both.breakdown_sizes(every)
    reads = config.Selection.of(["read"]).configs(every)
    assert {c.section for c in reads} == {"read"}
    assert len(reads) == 6
    name = "json"
    one_backend = config.Selection.of([name])
    assert {c.backend for c in one_backend.configs(every)} == {name}
    assert one_backend.breakdown_sizes(every) == {(name, n) for n in (100, 1_000, 10_000)}
    assert not one_backend.wants("console")
    everything = config.Selection.of(None)
    assert not everything.partial
    assert everything.configs(every) == every
    with pytest.raises(ValueError, match="unknown"):
        config.Selection.of(["opne"])


def test_only_committer_runs_the_rows_it_compares() -> None:
    """``--only committer``: the loop-committer rows and the default-committer main rows of
    the same configurations, each with its open loop; nothing else."""
    config = bench("config")
    every = config.full_configs()
    selection = config.Selection.of(["committer"])
    picked = selection.configs(every)
    loop = [c for c in picked if c.section == "committer"]
    main = [c for c in picked if c.section == "main"]
    assert len(loop) == 2
    assert all(c.committer == config.OTHER_COMMITTER for c in loop)
    assert {c.partner for c in main} == {c.partner for c in loop}
    assert all(c.committer == config.DEFAULT_COMMITTER for c in main)
    assert len(picked) == 4
    assert all(selection.open_loop(c, every) for c in picked)
    assert not selection.breakdown_sizes(every)
    # A run of the intake alone leaves the committer rows out, and their open loops too.
    intake = config.Selection.of(["intake"])
    assert not [c for c in intake.configs(every) if c.section == "committer"]
    assert not any(intake.open_loop(c, every) for c in intake.configs(every))


def test_only_settle_runs_the_pair_rows_and_narrows_to_one_row() -> None:
    """``--only settle``: the intake + outcome rows alone, each beside an intake row of the
    same configuration in the full run; ``--clients`` and ``--workers`` narrow to one row."""
    config = bench("config")
    every = config.full_configs()
    settle = config.Selection.of(["settle"]).configs(every)
    assert {c.section for c in settle} == {"settle"}
    assert {c.route for c in settle} == {"pair"}
    main = {c.partner for c in every if c.section == "main"}
    assert all(c.partner in main for c in settle)
    assert not any(c.section == "settle" for c in config.Selection.of(["intake"]).configs(every))
    sqlite_rows = "sqlite"  # the --only word of the SQLite rows, not a set of test backends
    assert any(c.section == "settle" for c in config.Selection.of([sqlite_rows]).configs(every))
    one = config.Selection.of(["intake", "sqlite"], clients=[10_000], workers=[1])
    assert one.partial
    assert [c.label for c in one.configs(every)] == [
        "SQLite, 10,000 clients, 1 worker(s), 16 conns"
    ]
    assert one.breakdown_sizes(every) == set()
    both = config.Selection.of(["intake", "settle", "json"], clients=[1_000], workers=[2])
    assert [c.section for c in both.configs(every)] == ["main", "settle"]


# -- reserve then settle: the pair generator --------------------------------------------------


async def _runner_server(
    seen: dict[str, Any], intake_s: float, outcome_s: float
) -> tuple[asyncio.Server, int]:
    """HTTP/1.1 on loopback as the gateway speaks it to the pair generator: an intake is
    answered 201 with a new job id after ``intake_s`` (429 for the key "full"), an outcome 200
    after ``outcome_s`` if it names a job this server issued and carries the admin token."""
    config = bench("config")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                lines = head.split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                await reader.readexactly(int(headers.get("Content-Length", "0")))
                path = lines[0].split(" ")[1]
                if path == "/api/intake" and headers["X-Client-Key"] == "full":
                    status, answer = 429, {"error": "concurrency_limit_reached"}
                elif path == "/api/intake":
                    await asyncio.sleep(intake_s)
                    job_id = f"job-{len(seen['issued'])}"
                    seen["issued"].append(job_id)
                    status, answer = 201, {"job_id": job_id, "status": "queued"}
                else:
                    await asyncio.sleep(outcome_s)
                    job_id = path.split("/")[4]
                    ok = job_id in seen["issued"] and headers.get("X-Auth-Token") == (
                        config.ADMIN_TOKEN
                    )
                    seen["settled"].append(job_id)
                    status, answer = (200, {"job_id": job_id}) if ok else (404, {})
                body = json.dumps(answer).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


def _pairs(keys: list[str], intake_s: float, outcome_s: float) -> tuple[Any, dict[str, Any]]:
    pairs = bench("pairs")
    seen: dict[str, Any] = {"issued": [], "settled": []}

    async def run() -> Any:
        server, port = await _runner_server(seen, intake_s, outcome_s)
        try:
            return await pairs.run_pairs(
                f"http://127.0.0.1:{port}", keys, concurrency=2, warmup=0.1, duration=0.4,
                timeout=5.0, max_requests=10_000,
            )  # fmt: skip
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(run()), seen


def test_a_pair_is_the_intake_then_the_outcome_of_its_job() -> None:
    (result, pair_ms, outcome_ms), seen = _pairs(["k1", "k2"], 0.02, 0.01)
    # Every job the server issued was reported on, once, with the admin token (200 each).
    assert seen["settled"] == seen["issued"]
    assert result["total_2xx"] == result["settled_2xx"] == len(seen["issued"])
    assert result["non_2xx"] == 0
    assert result["statuses"] == {"201": result["requests"], "200": result["requests"]}
    assert result["outcome_statuses"] == {"200": result["requests"]}
    # Two connections, about 30 ms a pair, 0.4 s recorded: some 26 pairs.
    assert 10 <= result["requests"] == len(pair_ms) == len(outcome_ms) <= 30
    assert min(pair_ms) >= 30
    assert min(outcome_ms) >= 10
    assert all(o < p - 20 for o, p in zip(outcome_ms, pair_ms, strict=True))  # the same pair's
    assert 20 <= result["rps"] <= 2 / 0.03  # pairs a second: at most one per 30 ms and conn


def test_a_refused_intake_ends_its_pair_without_an_outcome() -> None:
    (result, pair_ms, _), seen = _pairs(["k1", "full"], 0.01, 0.01)
    refused = result["statuses"]["429"]
    assert refused >= 1
    assert result["non_2xx"] == refused  # a pair each, not timed
    assert len(pair_ms) == result["requests"] - refused
    assert seen["settled"] == seen["issued"]  # no outcome for a job never issued
    assert result["error_samples"][0].startswith("intake 429: ")
    assert "concurrency_limit_reached" in result["error_samples"][0]


# -- reserve then settle: the bare endpoint and the checks -------------------------------------


def _keys(value: Any) -> Any:
    """The shape of a JSON answer: its keys, nested."""
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    return type(value).__name__ if value is None else "value"


def test_the_bare_outcome_answers_as_the_gateway_does(
    http: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bare app's intake and outcome answer the gateway's shapes (a receipt on the job,
    a settled receipt on the outcome), and its outcome checks the admin token."""
    bare_app = importlib.import_module("bench.bare_app")
    monkeypatch.setattr(bare_app, "ADMIN_TOKEN", admin_headers["X-Auth-Token"])
    body = bench("http1").JOB_BODY
    outcome = bench("http1").OUTCOME_BODY
    key = factories.create_client(http)["api_key"]
    with TestClient(bare_app.app) as bare:
        answers = []
        for side in (http, bare):
            accepted = side.post("/api/intake", headers={"X-Client-Key": key}, json=body)
            assert accepted.status_code == 201
            path = f"/api/admin/jobs/{accepted.json()['job_id']}/outcome"
            settled = side.post(path, headers=admin_headers, json=outcome)
            assert settled.status_code == 200
            answers.append((_keys(accepted.json()), _keys(settled.json())))
        assert answers[0] == answers[1]
        assert settled.json()["receipt"]["charged"] == 1
        wrong = bare.post(path, headers={"X-Auth-Token": "wrong"}, json=outcome)
        assert wrong.status_code == 401


def _settle_row(**billing: int) -> Any:
    config, results = bench("config"), bench("results")
    side = results.Side()
    side.rounds.append({"total_2xx": billing["intakes"], "settled_2xx": billing["outcomes"]})
    return results.Row(config.Config("sqlite", 100, 1, 16, "settle"), results.Side(), side, 0.0)


def test_a_pair_row_checks_every_outcome_settled_and_the_cap_override() -> None:
    rounds, seed = bench("rounds"), bench("seed")
    cap = frozenset({seed.BENCH_MAX_ACTIVE_JOBS})
    good = _settle_row(intakes=40, outcomes=38)
    rounds._check_holds(good, seed.Holds(held=2, most_held=1, succeeded=38, caps=cap))
    assert good.problems == []
    assert (good.settled_expected, good.settled_found) == (38, 38)
    lost = _settle_row(intakes=40, outcomes=40)
    rounds._check_holds(lost, seed.Holds(held=3, most_held=2, succeeded=37, caps=cap))
    assert len(lost.problems) == 2  # 3 outcomes answered 200 did not settle their holds
    capped = _settle_row(intakes=5, outcomes=5)
    rounds._check_holds(capped, seed.Holds(0, 0, 5, frozenset({None})))
    assert capped.problems == [
        "the benchmarked clients' concurrency caps are [None], not the override 1000000"
    ]


def test_pair_rows_sit_beside_their_intake_rows_and_are_not_goal_rows() -> None:
    goals, report = bench("goals"), bench("report")
    intake = _row("sqlite", 100, 1000, 900)
    other = _row("sqlite", 10_000, 1000, 900)
    pair = _row("sqlite", 100, 1000, 100, section="settle", p99=900.0)
    pair.bare.outcome_latencies.extend([1.0] * 100)
    pair.billing.outcome_latencies.extend([4.0] * 100)
    assert report._beside([intake, other], [pair]) == [intake, pair, other]
    lines = report._table([intake, pair], goals=True, paths=True)
    assert "| intake | 1,000 | 900.0 | 0.90 | ≥ 0.85: met |" in lines[2]
    assert "| intake + outcome | 1,000 | 100.0 | 0.10 | — |" in lines[3]
    assert "| 1.0 / 1.0 → 4.0 / 4.0 |" in lines[3]
    note = bench("report_parts").settle_notes([intake], [pair])[-2]
    assert "a pair takes 10.00 ms" in note
    assert "against 1.11 ms for an intake alone, 9.00x" in note
    judged = {g.name: g for g in goals.judge([intake, pair], [], None)}
    assert judged["Billed intake throughput vs bare, SQLite"].value == "0.90x"
    assert judged["Billed intake p99 vs bare p99 (closed loop)"].met is True
