"""The billing rules: authenticate, can_submit, charge, add credits, reset, deactivate.

Plain Python: usable from the HTTP layer, the CLI and tests alike. Every rule that must hold
under concurrency is delegated to one atomic :class:`~openclaw_billing.store.Store` primitive.

The module-level functions at the bottom are the contract ``client_auth.py`` exports; they use
the process's default service (:func:`get_service`), built lazily from the settings.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime

from .cycles import first_cycle, utcnow
from .errors import ClientNotFound
from .keys import digest_key, digests_match, display_prefix, generate_key, is_well_formed
from .ledger import roll_cycle, submit_refusal
from .models import ChargeResult, ClientMetadata, ClientRecord, SubmitDecision
from .plans import PlanId, get_plan
from .settings import get_settings
from .store import Store, open_store

logger = logging.getLogger("openclaw_billing")

#: Bounds on what a caller may pass for a job (the ledger is the record of money).
MAX_JOB_ID_LENGTH = 200
MAX_JOB_COST = 1_000_000.0


class BillingService:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- clients ---------------------------------------------------------------------------

    def create_client(
        self, *, name: str, email: str, plan: PlanId, now: datetime | None = None
    ) -> tuple[ClientRecord, str]:
        """Create a client; returns the record and its plaintext key (shown once, never
        stored)."""
        now = now or utcnow()
        key = generate_key()
        start, end = first_cycle(now)
        allowance = get_plan(plan).jobs_per_month
        record = ClientRecord(
            client_id=str(uuid.uuid4()),
            name=name,
            email=email,
            api_key_hash=digest_key(key),
            api_key_prefix=display_prefix(key),
            plan=plan,
            credits_remaining=allowance,
            total_spent=0.0,
            created_at=now,
            updated_at=now,
            active=True,
            billing_cycle_start=start,
            billing_cycle_end=end,
            metadata=ClientMetadata(cycle_allowance=allowance),
        )
        self.store.create_client(record)
        logger.info("Created client %s (%s) on %s plan", record.client_id, name, plan.value)
        return record, key

    def get_client(self, client_id: str, *, now: datetime | None = None) -> ClientRecord:
        """The client with its cycle brought up to date. Raises ``ClientNotFound``."""
        return self.store.refresh_cycle(client_id, now or utcnow())

    def list_clients(
        self,
        *,
        active: bool | None = None,
        plan: PlanId | None = None,
        offset: int = 0,
        limit: int = 100,
        now: datetime | None = None,
    ) -> tuple[list[ClientRecord], int]:
        """A page of clients as they stand now: a cycle that has ended is shown reset (without
        writing; the write happens on the client's next access)."""
        now = now or utcnow()
        page, total = self.store.list_clients(active=active, plan=plan, offset=offset, limit=limit)
        for record in page:
            _roll_view(record, now)
        return page, total

    def add_credits(
        self, client_id: str, amount: int, reason: str, *, now: datetime | None = None
    ) -> ClientRecord:
        record = self.store.add_credits(client_id, amount, reason, now or utcnow())
        logger.info("Added %+d credits for %s: %r", amount, client_id, reason)
        return record

    def set_active(
        self, client_id: str, active: bool, *, now: datetime | None = None
    ) -> ClientRecord:
        record = self.store.set_active(client_id, active, now or utcnow())
        logger.info("%s client %s", "Reactivated" if active else "Deactivated", client_id)
        return record

    # -- the contract ----------------------------------------------------------------------

    def authenticate(self, api_key: str | None) -> ClientRecord | None:
        """The active client owning ``api_key``, or None for a missing, malformed, unknown or
        inactive key (all the same None)."""
        if not api_key or not is_well_formed(api_key):
            return None
        digest = digest_key(api_key)
        record = self.store.get_client_by_key_digest(digest)
        if record is None or not digests_match(record.api_key_hash, digest):
            return None
        if not record.active:
            return None
        return record

    def can_submit(self, client: ClientRecord, *, now: datetime | None = None) -> SubmitDecision:
        """Advisory: would a job be accepted now, and if not why. ``charge`` re-checks
        atomically, so acting on a stale answer can never overdraw."""
        current = self.store.get_client(client.client_id)
        if current is None:
            return SubmitDecision(False, ClientNotFound.message)
        _roll_view(current, now or utcnow())
        reason = submit_refusal(current)
        return SubmitDecision(reason is None, reason)

    def charge(
        self,
        client_id: str,
        *,
        job_id: str | None = None,
        cost: float = 0.0,
        now: datetime | None = None,
    ) -> ChargeResult:
        """Atomic check-and-charge of one job (see ``Store.charge``)."""
        job_id = job_id if job_id is not None else str(uuid.uuid4())
        if not job_id or len(job_id) > MAX_JOB_ID_LENGTH:
            raise ValueError(f"job_id must be 1 to {MAX_JOB_ID_LENGTH} characters")
        if not 0 <= cost <= MAX_JOB_COST:  # also refuses NaN
            raise ValueError(f"cost must be between 0 and {MAX_JOB_COST}")
        result = self.store.charge(client_id, job_id, float(cost), now or utcnow())
        if result.replayed:
            pass
        elif result.credits_remaining is None:
            logger.info("Logged job for %s (unlimited plan): job submission %s", client_id, job_id)
        else:
            logger.info("Deducted credit for %s: job submission %s", client_id, job_id)
        return result

    def refund(self, client_id: str, job_id: str, *, now: datetime | None = None) -> bool:
        """Give back the credit of a charged job that could not be queued."""
        refunded = self.store.refund(client_id, job_id, now or utcnow())
        if refunded:
            logger.warning("Refunded credit for %s: job %s was not queued", client_id, job_id)
        return refunded


def _roll_view(record: ClientRecord, now: datetime) -> None:
    """Apply a due reset to a copy, for display only (nothing is written or logged)."""
    roll_cycle(record, now)


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
            _default = BillingService(store)
        return _default


def set_service(service: BillingService | None) -> None:
    """Replace the default service (a host app's own store, or None to reopen from settings)."""
    global _default
    with _default_lock:
        if _default is not None and _default is not service:
            _default.store.close()
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
