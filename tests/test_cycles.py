from __future__ import annotations

from datetime import UTC, datetime, timedelta

from openclaw_billing import cycles

T0 = datetime(2026, 2, 19, 10, 30, tzinfo=UTC)


def test_first_cycle_is_thirty_days() -> None:
    assert cycles.first_cycle(T0) == (T0, T0 + timedelta(days=30))


def test_cycle_containing_stays_on_the_thirty_day_grid() -> None:
    assert cycles.cycle_containing(T0, T0) == (T0, T0 + timedelta(days=30))
    just_before = T0 + timedelta(days=30) - timedelta(microseconds=1)
    assert cycles.cycle_containing(T0, just_before)[0] == T0
    assert cycles.cycle_containing(T0, T0 + timedelta(days=30))[0] == T0 + timedelta(days=30)


def test_a_long_expired_cycle_jumps_to_the_current_one() -> None:
    start, end = cycles.cycle_containing(T0, T0 + timedelta(days=365))
    assert start == T0 + timedelta(days=360)
    assert end == T0 + timedelta(days=390)


def test_a_clock_before_the_anchor_keeps_the_anchor_cycle() -> None:
    assert cycles.cycle_containing(T0, T0 - timedelta(days=3))[0] == T0


def test_expiry_is_at_the_end_instant() -> None:
    end = T0 + timedelta(days=30)
    assert not cycles.is_expired(end, end - timedelta(microseconds=1))
    assert cycles.is_expired(end, end)
