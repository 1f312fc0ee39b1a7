"""The billing routes, one router per audience, merged into the ``router`` a gateway mounts."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, status
from starlette.concurrency import run_in_threadpool

from ..access import find_key
from ..audit import MAX_QUERY_LIMIT, MAX_QUERY_OFFSET, AuditAction, AuditQuery
from ..errors import PayloadTooLarge
from ..settings import get_settings
from ..stripe_billing import MAX_WEBHOOK_BYTES
from .bodylimit import BodyLimitedRoute
from .deps import AdminAuth, ClientAddress, CurrentClient, ServiceDep, StripeDep
from .routes_jobs import admin_jobs_router, client_jobs_router
from .schemas import (
    ONE_LINE,
    CheckoutPublic,
    CheckoutRequest,
    ErrorPublic,
    IsoDatetime,
    PlansPublic,
    PortalPublic,
    PortalRequest,
    QuotePublic,
    QuoteRequest,
    ReturnPublic,
    UsagePublic,
    WebhookAck,
)
from .schemas_admin import (
    ApiKeyCreated,
    ApiKeyPublic,
    AuditPage,
    ClientCreate,
    ClientDetail,
    ClientList,
    ClientPublic,
    CreditsAdd,
    KeyCreate,
    KeyExpiry,
    KeyIssued,
    KeyList,
    KeyRotate,
    PlanChange,
    PolicyPublic,
    PolicyUpdate,
)
from .schemas_reports import ClientListQuery, OverviewPublic

#: Path ids and query filters follow the one-line rule: a NUL byte or a line break is a 422,
#: never a database error or a forged log line.
ClientId = Annotated[str, Path(min_length=1, max_length=100, pattern=ONE_LINE)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorPublic} for code in codes}


public_router = APIRouter(prefix="/api/billing", tags=["billing"], route_class=BodyLimitedRoute)
client_router = APIRouter(
    prefix="/api/billing",
    tags=["billing"],
    route_class=BodyLimitedRoute,
    responses=_errors(401, 429),
)
admin_router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    route_class=BodyLimitedRoute,
    dependencies=[AdminAuth],
    responses=_errors(401, 429, 503),
)


# -- public ---------------------------------------------------------------------------------


@public_router.get("/plans")
def list_plans() -> PlansPublic:
    """List all available pricing plans, with what each holds a client to: how many jobs at
    once, how long a job's price is held (the one in force), the prices and the outcome
    policy."""
    return PlansPublic.catalogue(get_settings().hold_ttl)


@public_router.post("/webhook", responses=_errors(400, 413, 502, 503))
async def stripe_webhook(
    request: Request,
    billing: StripeDep,
    stripe_signature: Annotated[str | None, Header(max_length=4096)] = None,
) -> WebhookAck:
    """Stripe webhook: the raw body is verified with STRIPE_WEBHOOK_SECRET before anything is
    parsed; each event is applied exactly once. Unhandled types are acknowledged."""
    payload = await _read_body(request, MAX_WEBHOOK_BYTES)
    event = billing.verify(payload, stripe_signature)
    outcome = await run_in_threadpool(billing.handle, event)
    return WebhookAck(
        received=True, event_id=event.id, outcome=outcome.value if outcome else "ignored"
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge()
    return bytes(body)


@public_router.get("/return")
def checkout_return(
    checkout: Annotated[str | None, Query(max_length=20, pattern=ONE_LINE)] = None,
) -> ReturnPublic:
    """Where Stripe sends the browser back after Checkout or the portal."""
    return ReturnPublic.for_query(checkout)


# -- client ---------------------------------------------------------------------------------


@client_router.get("/usage")
def get_usage(client: CurrentClient, service: ServiceDep) -> UsagePublic:
    """Current usage and remaining credits of the calling client."""
    record = service.get_client(client.client_id)
    return UsagePublic.of(record, service.active_jobs(record))


@client_router.post("/quote", responses=_errors(413, 422, 503))
async def create_quote(
    client: CurrentClient, body: QuoteRequest, service: ServiceDep
) -> QuotePublic:
    """The price of a job (its task type and priority; the body may be the whole job) in
    credits on the client's plan, and a quote id bound to the client, the job's task type and
    priority and the price, valid for 15 minutes. No I/O (the plan is the authenticated
    record's; the quote id is signed, not stored): answered on the event loop."""
    quote = service.quote(client, body.task_type, body.priority)
    return QuotePublic.of(quote, client.plan)


@client_router.post("/checkout", responses=_errors(409, 422, 502, 503))
def create_checkout(
    client: CurrentClient, body: CheckoutRequest, billing: StripeDep
) -> CheckoutPublic:
    """Create a Stripe Checkout session to subscribe to starter or pro."""
    session = billing.create_checkout(
        client, body.plan, success_url=body.success_url, cancel_url=body.cancel_url
    )
    return CheckoutPublic(checkout_url=session.checkout_url, session_id=session.session_id)


@client_router.post("/portal", responses=_errors(409, 502, 503))
def create_portal(
    client: CurrentClient, billing: StripeDep, body: PortalRequest | None = None
) -> PortalPublic:
    """A Stripe customer-portal session: update the card, see invoices, cancel."""
    url = billing.create_portal(client, return_url=body.return_url if body else None)
    return PortalPublic(portal_url=url)


# -- admin ----------------------------------------------------------------------------------


@admin_router.post("/clients", status_code=status.HTTP_201_CREATED, responses=_errors(422))
def create_client(body: ClientCreate, service: ServiceDep, source: ClientAddress) -> ApiKeyCreated:
    """Create a client account; the response carries its API key, shown this once."""
    record, api_key = service.create_client(
        name=body.name, email=body.email, plan=body.plan, source=source
    )
    return ApiKeyCreated.with_key(record, api_key)


@admin_router.get("/clients", responses=_errors(422))
def list_clients(service: ServiceDep, params: Annotated[ClientListQuery, Query()]) -> ClientList:
    """List clients: filter by active status, plan, standing and a search; sort; page.
    Keys are never listed."""
    page, total = service.list_clients(params.query())
    return ClientList(
        clients=[ClientPublic.of(r) for r in page],
        total=total,
        offset=params.offset,
        limit=params.limit,
    )


@admin_router.get("/overview")
def get_overview(service: ServiceDep) -> OverviewPublic:
    """The store's figures now: clients by plan, this cycle's jobs and credits, clients at
    their limit or past due, jobs of the last 30 days, monthly recurring revenue by plan."""
    return OverviewPublic.of(service.overview())


@admin_router.get("/clients/{client_id}", responses=_errors(404))
def get_client(client_id: ClientId, service: ServiceDep) -> ClientDetail:
    """One client with its current-cycle ledger and past-cycle summaries, its keys, its access
    policy and its jobs open against its cap."""
    record = service.get_client(client_id)
    return ClientDetail.of(record, service.active_jobs(record))


@admin_router.put("/clients/{client_id}/credits", responses=_errors(404, 409, 422))
def add_credits(
    client_id: ClientId, body: CreditsAdd, service: ServiceDep, source: ClientAddress
) -> ClientPublic:
    """Add credits to a client (negative to correct, never below zero), with a reason."""
    record = service.add_credits(client_id, body.credits, body.reason, source=source)
    return ClientPublic.of(record)


@admin_router.delete("/clients/{client_id}", responses=_errors(404))
def deactivate_client(
    client_id: ClientId, service: ServiceDep, source: ClientAddress
) -> ClientPublic:
    """Deactivate a client (soft delete: data kept, key blocked from the next request)."""
    record = service.set_active(client_id, False, source=source)
    return ClientPublic.of(record)


@admin_router.post("/clients/{client_id}/reactivate", responses=_errors(404))
def reactivate_client(
    client_id: ClientId, service: ServiceDep, source: ClientAddress
) -> ClientPublic:
    """Reactivate a deactivated client; its key works again."""
    record = service.set_active(client_id, True, source=source)
    return ClientPublic.of(record)


@admin_router.get("/audit", responses=_errors(422))
def list_audit_events(
    service: ServiceDep,
    client_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            pattern=ONE_LINE,
            description="Only this client's events.",
        ),
    ] = None,
    action: Annotated[AuditAction | None, Query(description="Only this action.")] = None,
    since: Annotated[
        IsoDatetime | None,
        Query(description="ISO 8601; events at or after it (UTC if no zone; years 1970-9998)."),
    ] = None,
    until: Annotated[
        IsoDatetime | None,
        Query(description="ISO 8601; events before it (UTC if no zone; years 1970-9998)."),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_QUERY_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_QUERY_LIMIT)] = 100,
) -> AuditPage:
    """The audit log, newest first: admin actions and authentication failures (never a
    secret). Filter by client, action and time range; page with offset and limit."""
    wanted = AuditQuery(
        client_id=client_id, action=action, since=since, until=until, offset=offset, limit=limit
    )
    events, total = service.audit_events(wanted)
    return AuditPage(events=events, total=total, offset=offset, limit=limit)


