"""The key cache inside the service and behind the HTTP check: a cached key costs no store
read; expiry is exact; a change made through this process is seen by the next request; the
last use is still written once a minute; a refused key is refused, counted and audited as
without the cache; ``ClientCheck.key_id`` names the key that was checked. Store reads are
counted by wrapping the store's read."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import gateway
from client_auth import DeferredClient, get_service
from conftest import ADMIN_TOKEN
from openclaw_billing.access import new_client
from openclaw_billing.api.deps import ClientCheck
from openclaw_billing.audit import AuditAction, AuditQuery
from openclaw_billing.cycles import utcnow
from openclaw_billing.errors import InvalidApiKey
from openclaw_billing.keycache import MAX_REFUSED_KEYS, KeyCache, VerifiedKey
from openclaw_billing.keys import KEY_PREFIX, digest_key, display_prefix
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.settings import get_settings
from openclaw_billing.store import Store
from openclaw_billing.stripe_billing import StripeBilling
from tests.factories import create_client
from tests.store_helpers import T0

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}


class StoreCalls:
    """Counts the store's key reads (by digest) and last-use writes."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads: Counter[str] = Counter()
        self.touches = 0
        self._lock = threading.Lock()
        read, touch = store.get_client_by_key_digest, store.touch_key

        def counted_read(digest: str, *, ledger: bool = True) -> ClientRecord | None:
            with self._lock:
                self.reads[digest] += 1
            return read(digest, ledger=ledger)

        def counted_touch(client_id: str, key_id: str, now: datetime) -> None:
            with self._lock:
                self.touches += 1
            touch(client_id, key_id, now)

        monkeypatch.setattr(store, "get_client_by_key_digest", counted_read)
        monkeypatch.setattr(store, "touch_key", counted_touch)


@pytest.fixture
def cached(env: Path, monkeypatch: pytest.MonkeyPatch) -> BillingService:
    """The process's service with a cache that holds for the whole test (60 s)."""
    monkeypatch.setenv("OPENCLAW_KEY_CACHE_SECONDS", "60")
    get_settings.cache_clear()
    return get_service()


@pytest.fixture
def calls(cached: BillingService, monkeypatch: pytest.MonkeyPatch) -> StoreCalls:
    return StoreCalls(cached.store, monkeypatch)


def _client(service: BillingService, plan: PlanId = PlanId.PRO) -> tuple[ClientRecord, str]:
    return service.create_client(name="Acme", email="ops@acmecorp.com", plan=plan)


def _random_key() -> str:
    return KEY_PREFIX + secrets.token_hex(16)


def test_a_cached_key_costs_no_store_read(cached: BillingService, calls: StoreCalls) -> None:
    record, key = _client(cached)
    for _ in range(100):
        verified = cached.verify_key(key)
        assert verified is not None
        assert verified.key_id == record.api_keys[0].key_id
        assert verified.client.client_id == record.client_id
    assert calls.reads[digest_key(key)] == 1


def test_with_the_ledger_the_store_is_read_every_time(
    cached: BillingService, calls: StoreCalls
) -> None:
    record, key = _client(cached)
    cached.charge(record.client_id, job_id="j1")
    assert cached.authenticate(key, ledger=False) is not None
    for _ in range(3):
        full = cached.authenticate(key)
        assert full is not None
        assert [e.job_id for e in full.metadata.cost_log] == ["j1"]
    assert calls.reads[digest_key(key)] == 4


