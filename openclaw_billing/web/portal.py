"""The client portal under ``/billing/portal/``: sign in with one of the client's API keys,
then the dashboard (credits left and held, its jobs open against its cap of jobs at once, the
cycle, the status and what to do about it, recent jobs with their status and receipt, the
plans). Upgrading and managing billing through Stripe are in :mod:`.portal_billing`.

The key is posted in the sign-in form's body and exchanged for a session (see :mod:`.auth`);
it is never put in a URL, a page or a log line. A portal page shows the signed-in client's own
record and nothing else: no route takes a client id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse

from ..api.deps import (
    ClientAddress,
    CredentialsInQuery,
    RateLimiterDep,
    ServiceDep,
    SettingsDep,
    credential_in_query,
)
from ..api.schemas import UsagePublic
from ..errors import InvalidApiKey, IpNotAllowed, RateLimited
from ..jobs import StoredJob
from ..models import ClientRecord, CostEntry
from ..plans import PLANS, Plan, PlanId
from ..settings import Settings
from ..stripe_billing import ENDED
from ..stripe_billing.client import configured_prices
from .auth import JARS, PORTAL_PATH, PortalUser, sign_in_form, sign_in_portal, sign_out
from .pages import PageRoute, redirect, render
from .security import session_secret

router = APIRouter(prefix=PORTAL_PATH, route_class=PageRoute, include_in_schema=False)

#: Ledger entries the dashboard lists (the newest of the current cycle).
RECENT_JOBS = 20
#: What the sign-in page says for each ``reason`` it can be sent with (never free text).
SIGN_IN_REASONS = {
    "expired": "Your session has ended. Sign in again.",
    "signed_out": "You have signed out.",
    "inactive": "This account is deactivated. Contact {brand} support.",
    "key": (
        "The API key you signed in with has been revoked or has expired. "
        "Sign in with a current key."
    ),
    "address": (
        "Your account does not accept requests from this network address. Connect from an "
        "allowed address, or contact {brand} support."
    ),
}
#: What each refusing status means for the client, and what to do about it.
STATUS_ADVICE = {
    "past_due": (
        "Your last payment did not go through, so no job is accepted until it is paid. "
        "Update your card in Manage billing."
    ),
    "paused": ("Your subscription is paused, so no job is accepted. Resume it in Manage billing."),
    "disputed": (
        "A payment of your subscription is disputed, so no job is accepted until the dispute "
        "is settled. Contact {brand} support."
    ),
    "limit_reached": (
        "You have used every credit of this cycle. Upgrade your plan, or wait until "
        "{cycle_end}, when your credits renew."
    ),
}
DATE_FORMAT = "%Y-%m-%d %H:%M UTC"


# -- signing in and out ----------------------------------------------------------------------


def _key_in_url(request: Request) -> bool:
    """Whether the URL carries a key (a form sent by GET, a link someone made): refused, and
    the key is not used (the API's rule, :func:`~openclaw_billing.api.deps.credential_in_query`)."""
    return bool(request.scope.get("query_string")) and credential_in_query(request)


def _key_in_url_error() -> CredentialsInQuery:
    return CredentialsInQuery(
        "An API key was sent in this page's address, where browsers and servers keep it in "
        "their logs. It was not used: sign in with the form, and rotate that key."
    )


@router.get("/sign-in")
def sign_in_page(
    request: Request,
    settings: SettingsDep,
    reason: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    if _key_in_url(request):
        return sign_in_form(request, settings, "portal", error=_key_in_url_error())
    notice = SIGN_IN_REASONS.get(reason or "")
    if notice is not None:
        notice = notice.format(brand=settings.brand_name)
    return sign_in_form(request, settings, "portal", notice=notice)


@router.post("/sign-in")
def sign_in(
    request: Request,
    settings: SettingsDep,
    service: ServiceDep,
    limiter: RateLimiterDep,
    address: ClientAddress,
    api_key: Annotated[str, Form(max_length=512)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    JARS["portal"].check_signin(request, session_secret(settings), csrf_token)
    if _key_in_url(request):
        return sign_in_form(request, settings, "portal", error=_key_in_url_error())
    response = redirect(request, f"{PORTAL_PATH}/")
    try:
        sign_in_portal(request, response, settings, service, limiter, address, api_key)
    except (InvalidApiKey, IpNotAllowed, RateLimited) as exc:
        return sign_in_form(request, settings, "portal", error=exc)
    return response


@router.post("/sign-out")
def sign_out_portal(request: Request, user: PortalUser, service: ServiceDep) -> Response:
    response = redirect(request, f"{PORTAL_PATH}/sign-in?reason=signed_out")
    sign_out(request, response, service, user, "portal")
    return response


# -- the dashboard ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRow:
    """One plan of the catalogue as the client sees it."""

    plan: Plan
    current: bool
    #: Above the client's plan (more jobs per cycle).
    above: bool
    #: An upgrade the client can buy through Checkout now.
    offered: bool


def has_live_subscription(record: ClientRecord) -> bool:
    """A subscription that has not ended: its plan changes in Stripe's portal, never through a
    second checkout (which would bill twice; see ``create_checkout``)."""
    status = record.metadata.subscription_status
    return record.stripe_subscription_id is not None and status not in ENDED | {None}


def plans_above(record: ClientRecord) -> list[PlanId]:
    """The plans of the catalogue above the client's (more jobs per cycle)."""
    order = list(PLANS)
    return order[order.index(record.plan) + 1 :]


def offered_plans(settings: Settings, record: ClientRecord) -> set[PlanId]:
    """The upgrades Checkout sells here: plans above the client's with a price configured,
    Stripe set up, and no live subscription (whose plan changes in Stripe's portal)."""
    if settings.stripe_secret_key is None or has_live_subscription(record):
        return set()
    prices = configured_prices(settings)
    return {plan for plan in plans_above(record) if prices.get(plan)}


@dataclass(frozen=True)
class JobRow:
    """A recent job: its ledger entry, and the job as stored, with its status and receipt
    (None: the store keeps no jobs, or the job was charged without being stored)."""

    entry: CostEntry
    job: StoredJob | None


def recent_jobs(record: ClientRecord, stored: list[StoredJob] | None) -> list[JobRow]:
    """This cycle's ledger entries, newest first, at most :data:`RECENT_JOBS`, each with its
    job among ``stored`` (the service's ``recent_jobs``)."""
    entries = sorted(record.metadata.cost_log, key=lambda e: e.timestamp, reverse=True)
    by_id = {job.job_id: job for job in stored or []}
    return [JobRow(entry, by_id.get(entry.job_id)) for entry in entries[:RECENT_JOBS]]


@dataclass(frozen=True)
class Meter:
    """The usage bar: credits used of this cycle's credits, amber from 75 %, red from 90 %."""

    value: int
    max: int
    low: int
    high: int

    @classmethod
    def of(cls, usage: UsagePublic) -> Meter | None:
        if usage.credits_remaining is None:
            return None  # unlimited: nothing to fill
        total = max(1, usage.credits_used + usage.credits_remaining)
        return cls(usage.credits_used, total, total * 3 // 4, total * 9 // 10)


def status_advice(settings: Settings, record: ClientRecord, status: str) -> str | None:
    """What a refusing ``status`` means and what to do about it; None while jobs run."""
    advice = STATUS_ADVICE.get(status)
    if advice is None:
        return None
    cycle_end = record.billing_cycle_end.strftime(DATE_FORMAT)
    return advice.format(brand=settings.brand_name, cycle_end=cycle_end)


def dashboard_context(
    settings: Settings, record: ClientRecord, stored: list[StoredJob] | None, active_jobs: int
) -> dict[str, Any]:
    """The dashboard's values; ``stored``: the client's recent jobs (None: none kept);
    ``active_jobs``: how many hold credits now (the service's ``active_jobs``)."""
    usage = UsagePublic.of(record, active_jobs)
    offered, above = offered_plans(settings, record), plans_above(record)
    return {
        "record": record,
        "usage": usage,
        "meter": Meter.of(usage),
        "plan": PLANS[record.plan],
        "advice": status_advice(settings, record, usage.status),
        "jobs": recent_jobs(record, stored),
        "jobs_total": len(record.metadata.cost_log),
        "plans": [
            PlanRow(p, p.id == record.plan, p.id in above, p.id in offered) for p in PLANS.values()
        ],
        "stripe": settings.stripe_secret_key is not None,
        "live_subscription": has_live_subscription(record),
        "date_format": DATE_FORMAT,
    }


@router.get("/")
def dashboard(request: Request, user: PortalUser, settings: SettingsDep) -> HTMLResponse:
    record = user.client  # read by the session's check, its cycle brought up to date
    context = {"side": "portal", "section": "dashboard", "csrf": user.csrf}
    service = user.service
    values = dashboard_context(
        settings, record, service.recent_jobs(record), service.active_jobs(record)
    )
    return render(request, "portal/dashboard.html", context | values)
