"""Subscriptions: checkout completion, subscription and invoice events, deleted customers.

Each converges the client to the subscription as Stripe has it *now* (re-retrieved), so
duplicates and late, older deliveries change nothing. The rules (see ``converge``):

* only a subscription whose price maps to a plan, or the one already linked to the client,
  changes the client; any other (another product of the same customer, an Enterprise deal on a
  custom price) is ignored;
* a subscription that comes into force grants its plan for its current period; a renewal's
  credits come with ``invoice.paid`` for the new period, not with the
  ``customer.subscription.updated`` Stripe sends about an hour before it charges;
* a linked subscription that ends returns the client to Free.
"""

from __future__ import annotations

import logging
from datetime import datetime

from .. import ledger
from ..ledger import PLAN_IN_FORCE
from ..models import ClientRecord
from ..settings import Settings
from ..store.base import EventOutcome
from .base import StripeBase, handles, unlink_customer
from .client import plan_for_prices
from .objects import (
    PERIOD_INVOICES,
    CheckoutSession,
    Customer,
    Invoice,
    StripeEvent,
    Subscription,
    as_datetime,
)
from .reversals import reversed_through

logger = logging.getLogger("openclaw_billing.stripe")

ENDED = frozenset({"canceled", "incomplete_expired"})


def converge(
    settings: Settings,
    record: ClientRecord,
    sub: Subscription,
    now: datetime,
    paid: tuple[int, int] | None = None,
) -> None:
    """Bring ``record`` to the subscription ``sub`` as Stripe has it now; ``paid`` is the
    service period of a paid invoice of ``sub`` (a renewal), if that is what arrived."""
    plan, price = plan_for_prices(settings, (i.price.id for i in sub.items.data))
    linked = record.stripe_subscription_id == sub.id
    if not linked and plan is None:
        return  # not one of ours: another product, or a deal on a custom price
    if sub.status in ENDED:
        if linked or record.stripe_subscription_id is None:
            record.metadata.subscription_status = sub.status
        if linked:
            ledger.return_to_free(record, now)
        return  # an older subscription ended; the current one is untouched
    live = record.metadata.subscription_status not in ENDED | {None}
    replaces = not linked and record.stripe_subscription_id is not None and live
    if replaces and sub.status not in PLAN_IN_FORCE:
        return  # a second subscription not (yet) in force does not replace a live one
    was_in_force = linked and record.metadata.subscription_status in PLAN_IN_FORCE
    record.stripe_customer_id = sub.customer
    record.stripe_subscription_id = sub.id
    record.metadata.subscription_status = sub.status
    if sub.status not in PLAN_IN_FORCE:
        return  # incomplete, paused: the status only
    item = sub.item_for(price)
    if plan is None:
        logger.warning("Subscription %s has no price that maps to a plan", sub.id)
    elif item.current_period_end <= reversed_through(record):
        logger.info("Subscription %s: this period's payment was taken back", sub.id)
    elif not was_in_force:
        # It comes into force (checkout, or incomplete -> active): its period is paid.
        start, end = as_datetime(item.current_period_start), as_datetime(item.current_period_end)
        ledger.change_plan(record, plan, start, end, now)
    elif plan != record.plan:
        # The running subscription changed price: within the cycle, the difference.
        start, end = record.billing_cycle_start, record.billing_cycle_end
        ledger.change_plan(record, plan, start, end, now)
    if paid is not None and paid[1] > reversed_through(record):
        ledger.align_to_period(record, as_datetime(paid[0]), as_datetime(paid[1]), now)


