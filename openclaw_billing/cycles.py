"""Billing-cycle arithmetic. Pure functions; every one takes ``now`` explicitly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

CYCLE_LENGTH = timedelta(days=30)


def utcnow() -> datetime:
    return datetime.now(UTC)


def resolve_now(now: datetime | None, clock: Callable[[], datetime] = utcnow) -> datetime:
    """The time an action happens at: ``now`` when given (a host's or a test's clock), else
    ``clock()`` (the caller's module's ``utcnow``, which tests replace). A ``now`` without a
    time zone is refused with ``ValueError``: every stored time has one, and comparing the two
    would fail later, in the store (for a charge, inside the batch it is committed with)."""
    if now is None:
        return clock()
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ValueError("now must be a datetime with a time zone, e.g. datetime.now(UTC)")
    return now


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a time without a zone (an old file's, a query parameter's) is UTC.
    Raises ``OverflowError`` when the instant is outside the calendar in UTC (a valid
    ``9999-12-31T23:59:59-23:59`` is in the year 10000); callers say what that means."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def later(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, or the last representable instant when that is past the year 9999
    (a stored time near the end of the calendar must not make every later read fail)."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=moment.tzinfo)


def first_cycle(now: datetime) -> tuple[datetime, datetime]:
    """The cycle a client created at ``now`` starts with."""
    return now, later(now, CYCLE_LENGTH)


def is_expired(cycle_end: datetime, now: datetime) -> bool:
    return now >= cycle_end


def cycle_containing(anchor: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The 30-day cycle, on the grid that starts at ``anchor``, that contains ``now``.

    A cycle that ended long ago jumps straight to the current one (not one cycle at a time).
    A ``now`` before the anchor (a clock step backwards) keeps the anchor's cycle.
    """
    steps = max(0, (now - anchor) // CYCLE_LENGTH)
    start = later(anchor, steps * CYCLE_LENGTH)
    return start, later(start, CYCLE_LENGTH)
