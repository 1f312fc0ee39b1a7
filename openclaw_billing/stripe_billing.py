"""Stripe: the ``StripeClient`` factory, Checkout, the customer portal, and webhook events.

* One factory builds the client from settings (``STRIPE_SECRET_KEY``, optional
  ``STRIPE_API_BASE``, network retries on); :func:`set_stripe_client` injects another.
* Webhooks: the raw body is verified (``STRIPE_WEBHOOK_SECRET``, 300 s tolerance, future
  timestamps refused too) before anything is parsed. Handled types are listed in
  :data:`HANDLED_EVENTS`; anything else is acknowledged and ignored.
* Exactly once, in any order: each event id is recorded in the same atomic store step as its
  change, and subscription and invoice events converge to the subscription as Stripe has it
  *now* (re-retrieved), so duplicates and late, older deliveries change nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

import stripe
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import ledger
from .cycles import utcnow
from .errors import (
    AlreadyOnPlan,
    InvalidPayload,
    InvalidSignature,
    LivemodeMismatch,
    NoStripeCustomer,
    PlanNotPurchasable,
    StripeNotConfigured,
    StripeRequestFailed,
    SubscriptionExists,
)
from .models import ClientRecord
from .plans import PlanId
from .service import BillingService
from .settings import Settings
from .store.base import EventOutcome, StripeRef

logger = logging.getLogger("openclaw_billing.stripe")

WEBHOOK_TOLERANCE = 300
MAX_WEBHOOK_BYTES = 1_000_000
#: A double click within this window reuses the first Checkout Session (Stripe idempotency).
CHECKOUT_IDEMPOTENCY_WINDOW = 600

SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    }
)
INVOICE_EVENTS = frozenset({"invoice.paid", "invoice.payment_failed"})
HANDLED_EVENTS = frozenset({"checkout.session.completed"}) | SUBSCRIPTION_EVENTS | INVOICE_EVENTS

#: Statuses in which the subscription's plan is in force (past_due/unpaid: the plan stays,
#: but no job runs until the invoice is paid; see ``ledger.UNPAID_STATUSES``).
PLAN_IN_FORCE = frozenset({"active", "trialing", "past_due", "unpaid"})
ENDED = frozenset({"canceled", "incomplete_expired"})


# -- client ---------------------------------------------------------------------------------


def build_stripe_client(settings: Settings) -> stripe.StripeClient:
    """A ``StripeClient`` from settings; raises ``StripeNotConfigured`` without a key."""
    if settings.stripe_secret_key is None:
        raise StripeNotConfigured()
    key = settings.stripe_secret_key.get_secret_value()
    retries = settings.stripe_max_network_retries
    http = stripe.RequestsClient(timeout=settings.stripe_timeout)
    if settings.stripe_api_base:
        return stripe.StripeClient(
            key,
            base_addresses={"api": settings.stripe_api_base},
            max_network_retries=retries,
            http_client=http,
        )
    return stripe.StripeClient(key, max_network_retries=retries, http_client=http)


_client: stripe.StripeClient | None = None
_client_lock = threading.Lock()


def get_stripe_client(settings: Settings) -> stripe.StripeClient:
    """The injected client, or one built from settings on first use."""
    global _client
    with _client_lock:
        if _client is None:
            _client = build_stripe_client(settings)
        return _client


def set_stripe_client(client: stripe.StripeClient | None) -> None:
    """Inject a client (tests, host apps), or None to build one from settings again."""
    global _client
    with _client_lock:
        _client = client


def price_for_plan(settings: Settings, plan: PlanId) -> str:
    if plan == PlanId.ENTERPRISE:
        raise PlanNotPurchasable("Enterprise is sold by the operator, not through checkout")
    if plan == PlanId.FREE:
        raise PlanNotPurchasable("The free plan needs no checkout")
    price = settings.stripe_price_starter if plan == PlanId.STARTER else settings.stripe_price_pro
    if not price:
        raise StripeNotConfigured(f"No Stripe price is configured for the {plan.value} plan")
    return price


def plan_for_price(settings: Settings, price_id: str | None) -> PlanId | None:
    if price_id is None:
        return None
    if price_id == settings.stripe_price_starter:
        return PlanId.STARTER
    if price_id == settings.stripe_price_pro:
        return PlanId.PRO
    return None


def _stripe_failure(action: str, exc: stripe.StripeError) -> StripeRequestFailed:
    # The SDK's message can carry request details; log it, answer a stable one.
    logger.warning("Stripe %s failed: %s (%s)", action, type(exc).__name__, exc.user_message)
    return StripeRequestFailed()


# -- event payloads (parsed after verification; only the fields used) -----------------------


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _EventData(_Loose):
    object: dict[str, Any]


class StripeEvent(_Loose):
    id: str = Field(min_length=1)
    type: str
    created: int
    livemode: bool
    data: _EventData


class _Price(_Loose):
    id: str


class _Item(_Loose):
    price: _Price
    current_period_start: int
    current_period_end: int


class _Items(_Loose):
    data: list[_Item] = Field(min_length=1)


class Subscription(_Loose):
    id: str
    customer: str
    status: str
    metadata: dict[str, str] = Field(default_factory=dict)
    items: _Items


class _CheckoutSession(_Loose):
    client_reference_id: str | None = None
    customer: str | None = None
    subscription: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class _SubscriptionDetails(_Loose):
    subscription: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class _InvoiceParent(_Loose):
    subscription_details: _SubscriptionDetails | None = None


class _Invoice(_Loose):
    customer: str | None = None
    parent: _InvoiceParent | None = None


def _ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class CheckoutSession(NamedTuple):
    checkout_url: str
    session_id: str


class StripeBilling:
    """Checkout, portal and webhook handling over a billing service and a Stripe client."""

    def __init__(
        self, service: BillingService, settings: Settings, client: stripe.StripeClient | None
    ) -> None:
        self.service = service
        self.settings = settings
        self._client = client

    @property
    def client(self) -> stripe.StripeClient:
        if self._client is None:
            raise StripeNotConfigured()
        return self._client

    # -- checkout and portal ---------------------------------------------------------------

    def create_checkout(
        self,
        record: ClientRecord,
        plan: PlanId,
        *,
        success_url: str | None = None,
        cancel_url: str | None = None,
        now: float | None = None,
    ) -> CheckoutSession:
        """A subscription-mode Checkout Session for ``plan``. A repeat within
        ``CHECKOUT_IDEMPOTENCY_WINDOW`` seconds with the same inputs returns the same session."""
        client = self.client  # 503 stripe_not_configured before anything else
        price = price_for_plan(self.settings, plan)
        if plan == record.plan:
            raise AlreadyOnPlan(f"The client is already on the {plan.value} plan")
        if record.stripe_subscription_id and record.metadata.subscription_status not in ENDED | {
            None
        }:
            # A second Checkout would start a second subscription, billed twice.
            raise SubscriptionExists()
        metadata = {"client_id": record.client_id, "plan": plan.value}
        params: dict[str, Any] = {
            "mode": "subscription",
            "line_items": [{"price": price, "quantity": 1}],
            "client_reference_id": record.client_id,
            "success_url": success_url or self.settings.success_url,
            "cancel_url": cancel_url or self.settings.cancel_url,
            "metadata": metadata,
            "subscription_data": {"metadata": metadata},
        }
        if record.stripe_customer_id:
            params["customer"] = record.stripe_customer_id
        else:
            params["customer_email"] = record.email
        window = int((time.time() if now is None else now) // CHECKOUT_IDEMPOTENCY_WINDOW)
        fingerprint = hashlib.sha256(
            json.dumps([params, window], sort_keys=True).encode()
        ).hexdigest()
        try:
            session = client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]  # a plain dict of the same shape
                options={"idempotency_key": f"openclaw-checkout-{fingerprint[:40]}"},
            )
        except stripe.StripeError as exc:
            raise _stripe_failure("checkout", exc) from exc
        if not session.url:
            raise StripeRequestFailed("Stripe returned a Checkout Session without a URL")
        logger.info("Checkout session %s for %s (%s)", session.id, record.client_id, plan.value)
        return CheckoutSession(session.url, session.id)

    def create_portal(self, record: ClientRecord, *, return_url: str | None = None) -> str:
        client = self.client  # 503 stripe_not_configured before anything else
        if not record.stripe_customer_id:
            raise NoStripeCustomer()
        try:
            session = client.v1.billing_portal.sessions.create(
                params={
                    "customer": record.stripe_customer_id,
                    "return_url": return_url or self.settings.return_url,
                }
            )
        except stripe.StripeError as exc:
            raise _stripe_failure("portal", exc) from exc
        return session.url

    # -- webhooks --------------------------------------------------------------------------

    def verify(
        self, payload: bytes, signature: str | None, *, now: float | None = None
    ) -> StripeEvent:
        """Verify the raw body, then parse it. Raises ``StripeNotConfigured`` without a webhook
        secret and a ``WebhookRejected`` (400) for anything not verified or not usable."""
        secret = self.settings.stripe_webhook_secret
        if secret is None:
            raise StripeNotConfigured(
                "Stripe webhooks are not configured: set STRIPE_WEBHOOK_SECRET"
            )
        if not signature:
            raise InvalidSignature()
        try:
            text = payload.decode("utf-8")
            stripe.WebhookSignature.verify_header(
                text, signature, secret.get_secret_value(), WEBHOOK_TOLERANCE
            )
        except (UnicodeDecodeError, stripe.SignatureVerificationError):
            raise InvalidSignature() from None
        # The SDK refuses old timestamps only; a timestamp from the future is refused here.
        stamps = [
            int(p[2:]) for p in signature.split(",") if p.startswith("t=") and p[2:].isdigit()
        ]
        current = time.time() if now is None else now
        if not stamps or max(stamps) > current + WEBHOOK_TOLERANCE:
            raise InvalidSignature("Stripe-Signature timestamp is in the future")
        try:
            event = StripeEvent.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            raise InvalidPayload() from None
        key = self.settings.stripe_secret_key
        if key is not None:
            live_key = key.get_secret_value().startswith(("sk_live_", "rk_live_"))
            if event.livemode != live_key:
                raise LivemodeMismatch()
        return event

    def handle(self, event: StripeEvent, *, now: datetime | None = None) -> EventOutcome | None:
        """Apply a verified event exactly once. Returns the outcome, or None for an event type
        that is not handled (acknowledged, nothing changes)."""
        now = now or utcnow()
        if event.type not in HANDLED_EVENTS:
            logger.info("Ignored Stripe event %s of type %s", event.id, event.type)
            return None
        try:
            if event.type == "checkout.session.completed":
                outcome = self._checkout_completed(event, now)
            elif event.type in SUBSCRIPTION_EVENTS:
                sub_id = str(event.data.object.get("id") or "")
                hint = Subscription.model_validate(event.data.object)
                outcome = self._sync_subscription(event, sub_id, hint.metadata, hint.customer, now)
            else:
                invoice = _Invoice.model_validate(event.data.object)
                details = invoice.parent.subscription_details if invoice.parent else None
                if details is None or details.subscription is None:
                    logger.info("Stripe event %s: invoice without a subscription", event.id)
                    return None
                outcome = self._sync_subscription(
                    event, details.subscription, details.metadata, invoice.customer, now
                )
        except ValidationError:
            raise InvalidPayload(f"Unexpected {event.type} payload") from None
        logger.info("Stripe event %s (%s): %s", event.id, event.type, outcome.value)
        return outcome

    def _checkout_completed(self, event: StripeEvent, now: datetime) -> EventOutcome:
        session = _CheckoutSession.model_validate(event.data.object)
        client_id = session.client_reference_id or session.metadata.get("client_id")
        ref = StripeRef(client_id, session.subscription, session.customer)
        # Retrieve first: if Stripe cannot answer, nothing is recorded and the redelivery
        # does the whole thing.
        current = self._retrieve(session.subscription) if session.subscription else None

        def link(record: ClientRecord) -> None:
            if session.customer:
                record.stripe_customer_id = session.customer
            if current is not None:
                self._converge(record, current, now)
            elif session.subscription:
                record.stripe_subscription_id = session.subscription

        outcome, _ = self.service.store.apply_stripe_event(event.id, ref, event.created, link, now)
        return outcome

    def _retrieve(self, subscription_id: str) -> Subscription | None:
        try:
            found = self.client.v1.subscriptions.retrieve(subscription_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                logger.warning("Stripe has no subscription %s", subscription_id)
                return None
            raise _stripe_failure("subscription retrieve", exc) from exc
        except stripe.StripeError as exc:
            raise _stripe_failure("subscription retrieve", exc) from exc
        return Subscription.model_validate(found.to_dict())

    def _converge(self, record: ClientRecord, current: Subscription, now: datetime) -> None:
        """Bring ``record`` to the subscription's state as Stripe has it now."""
        linked = record.stripe_subscription_id
        if current.status in ENDED:
            if linked in (None, current.id):
                record.metadata.subscription_status = current.status
                ledger.return_to_free(record, now)
            # else: an older subscription ended; the current one is untouched.
            return
        record.stripe_customer_id = current.customer
        record.stripe_subscription_id = current.id
        record.metadata.subscription_status = current.status
        item = current.items.data[0]
        plan = plan_for_price(self.settings, item.price.id)
        if plan is None:
            logger.warning(
                "Subscription %s has price %s, which maps to no plan", current.id, item.price.id
            )
        elif current.status in PLAN_IN_FORCE:
            start, end = _ts(item.current_period_start), _ts(item.current_period_end)
            ledger.change_plan(record, plan, start, end, now)

    def _sync_subscription(
        self,
        event: StripeEvent,
        subscription_id: str,
        metadata: dict[str, str],
        customer_id: str | None,
        now: datetime,
    ) -> EventOutcome:
        """Bring the client to the subscription's current state as Stripe has it now."""
        current = self._retrieve(subscription_id)
        if current is None:
            return EventOutcome.UNMATCHED
        ref = StripeRef(
            metadata.get("client_id") or current.metadata.get("client_id"),
            current.id,
            customer_id or current.customer,
        )
        outcome, _ = self.service.store.apply_stripe_event(
            event.id, ref, event.created, lambda record: self._converge(record, current, now), now
        )
        return outcome
