"""Rate limits over the ``limits`` library: per-client request limits, and brute-force
throttling of failed key and token checks per client address. Nothing here imports FastAPI.

* **Per client.** Every request authenticated with a client's key counts against one bucket of
  that client (shared by all the routes that take the key): ``rate_limit_per_minute`` on the
  record, else its plan's ``requests_per_minute``. Over it: 429 ``rate_limited``.
* **Failed checks per address.** A presented client key or admin token that does not verify
  counts against the request's address (``auth_failure_limit``, e.g. ``20/minute``). Once the
  address is at the limit, every attempt from it (right or wrong, checked before the secret is
  even looked at) gets 429 until the oldest failure leaves the window, so a guess that happens
  to be right is not confirmed. A request without any key or token is not a guess and is not
  counted.

Strategy: the **moving window** (``MovingWindowRateLimiter``). It is exact: at most N counted
events in any window-long span, so "N then 429" holds to the request, with no double burst at a
window boundary (fixed window) and no approximation after one (sliding-window counter, which
can admit more than N). Its cost is one timestamp per counted event, bounded by the limit
(Redis trims the list to N), which is small at these limits. A refused request is not counted,
so a client that keeps knocking does not push its own window forward.

Storage: ``OPENCLAW_RATE_LIMIT_STORAGE`` through ``limits.storage.storage_from_string``.
``memory://`` keeps the counters in each worker process (with N workers a client can get up to
N times its limit); ``redis://host:port/db`` keeps one set for every worker and instance.
Anything else stops the start (``ConfigurationError``).

When the storage cannot be reached (Redis down or slow), limits are **not enforced** (fail
open): requests are served, without RateLimit headers, and an ERROR naming the storage (never a
key, a client or an address) is logged; the storage is tried again after
``STORAGE_RETRY_SECONDS``. A Redis blip must not turn paying clients away; billing itself does
not depend on it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from limits import RateLimitItem, RateLimitItemPerMinute, parse
from limits.errors import StorageError
from limits.storage import MovingWindowSupport, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from .errors import ConfigurationError, RateLimited
from .models import ClientRecord
from .plans import PLANS
from .settings import Settings, get_settings

logger = logging.getLogger("openclaw_billing.ratelimit")

T = TypeVar("T")

#: Schemes of ``OPENCLAW_RATE_LIMIT_STORAGE`` this module supports (and tests).
SUPPORTED_SCHEMES = ("memory", "redis", "rediss", "redis+unix")
#: Redis socket timeouts (seconds): a Redis that hangs costs a request at most this, once.
REDIS_TIMEOUT_SECONDS = 0.5
#: After a storage error, limits are skipped this long before the storage is tried again.
STORAGE_RETRY_SECONDS = 5.0
AUTH_BLOCKED_MESSAGE = (
    "Too many failed authentication attempts from this address; "
    "retry after the number of seconds in Retry-After"
)
_CLIENT = "client"
_AUTH_FAILURES = "auth-failures"


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """Where a client stands in its window, as the ``RateLimit-*`` response headers say it."""

    limit: int
    remaining: int
    #: Whole seconds until the oldest counted request leaves the window (a slot frees).
    reset_after: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }

    def refusal_headers(self) -> dict[str, str]:
        """The headers of a 429: ``Retry-After`` (at least 1 s) and the ``RateLimit-*`` ones."""
        return {"Retry-After": str(max(1, self.reset_after)), **self.headers()}


def client_limit(client: ClientRecord) -> int:
    """Requests per minute the client may make: its override, else its plan's."""
    return client.rate_limit_per_minute or PLANS[client.plan].requests_per_minute


