"""The checks of a presented secret, shared by the API's dependencies and the pages' sign-in:
a client key (:func:`verify_key`) and the admin token (:func:`verify_admin_token`).

Each is throttled per address before the secret is looked at (429 past the limit of failed
checks); a failure is counted against the address and recorded in the audit log. A client key
can also be checked from this worker's memory alone (:func:`verify_known_key`): the same rule,
answered without any I/O, or not answered at all.
"""

from __future__ import annotations

import logging

from ..audit import ANONYMOUS_ACTOR, AuditAction, DetailValue, client_actor
from ..errors import (
    AdminTokenNotConfigured,
    BillingError,
    InvalidAdminToken,
    InvalidApiKey,
    IpNotAllowed,
)
from ..keycache import UNANSWERED, VerifiedKey
from ..keys import display_prefix, is_well_formed, secret_matches
from ..models import ClientRecord
from ..ratelimit import RateLimiter
from ..service import BillingService
from ..settings import Settings

logger = logging.getLogger("openclaw_billing.api")

#: Longer header values are refused before any work (a key is 40 characters).
MAX_SECRET_HEADER_LENGTH = 512


def verify_client_key(
    service: BillingService, limiter: RateLimiter, address: str, api_key: str | None
) -> ClientRecord:
    """The active client owning ``api_key``, presented from ``address``: the check of every
    route that takes a key and of the portal's sign-in. Throttled per address before the key
    is looked at; a failure is counted and audited (401 ``invalid_api_key``, 403
    ``ip_not_allowed``)."""
    return verify_key(service, limiter, address, api_key).client


def verify_key(
    service: BillingService, limiter: RateLimiter, address: str, api_key: str | None
) -> VerifiedKey:
    """:func:`verify_client_key`, with the id of the key (``BillingService.verify_key``)."""
    verified = _verify_key(service, limiter, address, api_key, cache_only=False)
    assert verified is not None  # only a check from the cache alone leaves the key open
    return verified


def verify_known_key(
    service: BillingService, limiter: RateLimiter, address: str, api_key: str | None
) -> VerifiedKey | None:
    """:func:`verify_key` without any I/O, for the event loop's thread: its answer when this
    worker's memory alone gives it (the rate-limit counters in this process, a key its cache
    accepts from ``address`` with no last use to write), else None, having read and written
    nothing: then :func:`verify_key` answers, on a thread. A refusal is never answered here,
    since it is audited; a 429 of the address's throttle is (the same one either way)."""
    if not limiter.in_process:
        return None  # the counters are in a shared storage (Redis): every look is I/O
    return _verify_key(service, limiter, address, api_key, cache_only=True)


def _verify_key(
    service: BillingService,
    limiter: RateLimiter,
    address: str,
    api_key: str | None,
    *,
    cache_only: bool,
) -> VerifiedKey | None:
    """The one rule of :func:`verify_key`. ``cache_only``: from this worker's cache alone
    (``BillingService.verify_cached_key``), never the store; None when the answer needs I/O:
    a key the cache cannot answer for, a last use to write, or a refusal (it is counted and
    audited). Only with counters in this process: ``check_auth`` is I/O otherwise."""
    limiter.check_auth(address)  # before the key is looked at: a right guess is not confirmed
    if api_key is None:
        raise InvalidApiKey()
    verified: VerifiedKey | None = None  # a key too long is refused unread
    if len(api_key) <= MAX_SECRET_HEADER_LENGTH:
        found = service.verify_cached_key(api_key) if cache_only else service.verify_key(api_key)
        if found is UNANSWERED:
            return None  # the store has to be read, or the key's last use written
        verified = found
    if verified is not None and service.address_allowed(verified.client, address):
        return verified
    if cache_only:
        return None  # a refusal: answered on the billing threads, where it is audited
    if verified is None:
        prefix = display_prefix(api_key) if is_well_formed(api_key) else None
        detail: dict[str, DetailValue] = {} if prefix is None else {"key_prefix": prefix}
        _auth_failed(service, limiter, address, AuditAction.AUTH_KEY_FAILED, detail=detail)
        raise InvalidApiKey()
    client = verified.client  # a valid key from outside its allowlist
    _auth_failed(
        service,
        limiter,
        address,
        AuditAction.AUTH_IP_DENIED,
        client_id=client.client_id,
        actor=client_actor(client.client_id),
    )
    raise IpNotAllowed()


def _auth_failed(
    service: BillingService,
    limiter: RateLimiter,
    address: str,
    action: AuditAction,
    *,
    client_id: str | None = None,
    actor: str = ANONYMOUS_ACTOR,
    detail: dict[str, DetailValue] | None = None,
) -> None:
    """Count a failed check against ``address`` and record it in the audit log, with
    ``auth.throttled`` when it blocks the address. A failure past the limit raises 429 here
    and is not recorded again, so the log grows by at most the limit per address and window.
    An audit write that fails is logged; the answer stays the one 401 (or 403)."""
    blocks = limiter.record_auth_failure(address)
    try:
        service.record_audit(
            action, client_id=client_id, actor=actor, source=address, detail=detail
        )
        if blocks:
            limit = {"limit": str(limiter.auth_failure_item)}
            service.record_audit(
                AuditAction.AUTH_THROTTLED, actor=ANONYMOUS_ACTOR, source=address, detail=limit
            )
    except BillingError as exc:
        logger.warning("Could not record a failed authentication in the audit log: %s", exc.code)


def verify_admin_token(
    settings: Settings,
    service: BillingService,
    limiter: RateLimiter,
    address: str,
    token: str | None,
) -> None:
    """``token`` must equal ``OPENCLAW_ADMIN_TOKEN`` (constant-time): the check of the admin
    routes and of the console's sign-in. None configured: 503, never open. Throttled per
    address before the token is compared; a failure is counted and audited (401)."""
    if settings.admin_token is None:
        raise AdminTokenNotConfigured()
    limiter.check_auth(address)  # before the token is compared: a right guess is not confirmed
    if token is None:
        raise InvalidAdminToken()
    if len(token) > MAX_SECRET_HEADER_LENGTH or not secret_matches(
        token, settings.admin_token.get_secret_value()
    ):
        _auth_failed(service, limiter, address, AuditAction.AUTH_ADMIN_FAILED)
        raise InvalidAdminToken()
