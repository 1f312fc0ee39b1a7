"""Rate limits: per-client limits by plan and override, brute-force throttling of failed keys
and tokens per address, the storage setting, failing open, and docs/ARCHITECTURE.md R15 (a burst of
bad keys across 4 uvicorn workers is limited globally through Redis)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

import gateway
from conftest import ADMIN_TOKEN
from openclaw_billing import ratelimit
from openclaw_billing.errors import ConfigurationError, RateLimited
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PLANS, PlanId
from openclaw_billing.ratelimit import (
    AUTH_BLOCKED_MESSAGE,
    RateLimiter,
    client_limit,
    get_rate_limiter,
    set_rate_limiter,
)
from openclaw_billing.service import BillingService, get_service
from openclaw_billing.settings import Settings, get_settings
from tests.factories import JOB_BODY, create_client
from tests.redis_support import redis_prefix_fixture, redis_url_fixture  # noqa: F401
from tests.server import free_port, running_gateway

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}
RATE_LIMITED_BODY = {
    "code": "rate_limited",
    "message": RateLimited.message,
    "detail": RateLimited.message,
}
AUTH_BLOCKED_BODY = {
    "code": "rate_limited",
    "message": AUTH_BLOCKED_MESSAGE,
    "detail": AUTH_BLOCKED_MESSAGE,
}
INVALID_KEY_BODY = {
    "code": "invalid_api_key",
    "message": "Invalid or inactive API key",
    "detail": "Invalid or inactive API key",
}
#: The default OPENCLAW_AUTH_FAILURE_LIMIT.
AUTH_FAILURES = 20
UNKNOWN_KEY = "oc_live_" + "f" * 32


def key(api_key: str) -> dict[str, str]:
    return {"X-Client-Key": api_key}


def bad_key(n: int) -> dict[str, str]:
    """A different wrong key each time (unknown, malformed, or oversized)."""
    variants = (
        "oc_live_" + f"{n:032x}",
        "oc_test_" + f"{n:032x}",
        "oc_live_" + f"{n:031x}",
        "oc_live_" + "a" * 2000,
    )
    return key(variants[n % len(variants)])


def set_override(client_id: str, per_minute: int | None) -> ClientRecord:
    """The client's rate-limit override, set as the admin API sets it: through the service, so
    this process's key cache drops the client and its next request has the new limit."""
    return get_service().set_policy(client_id, rate_limit_per_minute=per_minute, ip_allowlist=[])


@contextmanager
def client_from(app: Any, address: str) -> Iterator[TestClient]:
    """A client of the same app whose requests come from ``address`` (the app's lifespan is
    run by the ``http`` fixture)."""
    yield TestClient(app, client=(address, 40000))


def assert_limited(response: httpx.Response, limit: int) -> int:
    """A per-client 429 with sane headers; returns Retry-After."""
    assert response.status_code == 429, response.text
    assert response.json() == RATE_LIMITED_BODY
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert response.headers["RateLimit-Limit"] == str(limit)
    assert response.headers["RateLimit-Remaining"] == "0"
    reset = int(response.headers["RateLimit-Reset"])
    assert 1 <= reset <= 60
    assert retry_after == reset
    return retry_after


# -- per client ------------------------------------------------------------------------------


def test_plans_publish_their_rate_limits(http: TestClient) -> None:
    plans = http.get("/api/billing/plans").json()["plans"]
    published = {plan["id"]: plan["requests_per_minute"] for plan in plans}
    assert published == {"free": 10, "starter": 60, "pro": 300, "enterprise": 1200}
    assert published == {plan.id.value: plan.requests_per_minute for plan in PLANS.values()}
    # The limit grows with the plan.
    assert sorted(published.values()) == [published[p] for p in PlanId]


