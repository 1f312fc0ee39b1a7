"""The schemas of the operator's reads: the query of ``GET /api/admin/clients`` (filters,
search, order and page, as one model: every route and page that lists clients reads it the
same way) and ``GET /api/admin/overview``'s answer."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..audit import MAX_QUERY_LIMIT, MAX_QUERY_OFFSET
from ..models import UtcDatetime
from ..plans import PlanId
from ..reports import Overview
from ..safetext import ONE_LINE
from ..store.query import MAX_SEARCH_LENGTH, ClientQuery, ClientSort, ClientStatus

__all__ = ["ClientListQuery", "DayJobsPublic", "OverviewPublic", "PlanOverview"]


class ClientListQuery(BaseModel):
    """Which clients a list shows, in which order, which page (all optional). Unknown
    parameters are ignored, as on every route."""

    active: bool | None = Field(default=None, description="Only active (true) or inactive (false).")
    plan: PlanId | None = None
    # Bounded: a larger offset overflowed SQL's 64-bit OFFSET (a 500 on SQLite).
    offset: int = Field(default=0, ge=0, le=MAX_QUERY_OFFSET)
    limit: int = Field(default=100, ge=1, le=MAX_QUERY_LIMIT)
    search: str | None = Field(
        default=None,
        max_length=MAX_SEARCH_LENGTH,
        pattern=ONE_LINE,
        description="Part of the name or the email, in any case, or the start of the client id; "
        "every character is literal.",
    )
    status: ClientStatus | None = Field(
        default=None,
        description="active, inactive, past_due (the subscription is past due or unpaid) or "
        "at_limit (active, a limited plan, no credit left).",
    )
    sort: ClientSort = Field(
        default=ClientSort.CREATED,
        description="created (oldest first), newest, name, credits_left (fewest first, "
        "unlimited plans last), usage (most jobs this cycle first) or spend (most first); "
        "ties in creation order.",
    )

    def query(self) -> ClientQuery:
        """The store's query for these parameters."""
        return ClientQuery(**self.model_dump())


class PlanOverview(BaseModel):
    """One plan in the overview: its clients and what its subscriptions bring in a month."""

    plan: PlanId
    active_clients: int
    inactive_clients: int
    paying_subscriptions: int = Field(
        description="Clients with a Stripe subscription that is active, trialing or past_due."
    )
    price_usd: int | None = Field(description="The monthly price; null: priced by the operator.")
    mrr_usd: int | None = Field(
        description="paying_subscriptions x price_usd; null for a plan without a list price."
    )


class DayJobsPublic(BaseModel):
    day: date = Field(description="A UTC date.")
    jobs: int


_OVERVIEW_EXAMPLE: dict[str, Any] = {
    "at": "2026-11-24T21:45:00.000000+00:00",
    "clients": 4,
    "active_clients": 3,
    "inactive_clients": 1,
    "plans": [
        {
            "plan": plan,
            "active_clients": active,
            "inactive_clients": inactive,
            "paying_subscriptions": paying,
            "price_usd": price,
            "mrr_usd": mrr,
        }
        for plan, active, inactive, paying, price, mrr in (
            ("free", 1, 1, 0, 0, 0),
            ("starter", 1, 0, 1, 49, 49),
            ("pro", 1, 0, 1, 199, 199),
            ("enterprise", 0, 0, 0, None, None),
        )
    ],
    "mrr_usd": 248,
    "unpriced_subscriptions": 0,
    "jobs_this_cycle": 9,
    "credits_used_this_cycle": 9,
    "clients_at_limit": 1,
    "clients_past_due": 0,
    "jobs_by_day": [{"day": "2026-11-23", "jobs": 2}, {"day": "2026-11-24", "jobs": 7}],
}


class OverviewPublic(BaseModel):
    """The store's figures now. Counts read the stored state (a cycle that has ended but not
    yet been reset counts as it stands); ``jobs_by_day`` holds the last 30 UTC dates, oldest
    first, counted from each client's current and previous cycle's ledger (refunded jobs are
    not counted)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_OVERVIEW_EXAMPLE]})

    at: UtcDatetime
    clients: int
    active_clients: int
    inactive_clients: int
    plans: list[PlanOverview]
    mrr_usd: int = Field(description="Monthly recurring revenue of the plans with a list price.")
    unpriced_subscriptions: int = Field(
        description="Paying subscriptions of plans without a list price (not in mrr_usd)."
    )
    jobs_this_cycle: int = Field(
        description="Jobs in the active clients' cycles: held, charged or released."
    )
    credits_used_this_cycle: int = Field(
        description="Credits those jobs take on limited plans: held or charged, none released."
    )
    clients_at_limit: int = Field(description="Active, limited plan, no credit left.")
    clients_past_due: int = Field(description="Subscription past_due or unpaid.")
    jobs_by_day: list[DayJobsPublic] = Field(description="The last 30 UTC dates, oldest first.")

    @classmethod
    def of(cls, overview: Overview) -> OverviewPublic:
        return cls(
            at=overview.at,
            clients=overview.clients,
            active_clients=overview.active_clients,
            inactive_clients=overview.clients - overview.active_clients,
            plans=[
                PlanOverview(
                    plan=p.plan,
                    active_clients=p.active,
                    inactive_clients=p.inactive,
                    paying_subscriptions=p.paying,
                    price_usd=p.price_usd,
                    mrr_usd=p.mrr_usd,
                )
                for p in overview.plans
            ],
            mrr_usd=overview.mrr_usd,
            unpriced_subscriptions=overview.unpriced_subscriptions,
            jobs_this_cycle=overview.jobs_this_cycle,
            credits_used_this_cycle=overview.credits_used_this_cycle,
            clients_at_limit=overview.at_limit,
            clients_past_due=overview.past_due,
            jobs_by_day=[DayJobsPublic(day=d.day, jobs=d.jobs) for d in overview.jobs_by_day],
        )
