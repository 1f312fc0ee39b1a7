"""The marks of a job's usage report (openclaw_billing.outcomes.mark_meter), as a rule: what
each attempt's result makes of the receipt's ``meter`` when workers send the same report at
once, answer late, or mark the same result again. The sender and the stores:
tests/test_meter_outbox.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from openclaw_billing.jobs import (
    MAX_SENDING,
    JobStatus,
    MeterReport,
    MeterState,
    Receipt,
    StoredJob,
)
from openclaw_billing.outcomes import MeterMark, mark_meter
from tests.store_helpers import T0

LATER = T0 + timedelta(hours=1)


def _reported_job(state: MeterState = MeterState.PENDING, attempts: int = 0) -> StoredJob:
    """A settled job with 5 credits beyond its reservation, its report in ``state``."""
    meter = MeterReport(state=state, customer_id="cus_1", attempts=attempts)
    receipt = Receipt(
        reserved=10,
        hold_until=T0,
        max_credits=30,
        charged=10,
        released=0,
        metered=15,
        overage=5,
        settled_at=T0,
        meter=meter,
    )
    return StoredJob(
        client_id="c1", job_id="j1", created_at=T0, status=JobStatus.SUCCEEDED, receipt=receipt
    )


def _state(job: StoredJob) -> tuple[MeterState, int, str | None]:
    assert job.receipt is not None
    assert job.receipt.meter is not None
    return job.receipt.meter.state, job.receipt.meter.attempts, job.receipt.meter.code


def test_a_mark_marked_again_changes_nothing() -> None:
    reported = mark_meter(_reported_job(), MeterMark(1, MeterState.REPORTED), LATER)
    again = mark_meter(reported.job, MeterMark(1, MeterState.REPORTED), LATER + timedelta(1))
    assert reported.changed
    assert not again.changed
    assert again.job == reported.job


@pytest.mark.parametrize(
    "late",
    [MeterMark(1, MeterState.PENDING, "api_error"), MeterMark(1, MeterState.FAILED, "x")],
)
def test_reported_is_final_whatever_another_worker_says(late: MeterMark) -> None:
    reported = mark_meter(_reported_job(), MeterMark(1, MeterState.REPORTED), LATER).job
    assert not mark_meter(reported, late, LATER).changed


def test_a_failed_report_gives_way_only_to_reported() -> None:
    failed = mark_meter(_reported_job(), MeterMark(1, MeterState.FAILED, "bad"), LATER).job
    assert _state(failed) == (MeterState.FAILED, 1, "bad")
    assert not mark_meter(failed, MeterMark(2, MeterState.PENDING, "api_error"), LATER).changed
    reported = mark_meter(failed, MeterMark(1, MeterState.REPORTED), LATER).job
    assert _state(reported) == (MeterState.REPORTED, 1, None)


def test_attempts_are_the_highest_marked_and_a_late_answer_changes_nothing() -> None:
    second = _reported_job(attempts=2)
    assert not mark_meter(second, MeterMark(1, MeterState.FAILED, "late"), LATER).changed
    third = mark_meter(second, MeterMark(3, MeterState.PENDING, "rate_limit"), LATER).job
    assert _state(third) == (MeterState.PENDING, 3, "rate_limit")


@pytest.mark.parametrize("state", [MeterState.NOT_BILLED, MeterState.REPORTED])
def test_a_report_not_pending_is_not_marked_pending(state: MeterState) -> None:
    assert not mark_meter(_reported_job(state), MeterMark(1, MeterState.PENDING), LATER).changed


def test_a_mark_is_an_attempt_that_ended() -> None:
    with pytest.raises(ValueError, match="a mark is an attempt"):
        MeterMark(1, MeterState.NOT_BILLED)
    with pytest.raises(ValueError, match="a mark is an attempt"):
        MeterMark(0, MeterState.REPORTED)


def _sending(job: StoredJob, started: datetime) -> StoredJob:
    return mark_meter(
        job, MeterMark(1, MeterState.PENDING, None, started, answered=False), LATER
    ).job


def _doubt(job: StoredJob) -> tuple[datetime | None, tuple[datetime, ...]]:
    assert job.receipt is not None
    assert job.receipt.meter is not None
    return job.receipt.meter.unconfirmed_since, job.receipt.meter.sending


def test_an_attempt_is_in_doubt_from_before_it_is_sent_until_stripe_certainly_lacks_it() -> None:
    a, b = LATER, LATER + timedelta(seconds=1)
    both = _sending(_sending(_reported_job(), a), b)  # two workers send at once
    assert _doubt(both) == (None, (a, b))
    refused = MeterMark(1, MeterState.PENDING, None, a)  # a connection refused: nothing sent
    lost = MeterMark(1, MeterState.PENDING, None, b, maybe_recorded=True)  # no answer
    after = mark_meter(mark_meter(both, refused, LATER).job, lost, LATER).job
    assert _doubt(after) == (b, ())
    assert after.receipt is not None
    assert after.receipt.meter is not None
    assert after.receipt.meter.doubt_since == b
    reported = mark_meter(after, MeterMark(2, MeterState.REPORTED), LATER).job
    assert _doubt(reported) == (None, ())


def test_a_late_answer_still_settles_its_own_doubt() -> None:
    job = _sending(_reported_job(attempts=2), LATER)
    late = MeterMark(1, MeterState.PENDING, "api_error", LATER, maybe_recorded=True)
    assert _doubt(mark_meter(job, late, LATER).job) == (LATER, ())
    assert _state(mark_meter(job, late, LATER).job) == (MeterState.PENDING, 2, None)


def test_unanswered_attempts_beyond_the_bound_are_kept_as_unconfirmed() -> None:
    job = _reported_job()
    starts = [LATER + timedelta(seconds=n) for n in range(MAX_SENDING + 2)]
    for started in starts:
        job = _sending(job, started)
    assert _doubt(job) == (starts[0], tuple(starts[2:]))  # the earliest folded is kept
    assert job.receipt is not None
    assert job.receipt.meter is not None
    assert job.receipt.meter.doubt_since == starts[0]


def test_an_attempt_about_to_be_sent_is_pending_with_its_start() -> None:
    with pytest.raises(ValueError, match="about to be sent"):
        MeterMark(1, MeterState.REPORTED, started_at=LATER, answered=False)
    with pytest.raises(ValueError, match="about to be sent"):
        MeterMark(1, MeterState.PENDING, answered=False)
