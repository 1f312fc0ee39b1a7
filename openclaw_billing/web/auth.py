"""Sessions of the pages: signing in and out, and the dependencies that give each page its
signed-in operator (:data:`ConsoleUser`) or client (:data:`PortalUser`).

* The console signs in with the admin token, the portal with one of the client's API keys,
  through the very checks of the API (:func:`~openclaw_billing.api.checks.verify_admin_token`,
  :func:`~openclaw_billing.api.checks.verify_client_key`): failures count against the same
  brute-force throttle per address and are audited the same way. The secret travels in a POST
  body only, never in a URL.
* A session is checked on every request: its cookie's signature and age, then the stored
  session (not ended, not expired, of this side). A console session also ends when the admin
  token changes; a portal session when its key is revoked or expires, or the client is
  deactivated (then every portal session of the client is deleted), or the request comes from
  outside the client's IP allowlist.
* Every POST of a signed-in page passes the same-origin check and carries the session's CSRF
  token (form field ``csrf_token`` or header ``X-CSRF-Token``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from ..api.checks import verify_admin_token, verify_client_key
from ..api.deps import (
    ClientAddress,
    CredentialsInQuery,
    RateLimiterDep,
    ServiceDep,
    SettingsDep,
    credential_in_query,
)
from ..audit import CONSOLE_ACTOR, AuditAction, client_actor
from ..cycles import utcnow
from ..errors import BillingError, ClientNotFound
from ..keys import digest_key
from ..models import ClientRecord
from ..ratelimit import RateLimiter, client_limit
from ..service import BillingService
from ..sessions import CONSOLE_SUBJECT, Session, SessionKind, new_token, token_digest
from ..settings import Settings
from .pages import SignInRequired, render
from .security import (
    CSRF_FIELD,
    CSRF_HEADER,
    CookieJar,
    Side,
    admin_binding,
    check_csrf,
    check_same_origin,
    csrf_token,
    session_secret,
)

CONSOLE_PATH = "/billing/console"
PORTAL_PATH = "/billing/portal"
JARS: dict[Side, CookieJar] = {
    "console": CookieJar("console", f"{CONSOLE_PATH}/"),
    "portal": CookieJar("portal", f"{PORTAL_PATH}/"),
}
#: Methods that change nothing: no CSRF token needed.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class SignedIn:
    """What every page of a signed-in side has."""

    session: Session
    #: The token every form of this session carries (see :mod:`.security`).
    csrf: str
    #: The address the request comes from (for the audit events of its actions).
    address: str


@dataclass(frozen=True)
class Operator(SignedIn):
    #: The service, acting as ``console`` in the audit log.
    service: BillingService


@dataclass(frozen=True)
class Customer(SignedIn):
    #: The signed-in client, read once per request with its cycle brought up to date.
    client: ClientRecord
    service: BillingService


def _lifetime(settings: Settings) -> int:
    return settings.session_minutes * 60


async def _signed_in(request: Request, settings: Settings, session: Session) -> str:
    """For a request of a live session: the same-origin check and the CSRF token of a request
    that changes something; returns the session's CSRF token for the page's forms."""
    secret = session_secret(settings)
    if request.method not in SAFE_METHODS:
        check_same_origin(request)
        submitted = request.headers.get(CSRF_HEADER)
        if submitted is None:
            value = (await request.form()).get(CSRF_FIELD)
            submitted = value if isinstance(value, str) else None
        check_csrf(secret, session.digest, submitted)
    return csrf_token(secret, session.digest)


#: What a page answers when its address carries a key or the admin token.
CREDENTIAL_IN_URL = (
    "A key or token was sent in this page's address, where browsers and servers keep it in "
    "their logs. It was not used: rotate it (or change the admin token)."
)


def refuse_credentials_in_url(request: Request, settings: Settings) -> None:
    """The API's rule on every page: a query string holding a key, a parameter named like a
    credential, or the admin token itself is ``401 credentials_in_query`` (never used)."""
    if not request.scope.get("query_string"):
        return
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    if credential_in_query(request, token):
        raise CredentialsInQuery(CREDENTIAL_IN_URL)


def _session(request: Request, settings: Settings, service: BillingService, side: Side) -> Session:
    """The request's live session of ``side`` (blocking: it reads the store)."""
    refuse_credentials_in_url(request, settings)
    secret = session_secret(settings)
    token = JARS[side].read_session(request, secret, _lifetime(settings))
    if token is None:
        had_cookie = JARS[side].session_name in request.cookies
        raise SignInRequired(side, "expired" if had_cookie else None)
    session = service.store.sessions.get(token_digest(token), utcnow())
    if session is None or session.kind != SessionKind(side):
        raise SignInRequired(side, "expired")
    if side == "console" and (
        session.binding is None or session.binding != admin_binding(settings)
    ):
        raise SignInRequired(side, "expired")  # the admin token changed since the sign-in
    return session


