"""What some backends can do beyond the :class:`~.base.Store` primitives, as protocols of
their own (as ``limits`` keeps moving-window support apart from its storage base): code that
needs a capability checks for it with ``isinstance`` and refuses clearly when a store lacks it,
so a backend that cannot offer it still implements the whole Store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from ..jobs import StoredJob

#: At most this many clients' jobs answer ``JobStorage.jobs_by_id``.
MAX_SAME_ID = 10


@runtime_checkable
class EventIdTransfer(Protocol):
    """Hands over the processed Stripe event ids, so that a copy to another backend keeps
    every event applied once (:mod:`.migrate`). The JSON and SQL stores have it."""

    def stripe_event_ids(self) -> dict[str, datetime]:
        """Every remembered Stripe event id and when it was processed."""

    def import_stripe_event_ids(self, events: dict[str, datetime]) -> None:
        """Remember these event ids as processed; ids already known stay."""


@runtime_checkable
class JobStorage(Protocol):
    """Keeps the jobs accepted with their charges (``Store.accept`` with a job), in the same
    atomic step as the charge. The JSON and SQL stores have it."""

    def get_job(self, client_id: str, job_id: str) -> StoredJob | None:
        """The client's job with this id, or None (another client's job is not found)."""

    def client_jobs(self, client_id: str, since: datetime | None = None) -> list[StoredJob]:
        """The client's jobs created at ``since`` or later (None: all), oldest first."""

    def active_jobs(self, client_id: str) -> int:
        """How many of the client's jobs hold credits now (queued or running, hold not
        settled): what its concurrency cap counts, by the rule the reservation's atomic step
        applies (its code: the SQL store's ``COUNT``, the JSON store's holds by client), so
        what is shown is what is enforced. 0 for an unknown client."""

    def jobs_by_id(self, job_id: str) -> list[StoredJob]:
        """Every client's job with this id (ids are unique per client only), at most a few."""

    def expired_holds(self, now: datetime, limit: int) -> list[StoredJob]:
        """Up to ``limit`` jobs still queued or running whose hold ended before ``now``,
        the longest overdue first (what the sweeper releases)."""

    def pending_meter_reports(self, limit: int) -> list[StoredJob]:
        """Up to ``limit`` settled jobs whose usage is still to be reported to Stripe (their
        receipt's ``meter`` is ``pending``: the outbox, written with each settlement), those
        longest waiting first (what the meter sender sends)."""

    def import_jobs(self, jobs: Sequence[StoredJob]) -> int:
        """Store jobs accepted before jobs lived in the store (a job file's), those not
        stored yet; returns how many were new. Their charges are not touched."""
