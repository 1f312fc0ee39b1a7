"""Authentication dependencies, declared once as ``Annotated`` aliases.

``APIKeyHeader(auto_error=False)`` puts the security schemes in ``/docs`` while our own error
(one identical 401 body) is raised.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader

from ..errors import AdminTokenNotConfigured, InvalidAdminToken, InvalidApiKey
from ..keys import secret_matches
from ..models import ClientRecord
from ..service import BillingService, get_service
from ..settings import Settings, get_settings
from ..stripe_billing import StripeBilling, get_stripe_client

CLIENT_KEY_HEADER = "X-Client-Key"
ADMIN_TOKEN_HEADER = "X-Auth-Token"  # noqa: S105 - a header name, not a secret
#: Longer header values are refused before any work (a key is 40 characters).
MAX_SECRET_HEADER_LENGTH = 512

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

SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[BillingService, Depends(get_service)]


def get_stripe_billing(service: ServiceDep, settings: SettingsDep) -> StripeBilling:
    """Stripe operations; the client exists only when ``STRIPE_SECRET_KEY`` is set (else the
    routes that need it answer 503 ``stripe_not_configured``)."""
    client = get_stripe_client(settings) if settings.stripe_secret_key is not None else None
    return StripeBilling(service, settings, client)


StripeDep = Annotated[StripeBilling, Depends(get_stripe_billing)]


def require_client(
    service: ServiceDep,
    api_key: Annotated[str | None, Security(client_key_scheme)],
) -> ClientRecord:
    """The active client whose key is in ``X-Client-Key``; else 401 ``invalid_api_key``."""
    if api_key is None or len(api_key) > MAX_SECRET_HEADER_LENGTH:
        raise InvalidApiKey()
    client = service.authenticate(api_key)
    if client is None:
        raise InvalidApiKey()
    return client


def require_admin(
    settings: SettingsDep,
    token: Annotated[str | None, Security(admin_token_scheme)],
) -> None:
    """Admin routes: ``X-Auth-Token`` must equal ``OPENCLAW_ADMIN_TOKEN`` (constant-time).
    With no token configured the routes answer 503, never open."""
    if settings.admin_token is None:
        raise AdminTokenNotConfigured()
    if token is None or len(token) > MAX_SECRET_HEADER_LENGTH:
        raise InvalidAdminToken()
    if not secret_matches(token, settings.admin_token.get_secret_value()):
        raise InvalidAdminToken()


CurrentClient = Annotated[ClientRecord, Depends(require_client)]
AdminAuth = Depends(require_admin)
