"""R29 (docs/ARCHITECTURE.md): kill -9 of the gateway at random moments while its committer
commits batches of intakes, many times, on every backend that keeps jobs in the store.

Each round starts the gateway, sends intakes from 32 concurrent connections (each with an
``Idempotency-Key``, so every request's job id is known), and kills the server's process
group with SIGKILL at a random moment. Afterwards:

* every request answered 201 has its charge and its job in the store;
* every charge has its job and every job its charge (nothing half-written);
* a request that was never answered is either whole or absent, and sending it again
  gives exactly one charge;
* the invariants of the ledger hold.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_TOKEN
from gateway_jobs import idempotent_job_id
from openclaw_billing.store import Store
from openclaw_billing.store.capabilities import JobStorage
from tests.backends import BACKENDS, assert_invariants, reopen, store_url_fixture  # noqa: F401
from tests.factories import JOB_BODY, create_client_at
from tests.server import free_port, gateway_process

ROUNDS = 8
CONNECTIONS = 32


async def _load(base: str, key: str, tag: str, answered: list[str], sent: list[str]) -> None:
    """Send intakes until the server goes away; note each key sent and each one answered 201."""
    limits = httpx.Limits(max_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as http:

        async def connection(n: int) -> None:
            for k in range(10_000):
                idem = f"{tag}-{n}-{k}"
                sent.append(idem)
                headers = {"X-Client-Key": key, "Idempotency-Key": idem}
                try:
                    reply = await http.post("/api/intake", headers=headers, json=JOB_BODY)
                except httpx.TransportError:
                    return  # killed
                assert reply.status_code == 201, reply.text
                answered.append(idem)

        await asyncio.gather(*(connection(n) for n in range(CONNECTIONS)))


def _check(store: Store, client_id: str, answered: list[str], sent: list[str]) -> None:
    assert isinstance(store, JobStorage)
    [record] = [r for r in assert_invariants(store) if r.client_id == client_id]
    charged = {entry.job_id for entry in record.metadata.cost_log}
    jobs = {job.job_id for job in store.client_jobs(client_id)}
    assert charged == jobs, "a charge without its job or a job without its charge"
    done = {idempotent_job_id(client_id, idem) for idem in answered}
    assert done <= jobs, "a request answered 201 is not in the store"
    assert jobs <= {idempotent_job_id(client_id, idem) for idem in sent}


@pytest.mark.slow
@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_r29_kill_9_during_batches_loses_nothing_answered(tmp_path: Path, store_url: str) -> None:
    rng = random.Random(os.environ.get("OPENCLAW_TEST_SEED", "r29"))
    port = free_port()
    extra = {"OPENCLAW_BILLING_DB": store_url}
    answered: list[str] = []
    sent: list[str] = []
    with gateway_process(tmp_path, port=port, extra_env=extra) as (base, _):
        created = create_client_at(base, "enterprise")  # unlimited: every intake is a charge
        client_id, key = created["client_id"], created["api_key"]
    with reopen(store_url) as store:
        store.set_policy(
            client_id, datetime.now(UTC), rate_limit_per_minute=1_000_000, ip_allowlist=[]
        )
    for round_no in range(ROUNDS):
        with gateway_process(tmp_path, port=port, extra_env=extra) as (base, proc):
            load = threading.Thread(
                target=asyncio.run, args=(_load(base, key, f"r{round_no}", answered, sent),)
            )
            load.start()
            threading.Event().wait(rng.uniform(0.3, 1.5))
            os.killpg(proc.pid, signal.SIGKILL)
            load.join(timeout=60)
            assert not load.is_alive()
        with reopen(store_url) as store:
            _check(store, client_id, answered, sent)
    assert len(answered) > ROUNDS * 10, "the load never got going"
    # An unanswered request sent again is charged exactly once, whatever the kill left.
    lost = [idem for idem in sent if idem not in set(answered)][:20]
    with gateway_process(tmp_path, port=port, extra_env=extra) as (base, _):
        for idem in lost:
            headers = {"X-Client-Key": key, "Idempotency-Key": idem}
            reply = httpx.post(f"{base}/api/intake", headers=headers, json=JOB_BODY)
            assert reply.status_code == 201, reply.text
        admin = {"X-Auth-Token": ADMIN_TOKEN}
        assert httpx.get(f"{base}/api/admin/clients/{client_id}", headers=admin).status_code == 200
    with reopen(store_url) as store:
        _check(store, client_id, answered + lost, sent)