def _portal_client(
    request: Request, settings: Settings, service: BillingService, address: str
) -> tuple[Session, ClientRecord]:
    """The portal session and its client, while the client is active, the session's key
    usable and the address allowed (blocking: it reads the store)."""
    session = _session(request, settings, service, "portal")
    try:  # the record as the page shows it: its cycle brought up to date
        client: ClientRecord | None = service.get_client(session.subject)
    except ClientNotFound:
        client = None
    if client is None or not client.active:
        service.store.sessions.end_subject(SessionKind.PORTAL, session.subject)
        raise SignInRequired("portal", "inactive")
    key = next((k for k in client.api_keys if k.key_id == session.key_id), None)
    if key is None or not key.usable(utcnow()):
        service.store.sessions.end(session.digest)
        raise SignInRequired("portal", "key")
    if not service.address_allowed(client, address):
        raise SignInRequired("portal", "address")
    return session, client


async def console_user(
    request: Request, settings: SettingsDep, service: ServiceDep, address: ClientAddress
) -> Operator:
    session = await run_in_threadpool(_session, request, settings, service, "console")
    csrf = await _signed_in(request, settings, session)
    service = service.as_actor(CONSOLE_ACTOR)
    return Operator(session=session, csrf=csrf, address=address, service=service)


async def portal_user(
    request: Request, settings: SettingsDep, service: ServiceDep, address: ClientAddress
) -> Customer:
    session, client = await run_in_threadpool(_portal_client, request, settings, service, address)
    csrf = await _signed_in(request, settings, session)
    return Customer(session=session, csrf=csrf, address=address, client=client, service=service)


async def returning_portal_user(
    request: Request, settings: SettingsDep, service: ServiceDep, address: ClientAddress
) -> Customer | None:
    """For the pages Stripe sends the browser back to: None when the request carries no
    portal cookie at all. The cookie is ``SameSite=Strict``, so the browser leaves it out of a
    navigation another site started (Stripe's redirect); the page then sends the browser to
    itself once (``resumed=1``), a navigation of this site, which carries it."""
    refuse_credentials_in_url(request, settings)
    if JARS["portal"].session_name not in request.cookies:
        return None
    return await portal_user(request, settings, service, address)


ConsoleUser = Annotated[Operator, Depends(console_user)]
PortalUser = Annotated[Customer, Depends(portal_user)]
ReturningCustomer = Annotated[Customer | None, Depends(returning_portal_user)]


# -- signing in and out ----------------------------------------------------------------------


def _open_session(
    request: Request,
    response: Response,
    settings: Settings,
    service: BillingService,
    kind: SessionKind,
    subject: str,
    now: datetime,
    *,
    key_id: str | None = None,
    binding: str | None = None,
) -> None:
    """Store a new session of ``kind`` for ``subject`` and set its cookie on ``response``."""
    token = new_token()
    lifetime = _lifetime(settings)
    session = Session(
        digest=token_digest(token),
        kind=kind,
        subject=subject,
        key_id=key_id,
        binding=binding,
        created_at=now,
        expires_at=now + timedelta(seconds=lifetime),
    )
    service.store.sessions.create(session, now)
    side: Side = kind.value
    JARS[side].set_session(response, request, token, session_secret(settings), lifetime)


