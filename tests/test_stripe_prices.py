"""The plan <-> price mapping is one table (``stripe_billing.client.PRICE_SETTINGS``), read
both ways: a checkout's price for a plan, and a subscription's plan for its prices."""

from __future__ import annotations

import pytest

from openclaw_billing.errors import PlanNotPurchasable, StripeNotConfigured
from openclaw_billing.plans import PlanId
from openclaw_billing.settings import Settings
from openclaw_billing.stripe_billing import client
from openclaw_billing.stripe_billing.client import (
    NOT_PURCHASABLE,
    PRICE_SETTINGS,
    plan_for_price,
    plan_for_prices,
    price_for_plan,
)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("STRIPE_PRICE_STARTER", "price_s")
    monkeypatch.setenv("STRIPE_PRICE_PRO", "price_p")
    return Settings()


def test_every_plan_has_a_price_setting_or_a_reason_not_to() -> None:
    assert set(PRICE_SETTINGS).isdisjoint(NOT_PURCHASABLE)
    assert set(PRICE_SETTINGS) | set(NOT_PURCHASABLE) == set(PlanId)
    for plan, field in PRICE_SETTINGS.items():
        info = Settings.model_fields[field]
        assert info.validation_alias == f"STRIPE_PRICE_{plan.value.upper()}"


def test_both_directions_read_the_table(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for plan in PRICE_SETTINGS:
        assert plan_for_price(settings, price_for_plan(settings, plan)) == plan
    # Swap the rows: both directions follow, with no other change.
    monkeypatch.setattr(
        client,
        "PRICE_SETTINGS",
        {PlanId.STARTER: "stripe_price_pro", PlanId.PRO: "stripe_price_starter"},
    )
    assert price_for_plan(settings, PlanId.STARTER) == "price_p"
    assert plan_for_price(settings, "price_s") == PlanId.PRO
    assert plan_for_prices(settings, ["price_x", "price_p", "price_s"]) == (PlanId.PRO, "price_s")


@pytest.mark.parametrize("plan", list(NOT_PURCHASABLE))
def test_a_plan_without_a_price_is_not_purchasable(settings: Settings, plan: PlanId) -> None:
    with pytest.raises(PlanNotPurchasable, match=NOT_PURCHASABLE[plan]):
        price_for_plan(settings, plan)


def test_an_unconfigured_price_is_refused_and_maps_to_no_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STRIPE_PRICE_STARTER", raising=False)
    monkeypatch.setenv("STRIPE_PRICE_PRO", "price_p")
    settings = Settings()
    with pytest.raises(StripeNotConfigured):
        price_for_plan(settings, PlanId.STARTER)
    assert plan_for_price(settings, None) is None
    assert plan_for_price(settings, "price_s") is None
    assert plan_for_price(settings, "price_p") == PlanId.PRO
