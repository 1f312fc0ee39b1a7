"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) that work offline: their scripts, styles and
icon are files shipped in the package (``openclaw_billing/static/``, listed in its
``ASSETS.txt``), served under ``/billing/static/``; nothing is fetched from a CDN, no web font
is loaded and Swagger UI's online validator is off.

Both pages carry a Content-Security-Policy that lets them load from the gateway only, so the
browser asks no other host for anything (ReDoc's footer would fetch its logo from
cdn.redoc.ly); the one inline script, Swagger UI's start-up, is allowed by its hash.

A host app turns off FastAPI's own pages (``FastAPI(docs_url=None, redoc_url=None)``) and
includes :func:`docs_router`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from ..errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PREFIX = "/billing/static"
#: The only files served, with their media types: nothing else of the folder is reachable.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "htmx.min.js": "text/javascript",
    "favicon.png": "image/png",
    "pages.css": "text/css",
    "pages.js": "text/javascript",
}
#: The files change only with a release of the package.
ASSET_CACHE = "public, max-age=86400"


_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def asset_url(name: str) -> str:
    return f"{STATIC_PREFIX}/{name}"


def with_policy(page: HTMLResponse) -> HTMLResponse:
    """``page`` with a Content-Security-Policy: everything from the gateway itself, inline
    styles (both viewers style their elements at run time), inline scripts only by hash, no
    framing."""
    body = bytes(page.body).decode()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(body)
    )
    page.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page


def _served(page: HTMLResponse) -> HTMLResponse:
    """A fresh response (each request gets its own) with ``page``'s body and policy."""
    policy = page.headers["Content-Security-Policy"]
    return HTMLResponse(bytes(page.body), headers={"Content-Security-Policy": policy})


def docs_router(*, title: str, openapi_url: str = "/openapi.json") -> APIRouter:
    """``/docs``, ``/redoc`` and the files they load, for the app whose OpenAPI document is
    at ``openapi_url``. Not part of the OpenAPI document itself."""
    router = APIRouter(include_in_schema=False)
    # Both pages are the same for every request: rendered and hashed once.
    swagger_page = with_policy(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=asset_url("swagger-ui-bundle.js"),
            swagger_css_url=asset_url("swagger-ui.css"),
            swagger_favicon_url=asset_url("favicon.png"),
            # Swagger UI would send the document to validator.swagger.io for a badge.
            swagger_ui_parameters={"validatorUrl": None},
        )
    )
    redoc_page = with_policy(
        get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=asset_url("redoc.standalone.js"),
            redoc_favicon_url=asset_url("favicon.png"),
            with_google_fonts=False,
        )
    )

    @router.get("/docs")
    def swagger_ui() -> HTMLResponse:
        return _served(swagger_page)

    @router.get("/redoc")
    def redoc() -> HTMLResponse:
        return _served(redoc_page)

    router.include_router(assets_router())
    return router


def assets_router() -> APIRouter:
    """The files of :data:`ASSETS` under ``/billing/static/`` (the docs pages and the console
    and portal both load from it; a host app that includes both routers serves it twice, the
    same files)."""
    router = APIRouter(include_in_schema=False)

    @router.get(f"{STATIC_PREFIX}/{{name}}")
    def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound()
        return FileResponse(
            STATIC_DIR / name, media_type=media_type, headers={"Cache-Control": ASSET_CACHE}
        )

    return router
