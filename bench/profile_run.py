"""Profile the gateway under the benchmark's load with py-spy, and say where the time goes.

Not part of ``make bench``: py-spy is not a project dependency. Install it into the venv for
the profiling run only, and remove it afterwards::

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_run.py --backend sqlite --clients 10000 --workers 2
    .venv/bin/pip uninstall -y py-spy

It seeds a store as ``bench/run.py`` does, starts ``uvicorn gateway:app``, samples every
worker with ``py-spy record --subprocesses --nonblocking`` (all threads that are not idle)
while ``bench/load.py`` loads it, then prints the share of the sampled request-handling time
spent under each step of the intake, and the functions with the most time, inclusive and
self. The folded stacks stay in ``bench/results/profile-*.folded`` (for a flame graph).
Sampling slows the server down: read shares, not throughput.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import config
import procs
import seed

#: Steps of a billed intake, by a frame that marks them; a sample counts for the first step
#: in this order whose frame is on its stack (so nested steps come first).
STEPS: tuple[tuple[str, str], ...] = (
    ("SQLite: waiting for the write lock (BEGIN IMMEDIATE)", "_on_begin (openclaw_billing"),
    ("SQL: commit (fsync of the WAL / round trip)", "do_commit (sqlalchemy"),
    ("JSON store: compaction (the state written as the next snapshot)", "Replica.compact ("),
    ("JSON store: append the batch to the journal + fsync", "Replica.commit ("),
    ("JSON store: catch up with the journal other workers wrote", "Replica._catch_up ("),
    ("auth: look the key up and load the client (a key-cache miss)", "get_client_by_key_digest ("),
    ("accept: the charges with their jobs, one batch of the committer", "mutate_batch ("),
    ("logging the charge", "Logger.info ("),
    ("the route's own work (models, uuid, response)", "intake (gateway.py"),
    ("FastAPI / Starlette / uvicorn outside the route", "run_asgi (uvicorn"),
    ("thread-pool hand-off (anyio worker threads)", "WorkerThread.run (anyio"),
    ("event loop thread (uvloop: sockets, HTTP parsing, and its idle waits)", "Runner.run ("),
)
IDLE_MARKERS = ("Condition.wait (threading.py", "Queue.get (queue.py", "select (selectors.py")


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
    return frames, int(count)


def summarise(folded: Path, top: int = 25) -> list[str]:
    steps: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _frames(line)
        if any(m in frames[-1] for m in IDLE_MARKERS):
            continue  # a thread-pool thread waiting for work: not request time
        total += count
        for label, marker in STEPS:
            if any(marker in f for f in frames):
                steps[label] += count
                break
        else:
            steps["other"] += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    if not total:
        return ["no samples"]

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    out = [f"{total} busy samples; by step (first matching step in the list wins):"]
    out += [f"  {pct(n)}  {label}" for label, n in steps.most_common()]
    out += ["inclusive:"] + [f"  {pct(n)}  {name}" for name, n in inclusive.most_common(top)]
    out += ["self:"] + [f"  {pct(n)}  {name}" for name, n in own.most_common(top)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("json", "sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument(
        "--gil", action="store_true", help="only samples holding the GIL (Python CPU time)"
    )
    parser.add_argument("--postgres-url", default=config.DEFAULT_PG)
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    if not 1 <= args.duration <= 120:
        parser.error("--duration must be 1 to 120 s")

    work = config.RESULTS / "profile-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    name = f"profile-{args.backend}-{args.clients}-w{args.workers}-c{args.concurrency}"
    name += "-gil" if args.gil else ""
    folded = config.RESULTS / f"{name}.folded"
    if args.backend == "json":
        store = seed.seed_json(work / "clients.json", args.clients)
    elif args.backend == "sqlite":
        store = seed.seed_sqlite(work / "billing.db", args.clients)
    else:
        store = seed.seed_postgres(args.postgres_url, args.clients)
    keys = work / "keys.txt"
    keys.write_text("\n".join(store.keys) + "\n")
    gateway = procs.start_server(
        "gateway",
        "gateway:app",
        args.workers,
        {
            "OPENCLAW_BILLING_DB": store.url,
            "OPENCLAW_JOBS_FILE": str(work / "no-earlier-jobs.jsonl"),  # nothing to import
        },
        work / "gateway.log",
    )
    try:
        sampler = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(gateway.proc.pid),
                "--subprocesses",
                "--nonblocking",
                "--rate",
                str(args.rate),
                "--duration",
                str(int(args.duration) + 1),
                "--format",
                "raw",
                "--output",
                str(folded),
                *(["--gil"] if args.gil else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        time.sleep(0.5)
        load = subprocess.run(
            [
                sys.executable,
                str(config.BENCH / "load.py"),
                "--url",
                gateway.url,
                "--keys-file",
                str(keys),
                "--concurrency",
                str(args.concurrency),
                "--warmup",
                "0.5",
                "--duration",
                str(args.duration),
            ],
            capture_output=True,
            text=True,
            timeout=args.duration + 120,
            check=True,
        )
        spied = sampler.communicate(timeout=args.duration + 60)[0]
    finally:
        procs.stop_server(gateway)
        seed.drop(store)
    print(f"load (slowed by sampling): {load.stdout.strip()}")
    if sampler.returncode != 0 or not folded.exists():
        print(f"py-spy failed:\n{spied.decode(errors='replace')[-2000:]}", file=sys.stderr)
        return 1
    report = "\n".join(summarise(folded))
    (config.RESULTS / f"{name}.txt").write_text(report + "\n")
    print(report)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