@pytest.mark.parametrize(("plan", "limit"), [("free", 10), ("starter", 60)])
def test_a_client_gets_exactly_its_plan_limit_then_429(
    http: TestClient, plan: str, limit: int
) -> None:
    client = create_client(http, plan)
    remaining = []
    for n in range(limit):
        if n % 2:
            response = http.get("/api/billing/usage", headers=key(client["api_key"]))
        else:
            response = http.post("/api/intake", headers=key(client["api_key"]), json=JOB_BODY)
        assert response.status_code in {200, 201, 402}, response.text
        assert response.headers["RateLimit-Limit"] == str(limit)
        assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
        remaining.append(int(response.headers["RateLimit-Remaining"]))
    assert remaining == list(range(limit - 1, -1, -1))
    for method, path, body in [
        ("GET", "/api/billing/usage", None),
        ("POST", "/api/intake", JOB_BODY),
        ("POST", "/api/billing/quote", JOB_BODY),
        ("POST", "/api/billing/checkout", {"plan": "pro"}),
        ("POST", "/api/billing/portal", None),
        ("GET", "/api/jobs", None),
    ]:
        refused = http.request(method, path, headers=key(client["api_key"]), json=body)
        assert_limited(refused, limit)
    # The refused intake was neither charged nor queued.
    intakes = (limit + 1) // 2
    allowance = PLANS[PlanId(plan)].jobs_per_month or 0
    detail = http.get(f"/api/admin/clients/{client['client_id']}", headers=ADMIN).json()
    assert len(detail["metadata"]["cost_log"]) == min(allowance, intakes)


def test_every_client_route_shares_one_bucket_per_client(http: TestClient) -> None:
    a = create_client(http, "free")
    b = create_client(http, "free")
    for _ in range(4):
        assert http.post("/api/intake", headers=key(a["api_key"]), json=JOB_BODY).status_code == 201
    for _ in range(3):
        assert http.get("/api/billing/usage", headers=key(a["api_key"])).status_code == 200
    for _ in range(2):
        assert http.get("/api/jobs", headers=key(a["api_key"])).status_code == 200
    checkout = http.post("/api/billing/checkout", headers=key(a["api_key"]), json={"plan": "pro"})
    assert checkout.status_code == 503  # counted (Stripe is not configured here)
    assert checkout.headers["RateLimit-Remaining"] == "0"
    assert_limited(http.get("/api/billing/usage", headers=key(a["api_key"])), 10)
    # Another client is not affected, and admin routes do not count against anyone.
    usage_b = http.get("/api/billing/usage", headers=key(b["api_key"]))
    assert usage_b.status_code == 200
    assert usage_b.headers["RateLimit-Remaining"] == "9"
    assert http.get("/api/admin/clients", headers=ADMIN).status_code == 200
    assert "RateLimit-Limit" not in http.get("/api/billing/plans").headers


def test_a_client_override_replaces_the_plan_limit(http: TestClient) -> None:
    low = create_client(http, "pro")
    assert set_override(low["client_id"], 3).rate_limit_per_minute == 3
    for n in range(3):
        response = http.get("/api/billing/usage", headers=key(low["api_key"]))
        assert response.status_code == 200
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Remaining"] == str(2 - n)
    assert_limited(http.get("/api/billing/usage", headers=key(low["api_key"])), 3)

    high = create_client(http, "free")
    set_override(high["client_id"], 15)
    statuses = [
        http.get("/api/billing/usage", headers=key(high["api_key"])).status_code for _ in range(16)
    ]
    assert statuses == [200] * 15 + [429]

    # Back to the plan's limit (a changed limit starts a window of its own).
    set_override(low["client_id"], None)
    again = http.get("/api/billing/usage", headers=key(low["api_key"]))
    assert again.status_code == 200
    assert again.headers["RateLimit-Limit"] == "300"


def test_client_limit_is_the_override_else_the_plan(service: BillingService) -> None:
    for plan in PlanId:
        record, _ = service.create_client(name="Acme", email="api@acmecorp.com", plan=plan)
        assert client_limit(record) == PLANS[plan].requests_per_minute
        raised = record.model_copy(update={"rate_limit_per_minute": 5000})
        assert client_limit(raised) == 5000


