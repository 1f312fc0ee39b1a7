"""The charge-eligibility rule, written once (``ledger.Refusal`` and ``ledger.refusal``): the
order of its checks, the error each refusal raises and the usage status it shows."""

from __future__ import annotations

import itertools

import pytest

from openclaw_billing import errors, ledger
from openclaw_billing.api.schemas import UsagePublic
from openclaw_billing.ledger import Refusal
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from tests.store_helpers import T0, make_record

ERRORS = {
    Refusal.INACTIVE: errors.ClientInactive,
    Refusal.PAST_DUE: errors.PaymentPastDue,
    Refusal.DISPUTED: errors.PaymentDisputed,
    Refusal.PAUSED: errors.SubscriptionPaused,
    Refusal.LIMIT_REACHED: errors.CreditLimitReached,
    Refusal.AT_CONCURRENCY_CAP: errors.ConcurrencyLimitReached,
}
#: What the usage view can show: the concurrency cap is decided with the jobs, in the
#: reservation's step (tests/test_outcomes.py).
RECORD_REFUSALS = [r for r in Refusal if r is not Refusal.AT_CONCURRENCY_CAP]


def _record(active: bool, status: str | None, disputed: bool, credits: int) -> ClientRecord:
    record, _ = make_record("c1", PlanId.STARTER, allowance=credits, active=active)
    record.metadata.subscription_status = status
    if disputed:
        extra = record.metadata.model_extra
        assert extra is not None
        extra[ledger.OPEN_DISPUTES] = ["dp_1"]
    return record


def _expected(active: bool, status: str | None, disputed: bool, credits: int) -> Refusal | None:
    """The rule as the docs state it, in its order: the first that applies wins."""
    checks = [
        (not active, Refusal.INACTIVE),
        (status in ("past_due", "unpaid"), Refusal.PAST_DUE),
        (disputed, Refusal.DISPUTED),
        (status == "paused", Refusal.PAUSED),
        (credits <= 0, Refusal.LIMIT_REACHED),
    ]
    return next((refusal for applies, refusal in checks if applies), None)


CASES = list(
    itertools.product(
        [True, False], [None, "active", "past_due", "unpaid", "paused"], [False, True], [0, 3]
    )
)


@pytest.mark.parametrize(("active", "status", "disputed", "credits"), CASES)
def test_one_rule_for_charge_can_submit_and_usage(
    active: bool, status: str | None, disputed: bool, credits: int
) -> None:
    """``charge`` raises the refusal's error, the usage view shows its status and
    ``can_submit`` is false, for every combination of the fields the rule reads."""
    expected = _expected(active, status, disputed, credits)
    record = _record(active, status, disputed, credits)
    assert ledger.refusal_of(record) is expected
    usage = UsagePublic.of(record)
    assert usage.can_submit is (expected is None)
    if expected is None:
        assert usage.status == "active"
        assert ledger.charge(record, "job-1", 0.5, T0).credits_remaining == credits - 1
    else:
        assert usage.status == expected.value
        before = record.model_copy(deep=True)
        with pytest.raises(ERRORS[expected]):
            ledger.charge(record, "job-1", 0.5, T0)
        assert record == before


@pytest.mark.parametrize("refusal", RECORD_REFUSALS)
def test_rewording_a_message_changes_no_status(
    refusal: Refusal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usage status is the refusal's, not looked up by the error's message text."""
    monkeypatch.setattr(ERRORS[refusal], "message", "Reworded")
    active, status, disputed, credits = {
        Refusal.INACTIVE: (False, None, False, 3),
        Refusal.PAST_DUE: (True, "past_due", False, 3),
        Refusal.DISPUTED: (True, None, True, 3),
        Refusal.PAUSED: (True, "paused", False, 3),
        Refusal.LIMIT_REACHED: (True, None, False, 0),
    }[refusal]
    usage = UsagePublic.of(_record(active, status, disputed, credits))
    assert (usage.status, usage.can_submit) == (refusal.value, False)


def test_each_refusal_knows_its_error() -> None:
    assert {refusal: refusal.error for refusal in Refusal} == ERRORS
