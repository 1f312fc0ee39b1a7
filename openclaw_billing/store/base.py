"""The Store ABC: a small set of documented atomic primitives.

Every rule that must hold under concurrency is one primitive here; callers never
read-modify-write a record themselves. Records handed out are copies: changing one changes
nothing stored.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple, TypeVar

from .. import access, ledger
from ..audit import AuditLog, NewAuditEvent
from ..cycles import is_expired
from ..errors import BillingError
from ..models import ApiKeyRecord, ChargeResult, ClientRecord, CycleSummary
from ..plans import PlanId
from . import changes
from .changes import Change

T = TypeVar("T")

#: Makes the audit event of a change from its result (None: nothing to record).
AuditFor = Callable[[T], NewAuditEvent | None]
#: Writes a changed record (None: unchanged) and appends an audit event (None: none), at once.
Write = Callable[[ClientRecord | None, NewAuditEvent | None], None]

#: How long processed Stripe event ids are remembered (Stripe retries for up to 3 days).
EVENT_ID_RETENTION = timedelta(days=35)


class StripeRef(NamedTuple):
    """What an event says about whose it is; the store tries each, in this order."""

    client_id: str | None
    subscription_id: str | None
    customer_id: str | None


class EventOutcome(StrEnum):
    APPLIED = "applied"
    #: This event id was applied before: nothing changes.
    DUPLICATE = "duplicate"
    #: Older than the newest event applied to the client: recorded, nothing changes.
    STALE = "stale"
    #: No client matches: nothing changes (and the id is not recorded).
    UNMATCHED = "unmatched"


class Store(ABC):
    """Persistent clients and their ledgers. Implementations are safe to share between
    threads, and between processes that open the same location.

    A backend implements the abstract primitives (twelve). The named admin actions
    (``add_credits``, ``issue_key`` ...) and ``refresh_cycle`` are concrete: each is one
    :meth:`mutate` with its change from :mod:`.changes`, so a new admin action widens neither
    this class nor any backend."""

    #: A short, secret-free description of where the data lives (for logs and health).
    location: str
    #: The append-only audit log, kept by the same backend (set by each implementation).
    audit: AuditLog

    @abstractmethod
    def create_client(self, record: ClientRecord, *, audit: NewAuditEvent | None = None) -> None:
        """Insert a new client, and append ``audit`` to the audit log in the same atomic step.
        Raises ``DuplicateClient`` if the id or key digest exists."""

    @abstractmethod
    def mutate(
        self,
        client_id: str,
        now: datetime,
        change: Change[T],
        *,
        audit: AuditFor[T] | None = None,
    ) -> T:
        """The one way to change a client: under its lock, roll the cycle if due, apply
        ``change`` (see :mod:`.changes`) and write the record once, with the audit event that
        ``audit`` makes from the change's result, in the same transaction (SQL) or the same
        file write (JSON; see ``JsonFileStore``). Either both are stored or neither is.

        An event is recorded even when the change left the record as it was (revoking a
        revoked key): the action was done and answered. A ``BillingError`` from ``change``
        records no event, but still lets a due reset be written (changes validate before they
        mutate). Raises ``ClientNotFound``, and ``StoreUnavailable`` when either write fails.
        """

    @abstractmethod
    def get_client(self, client_id: str) -> ClientRecord | None:
        """The stored client, or None. Does not roll the cycle."""

    @abstractmethod
    def get_client_by_key_digest(self, digest: str, *, ledger: bool = True) -> ClientRecord | None:
        """The client whose key has this SHA-256 hex digest, or None (active or not).

        With ``ledger=False`` the record's ledger parts (``metadata.cost_log``,
        ``credit_adjustments`` and ``cycle_history``) may be left empty: what authentication
        needs, at a cost that does not grow with the client's usage. Everything else is
        complete."""

    @abstractmethod
    def list_clients(
        self,
        *,
        active: bool | None = None,
        plan: PlanId | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[ClientRecord], int]:
        """One page of clients in creation order, and the total that match the filters."""

    def refresh_cycle(self, client_id: str, now: datetime) -> ClientRecord:
        """Atomically start the current cycle if the stored one has ended (exactly once, however
        many callers race), and return the client. Raises ``ClientNotFound``."""
        current = self.get_client(client_id)
        if current is not None and not is_expired(current.billing_cycle_end, now):
            return current  # the read path: only a due reset needs the lock
        return self.mutate(client_id, now, changes.read)

    @abstractmethod
    def charge(self, client_id: str, job_id: str, cost: float, now: datetime) -> ChargeResult:
        """Atomic check-and-charge of one job: roll the cycle if due, then charge one credit
        (unlimited plans: log only) and record ``job_id`` and ``cost`` in the ledger.

        A job id already charged returns its first result (``replayed=True``) and charges
        nothing. Raises ``CreditLimitReached``, ``ClientInactive`` or ``ClientNotFound``.
        """

    def refund(self, client_id: str, job_id: str, now: datetime) -> bool:
        """Atomically undo the current cycle's charge of ``job_id`` (its job could not be
        queued): remove the ledger entry, give back the credit and the cost. Returns False (and
        changes nothing) if the job id is not in the current cycle's ledger."""
        return self.mutate(client_id, now, changes.refund(job_id, now))

    def add_credits(self, client_id: str, amount: int, reason: str, now: datetime) -> ClientRecord:
        """Atomically roll the cycle if due, then adjust credits with a logged reason.

        Raises ``UnlimitedPlan``, ``InsufficientCredits`` (a negative amount past zero) or
        ``ClientNotFound``."""
        return self.mutate(client_id, now, changes.add_credits(amount, reason, now))

    def set_active(self, client_id: str, active: bool, now: datetime) -> ClientRecord:
        """Atomically activate or deactivate (soft delete) a client. Raises ``ClientNotFound``."""
        return self.mutate(client_id, now, changes.set_active(active, now))

    # -- access: keys, policy, plan (pure transitions in openclaw_billing.access) -------------

    def issue_key(self, client_id: str, key: ApiKeyRecord, now: datetime) -> ClientRecord:
        """Atomically add a key (digest only). Raises ``TooManyKeys``, ``ClientNotFound``."""
        return self.mutate(client_id, now, changes.issue_key(key, now))

    def rotate_key(
        self, client_id: str, key_id: str, new: ApiKeyRecord, grace: timedelta, now: datetime
    ) -> ClientRecord:
        """Atomically add ``new`` and let ``key_id`` work only until ``now + grace``. Raises
        ``KeyNotFound``, ``KeyRevoked``, ``TooManyKeys``, ``ClientNotFound``."""
        return self.mutate(client_id, now, changes.rotate_key(key_id, new, grace, now))

    def revoke_key(self, client_id: str, key_id: str, now: datetime) -> ClientRecord:
        """Atomically stop a key at once (idempotent). Raises ``KeyNotFound``."""
        return self.mutate(client_id, now, changes.revoke_key(key_id, now))

    def set_key_expiry(
        self, client_id: str, key_id: str, expires_at: datetime | None, now: datetime
    ) -> ClientRecord:
        """Atomically set or clear a usable key's expiry. Raises ``KeyNotFound``,
        ``KeyRevoked``."""
        return self.mutate(client_id, now, changes.set_key_expiry(key_id, expires_at, now))

    @abstractmethod
    def touch_key(self, client_id: str, key_id: str, now: datetime) -> None:
        """Record a use of the key, written at most once per ``KEY_TOUCH_INTERVAL``."""

    def set_policy(
        self,
        client_id: str,
        now: datetime,
        *,
        rate_limit_per_minute: int | None,
        ip_allowlist: list[str],
    ) -> ClientRecord:
        """Atomically set the client's rate-limit override and IP allowlist."""
        change = changes.set_policy(
            now, rate_limit_per_minute=rate_limit_per_minute, ip_allowlist=ip_allowlist
        )
        return self.mutate(client_id, now, change)

    def change_plan(
        self, client_id: str, plan: PlanId, now: datetime
    ) -> tuple[PlanId, ClientRecord]:
        """Atomically move the client to ``plan`` within its cycle (an operator's change);
        returns the plan it left, as it was under the lock, and the record. Raises
        ``AlreadyOnPlan``, ``SubscriptionExists``, ``ClientNotFound``."""
        return self.mutate(client_id, now, changes.change_plan(plan, now))

    @abstractmethod
    def find_client_by_stripe(
        self, *, customer_id: str | None = None, subscription_id: str | None = None
    ) -> ClientRecord | None:
        """The client linked to this Stripe subscription (preferred) or customer, or None."""

    @abstractmethod
    def apply_stripe_event(
        self,
        event_id: str,
        ref: StripeRef,
        created: int,
        change: Callable[[ClientRecord], None],
        now: datetime,
        *,
        ordered: bool = True,
    ) -> tuple[EventOutcome, str | None]:
        """Apply a verified Stripe event exactly once, in one atomic step.

        Finds the client (``ref``: client id, then subscription id, then customer id), rolls
        its cycle if due, then: an event id seen before is ``DUPLICATE``; an ``ordered`` event
        ``created`` before the newest one applied to this client is ``STALE`` (so a late, older
        event never overwrites newer state); otherwise ``change`` is applied and the newest
        ``created`` remembered. ``ordered=False`` is for a change that is right whenever it
        arrives (it acts on objects as Stripe has them now and only ever moves one way: a paid
        period, a refund, a dispute's current status): it is never stale. The event id is
        recorded in the same write as the change. Returns the outcome and the client id (None
        when ``UNMATCHED``).
        """

    @abstractmethod
    def stripe_event_ids(self) -> dict[str, datetime]:
        """Every remembered Stripe event id and when it was processed (for migration)."""

    @abstractmethod
    def import_stripe_event_ids(self, events: dict[str, datetime]) -> None:
        """Remember these event ids as processed (for migration); ids already known stay."""

    @abstractmethod
    def check(self) -> None:
        """Raise ``StoreUnavailable`` (or ``StoreCorrupt``) unless the store can be read now."""

    def close(self) -> None:  # noqa: B027 - optional hook; the JSON store holds nothing open
        """Release resources held by the store."""


