"""Orchestration over the store: :class:`BillingService` authenticates a key, decides whether
a client may submit, charges and refunds jobs, and reads clients and the audit log. The rules
themselves are the pure transitions of :mod:`openclaw_billing.ledger` and
:mod:`openclaw_billing.access`; each is applied by one atomic
:class:`~openclaw_billing.store.Store` primitive, so it holds under concurrency.

Plain Python: usable from the HTTP layer, the CLI and tests alike.

The admin actions (create a client, credits, (de)activate, keys, plan, policy) live in
:mod:`openclaw_billing.admin`, the charges in :mod:`openclaw_billing.charges` and charging by
outcome in :mod:`openclaw_billing.job_actions`: each stores its audit event with its change,
in one step; the job quotes (a price and its signed quote id) in
:mod:`openclaw_billing.quotes`; a client's jobs as its pages read them in
:mod:`openclaw_billing.job_reads`.

The module-level functions at the bottom are the contract ``client_auth.py`` exports; they use
the process's default service (:func:`get_service`), built lazily from the settings.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta

from .access import touch_due
from .audit import AuditAction, AuditEvent, AuditQuery, DetailValue
from .committer import CommitterKind, new_committer
from .cycles import as_utc, resolve_now, utcnow
from .errors import BillingError, ClientNotFound, InvalidRequest
from .job_actions import JobActions
from .job_reads import JobReads
from .keycache import REFUSED, UNANSWERED, KeyCache, Unanswered, VerifiedKey
from .keys import digest_key, digests_match, is_well_formed
from .ledger import refusal_of, roll_cycle
from .models import ChargeResult, ClientRecord, SubmitDecision
from .net import IPNetwork, address_allowed, parse_networks
from .quotes import QuoteActions
from .reports import Overview, overview_of
from .settings import get_settings
from .store import Store, open_store
from .store.query import FIRST_PAGE, ClientQuery

logger = logging.getLogger("openclaw_billing")

Detail = Mapping[str, DetailValue]  # the facts of an audit event


class BillingService(JobActions, QuoteActions, JobReads):
    """``key_cache``: this worker's cache of verified keys (by default one of its own, for
    ``OPENCLAW_KEY_CACHE_SECONDS``; see :mod:`.keycache`). Copies made by :meth:`as_actor`
    share it. ``hold_ttl``: how long every job reserved through this service holds its price
    (``OPENCLAW_HOLD_TTL_SECONDS``; None: each plan's own time to live)."""

    def __init__(
        self,
        store: Store,
        *,
        committer: CommitterKind = "thread",
        key_cache: KeyCache | None = None,
    ) -> None:
        self.store = store
        #: Commits this process's charges in batches (see :mod:`.committer`).
        self.committer = new_committer(store, committer)
        settings = get_settings()
        if key_cache is None:
            key_cache = KeyCache(settings.key_cache_seconds)
        self.key_cache = key_cache
        self.hold_ttl: timedelta | None = settings.hold_ttl

    def close(self) -> None:
        """Commit what is queued, then close the store."""
        self.committer.close()
        self.store.close()

    # -- clients ---------------------------------------------------------------------------

    def get_client(self, client_id: str, *, now: datetime | None = None) -> ClientRecord:
        """The client with its cycle brought up to date. Raises ``ClientNotFound``."""
        return self.store.refresh_cycle(client_id, resolve_now(now, utcnow))

    def list_clients(
        self, query: ClientQuery = FIRST_PAGE, *, now: datetime | None = None
    ) -> tuple[list[ClientRecord], int]:
        """A page of clients (see :class:`~.store.ClientQuery`) as they stand now: a cycle that
        has ended is shown reset (without writing; the write happens on the client's next
        access). Filters and orders read the stored state (see :mod:`.store.query`)."""
        now = resolve_now(now, utcnow)
        page, total = self.store.list_clients(query)
        for record in page:
            _roll_view(record, now)
        return page, total

    def overview(self, *, now: datetime | None = None) -> Overview:
        """The store's figures at ``now`` with the monthly recurring revenue of each plan."""
        now = resolve_now(now, utcnow)
        return overview_of(self.store.overview(now), now)

    # -- the contract ----------------------------------------------------------------------

    def authenticate(
        self, api_key: str | None, *, now: datetime | None = None, ledger: bool = True
    ) -> ClientRecord | None:
        """The active client owning ``api_key``, or None for a missing, malformed, unknown,
        revoked or expired key or an inactive client (all the same None).

        ``ledger=False`` is authentication only (the HTTP dependency, :meth:`verify_key`): the
        record's ledger parts may be empty (see ``Store.get_client_by_key_digest``), so the
        cost of a request does not grow with the jobs the client has run this cycle, and the
        answer may come from this worker's key cache. ``ledger=True`` always reads the store."""
        verified = self.verify_key(api_key, now=now, ledger=ledger)
        return None if verified is None else verified.client

    def verify_key(
        self, api_key: str | None, *, now: datetime | None = None, ledger: bool = False
    ) -> VerifiedKey | None:
        """The active client owning ``api_key`` and the id of that key, or None (as
        :meth:`authenticate`).

        Without the ledger, what the store said about the key is taken from this worker's
        :class:`~.keycache.KeyCache` while it is at most ``OPENCLAW_KEY_CACHE_SECONDS`` old
        (changes made through this service drop the client's entries at once). Every answer
        checks the client's status and the key's revocation and expiry at ``now``: a key
        stops at its ``expires_at`` exactly, cached or not. The key's last use is recorded at
        most once per ``KEY_TOUCH_INTERVAL`` either way."""
        verified = self._verify_key(
            api_key, resolve_now(now, utcnow), ledger=ledger, cache_only=False
        )
        assert verified is not UNANSWERED  # only a check from the cache alone leaves it open
        return verified

    def verify_cached_key(
        self, api_key: str | None, *, now: datetime | None = None
    ) -> VerifiedKey | Unanswered | None:
        """:meth:`verify_key` from this worker's cache alone, never reading or writing the
        store: its answer, or :data:`~.keycache.UNANSWERED` when that answer needs the store
        (the key is not held or held too long, or its last use is due to be written). One
        look at the cache: what it answers cannot change under it."""
        return self._verify_key(api_key, resolve_now(now, utcnow), ledger=False, cache_only=True)

    def _verify_key(
        self, api_key: str | None, now: datetime, *, ledger: bool, cache_only: bool
    ) -> VerifiedKey | Unanswered | None:
        """The one rule of :meth:`verify_key` and :meth:`verify_cached_key`."""
        if not api_key or not is_well_formed(api_key):
            return None
        digest = digest_key(api_key)
        cached = None if ledger else self.key_cache.get(digest)
        if cached is REFUSED:
            return None
        if cached is None:
            if cache_only:
                return UNANSWERED
            ticket = self.key_cache.ticket()
            record = self.store.get_client_by_key_digest(digest, ledger=ledger)
            key = None if record is None else record.key_by_digest(digest)
            if key is not None and not digests_match(key.digest, digest):
                record = key = None
            if not ledger:
                self.key_cache.put(digest, record, ticket)
        else:
            record, key = cached
        if record is None or key is None or not record.active or not key.usable(now):
            return None
        if cache_only:
            # The copy's last use is the cache's at the look: a claim made since only moved
            # it later, so a use not due then is not due now.
            if touch_due(key.last_used_at, now):
                return UNANSWERED
        elif self.key_cache.claim_touch(digest, key.last_used_at, now):
            self._touch(record.client_id, key.key_id, now)
        return VerifiedKey(record, key.key_id)

    def _touch(self, client_id: str, key_id: str, now: datetime) -> None:
        # Best effort: a busy store must not turn a valid key into a refused request.
        try:
            self.store.touch_key(client_id, key_id, now)
        except BillingError as exc:
            logger.warning("Could not record the last use of key %s: %s", key_id, exc.code)

    @staticmethod
    def address_allowed(record: ClientRecord, address: str) -> bool:
        """True when the client's IP allowlist is empty or holds ``address``."""
        if not record.ip_allowlist:
            return True
        return address_allowed(address, _allowlist(tuple(record.ip_allowlist)))

    def can_submit(self, client: ClientRecord, *, now: datetime | None = None) -> SubmitDecision:
        """Advisory: would a job be accepted now, and if not why. ``charge`` re-checks
        atomically, so acting on a stale answer can never overdraw."""
        current = self.store.get_client(client.client_id)
        if current is None:
            return SubmitDecision(False, ClientNotFound.message)
        _roll_view(current, resolve_now(now, utcnow))
        refused = refusal_of(current)
        return SubmitDecision(refused is None, None if refused is None else refused.reason)

    # -- audit log -------------------------------------------------------------------------

    def record_audit(
        self,
        action: AuditAction,
        *,
        client_id: str | None = None,
        actor: str,
        source: str,
        detail: Detail | None = None,
        now: datetime | None = None,
    ) -> AuditEvent | None:
        """Append an event that is not a change of the store (an authentication failure) to
        the audit log, durably, and return it with its id. (An admin action's event is stored
        with its change instead: see :mod:`openclaw_billing.admin`.)

        ``actor`` is ``ADMIN_ACTOR``, ``client_actor(client_id)`` or ``ANONYMOUS_ACTOR``;
        ``source`` the resolved client address; ``detail`` a few non-secret facts. What it is
        given never makes it raise (see :meth:`_event`). It raises only when the log cannot
        be written (``StoreUnavailable``, ``StoreCorrupt``)."""
        # Not resolve_now: what it is given never makes it raise; the event reads a time
        # without a zone as UTC, as audit queries do.
        event = self._event(action, client_id, source, now or utcnow(), detail, actor=actor)
        return None if event is None else self.store.audit.append(event)

    def audit_events(self, wanted: AuditQuery | None = None) -> tuple[list[AuditEvent], int]:
        """A page of audit events, newest first (the first page of all of them by default),
        and how many match (``since <= at < until``; a time without a zone is taken as UTC).
        A range that ends before it starts is the caller's mistake (``InvalidRequest``), not
        an empty page."""
        wanted = wanted or AuditQuery()
        since, until = _utc(wanted.since), _utc(wanted.until)
        if since is not None and until is not None and since > until:
            raise InvalidRequest("since must not be after until")
        return self.store.audit.query(
            client_id=wanted.client_id,
            action=wanted.action,
            since=since,
            until=until,
            offset=wanted.offset,
            limit=wanted.limit,
        )


@functools.lru_cache(maxsize=1024)
def _allowlist(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """A stored allowlist, parsed once rather than on each of the client's requests."""
    return parse_networks(entries, "ip_allowlist")


def _roll_view(record: ClientRecord, now: datetime) -> None:
    """Apply a due reset to a copy, for display only (nothing is written or logged)."""
    roll_cycle(record, now)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


# -- the default service --------------------------------------------------------------------

_default: BillingService | None = None
_default_lock = threading.Lock()


def get_service() -> BillingService:
    """The process's service over the store ``OPENCLAW_BILLING_DB`` names, opened on first
    use. Opening validates the store: a corrupt file raises ``StoreCorrupt`` here."""
    global _default
    with _default_lock:
        if _default is None:
            settings = get_settings()
            store = open_store(settings.billing_db, lock_timeout=settings.store_lock_timeout)
            logger.info("Billing store: %s", store.location)
            _default = BillingService(store, committer=settings.committer)
        return _default


def set_service(service: BillingService | None) -> None:
    """Replace the default service (a host app's own store, or None to reopen from settings)."""
    global _default
    with _default_lock:
        if _default is not None and _default is not service:
            _default.close()
        _default = service


def get_client_by_api_key(api_key: str | None) -> ClientRecord | None:
    """The active client owning ``api_key``, or None (unknown, malformed, inactive: all None).

    The key is looked up by its SHA-256 digest and confirmed with a constant-time compare.
    """
    return get_service().authenticate(api_key)


def can_submit_job(client: ClientRecord) -> SubmitDecision:
    """Advisory: ``allowed, reason = can_submit_job(client)``. ``deduct_job_credit`` is the
    atomic check; a stale ``True`` here can never overdraw."""
    return get_service().can_submit(client)


def deduct_job_credit(client_id: str, job_id: str | None = None, cost: float = 0.0) -> ChargeResult:
    """Atomically check and charge one job to ``client_id``'s plan.

    Records ``job_id`` and ``cost`` in the ledger and ``total_spent``. Enterprise is never
    decremented but its jobs and costs are logged. A ``job_id`` already charged is not charged
    again: the first result comes back with ``replayed=True``. Raises ``CreditLimitReached``
    when nothing is left, ``ClientInactive`` or ``ClientNotFound``.
    """
    return get_service().charge(client_id, job_id=job_id, cost=cost)


def refund_job_credit(client_id: str, job_id: str) -> bool:
    """Give back the credit and cost of a job charged in the current cycle that could not be
    run (e.g. it failed to queue). Returns False, changing nothing, if the job id is not in the
    current cycle's ledger."""
    return get_service().refund(client_id, job_id)


__all__ = [
    "BillingService",
    "can_submit_job",
    "deduct_job_credit",
    "get_client_by_api_key",
    "get_service",
    "refund_job_credit",
    "set_service",
]