def redacted(url: str) -> str:
    """``url`` without a password, for messages and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url.partition("://")[0] + "://..."
    if not password:
        return url
    return url.replace(f":{password}@", ":***@", 1)


def open_storage(url: str) -> Storage:
    """The ``limits`` storage ``url`` names, wrapping its errors in ``StorageError``. Raises
    ``ConfigurationError`` for an unsupported scheme or a URL the storage refuses."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in SUPPORTED_SCHEMES:
        raise ConfigurationError(
            f"OPENCLAW_RATE_LIMIT_STORAGE={redacted(url)!r} is not supported: use memory:// "
            "or redis://host:port/db (rediss:// for TLS, redis+unix:///path/to/socket)"
        )
    options: dict[str, float | str | bool] = {}
    if scheme != "memory":
        options = {
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
        }
    try:
        storage = storage_from_string(url, wrap_exceptions=True, **options)
    except Exception as exc:  # limits' ConfigurationError, a URL redis-py cannot parse
        reason = str(exc)
        password = _password(url)
        if password:
            reason = reason.replace(password, "***")
        raise ConfigurationError(
            f"OPENCLAW_RATE_LIMIT_STORAGE={redacted(url)!r} cannot be used: {reason}"
        ) from None
    if not isinstance(storage, Storage) or not isinstance(storage, MovingWindowSupport):
        raise ConfigurationError(  # pragma: no cover - every supported scheme is both
            f"OPENCLAW_RATE_LIMIT_STORAGE={redacted(url)!r} has no moving-window support"
        )
    return storage


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


