"""The plan catalogue: free 5, starter 50, pro 200, enterprise unlimited jobs per month, and
each plan's default request rate (10, 60, 300, 1200 requests per minute).

Charging by outcome (see :mod:`.outcomes`) reads four more things of a plan, each here and
nowhere else:

* **prices**: a job's price in credits by its task type and priority (:meth:`Plan.price`);
  by default every job costs 1 credit, so a plan's allowance is its jobs per month;
* **the outcome policy**: which ends of a job are charged and which release its hold
  (:class:`Settlement`; by default a success, a client error and a cancel once running are
  charged; an infrastructure failure, a timeout, a cancel before start and an expired hold
  are released in full);
* **the hold's time to live** (24 hours by default): a hold not settled by then is released
  and its job becomes ``expired``;
* **concurrency**: how many of a client's jobs may be queued or running at once (free 1,
  starter 2, pro 5, enterprise unlimited; an admin may set another cap per client);
* **metered rates**: credits per unit of measured usage (for example tokens); none by
  default, so a job settles at its reserved price.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType


class PlanId(StrEnum):
    FREE = "free"
    STARTER = "starter"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class Settlement(StrEnum):
    """What ending a job a certain way does with its hold."""

    #: The job is charged: its metered cost, at most its reservation and its ``max_credits``.
    CHARGE = "charge"
    #: The hold is released in full: the client pays nothing for the job.
    RELEASE = "release"


#: How a job may end, as the outcome policy names it (``failed:<failure class>``).
SUCCEEDED = "succeeded"
CANCELLED_BEFORE_START = "cancelled_before_start"
CANCELLED_AFTER_START = "cancelled_after_start"
TIMED_OUT = "timed_out"
EXPIRED = "expired"
FAILED_PREFIX = "failed:"

#: The failure classes a runner may report, and what each does by default.
FAILURE_CLASSES = ("infrastructure", "client_error")

DEFAULT_POLICY: Mapping[str, Settlement] = MappingProxyType(
    {
        SUCCEEDED: Settlement.CHARGE,
        "failed:infrastructure": Settlement.RELEASE,
        "failed:client_error": Settlement.CHARGE,
        TIMED_OUT: Settlement.RELEASE,
        CANCELLED_BEFORE_START: Settlement.RELEASE,
        CANCELLED_AFTER_START: Settlement.CHARGE,
        EXPIRED: Settlement.RELEASE,
    }
)

#: How long a hold lasts unless the plan says otherwise.
DEFAULT_HOLD = timedelta(hours=24)

#: The largest price a job may have, in credits (bounds the price table and ``max_credits``).
MAX_JOB_CREDITS = 1_000_000

_NO_PRICES: Mapping[str, int] = MappingProxyType({})


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
    #: Jobs queued or running at once per client; None means no cap.
    max_active_jobs: int | None = None
    #: A job's price in credits by task type (``"*"``: every other type; 1 if absent) ...
    task_prices: Mapping[str, int] = field(default_factory=lambda: _NO_PRICES)
    #: ... plus a surcharge by priority (``P0`` .. ``P3``; 0 if absent).
    priority_surcharges: Mapping[str, int] = field(default_factory=lambda: _NO_PRICES)
    #: What each end of a job does with its hold (keys as in ``DEFAULT_POLICY``).
    outcome_policy: Mapping[str, Settlement] = field(default_factory=lambda: DEFAULT_POLICY)
    #: How long a hold lasts before it is released and its job expires.
    hold_ttl: timedelta = DEFAULT_HOLD
    #: Credits per unit of measured usage, by usage name (for example ``tokens_out``).
    usage_rates: Mapping[str, float] = field(default_factory=lambda: _NO_PRICES)

    @property
    def default_price(self) -> int:
        """The price of a job whose task type is not listed (``"*"``, else 1)."""
        return self.task_prices.get("*", 1)

    def price(self, task_type: str | None, priority: str | None) -> int:
        """A job's price in credits: its task type's price plus its priority's surcharge,
        at least 1 and at most ``MAX_JOB_CREDITS``."""
        base = self.task_prices.get(task_type or "", self.default_price)
        total = base + self.priority_surcharges.get(priority or "", 0)
        return min(max(total, 1), MAX_JOB_CREDITS)

    def settlement(self, outcome: str) -> Settlement:
        """What the end ``outcome`` does with a hold (an end the policy does not name is
        charged, as a success is)."""
        return self.outcome_policy.get(outcome, Settlement.CHARGE)

    def metered_credits(self, usage: Mapping[str, int]) -> int | None:
        """The credits measured ``usage`` comes to by the plan's rates (rounded up), or None
        when the plan meters none of it (the job then settles at its reservation)."""
        rated = [
            self.usage_rates[name] * units
            for name, units in usage.items()
            if name in self.usage_rates
        ]
        if not rated:
            return None
        return min(math.ceil(sum(rated) - 1e-9), 2**62)

    @property
    def price_label(self) -> str:
        return "Custom" if self.price_usd is None else f"${self.price_usd}"

    @property
    def unlimited(self) -> bool:
        return self.jobs_per_month is None


PLANS: dict[PlanId, Plan] = {
    PlanId.FREE: Plan(
        PlanId.FREE, "Free", 0, 5, 1, ("Basic submission", "24h history"), 10, max_active_jobs=1
    ),
    PlanId.STARTER: Plan(
        PlanId.STARTER,
        "Starter",
        49,
        50,
        30,
        ("Priority support", "30-day history"),
        60,
        max_active_jobs=2,
    ),
    PlanId.PRO: Plan(
        PlanId.PRO,
        "Pro",
        199,
        200,
        90,
        ("24/7 support", "analytics", "webhooks"),
        300,
        max_active_jobs=5,
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
