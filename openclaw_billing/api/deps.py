"""Authentication dependencies, declared once as ``Annotated`` aliases.

``APIKeyHeader(auto_error=False)`` puts the security schemes in ``/docs`` while our own error
(one identical 401 body) is raised.

A credential in the query string (``?api_key=oc_live_...``) is refused with 401
``credentials_in_query`` before anything else: URLs are written to access logs, proxy logs and
browser histories, so a key sent there has to be refused, not used.

Both checks (:mod:`.checks`) are rate limited (:mod:`openclaw_billing.ratelimit`): an address
past its limit of failed key or token checks gets 429 before any secret is looked at, and every
request of an authenticated client counts against its per-minute limit (``RateLimit-*``
headers on the answer, 429 with ``Retry-After`` over it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar
from weakref import WeakKeyDictionary

import anyio
import anyio.to_thread
from fastapi import Depends, Request, Response, Security
from fastapi.security import APIKeyHeader

from ..errors import BillingError
from ..keycache import VerifiedKey
from ..keys import secret_matches
from ..models import ClientRecord
from ..net import resolve_client_address
from ..ratelimit import RateLimiter, client_limit, get_rate_limiter
from ..service import BillingService, get_service
from ..settings import Settings, get_settings
from ..stripe_billing import StripeBilling, get_stripe_client
from .checks import verify_admin_token, verify_key, verify_known_key
from .errors import PENDING_CLIENT_CHECK_STATE, RATE_LIMIT_HEADERS_STATE

T = TypeVar("T")

CLIENT_KEY_HEADER = "X-Client-Key"
ADMIN_TOKEN_HEADER = "X-Auth-Token"  # noqa: S105 - a header name, not a secret
#: Query parameters that name a credential (lower case, ``-`` read as ``_``): any value under
#: one of these names is refused, whatever it looks like.
CREDENTIAL_QUERY_PARAMS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "x_api_key",
        "client_key",
        "x_client_key",
        "access_key",
        "token",
        "access_token",
        "auth_token",
        "x_auth_token",
        "admin_token",
    }
)
#: A query value that looks like a client key, under any name (``oc_live_`` in any case).
_KEY_IN_TEXT = re.compile(r"oc_live_", re.IGNORECASE)


class CredentialsInQuery(BillingError):
    """A key or token in the query string: refused, never used (URLs end up in logs)."""

    status_code = 401
    code = "credentials_in_query"
    message = (
        "API keys are not accepted in the query string, where they end up in logs: send the "
        f"key in the {CLIENT_KEY_HEADER} header (and rotate a key that was sent in a URL)"
    )


class AdminTokenInQuery(CredentialsInQuery):
    message = (
        "The admin token is not accepted in the query string, where it ends up in logs: send "
        f"it in the {ADMIN_TOKEN_HEADER} header (and change a token that was sent in a URL)"
    )


def credential_in_query(request: Request, admin_token: str | None = None) -> bool:
    """Whether the query string carries a credential: a parameter named like one, a value
    that looks like a client key, or (on admin routes) the admin token itself."""
    for name, value in request.query_params.multi_items():
        if name.strip().lower().replace("-", "_") in CREDENTIAL_QUERY_PARAMS:
            return True
        if _KEY_IN_TEXT.search(value) or _KEY_IN_TEXT.search(name):
            return True
        if admin_token is not None and value and secret_matches(value, admin_token):
            return True
    return False


client_key_scheme = APIKeyHeader(
    name=CLIENT_KEY_HEADER,
    scheme_name="ClientKey",
    description="The client's API key, `oc_live_` + 32 lowercase hex characters.",
    auto_error=False,
)
admin_token_scheme = APIKeyHeader(
    name=ADMIN_TOKEN_HEADER,
    scheme_name="AdminToken",
    description="The operator's admin token (`OPENCLAW_ADMIN_TOKEN`).",
    auto_error=False,
)

# The dependencies that only read a cached object are ``async``: FastAPI would otherwise send
# each to the thread pool and back.


async def _settings() -> Settings:
    return get_settings()


async def _service() -> BillingService:
    return get_service()


async def _rate_limiter() -> RateLimiter:
    return get_rate_limiter()


SettingsDep = Annotated[Settings, Depends(_settings)]
ServiceDep = Annotated[BillingService, Depends(_service)]
RateLimiterDep = Annotated[RateLimiter, Depends(_rate_limiter)]

_billing_limiters: WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    WeakKeyDictionary()
)


def billing_limiter() -> anyio.CapacityLimiter:
    """This event loop's pool for billing work: ``OPENCLAW_BILLING_THREADS`` threads."""
    loop = asyncio.get_running_loop()
    limiter = _billing_limiters.get(loop)
    if limiter is None:
        limiter = anyio.CapacityLimiter(get_settings().billing_threads)
        _billing_limiters[loop] = limiter
    return limiter


