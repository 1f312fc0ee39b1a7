"""Shared fixtures: a fresh app per test over its own store in a temp directory.

And a guard: no test leaves a process running. After each test, any process below the session
that was not there before it (a server, a worker, a script's command) is stopped (SIGTERM, then
SIGKILL) and the test fails, naming it; at the end of the session the same check covers the
session's own fixtures. See ``tests/processes.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import gateway
from openclaw_billing.service import BillingService, get_service, set_service
from openclaw_billing.settings import get_settings
from openclaw_billing.stripe_billing import set_stripe_client
from tests import processes

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
_SCRUBBED = (
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_PRICE_STARTER",
    "STRIPE_PRICE_PRO",
    "STRIPE_API_BASE",
    "OPENCLAW_GATEWAY_PORT",
    "OPENCLAW_STORE_LOCK_TIMEOUT",
    "OPENCLAW_BILLING_THREADS",
    "OPENCLAW_KEY_CACHE_SECONDS",
    "OPENCLAW_HOLD_TTL_SECONDS",
    "OPENCLAW_SWEEP_SECONDS",
    "OPENCLAW_MAX_BODY_BYTES",
    "OPENCLAW_RATE_LIMIT_STORAGE",
    "OPENCLAW_RATE_LIMIT_KEY_PREFIX",
    "OPENCLAW_AUTH_FAILURE_LIMIT",
    "OPENCLAW_TRUSTED_PROXIES",
    "OPENCLAW_PUBLIC_URL",
    "OPENCLAW_CHECKOUT_SUCCESS_URL",
    "OPENCLAW_CHECKOUT_CANCEL_URL",
    "OPENCLAW_PORTAL_RETURN_URL",
    "STRIPE_MAX_NETWORK_RETRIES",
    "STRIPE_TIMEOUT_SECONDS",
    "OPENCLAW_SESSION_SECRET",
    "OPENCLAW_SESSION_MINUTES",
    "OPENCLAW_BRAND_NAME",
    "OPENCLAW_BRAND_LOGO",
)


class Clock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings pointing at a temp directory (store ``clients.json``, jobs ``jobs.jsonl``)."""
    monkeypatch.setenv("OPENCLAW_BILLING_DB", str(tmp_path / "clients.json"))
    monkeypatch.setenv("OPENCLAW_JOBS_FILE", str(tmp_path / "jobs.jsonl"))
    monkeypatch.setenv("OPENCLAW_ADMIN_TOKEN", ADMIN_TOKEN)
    for name in _SCRUBBED:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    set_service(None)
    set_stripe_client(None)
    yield tmp_path
    set_stripe_client(None)
    set_service(None)
    get_settings.cache_clear()


@pytest.fixture
def store_path(env: Path) -> Path:
    return env / "clients.json"


@pytest.fixture
def service(env: Path) -> BillingService:
    return get_service()


@pytest.fixture
def app(env: Path) -> FastAPI:
    return gateway.create_app()


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"X-Auth-Token": ADMIN_TOKEN}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Freeze the service's and the gateway's clock at a fixed instant; move it with
    ``clock.advance(days=31)``."""
    fake = Clock(datetime(2026, 2, 19, 10, 30, tzinfo=UTC))
    monkeypatch.setattr("openclaw_billing.service.utcnow", fake)
    monkeypatch.setattr("openclaw_billing.admin.utcnow", fake)
    monkeypatch.setattr("openclaw_billing.charges.utcnow", fake)
    monkeypatch.setattr("openclaw_billing.job_actions.utcnow", fake)
    monkeypatch.setattr("openclaw_billing.quotes.utcnow", fake)
    monkeypatch.setattr("gateway.utcnow", fake)
    monkeypatch.setattr("gateway_jobfile.utcnow", fake)
    return fake


# -- no process left behind -------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    # Orphans (a worker whose master died first) are re-parented to this process, where the
    # checks below find them, instead of to init, where they would run on unseen.
    processes.adopt_orphans()


#: Seconds a process a test stopped may take to finish exiting before it counts as left behind.
LEAVE_SETTLE = 3.0


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Settings a test read (with its environment) are not kept for the next test."""
    yield
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fail (and clean up after) a test that leaves a process running."""
    before = {p.pid for p in processes.descendants()}
    yield
    left = processes.leftovers(ignore=before, settle=LEAVE_SETTLE)
    if left:
        processes.kill_all(left)
        pytest.fail(f"the test left processes running (now killed): {processes.describe(left)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = processes.leftovers()
    if left:
        processes.kill_all(left)
        print(
            f"\nprocesses left running at the end of the session (now killed): "
            f"{processes.describe(left)}"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
