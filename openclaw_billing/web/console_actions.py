"""The console's actions on a client's account: credits, (de)activation, plan and access
policy, and reporting a job's end, each a POST form of the client's page
(:mod:`.console_client`).

Each calls the same :class:`~openclaw_billing.service.BillingService` method as the admin
API's route, with the same validated input (:mod:`.forms`) and the operator's address as the
source, so it is checked, atomic and audited the same way, its event naming ``console`` as
the actor. Then the browser goes back to the client's page (303) with a fixed notice; a
refusal shows the page with the refusal's message and status, and nothing has changed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from ..api.routes import ClientId
from ..jobs import JobStatus
from ..outcomes import Report
from .auth import CONSOLE_PATH, ConsoleUser
from .console_client import act
from .forms import CreditsForm, OutcomeForm, PlanForm, PolicyForm
from .pages import PageRoute

router = APIRouter(prefix=CONSOLE_PATH, route_class=PageRoute, include_in_schema=False)


@router.post("/clients/{client_id}/credits")
def add_credits(
    request: Request, user: ConsoleUser, client_id: ClientId, form: Annotated[CreditsForm, Form()]
) -> Response:
    """Add credits, or remove them with a negative amount (never below zero: 409)."""
    return act(
        request,
        user,
        client_id,
        "credits",
        lambda: user.service.add_credits(client_id, form.credits, form.reason, source=user.address),
    )


@router.post("/clients/{client_id}/deactivate")
def deactivate(request: Request, user: ConsoleUser, client_id: ClientId) -> Response:
    return act(
        request,
        user,
        client_id,
        "deactivated",
        lambda: user.service.set_active(client_id, False, source=user.address),
    )


@router.post("/clients/{client_id}/reactivate")
def reactivate(request: Request, user: ConsoleUser, client_id: ClientId) -> Response:
    return act(
        request,
        user,
        client_id,
        "reactivated",
        lambda: user.service.set_active(client_id, True, source=user.address),
    )


@router.post("/clients/{client_id}/plan")
def change_plan(
    request: Request, user: ConsoleUser, client_id: ClientId, form: Annotated[PlanForm, Form()]
) -> Response:
    """Move the client to another plan (409 while a live Stripe subscription manages it)."""
    return act(
        request,
        user,
        client_id,
        "plan",
        lambda: user.service.change_plan(client_id, form.plan, source=user.address),
    )


@router.post("/clients/{client_id}/policy")
def set_policy(
    request: Request, user: ConsoleUser, client_id: ClientId, form: Annotated[PolicyForm, Form()]
) -> Response:
    """The rate-limit override (empty: the plan's) and the IP allowlist (one per line)."""
    return act(
        request,
        user,
        client_id,
        "policy",
        lambda: user.service.set_policy(
            client_id,
            rate_limit_per_minute=form.rate_limit_per_minute,
            ip_allowlist=form.ip_allowlist,
            source=user.address,
        ),
    )


@router.post("/clients/{client_id}/outcome")
def report_outcome(
    request: Request, user: ConsoleUser, client_id: ClientId, form: Annotated[OutcomeForm, Form()]
) -> Response:
    """Report how one of the client's jobs ended, as its runner would: the plan's outcome
    policy settles its hold (404 no such job, 409 an ended job, 422 a failure without class)."""
    report = Report(JobStatus(form.status), form.failure_class)
    return act(
        request,
        user,
        client_id,
        "outcome",
        lambda: user.service.report_job(
            form.job_id, report, client_id=client_id, source=user.address
        ),
    )