class RateLimiter:
    """Per-client limits and failed-check throttling over one ``limits`` storage.

    ``clock`` is the wall clock the ``limits`` storages use (``time.time``); it only turns the
    storage's reset times into seconds from now."""

    def __init__(
        self,
        storage_url: str = "memory://",
        *,
        auth_failure_limit: str = "20/minute",
        key_prefix: str = "openclaw",
        clock: Callable[[], float] = time.time,
        retry_after_error: float = STORAGE_RETRY_SECONDS,
    ) -> None:
        self.location = redacted(storage_url)
        #: The counters live in this process (``memory://``): a check never waits on I/O, so
        #: it may run on the event loop's thread.
        self.in_process = storage_url.startswith("memory://")
        self._storage = open_storage(storage_url)
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._prefix = key_prefix
        auth = parse(auth_failure_limit)
        self.auth_failure_item: RateLimitItem = type(auth)(
            auth.amount, auth.multiples, namespace=key_prefix
        )
        self._clock = clock
        self._retry_after_error = retry_after_error
        self._lock = threading.Lock()
        #: ``limits``' memory storage is not safe for threads (5.8: two threads that find its
        #: expiry timer stopped start the same new one, and one gets "RuntimeError: threads
        #: can only be started once", a 500), and a check runs on the event loop's thread and
        #: in the thread pool: its calls take turns. They never wait on I/O.
        self._serial: threading.Lock | None = threading.Lock() if self.in_process else None
        self._skip_until = 0.0
        self._down = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        limiter = cls(
            settings.rate_limit_storage,
            auth_failure_limit=settings.auth_failure_limit,
            key_prefix=settings.rate_limit_key_prefix,
        )
        limiter.check()
        return limiter

    def check(self) -> bool:
        """True when the storage answers; else log an ERROR (requests will not be limited)."""
        try:
            healthy = bool(self._storage.check())
        except StorageError:
            healthy = False
        if not healthy:
            logger.error(
                "Rate-limit storage %s is unreachable: requests are not rate limited until it "
                "answers",
                self.location,
            )
        return healthy

    def close(self) -> None:
        """Release the storage's connections (a Redis connection pool)."""
        client = getattr(self._storage, "storage", None)
        close = getattr(client, "close", None)
        if callable(close):
            close()

    # -- per client --------------------------------------------------------------------------

    def hit_client(self, client_id: str, per_minute: int) -> RateLimitState | None:
        """Count one request of the client against ``per_minute``. Returns where it stands
        (for the ``RateLimit-*`` headers), or None when the storage is unavailable (nothing is
        enforced). Raises ``RateLimited`` with ``Retry-After`` when over the limit."""
        item = RateLimitItemPerMinute(per_minute, namespace=self._prefix)
        allowed = self._guarded(lambda: self._strategy.hit(item, _CLIENT, client_id))
        if allowed is None:
            return None
        state = self._state(item, _CLIENT, client_id)
        if not allowed:
            if state is None:
                state = RateLimitState(item.amount, 0, item.get_expiry())
            raise RateLimited(headers=state.refusal_headers())
        return state

    # -- failed key and token checks per address ---------------------------------------------

    def check_auth(self, address: str) -> None:
        """Before a key or token is verified: raise ``RateLimited`` while ``address`` is at
        its limit of failed checks."""
        item = self.auth_failure_item
        if self._guarded(lambda: self._strategy.test(item, _AUTH_FAILURES, address)) is False:
            raise self._auth_blocked(address)

    def record_auth_failure(self, address: str) -> bool:
        """Count a failed check from ``address``; True when this failure blocks the address
        (it took the last slot). Raises ``RateLimited`` when the address was already at its
        limit (a concurrent attempt took the last slot): the count of 401s an address can get
        in a window is exactly the limit."""
        item = self.auth_failure_item
        counted = self._guarded(lambda: self._strategy.hit(item, _AUTH_FAILURES, address))
        if counted is False:
            raise self._auth_blocked(address)
        if counted:
            state = self._state(item, _AUTH_FAILURES, address)
            if state is not None and state.remaining == 0:
                logger.warning(
                    "Blocked authentication from %s for %d s after %d failed key or token checks",
                    address,
                    max(1, state.reset_after),
                    item.amount,
                )
                return True
        return False

    def _auth_blocked(self, address: str) -> RateLimited:
        item = self.auth_failure_item
        state = self._state(item, _AUTH_FAILURES, address)
        retry_after = item.get_expiry() if state is None else max(1, state.reset_after)
        return RateLimited(AUTH_BLOCKED_MESSAGE, headers={"Retry-After": str(retry_after)})

    # -- storage -----------------------------------------------------------------------------

    def _state(self, item: RateLimitItem, *identifiers: str) -> RateLimitState | None:
        stats = self._guarded(lambda: self._strategy.get_window_stats(item, *identifiers))
        if stats is None:
            return None
        expiry = item.get_expiry()
        # floor + 1, not ceil: the oldest entry still counts at exactly reset_time, so waiting
        # the whole number of seconds announced must always be enough.
        seconds = math.floor(stats.reset_time - self._clock()) + 1
        reset_after = min(expiry, max(0, seconds))
        return RateLimitState(item.amount, max(0, stats.remaining), reset_after)

    def _guarded(self, call: Callable[[], T]) -> T | None:
        """``call()``, or None while the storage is failing (fail open; logged, no key)."""
        if self._skip_until and time.monotonic() < self._skip_until:
            return None
        try:
            if self._serial is None:
                result = call()
            else:
                with self._serial:
                    result = call()
        except StorageError as exc:
            with self._lock:
                self._skip_until = time.monotonic() + self._retry_after_error
                self._down = True
            logger.error(
                "Rate-limit storage %s failed (%s): requests are not rate limited; "
                "retrying in %.0f s",
                self.location,
                type(exc.storage_error).__name__,
                self._retry_after_error,
            )
            return None
        if self._down:
            with self._lock:
                if self._down:
                    self._down = False
                    self._skip_until = 0.0
                    logger.warning("Rate-limit storage %s answers again", self.location)
        return result


# -- the default limiter ---------------------------------------------------------------------

_default: tuple[Settings, RateLimiter] | None = None
_default_lock = threading.Lock()


def get_rate_limiter() -> RateLimiter:
    """The process's limiter, built from the settings on first use and again whenever
    ``get_settings()`` returns new settings (after ``get_settings.cache_clear()``). Raises
    ``ConfigurationError`` for an unusable ``OPENCLAW_RATE_LIMIT_STORAGE``."""
    global _default
    settings = get_settings()
    with _default_lock:
        if _default is None or _default[0] is not settings:
            if _default is not None:
                _default[1].close()
            _default = (settings, RateLimiter.from_settings(settings))
        return _default[1]


def set_rate_limiter(limiter: RateLimiter | None) -> None:
    """Replace the default limiter (a host app's own, or None to rebuild from settings)."""
    global _default
    with _default_lock:
        if _default is not None and _default[1] is not limiter:
            _default[1].close()
        _default = None if limiter is None else (get_settings(), limiter)
