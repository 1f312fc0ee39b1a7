"""One client in the operator console, ``/billing/console/clients/{client_id}``: what the admin
API's ``GET /api/admin/clients/{id}`` answers (usage, the credits held now and the jobs open
beside their cap, cycle, plan, status, Stripe ids, this cycle's ledger and credit adjustments,
past cycles, the keys without their digests, the access policy), the client's jobs with their
status and receipt (holds marked, each open job with a form to report its end), the client's
audit trail, and a form for each admin action (the actions are in :mod:`.console_actions` and
:mod:`.console_keys`).

The jobs, the ledger and the audit trail are paged. A pager link is a plain link to the section
as a page of its own; with htmx it replaces only its section (the route answers an htmx request
with the section's template alone).

After an action the browser comes back here with ``?notice=<code>``: the page shows the
code's fixed message (:data:`NOTICES`), never text from the query. A refused action shows the
page again with the refusal's message, under the refusal's status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from ..api.routes import ClientId
from ..api.schemas import UsagePublic
from ..api.schemas_admin import ApiKeyPublic
from ..audit import MAX_QUERY_LIMIT, MAX_QUERY_OFFSET, AuditAction, AuditQuery
from ..cycles import utcnow
from ..errors import BillingError, ClientNotFound
from ..models import ClientRecord
from ..outcomes import failure_classes
from ..plans import PLANS
from ..service import BillingService
from .auth import CONSOLE_PATH, ConsoleUser, Operator
from .pages import PageRoute, is_fragment_request, redirect, render

router = APIRouter(prefix=CONSOLE_PATH, route_class=PageRoute, include_in_schema=False)

#: Jobs per page of this cycle's ledger, newest first.
JOBS_PAGE = 100
#: Jobs per page of the client's jobs with their status and receipt, newest first.
OUTCOMES_PAGE = 50
#: Events per page of the client's audit trail, newest first.
TRAIL_PAGE = 25
#: The message of each ``?notice=`` code an action redirects with (never free text).
NOTICES = {
    "credits": "Credits adjusted.",
    "deactivated": "Client deactivated: its keys are refused from the next request.",
    "reactivated": "Client reactivated: its keys work again.",
    "plan": "Plan changed.",
    "policy": "Access policy saved.",
    "key_revoked": "Key revoked: it stopped working at once.",
    "key_expiry": "Key expiry saved.",
    "outcome": "Job's end reported: its receipt is in Jobs.",
}
Notice = Literal[
    "credits",
    "deactivated",
    "reactivated",
    "plan",
    "policy",
    "key_revoked",
    "key_expiry",
    "outcome",
]
#: How the page names each ``UsagePublic.status``.
STATUS_LABELS = {
    "active": "can submit jobs",
    "inactive": "deactivated",
    "limit_reached": "at its credit limit",
    "past_due": "payment past due",
    "disputed": "payment disputed",
    "paused": "subscription paused",
}


def client_url(client_id: str) -> str:
    return f"{CONSOLE_PATH}/clients/{quote(client_id, safe='')}"


@dataclass(frozen=True)
class KeyView:
    """A key as the page shows it: the API's public view (never the key or its digest) and
    its state, ``grace`` being a rotated key that still works until its expiry."""

    key: ApiKeyPublic
    state: Literal["active", "grace", "expired", "revoked"]


def key_views(service: BillingService, record: ClientRecord) -> list[KeyView]:
    """The client's keys, newest first. A key is in its grace period when a rotation replaced
    it (the audit log's ``key.rotate`` events name it) and it still works."""
    now = utcnow()
    rotations, _ = service.audit_events(
        AuditQuery(client_id=record.client_id, action=AuditAction.KEY_ROTATE, limit=MAX_QUERY_LIMIT)
    )
    rotated = {event.detail.get("key_id") for event in rotations}
    views = []
    for key in reversed(record.api_keys):
        public = ApiKeyPublic.of(key, now)
        graced = public.status == "active" and key.expires_at is not None and key.key_id in rotated
        views.append(KeyView(public, "grace" if graced else public.status))
    return views


def jobs_context(record: ClientRecord, offset: int) -> dict[str, Any]:
    """One page of this cycle's ledger (``metadata.cost_log``), newest first."""
    log = record.metadata.cost_log
    end = max(0, len(log) - offset)
    newest = log[max(0, end - JOBS_PAGE) : end][::-1]
    return {"jobs": newest, "jobs_total": len(log), "jobs_offset": offset, "jobs_page": JOBS_PAGE}


def outcomes_context(service: BillingService, record: ClientRecord, offset: int) -> dict[str, Any]:
    """One page of the client's jobs with their status and receipt (this cycle's, and any
    older one still open), newest first; ``outcomes`` is None when the store keeps no jobs.
    ``holding``: how many of them hold credits now (on every page)."""
    found = service.recent_jobs(record)
    listed = found or []
    return {
        "outcomes": None if found is None else listed[offset : offset + OUTCOMES_PAGE],
        "outcomes_total": len(listed),
        "outcomes_offset": offset,
        "outcomes_page": OUTCOMES_PAGE,
        "holding": sum(job.holding for job in listed),
        "failure_classes": failure_classes(PLANS[record.plan]),
    }


def trail_context(service: BillingService, client_id: str, offset: int) -> dict[str, Any]:
    """One page of the client's audit trail, newest first."""
    wanted = AuditQuery(client_id=client_id, offset=offset, limit=TRAIL_PAGE)
    events, total = service.audit_events(wanted)
    return {
        "events": events,
        "events_total": total,
        "events_offset": offset,
        "events_page": TRAIL_PAGE,
    }


def _base(user: Operator, record: ClientRecord) -> dict[str, Any]:
    return {
        "side": "console",
        "csrf": user.csrf,
        "record": record,
        "client_url": client_url(record.client_id),
    }


def client_page_response(
    request: Request,
    user: Operator,
    client_id: str,
    *,
    notice: str | None = None,
    error: BillingError | None = None,
) -> HTMLResponse:
    """The client's page; with ``error``, under its status (a refused action)."""
    record = user.service.get_client(client_id)
    usage = UsagePublic.of(record, user.service.active_jobs(record))
    context = {
        **_base(user, record),
        **jobs_context(record, 0),
        **outcomes_context(user.service, record, 0),
        **trail_context(user.service, client_id, 0),
        "usage": usage,
        "status_label": STATUS_LABELS.get(usage.status, usage.status),
        "plan": PLANS[record.plan],
        "plans": list(PLANS.values()),
        "keys": key_views(user.service, record),
        "adjustments": list(reversed(record.metadata.credit_adjustments)),
        "history": list(reversed(record.metadata.cycle_history)),
        "notice": notice,
        "error": error,
    }
    status = 200 if error is None else error.status_code
    response = render(request, "console/client.html", context, status_code=status)
    response.headers.update(error.headers if error is not None and error.headers else {})
    return response


def act(
    request: Request,
    user: Operator,
    client_id: str,
    notice: Notice,
    action: Callable[[], object],
) -> Response:
    """Run an admin action, then go back to the client's page with ``notice``; a refusal
    shows the page with it instead (:func:`refused`)."""
    try:
        action()
    except BillingError as exc:
        return refused(request, user, client_id, exc)
    return redirect(request, f"{client_url(client_id)}?notice={notice}")


def refused(request: Request, user: Operator, client_id: str, exc: BillingError) -> Response:
    """The client's page with a refused action's message, under its status (the service
    changed nothing). An unknown client, or a failure of the gateway (5xx), is the error
    page instead."""
    if isinstance(exc, ClientNotFound) or exc.status_code >= 500:
        raise exc
    return client_page_response(request, user, client_id, error=exc)


# -- routes ----------------------------------------------------------------------------------

Offset = Annotated[int, Query(ge=0, le=MAX_QUERY_OFFSET)]


@router.get("/clients/{client_id}")
def client_page(
    request: Request,
    user: ConsoleUser,
    client_id: ClientId,
    notice: str | None = None,
) -> HTMLResponse:
    """The client's page; ``notice`` is a code of :data:`NOTICES` (anything else: none)."""
    return client_page_response(request, user, client_id, notice=NOTICES.get(notice or ""))


@dataclass(frozen=True)
class Section:
    """A paged section of the client's page, also served alone (:func:`_serve`)."""

    template: str
    title: str
    #: The element of the client's page that holds it (its pager's htmx target).
    target: str
    #: Its values for one page: (service, client, offset).
    context: Callable[[BillingService, ClientRecord, int], dict[str, Any]]


SECTIONS = {
    "jobs": Section(
        "console/client_jobs.html",
        "This cycle's ledger",
        "jobs",
        lambda service, record, offset: jobs_context(record, offset),
    ),
    "outcomes": Section("console/client_outcomes.html", "Jobs", "outcomes", outcomes_context),
    "audit": Section(
        "console/client_audit.html",
        "Audit trail",
        "audit-trail",
        lambda service, record, offset: trail_context(service, record.client_id, offset),
    ),
}


def _serve(name: str) -> None:
    """Mount ``GET /clients/{client_id}/<name>``: one page of the section ``name`` of the
    client's page (:data:`SECTIONS`), alone for htmx, else as a page of its own (a pager's
    link without JavaScript). One route per section, so another path (a form's POST-only
    action) keeps its own 405."""
    part = SECTIONS[name]

    def client_section(
        request: Request, user: ConsoleUser, client_id: ClientId, offset: Offset = 0
    ) -> HTMLResponse:
        record = user.service.get_client(client_id)
        context = {**_base(user, record), **part.context(user.service, record, offset)}
        if is_fragment_request(request):
            return render(request, part.template, context)
        whole = {**context, "part": part.template, "title": part.title, "target": part.target}
        return render(request, "console/client_section.html", whole)

    router.add_api_route(
        f"/clients/{{client_id}}/{name}", client_section, methods=["GET"], name=f"client_{name}"
    )


for _name in SECTIONS:
    _serve(_name)
