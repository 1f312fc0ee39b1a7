"""The console's audit log page, ``/billing/console/audit``: every event, newest first, with
the filters of ``GET /api/admin/audit`` (client, action, since and until in UTC) and pages.
It reads the log through the same service call and query (:class:`~openclaw_billing.audit.
AuditQuery`) as that route. The filter form is a plain GET form; the pager links, with htmx,
replace only the table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from ..audit import AuditAction, AuditQuery
from ..errors import BillingError
from .auth import CONSOLE_PATH, ConsoleUser
from .forms import AuditFilters
from .pages import PageRoute, is_fragment_request, render

router = APIRouter(prefix=CONSOLE_PATH, route_class=PageRoute, include_in_schema=False)

#: Events per page of the audit log.
AUDIT_PAGE = 50


@router.get("/audit")
def audit_page(
    request: Request, user: ConsoleUser, filters: Annotated[AuditFilters, Query()]
) -> HTMLResponse:
    wanted = AuditQuery(
        client_id=filters.client_id,
        action=filters.action,
        since=filters.since,
        until=filters.until,
        offset=filters.offset,
        limit=AUDIT_PAGE,
    )
    error: BillingError | None = None
    try:
        events, total = user.service.audit_events(wanted)
    except BillingError as exc:
        if exc.status_code >= 500:
            raise
        error, events, total = exc, [], 0  # e.g. since after until: shown with the form
    context = {
        "side": "console",
        "csrf": user.csrf,
        "events": events,
        "total": total,
        "offset": filters.offset,
        "page_size": AUDIT_PAGE,
        "actions": list(AuditAction),
        "filters": _form_values(filters),
        "filters_query": urlencode(_query(filters)),
        "error": error,
    }
    template = "console/audit_table.html" if is_fragment_request(request) else "console/audit.html"
    status = 200 if error is None else error.status_code
    return render(request, template, context, status_code=status)


def _local(value: datetime | None) -> str:
    """A UTC time as a ``datetime-local`` input's value (no zone: the page says UTC)."""
    return "" if value is None else value.strftime("%Y-%m-%dT%H:%M:%S")


def _form_values(filters: AuditFilters) -> dict[str, str]:
    return {
        "client_id": filters.client_id or "",
        "action": filters.action.value if filters.action else "",
        "since": _local(filters.since),
        "until": _local(filters.until),
    }


def _query(filters: AuditFilters) -> dict[str, Any]:
    """The filters as the pager links carry them, exactly (the offset is the link's own)."""
    values = {
        "client_id": filters.client_id,
        "action": filters.action.value if filters.action else None,
        "since": filters.since.isoformat() if filters.since else None,
        "until": filters.until.isoformat() if filters.until else None,
    }
    return {name: value for name, value in values.items() if value is not None}
