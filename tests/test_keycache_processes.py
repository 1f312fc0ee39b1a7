"""The key cache's staleness bound across real processes: two gateways (one uvicorn worker
each) over one SQLite store, both holding a client's key in their caches. A key revoked, or a
client deactivated, through one of them is refused by that one at its next request, and by the
other within ``OPENCLAW_KEY_CACHE_SECONDS`` (polled up to that bound plus a margin for a slow
machine: a correctness bound, not a speed measurement). A reactivation seen at once by the
process that made it: tests/test_keycache_service.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_TOKEN
from tests.factories import create_client_at
from tests.server import running_gateway

#: The staleness bound the gateways run with.
STALENESS = 2.0
#: Added to the bound before a poll gives up: process scheduling on a loaded machine.
MARGIN = 15.0
ADMIN = {"X-Auth-Token": ADMIN_TOKEN}


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[tuple[str, str]]:
    env = {
        "OPENCLAW_BILLING_DB": f"sqlite:///{tmp_path / 'billing.db'}",
        "OPENCLAW_KEY_CACHE_SECONDS": str(STALENESS),
        # The polls below are refused keys from one address: not what this test is about.
        "OPENCLAW_AUTH_FAILURE_LIMIT": "10000/minute",
    }
    with ExitStack() as stack:
        first = stack.enter_context(running_gateway(tmp_path, extra_env=env))
        second = stack.enter_context(running_gateway(tmp_path, extra_env=env))
        yield first, second


def _jobs(base: str, key: str) -> int:
    reply = httpx.get(f"{base}/api/jobs", headers={"X-Client-Key": key}, timeout=30)
    return reply.status_code


def _refused_within_the_bound(base: str, key: str) -> float:
    """Poll until ``key`` is refused; how long it took (fails past the bound and margin)."""
    start = time.monotonic()
    deadline = start + STALENESS + MARGIN
    while True:
        code = _jobs(base, key)
        if code == 401:
            return time.monotonic() - start
        assert code == 200, code
        assert time.monotonic() < deadline, "still accepted past the staleness bound"
        time.sleep(0.05)


def _client_held_by(creator: str, *gateways: str) -> tuple[str, str, str]:
    """A new client, created through ``creator``, whose key each of ``gateways`` has just
    accepted (so holds in its cache): the client's id, the key and the key's id."""
    created = create_client_at(creator)
    cid, key = created["client_id"], created["api_key"]
    for base in gateways:
        assert _jobs(base, key) == 200
    listed = httpx.get(f"{creator}/api/admin/clients/{cid}/keys", headers=ADMIN, timeout=30)
    return cid, key, listed.json()["keys"][0]["key_id"]


def _revoke(base: str, client_id: str, key_id: str) -> httpx.Response:
    return httpx.delete(f"{base}/api/admin/clients/{client_id}/keys/{key_id}", headers=ADMIN)


def _deactivate(base: str, client_id: str, key_id: str) -> httpx.Response:
    return httpx.delete(f"{base}/api/admin/clients/{client_id}", headers=ADMIN)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [_revoke, _deactivate])
def test_a_key_stopped_through_one_process_is_refused_by_another_within_the_bound(
    gateways: tuple[str, str], stop: Callable[[str, str, str], httpx.Response]
) -> None:
    here, there = gateways
    cid, key, key_id = _client_held_by(here, here, there)
    _, bystander, _ = _client_held_by(here, there)
    assert stop(here, cid, key_id).status_code == 200
    assert _jobs(here, key) == 401  # the process that made the change: at once
    _refused_within_the_bound(there, key)
    assert _jobs(there, key) == 401
    assert _jobs(there, bystander) == 200  # other clients' keys are not disturbed
