"""Redis for the rate-limit tests.

``redis_url`` is ``OPENCLAW_TEST_REDIS_URL`` (default :data:`DEFAULT_REDIS_URL`, database 15 of
a local server, so a developer's database 0 is never touched). An unreachable server skips the
test with a how-to, except under ``CI=true``, where it fails: Redis is the only way rate limits
hold across workers, so CI must never drop those tests silently.

``redis_prefix`` is a fresh ``OPENCLAW_RATE_LIMIT_KEY_PREFIX`` per test (tests never see each
other's counters, even when two runs share the server); its keys are deleted afterwards.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator

import pytest
import redis

from tests.backends import service_unavailable

__all__ = ["DEFAULT_REDIS_URL", "redis_prefix_fixture", "redis_url_fixture", "require_redis"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
REDIS_HOWTO = (
    "start Redis on 127.0.0.1:6379 (`redis-server --daemonize yes`, or "
    "`docker run -d -p 6379:6379 redis:7`) or set OPENCLAW_TEST_REDIS_URL"
)
#: Seconds to wait for the server before calling it unreachable.
REDIS_CONNECT_TIMEOUT = 2
#: How ``limits``' RedisStorage prefixes every key it writes.
LIMITS_KEY_PREFIX = "LIMITS"


def redis_test_url() -> str:
    return os.environ.get("OPENCLAW_TEST_REDIS_URL") or DEFAULT_REDIS_URL


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT, socket_timeout=REDIS_CONNECT_TIMEOUT
    )


@functools.cache
def _redis_unreachable(url: str) -> str | None:
    """Why the server at ``url`` cannot be used, or None. Probed once per session."""
    try:
        with _client(url) as client:
            client.ping()
    except (redis.RedisError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def require_redis(url: str) -> None:
    problem = _redis_unreachable(url)
    if problem is None:
        return
    message = f"Redis at {url} is unreachable ({problem}); {REDIS_HOWTO}"
    service_unavailable("Redis for the rate-limit tests", message)


@pytest.fixture(name="redis_url")
def redis_url_fixture() -> str:
    """The test server's URL; skips (fails under CI=true) when it is unreachable."""
    url = redis_test_url()
    require_redis(url)
    return url


@pytest.fixture(name="redis_prefix")
def redis_prefix_fixture(redis_url: str) -> Iterator[str]:
    """A key prefix private to the test; its keys are deleted afterwards."""
    prefix = f"t_{secrets.token_hex(8)}"
    yield prefix
    with _client(redis_url) as client:
        keys = list(client.scan_iter(match=f"{LIMITS_KEY_PREFIX}:{prefix}/*", count=1000))
        if keys:
            client.delete(*keys)
