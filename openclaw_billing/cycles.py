"""Billing-cycle arithmetic. Pure functions; every one takes ``now`` explicitly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

CYCLE_LENGTH = timedelta(days=30)


def utcnow() -> datetime:
    return datetime.now(UTC)


def first_cycle(now: datetime) -> tuple[datetime, datetime]:
    """The cycle a client created at ``now`` starts with."""
    return now, now + CYCLE_LENGTH


def is_expired(cycle_end: datetime, now: datetime) -> bool:
    return now >= cycle_end


def cycle_containing(anchor: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The 30-day cycle, on the grid that starts at ``anchor``, that contains ``now``.

    A cycle that ended long ago jumps straight to the current one (not one cycle at a time).
    A ``now`` before the anchor (a clock step backwards) keeps the anchor's cycle.
    """
    steps = max(0, (now - anchor) // CYCLE_LENGTH)
    start = anchor + steps * CYCLE_LENGTH
    return start, start + CYCLE_LENGTH
