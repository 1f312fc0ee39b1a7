"""The per-worker cache of verified keys on its own (:mod:`openclaw_billing.keycache`): its
bounds, its LRU, refused digests kept apart from known keys, expiry of entries, the ticket
that keeps a stale read out, the last-use claim, threads. Time is a settable clock here, never
a sleep. The cache inside the service and over HTTP: tests/test_keycache_service.py; across
processes: tests/test_keycache_processes.py."""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta

import pytest
from pydantic import ValidationError

from openclaw_billing.access import KEY_TOUCH_INTERVAL, new_client
from openclaw_billing.keycache import MAX_CACHED_KEYS, MAX_REFUSED_KEYS, REFUSED, KeyCache
from openclaw_billing.keys import digest_key, generate_key
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.settings import Settings
from tests.store_helpers import T0


class Ticks:
    """A settable monotonic clock, in seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _client(name: str = "Acme") -> tuple[ClientRecord, str]:
    key = generate_key()
    record = new_client(
        client_id=f"client-{name}",
        name=name,
        email="ops@acmecorp.com",
        plan=PlanId.PRO,
        key=key,
        now=T0,
    )
    return record, digest_key(key)


def _random_digest() -> str:
    return secrets.token_hex(32)


def _cache(
    seconds: float = 1.0, *, max_keys: int = MAX_CACHED_KEYS, max_refused: int = MAX_REFUSED_KEYS
) -> tuple[KeyCache, Ticks]:
    ticks = Ticks()
    cache = KeyCache(seconds, max_keys=max_keys, max_refused=max_refused, clock=ticks)
    return cache, ticks


def test_a_known_key_is_held_for_its_time_and_no_longer() -> None:
    cache, ticks = _cache(1.0)
    record, digest = _client()
    assert cache.get(digest) is None
    cache.put(digest, record, cache.ticket())
    ticks.now += 0.999
    hit = cache.get(digest)
    assert isinstance(hit, tuple)
    held, key = hit
    assert held == record
    assert key.digest == digest
    ticks.now += 0.001  # a hit does not extend the entry: the bound counts from the store read
    assert cache.get(digest) is None
    assert len(cache) == 0


def test_every_hit_is_a_copy_the_caller_may_change() -> None:
    cache, _ = _cache()
    record, digest = _client()
    cache.put(digest, record, cache.ticket())
    record.active = False  # the caller's own record, after the put
    first = cache.get(digest)
    assert isinstance(first, tuple)
    first[0].ip_allowlist.append("10.0.0.0/8")
    first[1].revoked_at = T0
    second = cache.get(digest)
    assert isinstance(second, tuple)
    assert second[0].active is True
    assert second[0].ip_allowlist == []
    assert second[1].revoked_at is None


@pytest.mark.parametrize("why", ["unknown", "revoked", "inactive"])
def test_a_refused_digest_is_remembered_apart_from_the_known_keys(why: str) -> None:
    cache, ticks = _cache(1.0)
    record, digest = _client()
    if why == "revoked":
        record.api_keys[0].revoked_at = T0
    elif why == "inactive":
        record.active = False
    cache.put(digest, None if why == "unknown" else record, cache.ticket())
    assert cache.get(digest) is REFUSED
    assert (len(cache), cache.refused_count) == (0, 1)
    ticks.now += 1.0
    assert cache.get(digest) is None
    assert cache.refused_count == 0


def test_a_key_that_is_only_expired_stays_known_for_the_caller_to_check_at_its_now() -> None:
    """An expiry depends on the time it is checked at, so the cache keeps the key and the
    service checks ``usable(now)`` on every hit (tests/test_keycache_service.py)."""
    cache, _ = _cache()
    record, digest = _client()
    record.api_keys[0].expires_at = T0
    cache.put(digest, record, cache.ticket())
    hit = cache.get(digest)
    assert isinstance(hit, tuple)
    assert hit[1].expires_at == T0


def test_known_keys_are_a_bounded_lru() -> None:
    cache, _ = _cache(max_keys=3)
    clients = [_client(f"c{i}") for i in range(4)]
    for record, digest in clients[:3]:
        cache.put(digest, record, cache.ticket())
    assert cache.get(clients[0][1]) is not None  # now the most recently used
    cache.put(clients[3][1], clients[3][0], cache.ticket())
    assert len(cache) == 3
    assert cache.get(clients[1][1]) is None  # the least recently used went
    assert all(cache.get(d) is not None for _, d in (clients[0], clients[2], clients[3]))


def test_entries_past_their_time_are_dropped_on_the_next_put() -> None:
    cache, ticks = _cache(1.0)
    for i in range(5):
        record, digest = _client(f"old{i}")
        cache.put(digest, record, cache.ticket())
    ticks.now += 2
    record, digest = _client("new")
    cache.put(digest, record, cache.ticket())
    assert len(cache) == 1


def test_a_flood_of_random_keys_never_pushes_out_a_known_key() -> None:
    """100,000 refused digests: the refused side stays at its bound, the known key stays."""
    cache, _ = _cache(60.0)
    record, digest = _client()
    cache.put(digest, record, cache.ticket())
    flood = [_random_digest() for _ in range(100_000)]
    for random_digest in flood:
        cache.put(random_digest, None, cache.ticket())
    assert cache.refused_count == MAX_REFUSED_KEYS
    assert len(cache) == 1
    assert cache.get(digest) not in (None, REFUSED)
    assert cache.get(flood[0]) is None  # the oldest refused went first
    assert cache.get(flood[-1]) is REFUSED


def test_the_default_bounds() -> None:
    cache = KeyCache(1.0)
    assert (cache.max_keys, cache.max_refused) == (MAX_CACHED_KEYS, MAX_REFUSED_KEYS)
    assert (MAX_CACHED_KEYS, MAX_REFUSED_KEYS) == (10_000, 10_000)


def test_a_key_once_refused_and_then_known_moves_to_the_known_side() -> None:
    cache, _ = _cache()
    record, digest = _client()
    cache.put(digest, None, cache.ticket())
    cache.put(digest, record, cache.ticket())
    assert (len(cache), cache.refused_count) == (1, 0)
    record.active = False
    cache.put(digest, record, cache.ticket())
    assert (len(cache), cache.refused_count) == (0, 1)


def test_forgetting_a_client_drops_its_keys_and_every_refused_digest() -> None:
    cache, _ = _cache()
    acme, acme_digest = _client("acme")
    issued = digest_key(generate_key())
    second = acme.api_keys[0].model_copy(update={"key_id": "key_0123456789ab", "digest": issued})
    acme.api_keys.append(second)
    other, other_digest = _client("other")
    for record, digest in ((acme, acme_digest), (acme, issued), (other, other_digest)):
        cache.put(digest, record, cache.ticket())
    cache.put(_random_digest(), None, cache.ticket())
    cache.forget_client(acme.client_id)
    assert cache.get(acme_digest) is None
    assert cache.get(issued) is None
    assert cache.get(other_digest) not in (None, REFUSED)
    assert cache.refused_count == 0


def test_a_read_taken_before_a_change_is_not_kept() -> None:
    """A request reads the store, a change is written and its client forgotten, then the
    request's put comes: it would hold the state before the change, so it is not kept."""
    cache, _ = _cache()
    record, digest = _client()
    ticket = cache.ticket()
    cache.forget_client(record.client_id)
    cache.put(digest, record, ticket)
    assert cache.get(digest) is None
    cache.put(digest, record, cache.ticket())
    assert cache.get(digest) is not None


