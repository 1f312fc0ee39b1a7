"""Stripe: the ``StripeClient`` factory, Checkout, the customer portal, and webhook events.

Stripe is the source of truth, not the event: a webhook event only says which object changed;
the handler retrieves that object (subscription, invoice, checkout session, customer, charge,
dispute) and brings the client to it. Exactly once, in any order: each event id is recorded in
the same atomic store step as its change, so duplicates and late, older deliveries change
nothing.

* :mod:`.client`: the client factory, plan <-> price, reading Stripe's errors;
* :mod:`.objects`: the fields read, validated and bounded at the edge;
* :mod:`.checkout`: Checkout and portal sessions;
* :mod:`.webhook`: verification and the handled event types (:data:`HANDLED_EVENTS`);
* :mod:`.sync`: subscriptions, invoices, checkout completion, deleted customers;
* :mod:`.reversals`: refunds and disputes;
* :mod:`.meters`: usage above a plan's allowance, reported as billing meter events;
* :mod:`.meter_outbox`: the sender of the settled jobs' pending reports (the meter outbox).
"""

from __future__ import annotations

from ..ledger import PLAN_IN_FORCE
from .checkout import CHECKOUT_IDEMPOTENCY_WINDOW, CheckoutMixin, CheckoutSession, CheckoutState
from .client import (
    build_stripe_client,
    get_stripe_client,
    plan_for_price,
    price_for_plan,
    set_stripe_client,
)
from .meter_outbox import MeterSender
from .meters import MeterOutcome, MeterReporter, UsageReport
from .objects import StripeEvent, Subscription
from .sync import ENDED
from .webhook import (
    HANDLED_EVENTS,
    HANDLERS,
    MAX_WEBHOOK_BYTES,
    WEBHOOK_TOLERANCE,
    WebhookMixin,
)


class StripeBilling(CheckoutMixin, WebhookMixin):
    """Checkout, portal and webhook handling over a billing service and a Stripe client."""


__all__ = [
    "CHECKOUT_IDEMPOTENCY_WINDOW",
    "ENDED",
    "HANDLED_EVENTS",
    "HANDLERS",
    "MAX_WEBHOOK_BYTES",
    "PLAN_IN_FORCE",
    "WEBHOOK_TOLERANCE",
    "CheckoutSession",
    "CheckoutState",
    "MeterOutcome",
    "MeterReporter",
    "MeterSender",
    "StripeBilling",
    "StripeEvent",
    "Subscription",
    "UsageReport",
    "build_stripe_client",
    "get_stripe_client",
    "plan_for_price",
    "price_for_plan",
    "set_stripe_client",
]
