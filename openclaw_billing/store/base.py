"""The Store ABC: a small set of documented atomic primitives.

Every rule that must hold under concurrency is one primitive here; callers never
read-modify-write a record themselves. Records handed out are copies: changing one changes
nothing stored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import EllipsisType
from typing import Any, Generic, NamedTuple, TypeVar, cast

from ..audit import AuditLog, NewAuditEvent
from ..cycles import is_expired
from ..errors import BillingError
from ..jobs import Charged, NewJob
from ..models import ApiKeyRecord, ChargeResult, ClientRecord
from ..outcomes import MeterMark, Report, Settled
from ..plans import PlanId
from ..sessions import SessionStore
from . import changes
from .changes import Change
from .query import FIRST_PAGE, ClientQuery, StoreOverview

T = TypeVar("T")

#: Makes the audit event of a change from its result (None: nothing to record).
AuditFor = Callable[[T], NewAuditEvent | None]

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


@dataclass(frozen=True)
class Mutation(Generic[T]):
    """One change of one client, as :meth:`Store.mutate_batch` takes it: ``change`` (see
    :mod:`.changes`) applied at ``now``, and the audit event ``audit`` makes from its result."""

    client_id: str
    now: datetime
    change: Change[T]
    audit: AuditFor[T] | None = None


@dataclass(frozen=True)
class Charge:
    """One job's charge, as :meth:`Store.mutate_batch` takes it (the hot path: a backend may
    apply it without loading the whole record). Its outcome's result is a
    :class:`~openclaw_billing.jobs.Charged`. ``job``: the job to store in the same atomic
    step (see :mod:`openclaw_billing.jobs`); ``key_id``: the key the request was
    authenticated with, re-checked in that step."""

    client_id: str
    job_id: str
    cost: float
    now: datetime
    job: NewJob | None = None
    key_id: str | None = None


@dataclass(frozen=True)
class Settle:
    """One report of a job's progress or end, as :meth:`Store.mutate_batch` takes it (see
    :mod:`openclaw_billing.outcomes`): the job moves, and an ended job's hold is settled in
    its client's ledger, with the audit event ``audit`` makes, in one atomic step. Its
    outcome's result is a :class:`~openclaw_billing.outcomes.Settled`; a job not stored is
    ``JobNotFound``."""

    client_id: str
    job_id: str
    now: datetime
    report: Report
    audit: AuditFor[Settled] | None = None


@dataclass(frozen=True)
class MarkMeter:
    """What one attempt to send a settled job's usage to Stripe came to, as
    :meth:`Store.mutate_batch` takes it (see :func:`openclaw_billing.outcomes.mark_meter`):
    only the job's receipt's ``meter`` changes, never a credit, in one atomic step. Marking
    the same result again changes nothing. Its outcome's result is a
    :class:`~openclaw_billing.outcomes.Settled`; a job not stored is ``JobNotFound``."""

    client_id: str
    job_id: str
    now: datetime
    mark: MeterMark


#: What one entry of a batch may be.
Operation = Mutation[Any] | Charge | Settle | MarkMeter


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one mutation of a batch came to: its result, or the refusal that stopped it (and
    then nothing of it was stored)."""

    result: T | None = None
    error: BillingError | None = None

    def unwrap(self) -> T:
        """The result, or the refusal raised."""
        if self.error is not None:
            raise self.error
        return cast(T, self.result)


