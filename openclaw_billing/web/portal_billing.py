"""The portal's billing: an upgrade through Stripe Checkout, "Manage billing" through Stripe's
customer portal, and the pages Checkout sends the browser back to.

Both actions call the same :class:`~openclaw_billing.stripe_billing.StripeBilling` methods as
the client API (``POST /api/billing/checkout``, ``/portal``), with Stripe's return addresses
set to this portal's pages under ``OPENCLAW_PUBLIC_URL``. Stripe stays the source of truth:
the success page only reads (the client's record, and the Checkout Session from Stripe) and
says "being confirmed" until the webhook's events have changed the plan; it never grants one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse

from ..api.deps import SettingsDep, StripeDep
from ..errors import BillingError, PlanNotPurchasable
from ..models import ClientRecord
from ..plans import PLANS, PlanId
from ..settings import Settings
from ..stripe_billing import PLAN_IN_FORCE, StripeBilling
from .auth import PORTAL_PATH, PortalUser, ReturningCustomer
from .pages import PageRoute, SignInRequired, redirect, render
from .portal import DATE_FORMAT, plans_above

logger = logging.getLogger("openclaw_billing.web")

router = APIRouter(prefix=PORTAL_PATH, route_class=PageRoute, include_in_schema=False)

SUCCESS_PATH = f"{PORTAL_PATH}/checkout/success"
CANCEL_PATH = f"{PORTAL_PATH}/checkout/cancel"
#: A Checkout Session id as Stripe makes them (``cs_test_...``, ``cs_live_...``): not a secret,
#: but bounded before it reaches Stripe's URL or a page.
SESSION_ID_PATTERN = r"^cs_[A-Za-z0-9_]{1,250}$"
#: What the portal says instead of the API's wording (which names API routes).
PORTAL_MESSAGES = {
    "subscription_exists": "You already have a subscription: change your plan in Manage billing.",
    "no_stripe_customer": (
        "You have no billing account at Stripe yet: it is made with your first upgrade."
    ),
    "already_on_plan": "You are already on this plan.",
    "plan_not_purchasable": "This plan cannot be bought here. Contact {brand} to change to it.",
    "stripe_error": "Stripe could not be reached, so nothing changed. Try again in a moment.",
    "stripe_not_configured": "Online payments are not set up here yet. Contact {brand} support.",
}


def public_page(settings: Settings, path: str) -> str:
    """The absolute address of a portal page, for Stripe to send the browser back to."""
    return f"{settings.public_url.rstrip('/')}{path}"


@contextmanager
def portal_wording(settings: Settings) -> Iterator[None]:
    """Refusals of Checkout and the customer portal, in the portal's words (status and code
    unchanged; the error page shows them)."""
    try:
        yield
    except BillingError as exc:
        message = PORTAL_MESSAGES.get(exc.code)
        if message is not None:
            exc.message = message.format(brand=settings.brand_name)
        raise


@router.post("/upgrade")
def upgrade(
    request: Request,
    user: PortalUser,
    settings: SettingsDep,
    billing: StripeDep,
    plan: Annotated[PlanId, Form()],
) -> Response:
    """A Checkout Session for ``plan``, and the browser sent to Stripe's page."""
    with portal_wording(settings):
        if plan != user.client.plan and plan not in plans_above(user.client):
            raise PlanNotPurchasable()  # an upgrade only; Stripe's portal changes the rest
        session = billing.create_checkout(
            user.client,
            plan,
            success_url=public_page(settings, SUCCESS_PATH) + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=public_page(settings, CANCEL_PATH),
        )
    return redirect(request, session.checkout_url)


@router.post("/manage-billing")
def manage_billing(
    request: Request, user: PortalUser, settings: SettingsDep, billing: StripeDep
) -> Response:
    """A customer-portal session, and the browser sent to it; it comes back to the
    dashboard."""
    with portal_wording(settings):
        url = billing.create_portal(
            user.client, return_url=public_page(settings, f"{PORTAL_PATH}/")
        )
    return redirect(request, url)


class Outcome(StrEnum):
    """What the success page can say about a checkout."""

    #: The plan it bought is the client's, from a subscription in force.
    CONFIRMED = "confirmed"
    #: Stripe completed it; its events have not changed the client yet.
    CONFIRMING = "confirming"
    #: Stripe has not completed it (not paid, or expired): nothing was charged.
    INCOMPLETE = "incomplete"
    #: Not known: no session named, not the client's, or Stripe could not be asked.
    UNKNOWN = "unknown"


def checkout_outcome(
    billing: StripeBilling, record: ClientRecord, session_id: str | None
) -> tuple[Outcome, PlanId | None]:
    """Where the checkout ``session_id`` stands, read from Stripe and the client's record (the
    plan it buys, if known). A Stripe failure is not the page's: it says "not known"."""
    if session_id is None:
        return Outcome.UNKNOWN, None
    try:
        state = billing.read_checkout(record, session_id)
    except BillingError as exc:
        logger.info("Checkout %s could not be read from Stripe: %s", session_id, exc.code)
        return Outcome.UNKNOWN, None
    if state is None:
        return Outcome.UNKNOWN, None
    if not state.complete:
        return Outcome.INCOMPLETE, state.plan
    in_force = record.metadata.subscription_status in PLAN_IN_FORCE
    if state.subscription == record.stripe_subscription_id and in_force:
        return Outcome.CONFIRMED, state.plan
    return Outcome.CONFIRMING, state.plan


def resume(request: Request, path: str, query: dict[str, str], resumed: bool) -> HTMLResponse:
    """A page Stripe sent the browser back to, reached without the portal's cookie: the
    browser is sent to the same page once more by this site itself (a refresh), which carries
    the ``SameSite=Strict`` cookie; if it still has none, it signs in."""
    if resumed:
        raise SignInRequired("portal")
    again = f"{path}?{urlencode({**query, 'resumed': '1'})}"
    return render(request, "portal/resume.html", {"side": "portal", "csrf": "", "again": again})


@router.get("/checkout/success")
def checkout_success(
    request: Request,
    user: ReturningCustomer,
    billing: StripeDep,
    session_id: Annotated[str | None, Query(max_length=260, pattern=SESSION_ID_PATTERN)] = None,
    resumed: Annotated[bool, Query()] = False,
) -> HTMLResponse:
    if user is None:
        found = {} if session_id is None else {"session_id": session_id}
        return resume(request, SUCCESS_PATH, found, resumed)
    record = user.client  # read by the session's check, its cycle brought up to date
    outcome, bought = checkout_outcome(billing, record, session_id)
    context = {
        "side": "portal",
        "csrf": user.csrf,
        "record": record,
        "plan": PLANS[record.plan],
        "bought": None if bought is None else PLANS[bought],
        "outcome": outcome.value,
        "session_id": session_id,
        "date_format": DATE_FORMAT,
    }
    return render(request, "portal/checkout_success.html", context)


@router.get("/checkout/cancel")
def checkout_cancel(
    request: Request, user: ReturningCustomer, resumed: Annotated[bool, Query()] = False
) -> HTMLResponse:
    if user is None:
        return resume(request, CANCEL_PATH, {}, resumed)
    record = user.client  # read by the session's check, its cycle brought up to date
    context = {"side": "portal", "csrf": user.csrf, "record": record, "plan": PLANS[record.plan]}
    return render(request, "portal/checkout_cancel.html", context)
