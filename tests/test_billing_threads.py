"""Billing work (the key check, the charge, the job file) runs on a pool of
``OPENCLAW_BILLING_THREADS`` threads per worker, apart from FastAPI's default pool."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

import client_auth
import gateway
from openclaw_billing.plans import PlanId
from openclaw_billing.service import get_service
from openclaw_billing.settings import Settings, get_settings
from tests.factories import UNCAPPED

JOB = {"project_name": "p", "description": "d"}


def _peak_concurrency(
    monkeypatch: pytest.MonkeyPatch, threads: int, requests: int, barrier: int = 0
) -> int:
    """The most key checks that ran at once during a burst of ``requests`` intakes. With
    ``barrier``, checks meet in groups of that size (a check that waits 10 s in vain fails
    the burst); otherwise each holds its thread for a while, giving others time to pile up.
    (The charges themselves are committed by the worker's committer: tests/test_committer.py.)"""
    monkeypatch.setenv("OPENCLAW_BILLING_THREADS", str(threads))
    get_settings.cache_clear()
    service = get_service()
    record, key = service.create_client(name="Acme", email="ops@acmecorp.com", plan=PlanId.PRO)
    # Threads, not jobs at once, are measured here: the client's own cap is lifted.
    service.set_policy(
        record.client_id, rate_limit_per_minute=None, ip_allowlist=[], max_active_jobs=UNCAPPED
    )
    running, peak, lock = 0, 0, threading.Lock()
    verify_key = service.verify_key
    together = threading.Barrier(barrier, timeout=10) if barrier else None

    def slow_check(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            if together is not None:
                together.wait()
            else:
                time.sleep(0.2)
            return verify_key(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(service, "verify_key", slow_check)
    app = gateway.create_app()

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as http,
        ):
            replies = await asyncio.gather(
                *(
                    http.post("/api/intake", json=JOB, headers={"X-Client-Key": key})
                    for _ in range(requests)
                )
            )
        return [r.status_code for r in replies]

    assert asyncio.run(burst()) == [201] * requests
    return peak


def test_billing_work_never_exceeds_its_threads(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _peak_concurrency(monkeypatch, threads=1, requests=6) == 1


def test_billing_threads_do_run_in_parallel(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With 3 threads, 3 key checks run together (a barrier proves it): the limit above is the
    # setting, not an accident of scheduling.
    assert _peak_concurrency(monkeypatch, threads=3, requests=6, barrier=3) == 3


def test_an_intake_is_one_hand_off(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A key this worker has not seen yet is checked on the billing threads (a store read);
    # the charge and its job go to the worker's committer, not through anyio: every thread
    # hand-off in the app (FastAPI's pool included) goes through anyio's run_sync, and this
    # intake makes exactly one. (A key seen a moment ago makes none: test_intake_store.py.)
    service = get_service()
    _, key = service.create_client(name="Acme", email="ops@acmecorp.com", plan=PlanId.PRO)
    handed: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(getattr(func, "func", func).__name__)
        return await run_sync(func, *args, **kwargs)

    app = gateway.create_app()
    with TestClient(app) as http, monkeypatch.context() as patch:
        patch.setattr(anyio.to_thread, "run_sync", counting)
        response = http.post("/api/intake", json=JOB, headers={"X-Client-Key": key})
    assert response.status_code == 201
    assert handed == ["client"]
    charged = service.authenticate(key)
    assert charged is not None
    assert charged.credits_remaining == 199


class _Job(BaseModel):
    project_name: str


def test_deferred_client_on_a_host_apps_own_route(env: Path) -> None:
    # CLIENT_AUTH_INTEGRATION.md: an app route (not the router's) with install_error_handlers.
    app = FastAPI()
    client_auth.install_error_handlers(app)

    @app.post("/api/intake", status_code=201)
    async def intake(body: _Job, check: client_auth.DeferredClient) -> dict[str, object]:
        def work() -> dict[str, object]:
            client = check.client()
            charge = client_auth.deduct_job_credit(client.client_id)
            return {"job_id": charge.job_id, "credits_remaining": charge.credits_remaining}

        return await run_in_threadpool(work)

    _, key = get_service().create_client(name="Acme", email="ops@acmecorp.com", plan=PlanId.FREE)
    with TestClient(app) as http:
        ok = http.post("/api/intake", json={"project_name": "p"}, headers={"X-Client-Key": key})
        assert ok.status_code == 201
        assert ok.json()["credits_remaining"] == 4
        for headers in ({}, {"X-Client-Key": "oc_live_" + "0" * 32}):
            bad = http.post("/api/intake", json={}, headers=headers)
            assert (bad.status_code, bad.json()["code"]) == (401, "invalid_api_key")
        invalid = http.post("/api/intake", json={}, headers={"X-Client-Key": key})
        assert (invalid.status_code, invalid.json()["code"]) == (422, "validation_error")
        assert invalid.headers["RateLimit-Remaining"] == "8"  # free: 10 a minute, 2 used


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_the_setting_is_validated(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCLAW_BILLING_THREADS", value)
    with pytest.raises(ValidationError, match="OPENCLAW_BILLING_THREADS"):
        Settings()