class FakeTime:
    """Stands in for the ``time`` module inside ``limits``' memory storage; each reading
    moves 1 ms on, like a real clock."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        self.now += 0.001
        return self.now


def test_waiting_retry_after_is_enough(http: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime(1_900_000_000.0)
    monkeypatch.setattr("limits.storage.memory.time", fake)
    limiter = RateLimiter("memory://", clock=fake.time)
    set_rate_limiter(limiter)
    client = create_client(http, "free")
    for _ in range(10):  # one a second
        assert http.get("/api/billing/usage", headers=key(client["api_key"])).status_code == 200
        fake.now += 1
    fake.now += 20  # 30 s after the first request
    retry_after = assert_limited(http.get("/api/billing/usage", headers=key(client["api_key"])), 10)
    assert retry_after == 30
    fake.now += retry_after - 1
    assert http.get("/api/billing/usage", headers=key(client["api_key"])).status_code == 429
    fake.now += 1
    freed = http.get("/api/billing/usage", headers=key(client["api_key"]))
    assert freed.status_code == 200
    assert freed.headers["RateLimit-Remaining"] == "0"  # the window moved on by one slot


# -- failed keys and tokens per address ------------------------------------------------------


def test_failed_keys_from_one_address_are_throttled(
    http: TestClient, app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    good = create_client(http, "pro")
    with client_from(app, "198.51.100.1") as attacker, client_from(app, "198.51.100.2") as other:
        presented = [bad_key(n) for n in range(AUTH_FAILURES)]
        for headers in presented:
            response = attacker.get("/api/billing/usage", headers=headers)
            assert response.status_code == 401
            assert response.json() == INVALID_KEY_BODY
        blocked = attacker.get("/api/billing/usage", headers=bad_key(99))
        assert blocked.status_code == 429
        assert blocked.json() == AUTH_BLOCKED_BODY
        assert 1 <= int(blocked.headers["Retry-After"]) <= 60
        # During the block a right key is not confirmed, on any route, nor is the admin token.
        for response in [
            attacker.get("/api/billing/usage", headers=key(good["api_key"])),
            attacker.post("/api/intake", headers=key(good["api_key"]), json=JOB_BODY),
            attacker.get("/api/billing/usage"),
            attacker.get("/api/admin/clients", headers=ADMIN),
        ]:
            assert response.status_code == 429
            assert response.json() == AUTH_BLOCKED_BODY
            assert "Retry-After" in response.headers
        # Another address is not affected.
        assert other.get("/api/billing/usage", headers=key(good["api_key"])).status_code == 200
        assert other.get("/api/billing/usage", headers=bad_key(1)).status_code == 401
        assert other.get("/api/admin/clients", headers=ADMIN).status_code == 200
    # Nothing was charged for the blocked intake; no presented key is ever logged.
    detail = http.get(f"/api/admin/clients/{good['client_id']}", headers=ADMIN).json()
    assert detail["credits_remaining"] == 200
    for headers in [*presented, key(good["api_key"])]:
        assert headers["X-Client-Key"] not in caplog.text
    warnings = [r for r in caplog.records if r.name == "openclaw_billing.ratelimit"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "198.51.100.1" in warnings[0].getMessage()


def test_failed_admin_tokens_are_throttled(
    http: TestClient, app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    wrong = [ADMIN_TOKEN[:-1] + chr(ord(ADMIN_TOKEN[-1]) ^ 1)] + [
        f"wrong-token-{n:04d}-0123456789" for n in range(AUTH_FAILURES - 1)
    ]
    with client_from(app, "203.0.113.5") as attacker, client_from(app, "203.0.113.6") as other:
        for token in wrong:
            response = attacker.get("/api/admin/clients", headers={"X-Auth-Token": token})
            assert response.status_code == 401
            assert response.json()["code"] == "invalid_admin_token"
        for token in ["yet-another-wrong-token", ADMIN_TOKEN]:
            blocked = attacker.get("/api/admin/clients", headers={"X-Auth-Token": token})
            assert blocked.status_code == 429
            assert blocked.json() == AUTH_BLOCKED_BODY
            assert int(blocked.headers["Retry-After"]) >= 1
        assert other.get("/api/admin/clients", headers=ADMIN).status_code == 200
    for token in [*wrong, ADMIN_TOKEN]:
        assert token not in caplog.text


def test_failed_keys_and_tokens_share_the_address_budget(http: TestClient, app: Any) -> None:
    with client_from(app, "192.0.2.10") as attacker:
        half = AUTH_FAILURES // 2
        for n in range(half):
            assert attacker.get("/api/billing/usage", headers=bad_key(n)).status_code == 401
        for n in range(AUTH_FAILURES - half):
            headers = {"X-Auth-Token": f"not-the-admin-token-{n:03d}"}
            assert attacker.get("/api/admin/clients", headers=headers).status_code == 401
        assert attacker.get("/api/billing/usage", headers=bad_key(0)).status_code == 429


def test_requests_without_credentials_are_not_counted(http: TestClient, app: Any) -> None:
    good = create_client(http, "pro")
    with client_from(app, "192.0.2.20") as caller:
        for _ in range(AUTH_FAILURES + 10):
            assert caller.get("/api/billing/usage").status_code == 401
            assert caller.get("/api/admin/clients").status_code == 401
        assert caller.get("/api/billing/usage", headers=key(good["api_key"])).status_code == 200


def test_the_block_lifts_when_the_failures_leave_the_window(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_AUTH_FAILURE_LIMIT", "3 per 2 seconds")
    get_settings.cache_clear()
    with TestClient(gateway.create_app()) as http:
        good = create_client(http, "pro")
        assert [
            http.get("/api/billing/usage", headers=bad_key(n)).status_code for n in range(3)
        ] == [401, 401, 401]
        blocked = http.get("/api/billing/usage", headers=key(good["api_key"]))
        assert blocked.status_code == 429
        retry_after = int(blocked.headers["Retry-After"])
        assert 1 <= retry_after <= 2
        time.sleep(retry_after)
        assert http.get("/api/billing/usage", headers=key(good["api_key"])).status_code == 200


def test_x_forwarded_for_is_ignored_without_trusted_proxies(http: TestClient, app: Any) -> None:
    good = create_client(http, "pro")
    with client_from(app, "198.51.100.30") as attacker:
        for n in range(AUTH_FAILURES):
            headers = bad_key(n) | {"X-Forwarded-For": f"203.0.113.{n + 1}"}
            assert attacker.get("/api/billing/usage", headers=headers).status_code == 401
        fresh = key(good["api_key"]) | {"X-Forwarded-For": "203.0.113.200"}
        assert attacker.get("/api/billing/usage", headers=fresh).status_code == 429


def test_x_forwarded_for_is_believed_from_trusted_proxies(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_TRUSTED_PROXIES", "10.0.0.0/8")
    get_settings.cache_clear()
    app = gateway.create_app()
    with TestClient(app, client=("10.1.2.3", 40000)) as proxy:
        good = create_client(proxy, "pro")
        for n in range(AUTH_FAILURES):
            headers = bad_key(n) | {"X-Forwarded-For": "203.0.113.9"}
            assert proxy.get("/api/billing/usage", headers=headers).status_code == 401
        attacker = {"X-Forwarded-For": "203.0.113.9"}
        assert (
            proxy.get("/api/billing/usage", headers=key(good["api_key"]) | attacker).status_code
            == 429
        )
        # A hop the attacker wrote to the left is not believed: the proxy appended the real one.
        forged = {"X-Forwarded-For": "203.0.113.10, 203.0.113.9"}
        assert (
            proxy.get("/api/billing/usage", headers=key(good["api_key"]) | forged).status_code
            == 429
        )
        # Other clients behind the same proxy are not affected.
        neighbour = {"X-Forwarded-For": "203.0.113.10"}
        assert (
            proxy.get("/api/billing/usage", headers=key(good["api_key"]) | neighbour).status_code
            == 200
        )
        assert proxy.get("/api/admin/clients", headers=ADMIN | neighbour).status_code == 200
    # A peer that is not a trusted proxy is judged by its own address, whatever it forwards.
    with client_from(app, "198.51.100.40") as direct:
        for n in range(AUTH_FAILURES):
            headers = bad_key(n) | {"X-Forwarded-For": f"203.0.113.{100 + n}"}
            assert direct.get("/api/billing/usage", headers=headers).status_code == 401
        assert direct.get("/api/billing/usage", headers=key(good["api_key"])).status_code == 429


# -- settings and storage --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "memcached://localhost:11211",
        "mongodb://localhost:27017",
        "async+redis://localhost:6379",
        "not a url",
        "",
        "redis://:s3cr3t-pass@localhost:notaport/0",
    ],
)
def test_an_unusable_storage_stops_the_start(
    env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    monkeypatch.setenv("OPENCLAW_RATE_LIMIT_STORAGE", url)
    get_settings.cache_clear()
    app = gateway.create_app()
    with pytest.raises(ConfigurationError, match="OPENCLAW_RATE_LIMIT_STORAGE") as excinfo:
        TestClient(app).__enter__()
    assert "s3cr3t-pass" not in str(excinfo.value)
    assert "s3cr3t-pass" not in caplog.text
    assert "Refusing to start" in caplog.text


@pytest.mark.parametrize("value", ["lots", "0/minute", "5/minute;100/hour", "", "20"])
def test_the_auth_failure_limit_is_validated(
    env: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OPENCLAW_AUTH_FAILURE_LIMIT", value)
    with pytest.raises(ValidationError, match="OPENCLAW_AUTH_FAILURE_LIMIT"):
        Settings()


@pytest.mark.parametrize("value", ["20/minute", "10 per 5 minutes", "100/hour"])
def test_auth_failure_limits_in_limits_notation_are_accepted(
    env: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OPENCLAW_AUTH_FAILURE_LIMIT", value)
    assert Settings().auth_failure_limit == value


def test_the_key_prefix_is_validated(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCLAW_RATE_LIMIT_KEY_PREFIX", "has space")
    with pytest.raises(ValidationError):
        Settings()


def test_the_limiter_follows_the_settings(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_rate_limiter()
    assert get_rate_limiter() is first
    monkeypatch.setenv("OPENCLAW_AUTH_FAILURE_LIMIT", "7/minute")
    get_settings.cache_clear()
    second = get_rate_limiter()
    assert second is not first
    assert second.auth_failure_item.amount == 7


def test_an_unreachable_redis_fails_open_and_says_so(
    env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("OPENCLAW_RATE_LIMIT_STORAGE", closed)
    get_settings.cache_clear()
    caplog.set_level(logging.INFO)
    with TestClient(gateway.create_app()) as http:
        client = create_client(http, "free")
        responses = [
            http.get("/api/billing/usage", headers=key(client["api_key"])) for _ in range(15)
        ]
        assert [r.status_code for r in responses] == [200] * 15  # over the free limit of 10
        assert not any("RateLimit-Limit" in r.headers for r in responses)
        failures = [
            http.get("/api/billing/usage", headers=bad_key(n)).status_code
            for n in range(AUTH_FAILURES + 5)
        ]
        assert failures == [401] * (AUTH_FAILURES + 5)
        assert http.get("/api/billing/usage", headers=key(client["api_key"])).status_code == 200
    errors = [
        r
        for r in caplog.records
        if r.name == "openclaw_billing.ratelimit" and r.levelno == logging.ERROR
    ]
    assert errors, "an unreachable storage must be logged"
    logged = "\n".join(r.getMessage() for r in errors)
    assert closed in logged
    assert "not rate limited" in logged
    for secret in [client["api_key"], client["client_id"], "testclient", ADMIN_TOKEN]:
        assert secret not in logged


def test_a_storage_that_fails_mid_request_fails_open(monkeypatch: pytest.MonkeyPatch) -> None:
    from limits.errors import StorageError

    limiter = RateLimiter("memory://", retry_after_error=60)
    try:
        calls = []

        def broken(*args: Any, **kwargs: Any) -> bool:
            calls.append(args)
            raise StorageError(ConnectionError("down"))

        monkeypatch.setattr(limiter._strategy, "hit", broken)
        assert limiter.hit_client("c1", 1) is None
        assert limiter.hit_client("c1", 1) is None  # skipped: no second attempt within 60 s
        limiter.record_auth_failure("192.0.2.1")
        assert len(calls) == 1
    finally:
        limiter.close()


# -- Redis: one set of counters for every worker ---------------------------------------------


def test_redis_limits_hold_across_limiters(redis_url: str, redis_prefix: str) -> None:
    """Two limiters on one Redis (what two workers or two instances are) share the counts."""
    a = RateLimiter(redis_url, key_prefix=redis_prefix, auth_failure_limit="5/minute")
    b = RateLimiter(redis_url, key_prefix=redis_prefix, auth_failure_limit="5/minute")
    try:
        states = [(a if n % 2 else b).hit_client("client-1", 6) for n in range(6)]
        assert [s.remaining for s in states if s is not None] == [5, 4, 3, 2, 1, 0]
        with pytest.raises(RateLimited) as excinfo:
            a.hit_client("client-1", 6)
        headers = excinfo.value.headers or {}
        assert headers["RateLimit-Limit"] == "6"
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert b.hit_client("client-2", 6) is not None

        for n in range(5):
            (a if n % 2 else b).check_auth("192.0.2.50")
            (a if n % 2 else b).record_auth_failure("192.0.2.50")
        for limiter in (a, b):
            with pytest.raises(RateLimited):
                limiter.check_auth("192.0.2.50")
        b.check_auth("192.0.2.51")
    finally:
        a.close()
        b.close()


async def _burst(base: str, count: int, make: Callable[[int], dict[str, str]]) -> Counter[int]:
    """``count`` concurrent GET /api/billing/usage on up to 64 connections, so the requests
    spread over every worker."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:

        async def one(n: int) -> int:
            response = await http.get("/api/billing/usage", headers=make(n))
            return response.status_code

        return Counter(await asyncio.gather(*(one(n) for n in range(count))))


