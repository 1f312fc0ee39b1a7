"""The key check on the event loop's thread (``ClientCheck.resolve``): answered from this
worker's key cache alone, with one look at it, never reading or writing the store, whatever
expires or falls due meanwhile; what the cache cannot answer (an entry held too long, a last
use due, a refusal, counters outside the process) goes whole to the billing threads.

The app runs on this test's own event loop (``httpx.ASGITransport``), and the store's key
reads and last-use writes are recorded with the thread each ran on. The cache's clock
(``KeyCache(clock=...)``) and the service's (the ``clock`` fixture) are moved by hand."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI

import gateway
from conftest import Clock
from openclaw_billing.access import KEY_TOUCH_INTERVAL
from openclaw_billing.api.checks import verify_known_key
from openclaw_billing.audit import AuditAction, AuditQuery
from openclaw_billing.keycache import UNANSWERED, KeyCache, VerifiedKey
from openclaw_billing.keys import KEY_PREFIX
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.ratelimit import RateLimiter
from openclaw_billing.service import BillingService, get_service
from openclaw_billing.settings import get_settings
from openclaw_billing.store import Store
from tests.factories import JOB_BODY

T = TypeVar("T")
CACHE_SECONDS = 60.0
UNKNOWN_KEY = KEY_PREFIX + "0" * 32


class Ticks:
    """The key cache's settable monotonic clock, in seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Threads:
    """The threads the store's key reads, last-use writes and audit writes ran on, and the
    work handed to threads through anyio (every hand-off of the app goes through it)."""

    def __init__(self, service: BillingService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int]] = []
        self.handed: list[str] = []
        store: Store = service.store
        for target, name in (
            (store, "get_client_by_key_digest"),
            (store, "touch_key"),
            (service, "record_audit"),
        ):
            monkeypatch.setattr(target, name, self._recorded(name, getattr(target, name)))
        run_sync = anyio.to_thread.run_sync

        async def counted(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            self.handed.append(getattr(func, "func", func).__name__)
            return await run_sync(func, *args, **kwargs)

        monkeypatch.setattr(anyio.to_thread, "run_sync", counted)

    def _recorded(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, threading.get_ident()))
            return call(*args, **kwargs)

        return recorded

    def on(self, thread: int) -> list[str]:
        return [name for name, ident in self.calls if ident == thread]

    def off(self, thread: int) -> list[str]:
        return [name for name, ident in self.calls if ident != thread]

    def reset(self) -> None:
        self.calls.clear()
        self.handed.clear()


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def service(
    env: Path, clock: Clock, ticks: Ticks, monkeypatch: pytest.MonkeyPatch
) -> BillingService:
    """The process's service (its clock frozen), its key cache on ``ticks``."""
    monkeypatch.setenv("OPENCLAW_KEY_CACHE_SECONDS", str(int(CACHE_SECONDS)))
    get_settings.cache_clear()
    found = get_service()
    found.key_cache = KeyCache(CACHE_SECONDS, clock=ticks)
    return found


@pytest.fixture
def threads(service: BillingService, monkeypatch: pytest.MonkeyPatch) -> Threads:
    return Threads(service, monkeypatch)


@pytest.fixture
def client(service: BillingService) -> tuple[ClientRecord, str]:
    return service.create_client(name="Acme", email="ops@acmecorp.com", plan=PlanId.PRO)


@pytest.fixture
def key(client: tuple[ClientRecord, str]) -> str:
    return client[1]


@pytest.fixture
def app(service: BillingService) -> FastAPI:
    return gateway.create_app()


Scenario = Callable[[httpx.AsyncClient, int], Awaitable[T]]


def _on_this_loop(app: FastAPI, scenario: Scenario[T]) -> T:
    """Run ``scenario(http, loop_thread)`` against the app on an event loop of this thread."""

    async def main() -> T:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as http,
        ):
            return await scenario(http, threading.get_ident())

    return asyncio.run(main())


async def _intake(http: httpx.AsyncClient, key: str) -> int:
    reply = await http.post("/api/intake", json=JOB_BODY, headers={"X-Client-Key": key})
    return reply.status_code


def _after_the_first_look(
    cache: KeyCache, monkeypatch: pytest.MonkeyPatch, then: Callable[[], object]
) -> list[int]:
    """Call ``then()`` right after the cache's next look (one time only): the moment between
    a check's look at the cache and anything it does next. Returns the looks counter."""
    looks = [0]
    get = cache.get

    def look(digest: str) -> Any:
        found = get(digest)
        looks[0] += 1
        if looks[0] == 1:
            then()
        return found

    monkeypatch.setattr(cache, "get", look)
    return looks


# -- a change after the look: answered from the look, nothing read or written on the loop ---


