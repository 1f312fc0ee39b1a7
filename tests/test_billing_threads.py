"""Billing work (the key check, the charge, the job file) runs on a pool of
``OPENCLAW_BILLING_THREADS`` threads per worker, apart from FastAPI's default pool."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

import gateway
from openclaw_billing.plans import PlanId
from openclaw_billing.service import get_service
from openclaw_billing.settings import Settings, get_settings

JOB = {"project_name": "p", "description": "d"}


def _peak_concurrency(
    monkeypatch: pytest.MonkeyPatch, threads: int, requests: int, barrier: int = 0
) -> int:
    """The most charges that ran at once during a burst of ``requests`` intakes. With
    ``barrier``, charges meet in groups of that size (a charge that waits 10 s in vain fails
    the burst); otherwise each holds its thread for a while, giving others time to pile up."""
    monkeypatch.setenv("OPENCLAW_BILLING_THREADS", str(threads))
    get_settings.cache_clear()
    service = get_service()
    _, key = service.create_client(name="Acme", email="ops@acmecorp.com", plan=PlanId.PRO)
    running, peak, lock = 0, 0, threading.Lock()
    charge = service.store.charge
    together = threading.Barrier(barrier, timeout=10) if barrier else None

    def slow_charge(*args: Any) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            if together is not None:
                together.wait()
            else:
                time.sleep(0.2)
            return charge(*args)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(service.store, "charge", slow_charge)
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
    # With 3 threads, 3 charges run together (a barrier proves it): the limit above is the
    # setting, not an accident of scheduling.
    assert _peak_concurrency(monkeypatch, threads=3, requests=6, barrier=3) == 3


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_the_setting_is_validated(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCLAW_BILLING_THREADS", value)
    with pytest.raises(ValidationError, match="OPENCLAW_BILLING_THREADS"):
        Settings()