def test_the_last_use_is_claimed_once_per_interval() -> None:
    cache, _ = _cache()
    record, digest = _client()
    cache.put(digest, record, cache.ticket())
    assert cache.claim_touch(digest, None, T0) is True
    assert cache.claim_touch(digest, None, T0 + KEY_TOUCH_INTERVAL / 2) is False
    hit = cache.get(digest)
    assert isinstance(hit, tuple)
    assert hit[1].last_used_at == T0  # a hit's record shows the use the cache noted
    assert cache.claim_touch(digest, None, T0 + KEY_TOUCH_INTERVAL) is True
    # Not held: the caller's last use decides, and nothing is noted.
    recent = T0 + KEY_TOUCH_INTERVAL
    assert cache.claim_touch(_random_digest(), recent, recent + timedelta(seconds=1)) is False
    assert cache.claim_touch(_random_digest(), None, recent) is True


def test_zero_seconds_turns_the_cache_off() -> None:
    cache, _ = _cache(0)
    record, digest = _client()
    cache.put(digest, record, cache.ticket())
    cache.put(_random_digest(), None, cache.ticket())
    assert not cache.enabled
    assert cache.get(digest) is None
    assert (len(cache), cache.refused_count) == (0, 0)


@pytest.mark.parametrize(("max_keys", "max_refused"), [(0, 1), (1, 0)])
def test_a_cache_refuses_a_bound_below_one(max_keys: int, max_refused: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        KeyCache(1.0, max_keys=max_keys, max_refused=max_refused)


@pytest.mark.parametrize("seconds", [-1.0, float("nan")])
def test_a_cache_refuses_a_time_below_zero(seconds: float) -> None:
    with pytest.raises(ValueError, match="at least"):
        KeyCache(seconds)


@pytest.mark.parametrize("value", ["-1", "61", "nan", "inf", "one"])
def test_the_setting_is_between_0_and_60_seconds(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_KEY_CACHE_SECONDS", value)
    with pytest.raises(ValidationError, match="OPENCLAW_KEY_CACHE_SECONDS"):
        Settings()


def test_the_setting_defaults_to_one_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCLAW_KEY_CACHE_SECONDS", raising=False)
    assert Settings().key_cache_seconds == 1.0
    monkeypatch.setenv("OPENCLAW_KEY_CACHE_SECONDS", "0.25")
    assert Settings().key_cache_seconds == 0.25


def test_threads_sharing_one_cache_keep_its_bounds_and_its_index() -> None:
    """16 threads released together by a barrier put, get, claim and forget over 40 clients'
    keys and a stream of random digests; afterwards the bounds hold, every known key is
    indexed under its client and no thread failed."""
    cache, _ = _cache(60.0, max_keys=25, max_refused=50)
    clients = [_client(f"c{i}") for i in range(40)]
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(2_000):
                record, digest = clients[(seed * 7 + i) % len(clients)]
                step = (seed + i) % 5
                if step == 0:
                    cache.put(digest, record, cache.ticket())
                elif step == 1:
                    hit = cache.get(digest)
                    assert hit is None or hit is REFUSED or hit[0].client_id == record.client_id
                elif step == 2:
                    cache.claim_touch(digest, None, T0 + timedelta(minutes=i))
                elif step == 3:
                    cache.put(_random_digest(), None, cache.ticket())
                elif i % 50 == 3:
                    cache.forget_client(record.client_id)
        except BaseException as exc:  # reported below, with the thread that raised it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(cache) <= 25
    assert cache.refused_count <= 50
    held = {d for _, d in clients if cache.get(d) not in (None, REFUSED)}
    indexed = {d for digests in cache._digests_of.values() for d in digests}
    assert held == indexed