class SubscriptionSync(StripeBase):
    def _retrieve_subscription(self, subscription_id: str) -> Subscription | None:
        return self._read(
            f"subscription {subscription_id}",
            lambda: self.client.v1.subscriptions.retrieve(subscription_id),
            Subscription,
        )

    def _sync(
        self,
        event: StripeEvent,
        sub: Subscription,
        now: datetime,
        *,
        hint: str | None = None,
        paid: tuple[int, int] | None = None,
        customer: str | None = None,
        ordered: bool = True,
    ) -> EventOutcome | None:
        """Apply ``sub`` to the client it belongs to (``customer``: a checkout's customer to
        link as well). None: not a subscription of any client's (ignored). ``ordered=False``
        for an invoice: a late one still grants the period it paid (never ``stale``)."""
        record = self._client_for(
            subscription=sub.id, customer=sub.customer, hint=hint or sub.client_hint()
        )
        if record is None:
            return EventOutcome.UNMATCHED
        plan, _ = plan_for_prices(self.settings, (i.price.id for i in sub.items.data))
        if plan is None and record.stripe_subscription_id != sub.id:
            logger.info("Subscription %s is not linked and buys no plan: ignored", sub.id)
            return None

        def change(current: ClientRecord) -> None:
            if customer is not None and sub.customer == customer:
                current.stripe_customer_id = customer
            converge(self.settings, current, sub, now, paid)

        return self._apply(event.id, record, event.created, change, now, ordered=ordered)

    @handles(
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    )
    def subscription_event(self, event: StripeEvent, now: datetime) -> EventOutcome | None:
        sub_id = event.data.object.id
        if sub_id is None:
            return None
        sub = self._retrieve_subscription(sub_id)
        return EventOutcome.UNMATCHED if sub is None else self._sync(event, sub, now)

    @handles("invoice.paid", "invoice.payment_failed")
    def invoice_event(self, event: StripeEvent, now: datetime) -> EventOutcome | None:
        invoice_id = event.data.object.id
        if invoice_id is None:
            return None
        invoice = self._read(
            f"invoice {invoice_id}",
            lambda: self.client.v1.invoices.retrieve(invoice_id),
            Invoice,
        )
        if invoice is None:
            return EventOutcome.UNMATCHED
        if invoice.subscription is None:
            logger.info("Stripe event %s: invoice without a subscription", event.id)
            return None
        sub = self._retrieve_subscription(invoice.subscription)
        if sub is None:
            return EventOutcome.UNMATCHED
        paid = None
        if invoice.status == "paid" and invoice.billing_reason in PERIOD_INVOICES:
            paid = invoice.service_period()
        return self._sync(event, sub, now, paid=paid, ordered=False)

    @handles("checkout.session.completed")
    def checkout_completed(self, event: StripeEvent, now: datetime) -> EventOutcome | None:
        session_id = event.data.object.id
        if session_id is None:
            return None
        session = self._read(
            f"checkout.session {session_id}",
            lambda: self.client.v1.checkout.sessions.retrieve(session_id),
            CheckoutSession,
        )
        if session is None:
            return EventOutcome.UNMATCHED
        hint = session.client_hint()
        if session.subscription is not None:
            sub = self._retrieve_subscription(session.subscription)
            if sub is not None:
                return self._sync(event, sub, now, hint=hint, customer=session.customer)
        record = self._client_for(subscription=None, customer=session.customer, hint=hint)
        if record is None:
            return EventOutcome.UNMATCHED
        customer = session.customer

        def link(current: ClientRecord) -> None:
            if customer is not None:
                current.stripe_customer_id = customer

        return self._apply(event.id, record, event.created, link, now)

    @handles("customer.deleted")
    def customer_deleted(self, event: StripeEvent, now: datetime) -> EventOutcome | None:
        customer_id = event.data.object.id
        if customer_id is None:
            return None
        customer = self._read(
            f"customer {customer_id}",
            lambda: self.client.v1.customers.retrieve(customer_id),
            Customer,
        )
        if customer is not None and not customer.deleted:
            logger.info("Stripe event %s: customer %s still exists", event.id, customer_id)
            return None
        record = self._client_for(subscription=None, customer=customer_id, hint=None)
        if record is None:
            return EventOutcome.UNMATCHED
        return self._apply(
            event.id, record, event.created, lambda r: unlink_customer(r, customer_id, now), now
        )