def test_with_the_cache_off_the_store_is_read_every_time(
    cached: BillingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    uncached = BillingService(cached.store, key_cache=KeyCache(0))
    calls = StoreCalls(cached.store, monkeypatch)
    _, key = _client(uncached)
    for _ in range(5):
        assert uncached.verify_key(key) is not None
    assert calls.reads[digest_key(key)] == 5


def test_a_setting_of_zero_gives_the_service_no_cache(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_KEY_CACHE_SECONDS", "0")
    get_settings.cache_clear()
    assert not get_service().key_cache.enabled


def test_a_cached_key_stops_at_its_expiry_exactly(
    cached: BillingService, calls: StoreCalls
) -> None:
    record, key = _client(cached)
    key_id = record.api_keys[0].key_id
    expires = utcnow() + timedelta(hours=1)
    cached.set_key_expiry(record.client_id, key_id, expires)
    assert cached.verify_key(key, now=expires - timedelta(microseconds=1)) is not None
    assert cached.verify_key(key, now=expires) is None
    assert cached.verify_key(key, now=expires + timedelta(days=1)) is None
    assert calls.reads[digest_key(key)] == 1  # the refusals came from the cached key's record


def _revoke(service: BillingService, record: ClientRecord) -> None:
    service.revoke_key(record.client_id, record.api_keys[0].key_id)


def _rotate_now(service: BillingService, record: ClientRecord) -> None:
    service.rotate_key(record.client_id, record.api_keys[0].key_id, grace=timedelta(0))


def _deactivate(service: BillingService, record: ClientRecord) -> None:
    service.set_active(record.client_id, False)


def _console_revokes(service: BillingService, record: ClientRecord) -> None:
    _revoke(service.as_actor("console"), record)  # the console's copy shares the cache


@pytest.mark.parametrize("change", [_revoke, _rotate_now, _deactivate, _console_revokes])
def test_a_key_stopped_through_this_process_is_refused_by_its_next_request(
    cached: BillingService,
    calls: StoreCalls,
    change: Callable[[BillingService, ClientRecord], None],
) -> None:
    record, key = _client(cached)
    assert cached.verify_key(key) is not None
    change(cached, record)
    assert cached.verify_key(key) is None
    assert calls.reads[digest_key(key)] == 2


def test_a_client_reactivated_through_this_process_is_let_in_at_once(
    cached: BillingService, calls: StoreCalls
) -> None:
    record, key = _client(cached)
    cached.set_active(record.client_id, False)
    assert cached.verify_key(key) is None
    assert cached.verify_key(key) is None  # refused from the cache
    assert calls.reads[digest_key(key)] == 1
    cached.set_active(record.client_id, True)
    assert cached.verify_key(key) is not None


def test_policy_plan_and_credits_changed_here_are_in_the_next_record(
    cached: BillingService,
) -> None:
    record, key = _client(cached, PlanId.FREE)
    assert cached.verify_key(key) is not None
    cached.set_policy(record.client_id, rate_limit_per_minute=7, ip_allowlist=["203.0.113.7"])
    cached.change_plan(record.client_id, PlanId.PRO)
    cached.add_credits(record.client_id, 5, "goodwill")
    verified = cached.verify_key(key)
    assert verified is not None
    client = verified.client
    assert (client.ip_allowlist, client.rate_limit_per_minute) == (["203.0.113.7/32"], 7)
    assert client.plan is PlanId.PRO
    assert client.credits_remaining == 200 + 5
    assert not cached.address_allowed(client, "198.51.100.1")


def test_a_stripe_event_applied_here_is_in_the_next_record(
    cached: BillingService, calls: StoreCalls
) -> None:
    record, key = _client(cached)
    assert cached.verify_key(key) is not None
    stripe = StripeBilling(cached, get_settings(), None)

    def link(found: ClientRecord) -> None:
        found.stripe_customer_id = "cus_KeyCache"

    stripe._apply("evt_keycache", record, 1, link, utcnow())
    verified = cached.verify_key(key)
    assert verified is not None
    assert verified.client.stripe_customer_id == "cus_KeyCache"
    assert calls.reads[digest_key(key)] == 2


def test_a_flood_of_random_keys_leaves_a_good_key_cached(
    cached: BillingService, calls: StoreCalls
) -> None:
    """100,000 well-formed unknown keys are all refused (each read once); the good key read
    before them is still served without a store read."""
    _, key = _client(cached)
    assert cached.verify_key(key) is not None
    for _ in range(100_000):
        assert cached.verify_key(_random_key()) is None
    assert cached.key_cache.refused_count == MAX_REFUSED_KEYS
    assert cached.verify_key(key) is not None
    assert calls.reads[digest_key(key)] == 1
    assert sum(calls.reads.values()) == 100_001


def test_a_hit_writes_the_last_use_once_a_minute(cached: BillingService, calls: StoreCalls) -> None:
    record, key = _client(cached)
    start = utcnow()
    assert cached.verify_key(key, now=start) is not None
    assert calls.touches == 1
    for seconds in (1, 30, 59):
        assert cached.verify_key(key, now=start + timedelta(seconds=seconds)) is not None
    assert calls.touches == 1
    later = start + timedelta(seconds=60)
    verified = cached.verify_key(key, now=later)
    assert verified is not None
    assert calls.touches == 2
    stored = cached.store.get_client(record.client_id)
    assert stored is not None
    assert stored.api_keys[0].last_used_at == later
    assert calls.reads[digest_key(key)] == 1


def test_threads_hitting_a_due_key_write_its_last_use_once(
    cached: BillingService, calls: StoreCalls
) -> None:
    _, key = _client(cached)
    start = utcnow()
    assert cached.verify_key(key, now=start) is not None
    due = start + timedelta(minutes=2)
    barrier = threading.Barrier(16)
    answers: list[VerifiedKey | None] = []

    def hit() -> None:
        barrier.wait(timeout=30)
        answers.append(cached.verify_key(key, now=due))

    threads = [threading.Thread(target=hit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 16
    assert all(answer is not None for answer in answers)
    assert calls.touches == 2
    assert calls.reads[digest_key(key)] == 1


# -- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture
def key_id_app(cached: BillingService, app: FastAPI) -> FastAPI:
    """The gateway with one more route: the id of the key a request was checked with."""

    @app.get("/test/key-id")
    def key_id(check: DeferredClient) -> dict[str, str]:
        client = check.client()
        return {"client_id": client.client_id, "key_id": check.key_id}

    return app


def test_a_route_learns_the_id_of_the_key_that_was_checked(key_id_app: FastAPI) -> None:
    with TestClient(key_id_app) as http:
        created = create_client(http)
        cid, first = created["client_id"], created["api_key"]
        [listed] = http.get(f"/api/admin/clients/{cid}/keys", headers=ADMIN).json()["keys"]
        issued = http.post(f"/api/admin/clients/{cid}/keys", json={}, headers=ADMIN).json()
        for key, expected in ((first, listed["key_id"]), (issued["api_key"], issued["key_id"])):
            for _ in range(2):  # a store read, then a cache hit
                reply = http.get("/test/key-id", headers={"X-Client-Key": key})
                assert reply.status_code == 200, reply.text
                assert reply.json() == {"client_id": cid, "key_id": expected}


def test_the_key_id_is_there_only_after_a_check_that_passed() -> None:
    client = new_client(
        client_id="c",
        name="Acme",
        email="ops@acmecorp.com",
        plan=PlanId.PRO,
        key=_random_key(),
        now=T0,
    )
    passed = ClientCheck(lambda: VerifiedKey(client, "key_0123456789ab"))
    with pytest.raises(RuntimeError, match="has not run"):
        _ = passed.key_id
    assert passed.client() is client
    assert passed.key_id == "key_0123456789ab"

    def refuse() -> VerifiedKey:
        raise InvalidApiKey()

    failed = ClientCheck(refuse)
    with pytest.raises(InvalidApiKey):
        failed.client()
    with pytest.raises(InvalidApiKey):
        _ = failed.key_id


def test_a_key_revoked_through_the_api_is_refused_by_the_next_request(
    cached: BillingService, http: TestClient
) -> None:
    created = create_client(http)
    cid, key = created["client_id"], created["api_key"]
    headers = {"X-Client-Key": key}
    assert http.get("/api/jobs", headers=headers).status_code == 200
    assert http.get("/api/jobs", headers=headers).status_code == 200
    [listed] = http.get(f"/api/admin/clients/{cid}/keys", headers=ADMIN).json()["keys"]
    revoked = http.delete(f"/api/admin/clients/{cid}/keys/{listed['key_id']}", headers=ADMIN)
    assert revoked.status_code == 200
    assert http.get("/api/jobs", headers=headers).status_code == 401


def test_a_refused_key_is_counted_and_audited_each_time_though_read_once(
    cached: BillingService, calls: StoreCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_AUTH_FAILURE_LIMIT", "3/minute")
    get_settings.cache_clear()
    unknown = _random_key()
    with TestClient(gateway.create_app()) as http:
        codes = [
            http.get("/api/jobs", headers={"X-Client-Key": unknown}).status_code for _ in range(4)
        ]
    assert codes == [401, 401, 401, 429]
    assert calls.reads[digest_key(unknown)] == 1
    events, total = cached.audit_events(AuditQuery(action=AuditAction.AUTH_KEY_FAILED))
    assert total == 3
    assert {e.detail["key_prefix"] for e in events} == {display_prefix(unknown)}
