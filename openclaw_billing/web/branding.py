"""The white-label logo at ``/billing/portal/logo``, for the portal's and the console's header
(``OPENCLAW_BRAND_LOGO``; the file is checked by :mod:`openclaw_billing.branding`).

No sign-in: the sign-in pages show it too. The answer is an image that cannot act as a page:
its own media type (read from the content) with ``nosniff``, and a policy that allows no script
and sandboxes it, so an SVG opened on its own runs nothing even if the file holds a script.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Response

from ..api.deps import SettingsDep
from ..branding import Logo, LogoRefused, read_logo
from ..errors import NotFound
from .auth import PORTAL_PATH
from .pages import PageRoute

logger = logging.getLogger("openclaw_billing.web")

router = APIRouter(prefix=PORTAL_PATH, route_class=PageRoute, include_in_schema=False)

#: No script, no framing, sandboxed; inline style only (an SVG's own ``style`` attributes).
LOGO_POLICY = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox"
LOGO_HEADERS = {
    "Content-Security-Policy": LOGO_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "public, max-age=300",
}


def current_logo(path: Path) -> Logo:
    """The logo file as it is now (read again only when its size or time changes)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise LogoRefused(f"{path} cannot be read: {exc.strerror or exc}") from None
    return _read(path, info.st_mtime_ns, info.st_size)


@lru_cache(maxsize=4)
def _read(path: Path, mtime_ns: int, size: int) -> Logo:
    return read_logo(path)


@router.get("/logo")
def logo(settings: SettingsDep) -> Response:
    if settings.brand_logo is None:
        raise NotFound("No logo is set")
    try:
        found = current_logo(settings.brand_logo)
    except LogoRefused as exc:  # changed since the start: the pages show the name alone
        logger.warning("The logo is not served: %s", exc)
        raise NotFound("No logo is set") from None
    return Response(found.content, media_type=found.media_type, headers=LOGO_HEADERS)
