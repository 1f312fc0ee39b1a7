"""The admin transitions as changes for ``Store.mutate``: each applies a pure transition of
:mod:`openclaw_billing.ledger` or :mod:`openclaw_billing.access` to the locked record and
returns its result and whether it changed the record.

One definition per action, used both by the store's named primitives (``add_credits`` ...)
and by the service, which hands the same change to ``mutate`` with the action's audit event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from types import EllipsisType
from typing import TypeVar

from .. import access, ledger
from ..models import ApiKeyRecord, ClientRecord
from ..plans import PlanId

T = TypeVar("T")

#: Applied under the client's lock to a copy of its record (cycle already rolled); returns the
#: result and whether the record changed. It validates before it mutates.
Change = Callable[[ClientRecord], tuple[T, bool]]


def _snapshot(record: ClientRecord, changed: bool | None) -> tuple[ClientRecord, bool]:
    """The record as the caller gets it (a copy), and whether it changed (None: it did)."""
    return record.model_copy(deep=True), changed is not False


def add_credits(amount: int, reason: str, now: datetime) -> Change[ClientRecord]:
    def change(record: ClientRecord) -> tuple[ClientRecord, bool]:
        ledger.add_credits(record, amount, reason, now)
        return _snapshot(record, True)

    return change


def set_active(active: bool, now: datetime) -> Change[ClientRecord]:
    return lambda record: _snapshot(record, ledger.set_active(record, active, now))


def refund(job_id: str, now: datetime) -> Change[bool]:
    def change(record: ClientRecord) -> tuple[bool, bool]:
        refunded = ledger.refund(record, job_id, now)
        return refunded, refunded

    return change


def issue_key(key: ApiKeyRecord, now: datetime) -> Change[ClientRecord]:
    def change(record: ClientRecord) -> tuple[ClientRecord, bool]:
        access.issue_key(record, key, now)
        return _snapshot(record, True)

    return change


def rotate_key(
    key_id: str, new: ApiKeyRecord, grace: timedelta, now: datetime
) -> Change[ClientRecord]:
    def change(record: ClientRecord) -> tuple[ClientRecord, bool]:
        access.rotate_key(record, key_id, new, grace, now)
        return _snapshot(record, True)

    return change


def revoke_key(key_id: str, now: datetime) -> Change[ClientRecord]:
    return lambda record: _snapshot(record, access.revoke_key(record, key_id, now))


def set_key_expiry(key_id: str, expires_at: datetime | None, now: datetime) -> Change[ClientRecord]:
    def change(record: ClientRecord) -> tuple[ClientRecord, bool]:
        access.set_key_expiry(record, key_id, expires_at, now)
        return _snapshot(record, True)

    return change


def set_policy(
    now: datetime,
    *,
    rate_limit_per_minute: int | None,
    ip_allowlist: list[str],
    max_active_jobs: int | EllipsisType | None = ...,
) -> Change[ClientRecord]:
    def change(record: ClientRecord) -> tuple[ClientRecord, bool]:
        changed = access.set_policy(
            record,
            now,
            rate_limit_per_minute=rate_limit_per_minute,
            ip_allowlist=ip_allowlist,
            max_active_jobs=max_active_jobs,
        )
        return _snapshot(record, changed)

    return change


def change_plan(plan: PlanId, now: datetime) -> Change[tuple[PlanId, ClientRecord]]:
    """Returns the plan the client left, as it was under the lock, and the record."""

    def change(record: ClientRecord) -> tuple[tuple[PlanId, ClientRecord], bool]:
        left = record.plan
        access.admin_change_plan(record, plan, now)
        return (left, record.model_copy(deep=True)), True

    return change


def read(record: ClientRecord) -> tuple[ClientRecord, bool]:
    """No change: the record as it stands once its cycle is rolled."""
    return record.model_copy(deep=True), False
