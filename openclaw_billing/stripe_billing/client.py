"""The ``StripeClient`` factory, the plan <-> price mapping, and how Stripe's errors are read.

One factory builds the client from settings (``STRIPE_SECRET_KEY``, optional
``STRIPE_API_BASE``, network retries on); :func:`set_stripe_client` injects another.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import stripe

from ..errors import PlanNotPurchasable, StripeNotConfigured, StripeRequestFailed
from ..plans import PlanId, get_plan
from ..settings import Settings

logger = logging.getLogger("openclaw_billing.stripe")


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


# -- plans and prices -----------------------------------------------------------------------


#: Each plan sold through checkout, and the ``Settings`` field holding its Stripe price id
#: (``STRIPE_PRICE_<PLAN>``). Both directions read this one table (plan -> price for a
#: checkout, price -> plan for a subscription): selling another plan is one more row and its
#: setting. The order settles a price configured for two plans: the first row wins.
PRICE_SETTINGS: dict[PlanId, str] = {
    PlanId.STARTER: "stripe_price_starter",
    PlanId.PRO: "stripe_price_pro",
}

#: Plans that have no price, and why a checkout for one is refused.
NOT_PURCHASABLE: dict[PlanId, str] = {
    PlanId.ENTERPRISE: "Enterprise is sold by the operator, not through checkout",
    PlanId.FREE: "The free plan needs no checkout",
}


def configured_prices(settings: Settings) -> dict[PlanId, str | None]:
    """Each purchasable plan's price id as configured (None: not configured)."""
    prices: dict[PlanId, str | None] = {}
    for plan, field in PRICE_SETTINGS.items():
        price = getattr(settings, field)
        prices[plan] = price if isinstance(price, str) else None
    return prices


def price_for_plan(settings: Settings, plan: PlanId) -> str:
    if plan in NOT_PURCHASABLE:
        raise PlanNotPurchasable(NOT_PURCHASABLE[plan])
    price = configured_prices(settings).get(plan)
    if not price:
        raise StripeNotConfigured(f"No Stripe price is configured for the {plan.value} plan")
    return price


def plan_for_price(settings: Settings, price_id: str | None) -> PlanId | None:
    if price_id is None:
        return None
    for plan, price in configured_prices(settings).items():
        if price == price_id:
            return plan
    return None


def plan_for_prices(settings: Settings, prices: Iterable[str]) -> tuple[PlanId | None, str | None]:
    """The plan that a subscription's items buy, and the price it came from: every item counts
    (an operator may add items of other products); unknown prices are logged and ignored, and
    of two plans the larger allowance wins."""
    best: tuple[PlanId, str] | None = None
    for price in prices:
        plan = plan_for_price(settings, price)
        if plan is None:
            logger.info("Price %s maps to no plan: ignored", price)
            continue
        if best is None or (get_plan(plan).jobs_per_month or 0) > (
            get_plan(best[0]).jobs_per_month or 0
        ):
            best = (plan, price)
    return (None, None) if best is None else best


# -- Stripe's errors ------------------------------------------------------------------------


def stripe_failure(action: str, exc: stripe.StripeError) -> StripeRequestFailed:
    """A 502 with a stable message; the SDK's message can carry request details, so it is
    logged, not answered."""
    logger.warning("Stripe %s failed: %s (%s)", action, type(exc).__name__, exc.user_message)
    return StripeRequestFailed()


def is_missing(exc: stripe.StripeError, param: str | None = None) -> bool:
    """Stripe has no such object ("No such customer", a 404 on retrieve): deleted, or from the
    other mode (a test-mode id after a switch to live keys)."""
    if not isinstance(exc, stripe.InvalidRequestError) or exc.code != "resource_missing":
        return False
    return param is None or exc.param == param or exc.http_status == 404


def is_replayed(exc: stripe.StripeError) -> bool:
    """Whether Stripe answered with the stored result of an earlier request with the same
    idempotency key: an error it keeps replaying for that key, so only a new key tries again."""
    headers = exc.headers or {}
    return any(k.lower() == "idempotent-replayed" and v == "true" for k, v in headers.items())


def is_retryable(exc: stripe.StripeError) -> bool:
    """What the SDK retries: no answer (a connection error), a conflict, a 5xx."""
    status = exc.http_status
    return status is None or status == 409 or status >= 500


def is_portal_unconfigured(exc: stripe.StripeError) -> bool:
    """Stripe refuses portal sessions until the account's default portal configuration is
    saved in the Dashboard (a 400 naming the configuration)."""
    message = (exc.user_message or "").lower()
    return (
        isinstance(exc, stripe.InvalidRequestError)
        and exc.http_status == 400
        and "configuration" in message
        and "customer" not in (exc.param or "")
    )
