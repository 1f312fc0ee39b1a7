"""Money taken back: refunds (``charge.refunded``) and chargebacks (``charge.dispute.*``).

The policy (docs/STRIPE.md, "Refunds and disputes"):

* a dispute opened on a payment of the client's subscription blocks new jobs, as past-due
  does (402 ``payment_disputed``; usage shows ``"status": "disputed"``) until it closes;
* a dispute won (or closed without loss) unblocks;
* a dispute lost, or a full refund, of the payment for the client's current period returns the
  client to Free at once and removes the credits it paid for; later events of that period grant
  nothing again, the next paid period does;
* a partial refund, or one of an earlier period, changes nothing (logged).

Every decision is taken on the dispute, the charge and the invoice as Stripe has them now
(re-retrieved), traced charge -> customer -> client; a payment that is not for a subscription
of the client's plans (another product) is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .. import cycles, ledger
from ..models import ClientRecord
from ..plans import PlanId, get_plan
from ..store.base import EventOutcome
from .base import StripeBase, handles
from .client import plan_for_prices
from .objects import Charge, Dispute, Invoice, InvoicePaymentList, StripeEvent

logger = logging.getLogger("openclaw_billing.stripe")

#: ``metadata`` key (stored as-is by every backend): the end of the last paid period
#: whose payment was refunded or lost in a dispute (Unix seconds).
REVERSED_THROUGH = "payment_reversed_through"
#: Dispute statuses after which the dispute is over (every other status is open).
DISPUTE_CLOSED = frozenset({"won", "lost", "warning_closed", "prevented"})
MAX_OPEN_DISPUTES = 50

#: What a refund or a dispute does to the client: given the service period (start, end) of
#: the payment taken back, None when its invoice has none.
Reversal = Callable[[ClientRecord, tuple[int, int] | None], None]


def _extra(record: ClientRecord) -> dict[str, Any]:
    extra = record.metadata.__pydantic_extra__
    assert extra is not None  # ClientMetadata allows extra fields
    return extra


def reversed_through(record: ClientRecord) -> int:
    value = _extra(record).get(REVERSED_THROUGH)
    return value if isinstance(value, int) else 0


def set_dispute(record: ClientRecord, dispute_id: str, open_: bool, now: datetime) -> None:
    disputes = [d for d in ledger.open_disputes(record) if d != dispute_id]
    if open_:
        disputes = [*disputes, dispute_id][-MAX_OPEN_DISPUTES:]
    if disputes != ledger.open_disputes(record):
        _extra(record)[ledger.OPEN_DISPUTES] = disputes
        record.updated_at = now


def revoke_period(record: ClientRecord, period_end: int, now: datetime) -> bool:
    """The payment for the current period (ending ``period_end``) was taken back: back to
    Free with a fresh free cycle (the paid credits end with the old one). The subscription
    stays linked; events of this period grant nothing again. Returns whether it applied."""
    current_start = record.billing_cycle_start.timestamp()
    if period_end <= reversed_through(record) or period_end <= current_start:
        return False  # already taken back, or not the current period's payment
    _extra(record)[REVERSED_THROUGH] = period_end
    record.updated_at = now
    if record.plan != PlanId.FREE:
        start, end = cycles.first_cycle(now)
        ledger.start_cycle(record, start, end, get_plan(PlanId.FREE).jobs_per_month, now)
        record.plan = PlanId.FREE  # after the old cycle was closed under the paid plan
    return True


class Reversals(StripeBase):
    def _retrieve_charge(self, charge_id: str) -> Charge | None:
        return self._read(
            f"charge {charge_id}", lambda: self.client.v1.charges.retrieve(charge_id), Charge
        )

    def _invoice_of(self, charge: Charge) -> Invoice | None:
        """The invoice the charge paid (endive: through its payment intent's invoice payment)."""
        intent = charge.payment_intent
        if intent is None:
            return None
        payments = self._read(
            f"invoice_payment of {intent}",
            lambda: self.client.v1.invoice_payments.list(
                params={"payment": {"type": "payment_intent", "payment_intent": intent}}
            ),
            InvoicePaymentList,
        )
        if payments is None or not payments.data:
            return None
        invoice_id = payments.data[0].invoice
        return self._read(
            f"invoice {invoice_id}", lambda: self.client.v1.invoices.retrieve(invoice_id), Invoice
        )

    def _payment(self, charge: Charge) -> tuple[ClientRecord, Invoice] | EventOutcome | None:
        """The client and the subscription invoice this charge paid, or the outcome when there
        is none (None: not a payment of a subscription of the client's plans)."""
        if charge.customer is None:
            return None
        record = self._client_for(subscription=None, customer=charge.customer, hint=None)
        if record is None:
            return EventOutcome.UNMATCHED
        invoice = self._invoice_of(charge)
        if invoice is None or invoice.subscription is None:
            logger.info("Charge %s paid no subscription invoice: ignored", charge.id)
            return None
        ours = invoice.subscription == record.stripe_subscription_id
        if not ours and plan_for_prices(self.settings, invoice.prices())[0] is None:
            logger.info("Charge %s paid another product's invoice: ignored", charge.id)
            return None
        return record, invoice

    def _reverse(
        self, event: StripeEvent, charge: Charge, change: Reversal, now: datetime
    ) -> EventOutcome | None:
        """Apply ``change`` to the client whose subscription ``charge`` paid, with the service
        period that payment was for. Unordered: a refund or dispute is acted on whenever its
        event arrives (the charge and the dispute are read as Stripe has them now)."""
        found = self._payment(charge)
        if not isinstance(found, tuple):
            return found
        record, invoice = found
        period = invoice.service_period()
        return self._apply(
            event.id, record, event.created, lambda r: change(r, period), now, ordered=False
        )

    @handles("charge.refunded")
    def charge_refunded(self, event: StripeEvent, now: datetime) -> EventOutcome | None:
        charge_id = event.data.object.id
        charge = self._retrieve_charge(charge_id) if charge_id else None
        if charge is None:
            return EventOutcome.UNMATCHED
        if not charge.fully_refunded:
            logger.info("Charge %s partly refunded: nothing changes", charge.id)
            return None

        def change(current: ClientRecord, period: tuple[int, int] | None) -> None:
            if period is not None and revoke_period(current, period[1], now):
                logger.warning("Charge %s refunded: %s is on Free", charge.id, current.client_id)

        return self._reverse(event, charge, change, now)

    @handles("charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed")
    def dispute_event(self, event: StripeEvent, now: datetime) -> EventOutcome | None:
        dispute_id = event.data.object.id
        if dispute_id is None:
            return None
        dispute = self._read(
            f"dispute {dispute_id}", lambda: self.client.v1.disputes.retrieve(dispute_id), Dispute
        )
        charge = self._retrieve_charge(dispute.charge) if dispute is not None else None
        if dispute is None or charge is None:
            return EventOutcome.UNMATCHED

        def change(current: ClientRecord, period: tuple[int, int] | None) -> None:
            set_dispute(current, dispute.id, dispute.status not in DISPUTE_CLOSED, now)
            lost = dispute.status == "lost" and period is not None
            if lost and period is not None and revoke_period(current, period[1], now):
                logger.warning("Dispute %s lost: %s is on Free", dispute.id, current.client_id)

        return self._reverse(event, charge, change, now)