def test_an_entry_expiring_after_the_look_is_not_read_again_on_the_loop(
    service: BillingService,
    ticks: Ticks,
    threads: Threads,
    key: str,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(http: httpx.AsyncClient, loop: int) -> None:
        assert await _intake(http, key) == 201  # a store read, on a billing thread
        assert threads.on(loop) == []
        threads.reset()

        def expire() -> None:
            ticks.now += CACHE_SECONDS  # every entry held is now too old

        looks = _after_the_first_look(service.key_cache, monkeypatch, expire)
        assert await _intake(http, key) == 201
        assert threads.on(loop) == []  # the store is never read on the loop's thread
        assert looks == [1]  # one look at the cache: one copy of the record validated
        assert threads.handed == []  # answered by that look, on the loop's thread

    _on_this_loop(app, scenario)


def test_a_last_use_falling_due_after_the_look_is_not_written_on_the_loop(
    service: BillingService,
    clock: Clock,
    threads: Threads,
    key: str,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(http: httpx.AsyncClient, loop: int) -> None:
        assert await _intake(http, key) == 201  # the last use written, on a billing thread
        assert threads.off(loop) == ["get_client_by_key_digest", "touch_key"]
        threads.reset()
        due = KEY_TOUCH_INTERVAL.total_seconds() + 1
        looks = _after_the_first_look(
            service.key_cache, monkeypatch, lambda: clock.advance(seconds=due)
        )
        assert await _intake(http, key) == 201
        assert threads.on(loop) == []  # the last use is never written on the loop's thread
        assert looks == [1]
        assert threads.handed == []

    _on_this_loop(app, scenario)


# -- what the cache cannot answer: the whole check on the billing threads -------------------


def test_an_entry_held_too_long_is_read_again_on_a_billing_thread(
    ticks: Ticks, threads: Threads, key: str, app: FastAPI
) -> None:
    async def scenario(http: httpx.AsyncClient, loop: int) -> None:
        assert await _intake(http, key) == 201
        threads.reset()
        assert await _intake(http, key) == 201
        assert threads.calls == []  # from the cache, on the loop's thread
        assert threads.handed == []
        ticks.now += CACHE_SECONDS
        assert await _intake(http, key) == 201
        assert threads.off(loop) == ["get_client_by_key_digest"]
        assert threads.on(loop) == []
        assert threads.handed == ["client"]

    _on_this_loop(app, scenario)


def test_a_due_last_use_is_written_on_a_billing_thread(
    service: BillingService,
    clock: Clock,
    threads: Threads,
    client: tuple[ClientRecord, str],
    app: FastAPI,
) -> None:
    record, key = client

    async def scenario(http: httpx.AsyncClient, loop: int) -> None:
        assert await _intake(http, key) == 201
        threads.reset()
        clock.advance(seconds=KEY_TOUCH_INTERVAL.total_seconds())
        assert await _intake(http, key) == 201
        assert threads.off(loop) == ["touch_key"]  # the record itself came from the cache
        assert threads.on(loop) == []
        assert threads.handed == ["client"]

    _on_this_loop(app, scenario)
    [stored] = service.get_client(record.client_id).api_keys
    assert stored.last_used_at == clock.now


@pytest.mark.parametrize("refusal", ["unknown", "address"])
def test_a_refusal_the_cache_knows_is_counted_and_audited_on_a_billing_thread(
    service: BillingService,
    threads: Threads,
    client: tuple[ClientRecord, str],
    app: FastAPI,
    refusal: str,
) -> None:
    if refusal == "unknown":
        presented, status, action = UNKNOWN_KEY, 401, AuditAction.AUTH_KEY_FAILED
    else:  # the test's address (127.0.0.1) is outside the allowlist
        record, presented = client
        allowlist = ["203.0.113.7"]
        service.set_policy(record.client_id, rate_limit_per_minute=None, ip_allowlist=allowlist)
        status, action = 403, AuditAction.AUTH_IP_DENIED

    async def scenario(http: httpx.AsyncClient, loop: int) -> None:
        for _ in range(2):  # a store read, then the cache's answer
            assert await _intake(http, presented) == status
        assert threads.on(loop) == []
        assert threads.off(loop).count("record_audit") == 2
        assert threads.handed == ["client", "client"]

    _on_this_loop(app, scenario)
    assert service.audit_events(AuditQuery(action=action))[1] == 2


# -- the parts ----------------------------------------------------------------------------


def test_the_service_answers_from_the_cache_alone_or_not_at_all(
    service: BillingService, ticks: Ticks, clock: Clock, threads: Threads, key: str
) -> None:
    assert service.verify_cached_key(key) is UNANSWERED  # not held
    assert service.verify_cached_key(UNKNOWN_KEY) is UNANSWERED
    assert threads.calls == []
    assert service.verify_key(key) is not None
    assert service.verify_key(UNKNOWN_KEY) is None
    threads.reset()
    verified = service.verify_cached_key(key)
    assert isinstance(verified, VerifiedKey)
    assert verified.client.api_keys[0].key_id == verified.key_id
    assert service.verify_cached_key(UNKNOWN_KEY) is None  # a refusal the cache holds
    assert service.verify_cached_key("not a key") is None
    due = clock.now + KEY_TOUCH_INTERVAL
    assert service.verify_cached_key(key, now=due) is UNANSWERED  # a last use to write
    ticks.now += CACHE_SECONDS
    assert service.verify_cached_key(key) is UNANSWERED  # held too long
    assert threads.calls == []  # never the store


def test_counters_outside_the_process_leave_every_key_to_the_threads(
    service: BillingService, key: str
) -> None:
    assert service.verify_key(key) is not None
    limiter = RateLimiter("memory://")
    assert verify_known_key(service, limiter, "198.51.100.1", key) is not None
    limiter.in_process = False  # as with redis://: every look at a counter is I/O
    assert verify_known_key(service, limiter, "198.51.100.1", key) is None
