"""The operator's figures: the store's overview (:class:`~.store.StoreOverview`) with the
monthly recurring revenue of each plan added by the price rule of the catalogue
(:mod:`.plans`): a plan's paying subscriptions times its monthly price. The store counts; the
price is applied here, so a price change never touches a backend.

A plan priced by the operator (enterprise, ``price_usd`` None: "Custom") has no revenue
figure: its paying subscriptions are counted apart (``unpriced_subscriptions``), not in the
total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .plans import PLANS, PlanId
from .store.query import DayJobs, StoreOverview

__all__ = ["Overview", "PlanRevenue", "overview_of"]


@dataclass(frozen=True)
class PlanRevenue:
    """One plan: its clients, its paying subscriptions and what they bring in a month."""

    plan: PlanId
    active: int
    inactive: int
    #: Clients with a Stripe subscription that is active, trialing or past due.
    paying: int
    #: The plan's monthly price (``PLANS``); None: priced by the operator.
    price_usd: int | None
    #: ``paying * price_usd``; None when the plan has no list price.
    mrr_usd: int | None


@dataclass(frozen=True)
class Overview:
    """The console's overview at ``at`` (see :class:`~.store.StoreOverview` for what each
    count covers)."""

    at: datetime
    plans: tuple[PlanRevenue, ...]
    #: Monthly recurring revenue of the plans with a list price, in whole US dollars.
    mrr_usd: int
    #: Paying subscriptions of plans without a list price (not in ``mrr_usd``).
    unpriced_subscriptions: int
    jobs_this_cycle: int
    credits_used_this_cycle: int
    at_limit: int
    past_due: int
    jobs_by_day: tuple[DayJobs, ...]

    @property
    def clients(self) -> int:
        return sum(p.active + p.inactive for p in self.plans)

    @property
    def active_clients(self) -> int:
        return sum(p.active for p in self.plans)


def overview_of(figures: StoreOverview, at: datetime) -> Overview:
    """The store's figures with each plan's revenue by its price in ``PLANS``."""
    plans = []
    for p in figures.plans:
        price = PLANS[p.plan].price_usd
        mrr = None if price is None else p.paying * price
        plans.append(PlanRevenue(p.plan, p.active, p.inactive, p.paying, price, mrr))
    return Overview(
        at=at,
        plans=tuple(plans),
        mrr_usd=sum(p.mrr_usd for p in plans if p.mrr_usd is not None),
        unpriced_subscriptions=sum(p.paying for p in plans if p.mrr_usd is None),
        jobs_this_cycle=figures.jobs_this_cycle,
        credits_used_this_cycle=figures.credits_used_this_cycle,
        at_limit=figures.at_limit,
        past_due=figures.past_due,
        jobs_by_day=figures.jobs_by_day,
    )