# -- admin: keys, plan and access policy -----------------------------------------------------

KeyId = Annotated[str, Path(pattern=r"^key_[0-9a-f]{12}$")]


@admin_router.get("/clients/{client_id}/keys", responses=_errors(404))
def list_keys(client_id: ClientId, service: ServiceDep) -> KeyList:
    """The client's keys, newest last: prefix, status, expiry, last use. Never a key."""
    record = service.get_client(client_id)
    return KeyList(client_id=client_id, keys=[ApiKeyPublic.of(k) for k in record.api_keys])


@admin_router.post(
    "/clients/{client_id}/keys",
    status_code=status.HTTP_201_CREATED,
    responses=_errors(404, 409, 422),
)
def issue_key(
    client_id: ClientId, body: KeyCreate, service: ServiceDep, source: ClientAddress
) -> KeyIssued:
    """Issue another key for the client (shown once). Every key draws on the one balance."""
    _, key, plaintext = service.issue_key(
        client_id, label=body.label, expires_at=body.expires_at, source=source
    )
    return KeyIssued(**ApiKeyPublic.of(key).model_dump(), client_id=client_id, api_key=plaintext)


@admin_router.post(
    "/clients/{client_id}/keys/{key_id}/rotate",
    status_code=status.HTTP_201_CREATED,
    responses=_errors(404, 409, 422),
)
def rotate_key(
    client_id: ClientId,
    key_id: KeyId,
    body: KeyRotate,
    service: ServiceDep,
    source: ClientAddress,
) -> KeyIssued:
    """Replace a key: the new key (shown once) works at once, the old one for
    ``grace_seconds`` more, then stops."""
    _, key, plaintext = service.rotate_key(
        client_id,
        key_id,
        grace=timedelta(seconds=body.grace_seconds),
        label=body.label,
        source=source,
    )
    return KeyIssued(**ApiKeyPublic.of(key).model_dump(), client_id=client_id, api_key=plaintext)