class Store(ABC):
    """Persistent clients and their ledgers. Implementations are safe to share between
    threads, and between processes that open the same location.

    A backend implements the abstract primitives (ten). ``mutate`` and ``charge`` are batches
    of one :meth:`mutate_batch`; the named admin actions (``add_credits``, ``issue_key`` ...) and
    ``refresh_cycle`` are concrete: each is one :meth:`mutate` with its change from
    :mod:`.changes`, so a new admin action widens neither this class nor any backend.
    Capabilities a backend may lack are protocols of their own (:mod:`.capabilities`)."""

    #: A short, secret-free description of where the data lives (for logs and health).
    location: str
    #: The append-only audit log, kept by the same backend (set by each implementation).
    audit: AuditLog
    #: The console's and the portal's sign-in sessions, kept by the same backend.
    sessions: SessionStore

    @abstractmethod
    def create_client(self, record: ClientRecord, *, audit: NewAuditEvent | None = None) -> None:
        """Insert a new client, and append ``audit`` to the audit log in the same atomic step.
        Raises ``DuplicateClient`` if the id or key digest exists."""

    @abstractmethod
    def mutate_batch(self, batch: Sequence[Operation]) -> list[Outcome[Any]]:
        """Apply each mutation (or :class:`Charge`) to its client, in order, in one atomic
        step: one transaction (SQL) or one file write and fsync (JSON) for the whole batch.
        Each mutation keeps its own outcome: a refused one (a ``BillingError`` from its change,
        ``ClientNotFound``, a record the store cannot hold) stores nothing of its own and leaves
        the others as they are; mutations of the same client see the ones before them.

        For each, under its client's lock: roll the cycle if due, apply ``change`` and keep the
        record with the audit event that ``audit`` makes from the change's result: either both
        are stored or neither is. An event is recorded even when the change left the record as
        it was (revoking a revoked key): the action was done and answered. A refusal from the
        change records no event, but still lets a due reset be written (changes validate before
        they mutate). Raises ``StoreUnavailable`` when the batch cannot be written: then none
        of it is stored."""

    def mutate(
        self,
        client_id: str,
        now: datetime,
        change: Change[T],
        *,
        audit: AuditFor[T] | None = None,
    ) -> T:
        """The one way to change a client: a batch of one (see :meth:`mutate_batch`). Returns
        the change's result or raises its refusal (``ClientNotFound`` included)."""
        [outcome] = self.mutate_batch([Mutation(client_id, now, change, audit)])
        return cast(T, outcome.unwrap())

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
    def list_clients(self, query: ClientQuery = FIRST_PAGE) -> tuple[list[ClientRecord], int]:
        """One page of the clients that match ``query``, in its order, and how many match
        (rules in :mod:`.query`). Records as stored: an ended cycle is not rolled."""

    @abstractmethod
    def overview(self, now: datetime) -> StoreOverview:
        """The figures of the whole store at ``now`` (see :class:`.query.StoreOverview`), from
        one snapshot; on SQL computed by the database, not by loading every record."""

    def refresh_cycle(self, client_id: str, now: datetime) -> ClientRecord:
        """Atomically start the current cycle if the stored one has ended (exactly once, however
        many callers race), and return the client. Raises ``ClientNotFound``."""
        current = self.get_client(client_id)
        if current is not None and not is_expired(current.billing_cycle_end, now):
            return current  # the read path: only a due reset needs the lock
        return self.mutate(client_id, now, changes.read)

    def charge(self, client_id: str, job_id: str, cost: float, now: datetime) -> ChargeResult:
        """Atomic check-and-charge of one job: roll the cycle if due, then charge one credit
        (unlimited plans: log only) and record ``job_id`` and ``cost`` in the ledger.

        A job id already charged returns its first result (``replayed=True``) and charges
        nothing. Raises ``CreditLimitReached``, ``ClientInactive`` or ``ClientNotFound``.
        """
        return self.accept(Charge(client_id, job_id, cost, now)).charge

    def accept(self, charge: Charge) -> Charged:
        """:meth:`charge`, storing ``charge.job`` with it in the same atomic step and
        re-checking ``charge.key_id`` (rules in :mod:`openclaw_billing.jobs`). A store without
        :class:`~.capabilities.JobStorage` refuses a job."""
        [outcome] = self.mutate_batch([charge])
        return cast(Charged, outcome.unwrap())

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
        max_active_jobs: int | EllipsisType | None = ...,
    ) -> ClientRecord:
        """Atomically set the client's rate-limit override and IP allowlist, and its cap of
        jobs queued or running (None: the plan's; ``...``: unchanged)."""
        change = changes.set_policy(
            now,
            rate_limit_per_minute=rate_limit_per_minute,
            ip_allowlist=ip_allowlist,
            max_active_jobs=max_active_jobs,
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
    def check(self) -> None:
        """Raise ``StoreUnavailable`` (or ``StoreCorrupt``) unless the store can be read now."""

    def close(self) -> None:  # noqa: B027 - optional hook; the JSON store holds nothing open
        """Release resources held by the store."""
