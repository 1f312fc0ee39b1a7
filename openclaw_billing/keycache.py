"""This worker's memory of what the store said about recently presented keys, so that a
request's key check usually costs no store read (:meth:`BillingService.verify_key
<openclaw_billing.service.BillingService.verify_key>`).

Two bounded structures, one lock:

* **Known keys** (an LRU of at most :data:`MAX_CACHED_KEYS`): the digest of a key that is not
  revoked, of an active client, with the client's account record as
  ``get_client_by_key_digest(..., ledger=False)`` gave it. The verdict is not cached: every
  hit checks ``active`` and ``key.usable(now)`` again, so a key stops at its ``expires_at``
  exactly.
* **Refused digests** (at most :data:`MAX_REFUSED_KEYS`, oldest dropped first): a digest the
  store did not know, or a revoked key, or a key of an inactive client. Kept apart, so a flood
  of random keys only ever pushes out other refused digests, never a good key's entry.

An entry lives for ``seconds`` (``OPENCLAW_KEY_CACHE_SECONDS``) from the store read it came
from, however often it is used: that is the bound on how late this worker sees a change made
by another worker or instance (a revocation, a deactivation, a new allowlist or plan). A change
made through this process's service calls :meth:`KeyCache.forget_client` once it is written,
so this process sees it at once. ``seconds=0`` turns the cache off.

The cache saves the store read only: what the service answers, counts and audits for a key is
the same with it as without.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Final, NamedTuple

from .access import touch_due
from .models import ApiKeyRecord, ClientRecord

#: Known keys one worker keeps at most; past it the least recently used is dropped.
MAX_CACHED_KEYS: Final = 10_000
#: Refused digests one worker keeps at most; past it the oldest is dropped.
MAX_REFUSED_KEYS: Final = 10_000


class VerifiedKey(NamedTuple):
    """An accepted key: its client's account record and the id of the key itself."""

    client: ClientRecord
    key_id: str


class Refused(Enum):
    """The cache's answer for a digest the store refused a moment ago."""

    REFUSED = "refused"


REFUSED: Final = Refused.REFUSED


class Unanswered(Enum):
    """A key check from this worker's memory alone that needs the store after all: the key is
    not held (or held too long), or its last use is due to be written (see
    ``BillingService.verify_cached_key``)."""

    UNANSWERED = "unanswered"


UNANSWERED: Final = Unanswered.UNANSWERED


@dataclass(slots=True)
class _Known:
    # The record as JSON: a fifth of the memory of the model, and each hit validates a fresh
    # copy of it (faster than a deep copy), so no caller can change what the cache holds.
    raw: bytes
    client_id: str
    last_used_at: datetime | None  # the key's, kept in step by claim_touch
    until: float  # clock time after which the entry is no longer believed


class KeyCache:
    """Thread-safe; ``clock`` is monotonic seconds (a parameter for the tests)."""

    def __init__(
        self,
        seconds: float,
        *,
        max_keys: int = MAX_CACHED_KEYS,
        max_refused: int = MAX_REFUSED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not seconds >= 0 or max_keys < 1 or max_refused < 1:
            raise ValueError("seconds must be at least 0 and the sizes at least 1")
        self.seconds = seconds
        self.max_keys = max_keys
        self.max_refused = max_refused
        self._clock = clock
        self._lock = threading.Lock()
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._refused: OrderedDict[str, float] = OrderedDict()  # digest -> until
        self._digests_of: dict[str, set[str]] = {}  # client id -> its known digests
        self._generation = 0

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def __len__(self) -> int:
        """Known keys held (expired ones included until they are dropped)."""
        return len(self._known)

    @property
    def refused_count(self) -> int:
        return len(self._refused)

    def ticket(self) -> int:
        """Take before reading the store; :meth:`put` keeps the read only if no client was
        forgotten since (the read may predate that change)."""
        return self._generation

    def get(self, digest: str) -> tuple[ClientRecord, ApiKeyRecord] | Refused | None:
        """A copy of the known key's record and the key within it, :data:`REFUSED`, or None
        (not held, or held too long: read the store)."""
        if not self.enabled:
            return None
        with self._lock:
            now = self._clock()
            until = self._refused.get(digest)
            if until is not None:
                if now < until:
                    return REFUSED
                del self._refused[digest]
            entry = self._known.get(digest)
            if entry is None:
                return None
            if now >= entry.until:
                self._drop(digest)
                return None
            self._known.move_to_end(digest)
            raw, last_used_at = entry.raw, entry.last_used_at
        record = ClientRecord.model_validate_json(raw)
        key = record.key_by_digest(digest)
        assert key is not None  # the entry was stored with this very key
        key.last_used_at = last_used_at
        return record, key

    def put(self, digest: str, record: ClientRecord | None, ticket: int) -> None:
        """Remember what the store said about ``digest`` (``record``: its client, or None),
        unless a client was forgotten since ``ticket``."""
        if not self.enabled:
            return
        key = None if record is None else record.key_by_digest(digest)
        known = None
        if record is not None and key is not None and key.revoked_at is None and record.active:
            known = _Known(record.model_dump_json().encode(), record.client_id, key.last_used_at, 0)
        with self._lock:
            if ticket != self._generation:
                return
            now = self._clock()
            until = now + self.seconds
            self._drop(digest)
            if known is None:
                self._refused[digest] = until
                self._refused.move_to_end(digest)
                while len(self._refused) > self.max_refused:
                    self._refused.popitem(last=False)
                return
            self._refused.pop(digest, None)
            known.until = until
            self._known[digest] = known
            self._digests_of.setdefault(known.client_id, set()).add(digest)
            while len(self._known) > self.max_keys or self._oldest_expired(now):
                self._drop(next(iter(self._known)))

    def claim_touch(self, digest: str, last_used_at: datetime | None, now: datetime) -> bool:
        """Whether the key's last use is due to be written at ``now`` (at most once per
        ``KEY_TOUCH_INTERVAL``): by the cached key's ``last_used_at`` if it is held, else by
        ``last_used_at``. When due, the cached key notes ``now`` at once, so the requests that
        follow do not write it again."""
        with self._lock:
            entry = self._known.get(digest)
            if entry is not None:
                last_used_at = entry.last_used_at
            if not touch_due(last_used_at, now):
                return False
            if entry is not None:
                entry.last_used_at = now
            return True

    def forget_client(self, client_id: str) -> None:
        """Drop the client's known keys and every refused digest (a reactivated client's keys
        may be among them): the client was changed through this process."""
        with self._lock:
            self._generation += 1
            for digest in list(self._digests_of.get(client_id, ())):
                self._drop(digest)
            self._refused.clear()

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._known.clear()
            self._refused.clear()
            self._digests_of.clear()

    def _oldest_expired(self, now: float) -> bool:
        """Whether the least recently used entry has outlived its time (dropped on a put, so
        keys no longer used do not stay in memory until the LRU pushes them out)."""
        oldest = next(iter(self._known.values()), None)
        return oldest is not None and now >= oldest.until

    def _drop(self, digest: str) -> None:
        entry = self._known.pop(digest, None)
        if entry is None:
            return
        digests = self._digests_of.get(entry.client_id)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self._digests_of[entry.client_id]