async def run_billing(func: Callable[..., T], *args: Any) -> T:
    """Run blocking billing work (authentication, a charge, the job file) on the worker's small
    billing pool rather than the 40 threads FastAPI gives ``def`` routes. Measured on 2
    cores, SQLite, 2 workers, 16 connections: 476 billed requests/s with 2 threads against 287
    with 40; CPython threads that all want the GIL mostly wait for each other. Other routes,
    and slow calls such as Stripe's, keep the default pool."""
    return await anyio.to_thread.run_sync(partial(func, *args), limiter=billing_limiter())


async def client_address(request: Request, settings: SettingsDep) -> str:
    """The address the request comes from: the TCP peer, or ``X-Forwarded-For`` when the peer
    is one of ``OPENCLAW_TRUSTED_PROXIES`` (never believed from anyone else)."""
    peer = request.client.host if request.client else None
    forwarded = ",".join(request.headers.getlist("x-forwarded-for")) or None
    return resolve_client_address(peer, forwarded, settings.trusted_proxy_networks)


ClientAddress = Annotated[str, Depends(client_address)]


def get_stripe_billing(service: ServiceDep, settings: SettingsDep) -> StripeBilling:
    """Stripe operations; the client exists only when ``STRIPE_SECRET_KEY`` is set (else the
    routes that need it answer 503 ``stripe_not_configured``)."""
    client = get_stripe_client(settings) if settings.stripe_secret_key is not None else None
    return StripeBilling(service, settings, client)


StripeDep = Annotated[StripeBilling, Depends(get_stripe_billing)]


class ClientCheck:
    """The key check of ``X-Client-Key``, not run yet (see :func:`require_client` for what it
    checks and answers). ``CurrentClient`` runs it before the route (:meth:`resolve`: on the
    event loop's thread when it needs no I/O, else on the billing threads).
    ``DeferredClient`` hands it to the route, which runs it on the billing threads in the same
    job as its own blocking work (the gateway's intake: the key check, the charge and the job
    file in one hand-off instead of two).

    :meth:`client` runs the check once and returns the client, or raises the check's error
    (again on every later call); then :attr:`key_id` names the key it accepted. If the route
    is never reached because its body fails validation, the validation handler
    (:func:`~openclaw_billing.api.errors.validation_answer`) settles the check first, so a bad
    key still gets 401 rather than 422 and a client's invalid request still counts against its
    rate limit, exactly as with ``CurrentClient``.

    ``inline`` is the same check done without I/O, from this worker's memory alone: the key,
    or None when it cannot answer so (then ``check`` answers, on the billing threads)."""

    __slots__ = ("_check", "_error", "_inline", "_verified")

    def __init__(
        self,
        check: Callable[[], VerifiedKey],
        inline: Callable[[], VerifiedKey | None] = lambda: None,
    ) -> None:
        self._check = check
        self._inline = inline
        self._verified: VerifiedKey | None = None
        self._error: BillingError | None = None

    async def resolve(self) -> ClientRecord:
        """:meth:`client`, from the event loop: answered on its own thread when the check
        needs no I/O (a key this worker verified a moment ago and no last use to write,
        counters in this process: no hand-off), else on the billing threads. The check on
        the loop's thread never reads or writes the store, whatever happens meanwhile."""
        if self._verified is None and self._error is None:
            self._verified = self._run(self._inline)
            if self._verified is None:
                return await run_billing(self.client)
        return self.client()

    def client(self) -> ClientRecord:
        """The authenticated client (blocking: call it on a billing thread, first thing)."""
        if self._error is not None:
            raise self._error
        verified = self._verified
        if verified is None:
            verified = self._verified = self._run(self._check)
        return verified.client

    def _run(self, check: Callable[[], T]) -> T:
        """``check()``; its error is kept, to be raised again by every later call."""
        try:
            return check()
        except BillingError as exc:
            self._error = exc
            raise

    @property
    def key_id(self) -> str:
        """The id of the key that authenticated the request, once :meth:`client` has
        returned (before that: its error, or ``RuntimeError`` if it has not run)."""
        if self._verified is None:
            raise self._error or RuntimeError("the key check has not run: call client() first")
        return self._verified.key_id

    async def settle(self) -> None:
        """Run the check if it has not run (see :meth:`resolve`); raise its error."""
        await self.resolve()


