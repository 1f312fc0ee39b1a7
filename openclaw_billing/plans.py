"""The plan catalogue: free 5, starter 50, pro 200, enterprise unlimited jobs per month, and
each plan's default request rate (10, 60, 300, 1200 requests per minute)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PlanId(StrEnum):
    FREE = "free"
    STARTER = "starter"
    PRO = "pro"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True, slots=True)
class Plan:
    id: PlanId
    name: str
    #: Monthly price in whole US dollars; None means priced by the operator ("Custom").
    price_usd: int | None
    #: Jobs per billing cycle; None means unlimited (never decremented, still logged).
    jobs_per_month: int | None
    #: How long a client can see its past jobs; None means forever.
    history_days: int | None
    features: tuple[str, ...]
    #: Requests per minute a client may make on the routes that take its key (one moving
    #: window per client); a client's ``rate_limit_per_minute`` overrides it.
    requests_per_minute: int

    @property
    def price_label(self) -> str:
        return "Custom" if self.price_usd is None else f"${self.price_usd}"

    @property
    def unlimited(self) -> bool:
        return self.jobs_per_month is None


PLANS: dict[PlanId, Plan] = {
    PlanId.FREE: Plan(PlanId.FREE, "Free", 0, 5, 1, ("Basic submission", "24h history"), 10),
    PlanId.STARTER: Plan(
        PlanId.STARTER, "Starter", 49, 50, 30, ("Priority support", "30-day history"), 60
    ),
    PlanId.PRO: Plan(
        PlanId.PRO, "Pro", 199, 200, 90, ("24/7 support", "analytics", "webhooks"), 300
    ),
    PlanId.ENTERPRISE: Plan(
        PlanId.ENTERPRISE,
        "Enterprise",
        None,
        None,
        None,
        ("Dedicated support", "forever history"),
        1200,
    ),
}


def get_plan(plan_id: PlanId | str) -> Plan:
    """The plan for an id; raises ValueError for an unknown id."""
    return PLANS[PlanId(plan_id)]