def sign_in_console(
    request: Request,
    response: Response,
    settings: Settings,
    service: BillingService,
    limiter: RateLimiter,
    address: str,
    token: str | None,
) -> None:
    """Check the admin token as the admin API does, then open a console session."""
    check_same_origin(request)
    verify_admin_token(settings, service, limiter, address, token or None)
    now = utcnow()
    _open_session(
        request,
        response,
        settings,
        service,
        SessionKind.CONSOLE,
        CONSOLE_SUBJECT,
        now,
        binding=admin_binding(settings),
    )
    service.record_audit(AuditAction.CONSOLE_SIGN_IN, actor=CONSOLE_ACTOR, source=address, now=now)


def sign_in_portal(
    request: Request,
    response: Response,
    settings: Settings,
    service: BillingService,
    limiter: RateLimiter,
    address: str,
    api_key: str | None,
) -> ClientRecord:
    """Check the key as every keyed route does (and count the sign-in against the client's
    requests per minute), then open a portal session for its client."""
    check_same_origin(request)
    presented = (api_key or "").strip() or None
    client = verify_client_key(service, limiter, address, presented)
    limiter.hit_client(client.client_id, client_limit(client))  # a sign-in is a request too
    assert presented is not None  # verify_client_key refuses a missing key
    key = client.key_by_digest(digest_key(presented))
    assert key is not None  # verify_client_key found the client by this very digest
    now = utcnow()
    _open_session(
        request,
        response,
        settings,
        service,
        SessionKind.PORTAL,
        client.client_id,
        now,
        key_id=key.key_id,
    )
    service.record_audit(
        AuditAction.PORTAL_SIGN_IN,
        client_id=client.client_id,
        actor=client_actor(client.client_id),
        source=address,
        detail={"key_id": key.key_id},
        now=now,
    )
    return client


def sign_in_form(
    request: Request,
    settings: Settings,
    side: Side,
    *,
    notice: str | None = None,
    error: BillingError | None = None,
) -> HTMLResponse:
    """A side's sign-in page (``<side>/sign_in.html``), with a fresh form token (and its
    cookie when needed); a refused sign-in shows it again with the refusal, under the
    refusal's status. The secret's field is always empty: what was sent is never written
    back into a page."""
    jar = JARS[side]
    token, cookie = jar.signin_form(request, session_secret(settings))
    context = {"side": side, "notice": notice, "csrf": token, "error": error}
    status = 200 if error is None else error.status_code
    response = render(request, f"{side}/sign_in.html", context, status_code=status)
    response.headers.update(error.headers if error is not None and error.headers else {})
    jar.set_signin(response, request, cookie)
    return response


def sign_out(
    request: Request, response: Response, service: BillingService, user: SignedIn, side: Side
) -> None:
    """End the session in the store (every copy of the cookie stops working) and clear the
    cookie."""
    service.store.sessions.end(user.session.digest)
    JARS[side].clear_session(response, request)
    action = AuditAction.CONSOLE_SIGN_OUT if side == "console" else AuditAction.PORTAL_SIGN_OUT
    actor = CONSOLE_ACTOR if side == "console" else client_actor(user.session.subject)
    client_id = None if side == "console" else user.session.subject
    service.record_audit(action, client_id=client_id, actor=actor, source=user.address)


__all__ = [
    "CONSOLE_PATH",
    "PORTAL_PATH",
    "ConsoleUser",
    "Customer",
    "Operator",
    "PortalUser",
    "RateLimiterDep",
    "ReturningCustomer",
    "sign_in_console",
    "sign_in_form",
    "sign_in_portal",
    "sign_out",
]
