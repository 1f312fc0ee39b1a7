"""The console's actions on a client's keys: issue, rotate, revoke, set or clear the expiry,
each a POST form of the client's page (:mod:`.console_client`), calling the same service
method as the admin API's route with the same validated input (:mod:`.forms`).

Issuing or rotating answers with the new key on a page of its own (201, ``Cache-Control:
no-store`` like every page): the only time the plaintext is ever shown. The client's page
shows keys by prefix only. Revoking or changing an expiry goes back to the client's page with
a fixed notice; a refusal shows that page with its message and status, and nothing changed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from ..access import find_key
from ..api.routes import ClientId, KeyId
from ..api.schemas_admin import ApiKeyPublic
from ..cycles import utcnow
from ..errors import BillingError
from ..models import ApiKeyRecord, ClientRecord
from .auth import CONSOLE_PATH, ConsoleUser, Operator
from .console_client import act, client_url, refused
from .forms import KeyCreateForm, KeyExpiryForm, KeyRotateForm
from .pages import PageRoute, render

router = APIRouter(prefix=CONSOLE_PATH, route_class=PageRoute, include_in_schema=False)


@router.post("/clients/{client_id}/keys")
def issue_key(
    request: Request,
    user: ConsoleUser,
    client_id: ClientId,
    form: Annotated[KeyCreateForm, Form()],
) -> Response:
    """Another key for the client (a label, an optional expiry in UTC), shown once."""
    try:
        record, key, plaintext = user.service.issue_key(
            client_id, label=form.label, expires_at=form.expires_at, source=user.address
        )
    except BillingError as exc:
        return refused(request, user, client_id, exc)
    return key_shown(request, user, record, key, plaintext)


@router.post("/clients/{client_id}/keys/{key_id}/rotate")
def rotate_key(
    request: Request,
    user: ConsoleUser,
    client_id: ClientId,
    key_id: KeyId,
    form: Annotated[KeyRotateForm, Form()],
) -> Response:
    """A new key (shown once) that works at once; the old one works for the grace period."""
    try:
        record, key, plaintext = user.service.rotate_key(
            client_id,
            key_id,
            grace=timedelta(seconds=form.grace_seconds),
            label=form.label,
            source=user.address,
        )
    except BillingError as exc:
        return refused(request, user, client_id, exc)
    replaced = ApiKeyPublic.of(find_key(record, key_id), utcnow())
    return key_shown(request, user, record, key, plaintext, replaced=replaced)


@router.post("/clients/{client_id}/keys/{key_id}/revoke")
def revoke_key(request: Request, user: ConsoleUser, client_id: ClientId, key_id: KeyId) -> Response:
    return act(
        request,
        user,
        client_id,
        "key_revoked",
        lambda: user.service.revoke_key(client_id, key_id, source=user.address),
    )


@router.post("/clients/{client_id}/keys/{key_id}/expiry")
def set_key_expiry(
    request: Request,
    user: ConsoleUser,
    client_id: ClientId,
    key_id: KeyId,
    form: Annotated[KeyExpiryForm, Form()],
) -> Response:
    """Set when the key stops working (in the future, UTC), or clear it (empty)."""
    return act(
        request,
        user,
        client_id,
        "key_expiry",
        lambda: user.service.set_key_expiry(
            client_id, key_id, form.expires_at, source=user.address
        ),
    )


def key_shown(
    request: Request,
    user: Operator,
    record: ClientRecord,
    key: ApiKeyRecord,
    plaintext: str,
    *,
    replaced: ApiKeyPublic | None = None,
    created: bool = False,
) -> HTMLResponse:
    """The page that shows a new key, once: after issuing or rotating one (``replaced``: the
    old key and how long it still works), or creating the client (``created``)."""
    return render(
        request,
        "console/key_shown.html",
        {
            "side": "console",
            "csrf": user.csrf,
            "record": record,
            "api_key": plaintext,
            "key": ApiKeyPublic.of(key, utcnow()),
            "replaced": replaced,
            "client_url": client_url(record.client_id),
            "created": created,
        },
        status_code=201,
    )