class MutatingStore(Store):
    """:meth:`Store.mutate` (and ``touch_key``) for a backend that can lock, load and write one
    client: lock it, roll its cycle if due, apply a change (:mod:`.changes`), write it once,
    with its audit event if it has one. A backend supplies only the locking, loading and
    writing (:meth:`_edit`); the rules live here."""

    @abstractmethod
    def _edit(self, client_id: str) -> AbstractContextManager[tuple[ClientRecord, Write]]:
        """Hold the client's lock; yield a copy of its record and a function that writes a
        changed copy back and appends an audit event, in one atomic step (called at most
        once, inside the block). Raises ``ClientNotFound``."""

    def mutate(
        self,
        client_id: str,
        now: datetime,
        change: Change[T],
        *,
        audit: AuditFor[T] | None = None,
    ) -> T:
        error: BillingError | None = None
        with self._edit(client_id) as (record, write):
            reset = ledger.roll_cycle(record, now)
            dirty = reset is not None
            event = None
            try:
                result, changed = change(record)
                dirty = dirty or changed
                if audit is not None:
                    event = audit(result)
            except BillingError as exc:
                error = exc
            if dirty or event is not None:
                write(record if dirty else None, event)
        if reset is not None:
            log_cycle_reset(record)
        if error is not None:
            raise error
        return result

    def touch_key(self, client_id: str, key_id: str, now: datetime) -> None:
        # A note of use, not an access to the account: no cycle roll, no updated_at.
        with self._edit(client_id) as (record, write):
            if access.touch_key(record, key_id, now):
                write(record, None)


def apply_event_change(
    record: ClientRecord,
    created: int,
    change: Callable[[ClientRecord], None],
    now: datetime,
    *,
    ordered: bool = True,
) -> tuple[EventOutcome, CycleSummary | None]:
    """The rules of ``Store.apply_stripe_event`` once the client is locked and the event id is
    known to be new: roll the cycle if due, then apply ``change`` unless the event is ordered
    and older than the newest one applied (``STALE``). Returns the outcome and the reset, if
    any."""
    reset = ledger.roll_cycle(record, now)
    last = record.metadata.stripe_event_at
    if ordered and last is not None and created < last:
        return EventOutcome.STALE, reset
    change(record)
    record.metadata.stripe_event_at = created if last is None else max(last, created)
    return EventOutcome.APPLIED, reset


def log_cycle_reset(record: ClientRecord) -> None:
    """The summary's log line for a cycle reset, written once per reset by every backend."""
    allowance = record.metadata.cycle_allowance  # what the new cycle started with
    jobs = "unlimited" if allowance is None else allowance
    logging.getLogger("openclaw_billing").info(
        "Reset monthly credits for %s: %s jobs", record.client_id, jobs
    )
