"""The console's pages over real HTTP at scale: a signed-in browser's ``GET`` of the clients
page (default order, each other order, a search, a status filter, the last page), of the
overview and of one client's page, against the reference gateway (``uvicorn gateway:app``, one
worker) over a SQLite store of ``--clients`` clients seeded as ``bench/console_store.py`` seeds
it. Median and p95 wall milliseconds over ``--runs`` requests each, after one warm-up request:
what the operator waits for, rendering and the session check included.

The goal (issue: the clients page answers within 300 ms with 100,000 clients on SQLite) is
checked on every clients-page row.

    python bench/console_pages.py --dir /tmp/console --clients 100000
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from config import ADMIN_TOKEN
from console_store import seeded
from http1 import percentile
from procs import start_server, stop_server
from seed import drop

from openclaw_billing.cycles import utcnow

#: The issue's bound on the clients page, in milliseconds.
GOAL_MS = 300.0
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_CLIENT_LINK = re.compile(r'href="(/billing/console/clients/[0-9a-f-]{36})"')


def signed_in(base: str) -> httpx.Client:
    """A client holding a console session, signed in through the form as a browser does."""
    http = httpx.Client(base_url=base, timeout=60, follow_redirects=True)
    page = http.get("/billing/console/sign-in")
    token = _CSRF.search(page.text)
    assert token is not None, page.text
    answer = http.post(
        "/billing/console/sign-in", data={"admin_token": ADMIN_TOKEN, "csrf_token": token[1]}
    )
    assert answer.status_code == 200, answer.status_code  # followed to the overview
    return http


def pages(http: httpx.Client, total: int) -> dict[str, str]:
    """The pages timed, by label (a client's page: the first of the default list)."""
    clients = http.get("/billing/console/clients")
    first = _CLIENT_LINK.search(clients.text)
    assert first is not None
    return {
        "clients (oldest first)": "/billing/console/clients",
        "clients sort=usage": "/billing/console/clients?sort=usage",
        "clients sort=name": "/billing/console/clients?sort=name",
        "clients sort=credits_left": "/billing/console/clients?sort=credits_left",
        "clients sort=spend": "/billing/console/clients?sort=spend",
        "clients search=acme, sort=usage": "/billing/console/clients?q=acme&sort=usage",
        "clients status=past_due": "/billing/console/clients?status=past_due",
        f"clients offset={total - 50:,}": f"/billing/console/clients?offset={max(0, total - 50)}",
        "overview": "/billing/console/",
        "one client": first[1],
    }


def timed(http: httpx.Client, path: str, runs: int) -> dict[str, float]:
    assert http.get(path).status_code == 200  # warm-up
    walls = []
    for _ in range(runs):
        began = time.perf_counter()
        answer = http.get(path)
        walls.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    walls.sort()
    return {"median_ms": round(percentile(walls, 50), 1), "p95_ms": round(percentile(walls, 95), 1)}


def measure(folder: Path, total: int, runs: int) -> dict[str, Any]:
    seed = seeded("sqlite", folder, total, utcnow())
    # OPENCLAW_JOBS_FILE: only an earlier release's job file, imported at start; none here.
    env = {"OPENCLAW_BILLING_DB": seed.url, "OPENCLAW_JOBS_FILE": str(folder / "no-jobs.jsonl")}
    server = start_server("console", "gateway:app", 1, env, folder / "console-pages.log")
    try:
        http = signed_in(server.url)
        try:
            results = {label: timed(http, path, runs) for label, path in pages(http, total).items()}
        finally:
            http.close()
    finally:
        stop_server(server)
        drop(seed)
    clients_rows = [m for label, m in results.items() if label.startswith("clients")]
    return {
        "clients": total,
        "runs": runs,
        "pages": results,
        "goal_ms": GOAL_MS,
        "goal_met": all(m["p95_ms"] <= GOAL_MS for m in clients_rows),
    }


def table(out: dict[str, Any]) -> str:
    lines = [f"| Page ({out['clients']:,} clients, SQLite, over HTTP) | median ms | p95 ms |"]
    lines.append("|---|---|---|")
    for label, m in out["pages"].items():
        lines.append(f"| {label} | {m['median_ms']:,.1f} | {m['p95_ms']:,.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the scratch files go")
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--table", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    out = measure(args.dir, args.clients, args.runs)
    sys.stdout.write((table(out) if args.table else json.dumps(out)) + "\n")
    return 0 if out["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
