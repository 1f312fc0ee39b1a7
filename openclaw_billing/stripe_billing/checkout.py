"""Checkout Sessions and customer-portal sessions."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any, NamedTuple

import stripe

from ..cycles import utcnow
from ..errors import (
    AlreadyOnPlan,
    NoStripeCustomer,
    StripeNotConfigured,
    StripeRequestFailed,
    SubscriptionExists,
)
from ..models import ClientRecord
from ..plans import PlanId
from .base import StripeBase
from .client import (
    is_missing,
    is_portal_unconfigured,
    is_replayed,
    is_retryable,
    price_for_plan,
    stripe_failure,
)
from .objects import CheckoutSession as StripeCheckoutSession
from .sync import ENDED

logger = logging.getLogger("openclaw_billing.stripe")

#: A double click within this window reuses the first Checkout Session (Stripe idempotency).
CHECKOUT_IDEMPOTENCY_WINDOW = 600
#: Keys tried in turn within one window while Stripe replays an error for each.
MAX_KEYS_PER_WINDOW = 10


class CheckoutSession(NamedTuple):
    checkout_url: str
    session_id: str


class CheckoutState(NamedTuple):
    """One of a client's Checkout Sessions as Stripe has it now."""

    #: Stripe completed it: the customer paid (the plan changes when the events arrive).
    complete: bool
    #: The plan it buys (its metadata), if one of the catalogue's.
    plan: PlanId | None
    #: The subscription it created, once complete.
    subscription: str | None


class CheckoutMixin(StripeBase):
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
        ``CHECKOUT_IDEMPOTENCY_WINDOW`` seconds with the same inputs returns the same session.

        A customer Stripe no longer has is unlinked and the session made for the client's
        email instead (a new customer)."""
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
        moment = time.time() if now is None else now
        customer = record.stripe_customer_id
        if customer:
            params["customer"] = customer
            try:
                return self._create_session(client, record, plan, params, moment)
            except stripe.StripeError as exc:
                if not is_missing(exc, "customer"):
                    raise stripe_failure("checkout", exc) from exc
            self._forget_customer(record, customer, utcnow())
            del params["customer"]
        params["customer_email"] = record.email
        try:
            return self._create_session(client, record, plan, params, moment)
        except stripe.StripeError as exc:
            raise stripe_failure("checkout", exc) from exc

    def _create_session(
        self,
        client: stripe.StripeClient,
        record: ClientRecord,
        plan: PlanId,
        params: dict[str, Any],
        now: float,
    ) -> CheckoutSession:
        """Create the session with an idempotency key of its inputs and the time window.

        Stripe keeps the first answer to a key, errors included, and replays it. Keys of the
        same inputs are tried in turn (``-1``, ``-2``, ...), once each without retries, while
        Stripe replays an earlier error for them; the first key with no answer yet gets the
        request with the SDK's retries. So each request makes at most one new attempt, a retry
        after an error makes one, and a double click after it finds the same session."""
        window = int(now // CHECKOUT_IDEMPOTENCY_WINDOW)
        fingerprint = hashlib.sha256(
            json.dumps([params, window], sort_keys=True).encode()
        ).hexdigest()
        base = f"openclaw-checkout-{fingerprint[:40]}"
        for attempt in range(MAX_KEYS_PER_WINDOW):
            key = base if attempt == 0 else f"{base}-{attempt}"
            try:
                session = client.v1.checkout.sessions.create(
                    params=params,  # type: ignore[arg-type]  # a plain dict of the same shape
                    options={"idempotency_key": key, "max_network_retries": 0},
                )
                break
            except stripe.StripeError as exc:
                if is_replayed(exc) and attempt < MAX_KEYS_PER_WINDOW - 1:
                    logger.info("Stripe replays an error for checkout key %s; next key", key)
                    continue
                if not is_retryable(exc):
                    raise
            # A new failure: the SDK's retries, with this key (a connection error may have
            # reached Stripe); an error is the answer to this request.
            session = client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": key},
            )
            break
        if not session.url:
            raise StripeRequestFailed("Stripe returned a Checkout Session without a URL")
        logger.info("Checkout session %s for %s (%s)", session.id, record.client_id, plan.value)
        return CheckoutSession(session.url, session.id)

    def read_checkout(self, record: ClientRecord, session_id: str) -> CheckoutState | None:
        """The Checkout Session ``session_id`` as Stripe has it now, if it is one of
        ``record``'s (None: Stripe has no such session, or it is another client's). It only
        reads: the client changes when the webhook's events arrive, never here, so a page
        that shows this cannot grant a plan Stripe has not confirmed."""
        found = self._read(
            f"checkout.session {session_id}",
            lambda: self.client.v1.checkout.sessions.retrieve(session_id),
            StripeCheckoutSession,
        )
        if found is None or found.client_hint() != record.client_id:
            return None
        named = (found.metadata or {}).get("plan")
        return CheckoutState(
            complete=found.status == "complete",
            plan=next((plan for plan in PlanId if plan.value == named), None),
            subscription=found.subscription,
        )

    def create_portal(self, record: ClientRecord, *, return_url: str | None = None) -> str:
        """A customer-portal session. A customer Stripe no longer has is unlinked (409
        ``no_stripe_customer``: a checkout makes a new one)."""
        client = self.client  # 503 stripe_not_configured before anything else
        customer = record.stripe_customer_id
        if not customer:
            raise NoStripeCustomer()
        try:
            session = client.v1.billing_portal.sessions.create(
                params={
                    "customer": customer,
                    "return_url": return_url or self.settings.return_url,
                }
            )
        except stripe.StripeError as exc:
            if is_missing(exc, "customer"):
                self._forget_customer(record, customer, utcnow())
                raise NoStripeCustomer(
                    "The client's Stripe customer no longer exists; complete a checkout first"
                ) from None
            if is_portal_unconfigured(exc):
                logger.warning("Stripe portal refused: %s", exc.user_message)
                raise StripeNotConfigured(
                    "The Stripe customer portal is not set up: save its settings in the "
                    "Stripe Dashboard"
                ) from None
            raise stripe_failure("portal", exc) from exc
        return session.url
