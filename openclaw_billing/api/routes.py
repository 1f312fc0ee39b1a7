"""The billing routes, one router per audience, merged into the ``router`` a gateway mounts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, status
from starlette.concurrency import run_in_threadpool

from ..errors import PayloadTooLarge
from ..plans import PlanId
from ..stripe_billing import MAX_WEBHOOK_BYTES
from .deps import AdminAuth, CurrentClient, ServiceDep, StripeDep
from .errors import BillingRoute
from .schemas import (
    ApiKeyCreated,
    CheckoutPublic,
    CheckoutRequest,
    ClientCreate,
    ClientDetail,
    ClientList,
    ClientPublic,
    CreditsAdd,
    ErrorPublic,
    PlansPublic,
    PortalPublic,
    PortalRequest,
    ReturnPublic,
    UsagePublic,
    WebhookAck,
)

ClientId = Annotated[str, Path(min_length=1, max_length=100)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorPublic} for code in codes}


public_router = APIRouter(prefix="/api/billing", tags=["billing"], route_class=BillingRoute)
client_router = APIRouter(
    prefix="/api/billing",
    tags=["billing"],
    route_class=BillingRoute,
    responses=_errors(401),
)
admin_router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    route_class=BillingRoute,
    dependencies=[AdminAuth],
    responses=_errors(401, 503),
)


# -- public ---------------------------------------------------------------------------------


@public_router.get("/plans")
def list_plans() -> PlansPublic:
    """List all available pricing plans."""
    return PlansPublic.catalogue()


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
    checkout: Annotated[str | None, Query(max_length=20)] = None,
) -> ReturnPublic:
    """Where Stripe sends the browser back after Checkout or the portal."""
    return ReturnPublic.for_query(checkout)


# -- client ---------------------------------------------------------------------------------


@client_router.get("/usage")
def get_usage(client: CurrentClient, service: ServiceDep) -> UsagePublic:
    """Current usage and remaining credits of the calling client."""
    return UsagePublic.of(service.get_client(client.client_id))


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
def create_client(body: ClientCreate, service: ServiceDep) -> ApiKeyCreated:
    """Create a client account; the response carries its API key, shown this once."""
    record, api_key = service.create_client(name=body.name, email=body.email, plan=body.plan)
    return ApiKeyCreated.with_key(record, api_key)


@admin_router.get("/clients")
def list_clients(
    service: ServiceDep,
    active: Annotated[
        bool | None, Query(description="Only active (true) or inactive (false).")
    ] = None,
    plan: PlanId | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ClientList:
    """List clients, optionally filtered by active status and plan. Keys are never listed."""
    page, total = service.list_clients(active=active, plan=plan, offset=offset, limit=limit)
    return ClientList(
        clients=[ClientPublic.of(r) for r in page], total=total, offset=offset, limit=limit
    )


@admin_router.get("/clients/{client_id}", responses=_errors(404))
def get_client(client_id: ClientId, service: ServiceDep) -> ClientDetail:
    """One client with its current-cycle ledger and past-cycle summaries."""
    return ClientDetail.of(service.get_client(client_id))


@admin_router.put("/clients/{client_id}/credits", responses=_errors(404, 409, 422))
def add_credits(client_id: ClientId, body: CreditsAdd, service: ServiceDep) -> ClientPublic:
    """Add credits to a client (negative to correct, never below zero), with a reason."""
    return ClientPublic.of(service.add_credits(client_id, body.credits, body.reason))


@admin_router.delete("/clients/{client_id}", responses=_errors(404))
def deactivate_client(client_id: ClientId, service: ServiceDep) -> ClientPublic:
    """Deactivate a client (soft delete: data kept, key blocked from the next request)."""
    return ClientPublic.of(service.set_active(client_id, False))


@admin_router.post("/clients/{client_id}/reactivate", responses=_errors(404))
def reactivate_client(client_id: ClientId, service: ServiceDep) -> ClientPublic:
    """Reactivate a deactivated client; its key works again."""
    return ClientPublic.of(service.set_active(client_id, True))


router = APIRouter()
router.include_router(public_router)
router.include_router(client_router)
router.include_router(admin_router)
