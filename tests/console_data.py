"""One store's worth of clients for the operator's reads (``Store.list_clients`` with a
``ClientQuery``, ``Store.overview``), built through the store's own primitives with explicit
times, and what each read must answer, worked out by hand below.

Ten clients, in creation order (``IDS``). Times are from ``T0`` (2026-02-19 10:30 UTC); the
overview is read at ``NOW`` = T0 + 15 days (2026-03-06), so its 30 days run from 2026-02-05
to 2026-03-06.

=========  ========================  ==========  ==================================================
id         name                      plan        what happens
=========  ========================  ==========  ==================================================
c01        Acme Corp                 pro         3 jobs: 02-20 (1.0), 02-20 (2.0), 02-22 (0.5)
c02        bolt_works                free        5 jobs on 02-21 (cost 0): at its limit
c03        Zeta Enterprise           enterprise  3 jobs 02-23 (5.0), 02-23 (2.0), 02-24 (1.0); the
                                                 second refunded
c04        Déjà Vu Ltd               starter     1 job 02-20 (2.0), then deactivated
c05        ACME Subsidiary           starter     subscription sub_5, past_due
c06        100% Real\\Deal            pro         subscription sub_6, active; 1 job 03-01 (4.0)
c07        Trial_Co Straße           starter     subscription sub_7, trialing
acme-8     Seven Seas                pro         subscription sub_8, canceled; 1 job 03-05 (0.5)
c09        SEVEN SEAS                pro         created 40 days before T0: jobs 01-11, 02-07 in
                                                 its first cycle, 02-14 in its second (1.0 each)
c10        Short Cycles              pro         job 02-20; to enterprise (a new cycle); job
                                                 02-22; back to pro (a new cycle); job 02-24
                                                 (0.25 each): its first job is two cycles back
=========  ========================  ==========  ==================================================
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.store import Store
from openclaw_billing.store.base import StripeRef
from tests.store_helpers import T0, make_record

DAY = timedelta(days=1)
NOW = T0 + 15 * DAY
IDS = ["c01", "c02", "c03", "c04", "c05", "c06", "c07", "acme-8", "c09", "c10"]
#: (id, name, email, plan, created)
CLIENTS = [
    ("c01", "Acme Corp", "ops@acme.example", PlanId.PRO, T0),
    ("c02", "bolt_works", "bolt@bolt.example", PlanId.FREE, T0),
    ("c03", "Zeta Enterprise", "zeta@zeta.example", PlanId.ENTERPRISE, T0),
    ("c04", "Déjà Vu Ltd", "deja@vu.example", PlanId.STARTER, T0),
    ("c05", "ACME Subsidiary", "billing@sub.example", PlanId.STARTER, T0),
    ("c06", "100% Real\\Deal", "real@deal.example", PlanId.PRO, T0),
    ("c07", "Trial_Co Straße", "trial@trial.example", PlanId.STARTER, T0),
    ("acme-8", "Seven Seas", "seas@seven.example", PlanId.PRO, T0),
    ("c09", "SEVEN SEAS", "old@timer.example", PlanId.PRO, T0 - 40 * DAY),
    ("c10", "Short Cycles", "short@cycles.example", PlanId.PRO, T0),
]


def subscribe(subscription: str, status: str) -> Callable[[ClientRecord], None]:
    def change(record: ClientRecord) -> None:
        record.stripe_customer_id = f"cus_{subscription}"
        record.stripe_subscription_id = subscription
        record.metadata.subscription_status = status

    return change


def build(store: Store) -> None:
    """The ten clients and what happens to them (see the module docstring)."""
    for n, (client_id, name, email, plan, created) in enumerate(CLIENTS):
        record, _ = make_record(client_id, plan, now=created + n * timedelta(seconds=1))
        record.name, record.email = name, email
        store.create_client(record)
    for job, at, cost in (("j1", 1, 1.0), ("j2", 1.04, 2.0), ("j3", 3, 0.5)):
        store.charge("c01", job, cost, T0 + at * DAY)
    for n in range(5):
        store.charge("c02", f"f{n}", 0.0, T0 + 2 * DAY + n * timedelta(minutes=1))
    for job, at, cost in (("e1", 4, 5.0), ("e2", 4.1, 2.0), ("e3", 5, 1.0)):
        store.charge("c03", job, cost, T0 + at * DAY)
    store.refund("c03", "e2", T0 + 5 * DAY)
    store.charge("c04", "d1", 2.0, T0 + DAY)
    store.set_active("c04", False, T0 + 6 * DAY)
    for n, (client_id, status) in enumerate(
        (("c05", "past_due"), ("c06", "active"), ("c07", "trialing"), ("acme-8", "canceled"))
    ):
        ref = StripeRef(client_id, None, None)
        sub = f"sub_{client_id[-1]}"
        store.apply_stripe_event(f"evt_{n}", ref, 1_000 + n, subscribe(sub, status), T0 + DAY)
    store.charge("c06", "r1", 4.0, T0 + 10 * DAY)
    store.charge("acme-8", "s1", 0.5, T0 + 14 * DAY)
    for job, at in (("o1", -39), ("o2", -12), ("o3", -5)):  # the third starts its 2nd cycle
        store.charge("c09", job, 1.0, T0 + at * DAY)
    store.charge("c10", "s1", 0.25, T0 + DAY)
    store.change_plan("c10", PlanId.ENTERPRISE, T0 + 2 * DAY)
    store.charge("c10", "s2", 0.25, T0 + 3 * DAY)
    store.change_plan("c10", PlanId.PRO, T0 + 4 * DAY)
    store.charge("c10", "s3", 0.25, T0 + 5 * DAY)


# -- what the reads answer ---------------------------------------------------------------------

#: Folded names in code point order; c09 ties acme-8 and comes after it (creation order).
BY_NAME = ["c06", "c01", "c05", "c02", "c04", "acme-8", "c09", "c10", "c07", "c03"]
#: Credits 0, 49, 50, 50, 197, 199 x4, then the unlimited c03.
BY_CREDITS_LEFT = ["c02", "c04", "c05", "c07", "c01", "c06", "acme-8", "c09", "c10", "c03"]
#: Jobs of the stored cycle: 5, 3, 2, 1 x5, 0 x2.
BY_USAGE = ["c02", "c01", "c03", "c04", "c06", "acme-8", "c09", "c10", "c05", "c07"]
#: total_spent: 6.0, 4.0, 3.5, 3.0, 2.0, 0.75, 0.5, 0 x3.
BY_SPEND = ["c03", "c06", "c01", "c09", "c04", "c10", "acme-8", "c02", "c05", "c07"]

#: (plan, active, inactive, paying): c05 (past_due) and c07 (trialing) pay for starter, c06
#: for pro; acme-8's canceled subscription does not count.
PLAN_FIGURES = [
    (PlanId.FREE, 1, 0, 0),
    (PlanId.STARTER, 2, 1, 2),
    (PlanId.PRO, 5, 0, 1),
    (PlanId.ENTERPRISE, 1, 0, 0),
]
#: Active clients' stored cycles: c01 3 + c02 5 + c03 2 + c06 1 + acme-8 1 + c09 1 + c10 1
#: (c04 is inactive); limited plans only: all but c03's 2.
JOBS_THIS_CYCLE, CREDITS_USED = 14, 12
#: Jobs by UTC date: every client's stored cycle and the one before it. Not counted: c03's
#: refunded job, c09's job of 01-11 (before the 30 days), c10's job of 02-20 (two cycles
#: back). c04 is inactive but its job counts.
JOBS_ON = {
    date(2026, 2, 7): 1,
    date(2026, 2, 14): 1,
    date(2026, 2, 20): 3,
    date(2026, 2, 21): 5,
    date(2026, 2, 22): 2,
    date(2026, 2, 23): 1,
    date(2026, 2, 24): 2,
    date(2026, 3, 1): 1,
    date(2026, 3, 5): 1,
}
FIRST_DAY, LAST_DAY = date(2026, 2, 5), date(2026, 3, 6)


def days(first: date, last: date) -> list[date]:
    return [first + n * DAY for n in range((last - first).days + 1)]