async def client_check(
    service: ServiceDep,
    limiter: RateLimiterDep,
    address: ClientAddress,
    request: Request,
    response: Response,
    api_key: Annotated[str | None, Security(client_key_scheme)],
) -> ClientCheck:
    """This request's :class:`ClientCheck` (and the ``ClientKey`` scheme in OpenAPI). A key
    in the query string is refused here, at once (401 ``credentials_in_query``)."""
    if request.scope.get("query_string") and credential_in_query(request):
        raise CredentialsInQuery()
    counted = partial(_count_request, limiter, request, response)

    def known() -> VerifiedKey | None:  # the same check without I/O, or None
        verified = verify_known_key(service, limiter, address, api_key)
        return None if verified is None else counted(verified)

    check = ClientCheck(lambda: counted(verify_key(service, limiter, address, api_key)), known)
    setattr(request.state, PENDING_CLIENT_CHECK_STATE, check)
    return check


DeferredClient = Annotated[ClientCheck, Depends(client_check)]


async def require_client(check: DeferredClient) -> ClientRecord:
    """The active client whose key is in ``X-Client-Key``, within its rate limit; else 401
    ``invalid_api_key`` (one body for every bad key), 403 ``ip_not_allowed`` (a valid key from
    outside the client's IP allowlist) or 429 ``rate_limited``. Failures are counted against
    the address and recorded in the audit log.

    The record is the client's account (plan, credits, status, Stripe ids, keys, policy);
    its ledger parts (``metadata.cost_log``, ``credit_adjustments``, ``cycle_history``) may
    be empty, so authentication costs the same whatever the client's usage. Read the ledger
    with ``service.get_client(client.client_id)``."""
    return await check.resolve()


def _count_request(
    limiter: RateLimiter, request: Request, response: Response, verified: VerifiedKey
) -> VerifiedKey:
    """Count the request against its client's rate limit (429 over it), with the
    ``RateLimit-*`` headers on the answer."""
    client = verified.client
    state = limiter.hit_client(client.client_id, client_limit(client))
    if state is not None:
        response.headers.update(state.headers())
        setattr(request.state, RATE_LIMIT_HEADERS_STATE, state.headers())  # for error answers
    return verified


def require_admin(
    settings: SettingsDep,
    service: ServiceDep,
    limiter: RateLimiterDep,
    address: ClientAddress,
    request: Request,
    token: Annotated[str | None, Security(admin_token_scheme)],
) -> None:
    """Admin routes: ``X-Auth-Token`` must equal ``OPENCLAW_ADMIN_TOKEN`` (constant-time).
    With no token configured the routes answer 503, never open. Failed checks count against
    the address like failed client keys (429 ``rate_limited`` past the limit). A token (or a
    client key) in the query string is 401 ``credentials_in_query``, before anything else."""
    if request.scope.get("query_string"):
        expected = settings.admin_token.get_secret_value() if settings.admin_token else None
        if credential_in_query(request, expected):
            raise AdminTokenInQuery()
    verify_admin_token(settings, service, limiter, address, token)


CurrentClient = Annotated[ClientRecord, Depends(require_client)]
AdminAuth = Depends(require_admin)
