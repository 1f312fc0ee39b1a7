"""The operator console (``/billing/console/``) and the client portal (``/billing/portal/``):
server-rendered pages (Jinja2 templates, htmx), shipped in the package with every file they
load. A host app mounts them with ``app.include_router(pages_router)`` and nothing else.

Like :mod:`openclaw_billing.api`, this is the HTTP layer: it calls the service, never the
store's primitives beyond its sessions.
"""

from __future__ import annotations

from fastapi import APIRouter

from ..api.docs_pages import assets_router
from .branding import router as branding_router
from .console import router as console_router
from .console_actions import router as console_actions_router
from .console_audit import router as console_audit_router
from .console_client import router as console_client_router
from .console_keys import router as console_keys_router
from .console_overview import router as console_overview_router
from .portal import router as portal_router
from .portal_billing import router as portal_billing_router

pages_router = APIRouter(include_in_schema=False)
pages_router.include_router(console_router)  # first: /clients/new before /clients/{id}
pages_router.include_router(console_client_router)
pages_router.include_router(console_actions_router)
pages_router.include_router(console_keys_router)
pages_router.include_router(console_audit_router)
pages_router.include_router(console_overview_router)
pages_router.include_router(portal_router)
pages_router.include_router(portal_billing_router)
pages_router.include_router(branding_router)
pages_router.include_router(assets_router())

__all__ = ["pages_router"]