@admin_router.delete("/clients/{client_id}/keys/{key_id}", responses=_errors(404))
def revoke_key(
    client_id: ClientId, key_id: KeyId, service: ServiceDep, source: ClientAddress
) -> ApiKeyPublic:
    """Revoke a key: it stops working at once (revoking twice changes nothing)."""
    record = service.revoke_key(client_id, key_id, source=source)
    return ApiKeyPublic.of(find_key(record, key_id))


@admin_router.put("/clients/{client_id}/keys/{key_id}/expiry", responses=_errors(404, 409, 422))
def set_key_expiry(
    client_id: ClientId,
    key_id: KeyId,
    body: KeyExpiry,
    service: ServiceDep,
    source: ClientAddress,
) -> ApiKeyPublic:
    """Set when a key stops working (in the future), or clear it with null."""
    record = service.set_key_expiry(client_id, key_id, body.expires_at, source=source)
    return ApiKeyPublic.of(find_key(record, key_id))


@admin_router.put("/clients/{client_id}/plan", responses=_errors(404, 409, 422))
def change_plan(
    client_id: ClientId, body: PlanChange, service: ServiceDep, source: ClientAddress
) -> ClientPublic:
    """Move a client to another plan now (e.g. an enterprise deal). Within the cycle, the
    difference of the allowances is a logged credit adjustment, never below zero. A client
    with a live Stripe subscription changes plan in Stripe instead (409)."""
    _, record = service.change_plan(client_id, body.plan, source=source)
    return ClientPublic.of(record)


@admin_router.put("/clients/{client_id}/policy", responses=_errors(404, 422))
def set_policy(
    client_id: ClientId, body: PolicyUpdate, service: ServiceDep, source: ClientAddress
) -> PolicyPublic:
    """Set the client's rate-limit override (null: the plan's) and IP allowlist (CIDRs, IPv4
    and IPv6; empty allows every address), and, if given, its cap of jobs queued or running
    (null: the plan's; left out: unchanged)."""
    cap = body.max_active_jobs if "max_active_jobs" in body.model_fields_set else ...
    record = service.set_policy(
        client_id,
        rate_limit_per_minute=body.rate_limit_per_minute,
        ip_allowlist=body.ip_allowlist,
        max_active_jobs=cap,
        source=source,
    )
    return PolicyPublic(
        client_id=client_id,
        rate_limit_per_minute=record.rate_limit_per_minute,
        ip_allowlist=record.ip_allowlist,
        max_active_jobs=record.max_active_jobs,
    )


router = APIRouter()
router.include_router(public_router)
router.include_router(client_router)
router.include_router(admin_router)
router.include_router(client_jobs_router)
router.include_router(admin_jobs_router)
