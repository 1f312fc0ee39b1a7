"""The billing routes, one router per audience, merged into the ``router`` a gateway mounts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from ..errors import StripeNotConfigured
from ..plans import PlanId
from .deps import AdminAuth, CurrentClient, ServiceDep
from .errors import BillingRoute
from .schemas import (
    ApiKeyCreated,
    CheckoutRequest,
    ClientCreate,
    ClientDetail,
    ClientList,
    ClientPublic,
    CreditsAdd,
    ErrorPublic,
    PlansPublic,
    UsagePublic,
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


@public_router.post("/webhook", responses=_errors(400, 503))
def stripe_webhook() -> None:
    """Stripe webhook handler (signature verified). Answers 503 until Stripe is wired in."""
    raise StripeNotConfigured()


# -- client ---------------------------------------------------------------------------------


@client_router.get("/usage")
def get_usage(client: CurrentClient, service: ServiceDep) -> UsagePublic:
    """Current usage and remaining credits of the calling client."""
    return UsagePublic.of(service.get_client(client.client_id))


@client_router.post("/checkout", responses=_errors(422, 503))
def create_checkout(client: CurrentClient, body: CheckoutRequest) -> None:
    """Create a Stripe Checkout session for a plan upgrade. Answers 503 until Stripe is wired
    in: never a fake URL."""
    raise StripeNotConfigured()


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