def _create_free_client(base: str) -> dict[str, Any]:
    response = httpx.post(
        f"{base}/api/admin/clients",
        headers=ADMIN,
        json={"name": "Burst Co", "email": "burst@acmecorp.com", "plan": "free"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


BURST = 200
WORKERS = 4


@pytest.mark.slow
def test_r15_limits_hold_across_four_workers_with_redis(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    extra = {
        "OPENCLAW_RATE_LIMIT_STORAGE": redis_url,
        "OPENCLAW_RATE_LIMIT_KEY_PREFIX": redis_prefix,
        "OPENCLAW_AUTH_FAILURE_LIMIT": f"{AUTH_FAILURES}/minute",
        "OPENCLAW_TRUSTED_PROXIES": "127.0.0.1",
    }
    with running_gateway(tmp_path, workers=WORKERS, extra_env=extra) as base:
        client = _create_free_client(base)

        # A burst of bad keys from one address, across all workers.
        attacker = {"X-Forwarded-For": "203.0.113.66"}
        bad = asyncio.run(_burst(base, BURST, lambda n: bad_key(n) | attacker))
        right_key_blocked = httpx.get(
            f"{base}/api/billing/usage", headers=key(client["api_key"]) | attacker
        )

        # A free client (10 per minute) bursting from another address, across all workers.
        own = {"X-Forwarded-For": "203.0.113.67"}
        usage = asyncio.run(_burst(base, 40, lambda n: key(client["api_key"]) | own))
    print(f"\nR15 with Redis, {WORKERS} workers: bad keys {dict(bad)}; free client {dict(usage)}")
    assert bad == {401: AUTH_FAILURES, 429: BURST - AUTH_FAILURES}, bad
    assert right_key_blocked.status_code == 429
    assert usage == {200: 10, 429: 30}, usage


@pytest.mark.slow
def test_memory_storage_limits_each_worker_separately(tmp_path: Path) -> None:
    """Why R15 needs Redis: with ``memory://`` each of 4 workers counts on its own, so the
    same burst gets more 401s than the limit (at most 4 times it). This also shows the burst
    really reaches several workers."""
    with running_gateway(tmp_path, workers=WORKERS) as base:
        bad = asyncio.run(_burst(base, BURST, bad_key))
    print(f"\nmemory://, {WORKERS} workers: bad keys {dict(bad)}")
    assert set(bad) <= {401, 429}, bad
    assert AUTH_FAILURES < bad[401] <= WORKERS * AUTH_FAILURES, bad


def test_ratelimit_module_imports_no_fastapi() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(ratelimit))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"fastapi", "starlette"}
