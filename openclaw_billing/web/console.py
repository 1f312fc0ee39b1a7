"""The operator console under ``/billing/console/``: sign in with the admin token, then the
clients and creating a client (the overview is in :mod:`.console_overview`, one client's page
and its actions in :mod:`.console_client`, the audit log in :mod:`.console_audit`).

Every action calls the same :class:`~openclaw_billing.service.BillingService` method as the
admin API, with the same validated input (the API's schemas, plus the form's CSRF token), so
it is checked, atomic and audited the same way; its events name ``console`` as the actor.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse

from ..api.deps import ClientAddress, RateLimiterDep, ServiceDep, SettingsDep
from ..api.schemas import UsagePublic
from ..api.schemas_admin import ClientCreate
from ..errors import InvalidAdminToken, RateLimited
from ..plans import PLANS
from ..store.query import ClientSort, ClientStatus
from .auth import (
    CONSOLE_PATH,
    JARS,
    ConsoleUser,
    refuse_credentials_in_url,
    sign_in_console,
    sign_in_form,
    sign_out,
)
from .console_keys import key_shown
from .forms import ClientFilters
from .pages import PageRoute, is_fragment_request, redirect, render
from .security import session_secret

router = APIRouter(prefix=CONSOLE_PATH, route_class=PageRoute, include_in_schema=False)

#: Clients per page of the clients list.
PAGE_SIZE = 50
#: The clients list's orders, as the sort menu names them.
SORT_LABELS = {
    ClientSort.CREATED: "Oldest first",
    ClientSort.NEWEST: "Newest first",
    ClientSort.NAME: "Name",
    ClientSort.USAGE: "Most used this cycle",
    ClientSort.CREDITS_LEFT: "Fewest credits left",
    ClientSort.SPEND: "Most spent",
}
#: What the sign-in page says for each ``reason`` it can be sent with (never free text).
SIGN_IN_REASONS = {
    "expired": "Your session has ended. Sign in again.",
    "signed_out": "You have signed out.",
}


class ClientCreateForm(ClientCreate):
    """The create-client form: the API's body, plus the form's CSRF token."""

    csrf_token: str


# -- signing in and out ----------------------------------------------------------------------


@router.get("/sign-in")
def sign_in_page(
    request: Request,
    settings: SettingsDep,
    reason: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    refuse_credentials_in_url(request, settings)
    notice = SIGN_IN_REASONS.get(reason or "")
    return sign_in_form(request, settings, "console", notice=notice)


@router.post("/sign-in")
def sign_in(
    request: Request,
    settings: SettingsDep,
    service: ServiceDep,
    limiter: RateLimiterDep,
    address: ClientAddress,
    admin_token: Annotated[str, Form(max_length=512)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    secret = session_secret(settings)
    JARS["console"].check_signin(request, secret, csrf_token)
    response = redirect(request, f"{CONSOLE_PATH}/")
    try:
        sign_in_console(request, response, settings, service, limiter, address, admin_token)
    except (InvalidAdminToken, RateLimited) as exc:
        return sign_in_form(request, settings, "console", error=exc)
    return response


@router.post("/sign-out")
def sign_out_console(request: Request, user: ConsoleUser, service: ServiceDep) -> Response:
    response = redirect(request, f"{CONSOLE_PATH}/sign-in?reason=signed_out")
    sign_out(request, response, service, user, "console")
    return response


# -- clients ---------------------------------------------------------------------------------


@router.get("/clients")
def clients_page(
    request: Request, user: ConsoleUser, filters: Annotated[ClientFilters, Query()]
) -> HTMLResponse:
    """Search by name, email or id; filter by plan and status; sort; 50 a page. Typing in the
    search box or changing a filter swaps only the table (htmx); without JavaScript the form
    reloads the page."""
    page, total = user.service.list_clients(filters.query(PAGE_SIZE))
    rows = [(record, UsagePublic.of(record)) for record in page]
    fragment = is_fragment_request(request)
    values = filters.values()
    return render(
        request,
        "console/clients_table.html" if fragment else "console/clients.html",
        {
            "side": "console",
            "section": "clients",
            "csrf": user.csrf,
            "rows": rows,
            "total": total,
            "offset": filters.offset,
            "page_size": PAGE_SIZE,
            "plans": list(PLANS.values()),
            "statuses": list(ClientStatus),
            "sorts": SORT_LABELS,
            "filters": {"q": "", "plan": "", "status": "", "sort": "created", **values},
            "page_query": urlencode(values),
        },
    )


@router.get("/clients/new")
def new_client_page(request: Request, user: ConsoleUser) -> HTMLResponse:
    return render(
        request,
        "console/client_new.html",
        {"side": "console", "csrf": user.csrf, "plans": list(PLANS.values())},
    )


@router.post("/clients")
def create_client(
    request: Request, user: ConsoleUser, form: Annotated[ClientCreateForm, Form()]
) -> HTMLResponse:
    record, api_key = user.service.create_client(
        name=form.name, email=form.email, plan=form.plan, source=user.address
    )
    return key_shown(request, user, record, record.api_keys[0], api_key, created=True)
