"""Rendering the console's and the portal's pages, and answering their errors as pages.

Templates are Jinja2 files in ``web/templates/``, autoescaped: every value a page shows is
escaped (a client named ``<img src=x onerror=alert(1)>`` shows as text). Every page answer
carries :data:`~openclaw_billing.web.security.PAGE_HEADERS`.

:class:`PageRoute` is the route class of both routers. A host app includes the routers and
nothing else (no exception handler of its own), so the route itself turns what its handler or
dependencies raise into a page: :class:`SignInRequired` into a redirect to the sign-in page
(an ``HX-Redirect`` for htmx), a domain error into an error page with its status and
message, a form that fails validation into a 422 page. Bodies are capped at
``OPENCLAW_MAX_BODY_BYTES`` as on the API's routes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from ..api.bodylimit import BodyGuard, declared_length
from ..errors import BillingError, PayloadTooLarge, StoreUnavailable
from ..settings import get_settings
from .security import PAGE_HEADERS, PORTAL_CONTENT_SECURITY_POLICY, Side

logger = logging.getLogger("openclaw_billing.web")

TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
TEMPLATES.env.autoescape = True  # every template, whatever its name


def money(value: float) -> str:
    """A job's cost or a total spent as the pages show it: two decimals, thousands grouped
    (the ledger keeps the cost the gateway charged, in its own unit)."""
    return f"{value:,.2f}"


TEMPLATES.env.filters["money"] = money


class SignInRequired(Exception):
    """No valid session for this side: the browser is sent to the sign-in page, with the
    reason (a code the sign-in page maps to its message, never free text)."""

    def __init__(self, side: Side, reason: str | None = None) -> None:
        super().__init__(side)
        self.side = side
        self.reason = reason


def sign_in_path(side: Side, reason: str | None = None) -> str:
    path = f"/billing/{side}/sign-in"
    return path if reason is None else f"{path}?reason={reason}"


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """The page ``template`` with ``context`` (plus the brand: its name, and whether there is
    a logo to show), with the pages' headers."""
    settings = get_settings()
    brand = {"brand_name": settings.brand_name, "brand_logo": settings.brand_logo is not None}
    values = {**brand, **context}
    response = TEMPLATES.TemplateResponse(request, template, values, status_code=status_code)
    response.headers.update(PAGE_HEADERS)
    if context.get("side") == "portal":
        response.headers["Content-Security-Policy"] = PORTAL_CONTENT_SECURITY_POLICY
    return response


def redirect(request: Request, url: str) -> Response:
    """Go to ``url`` after a form: 303 for a plain form, ``HX-Redirect`` for htmx (which would
    otherwise swap the next page into the current one)."""
    if request.headers.get("hx-request") == "true":
        response: Response = Response(status_code=204, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=303)
    response.headers.update(PAGE_HEADERS)
    return response


def is_fragment_request(request: Request) -> bool:
    """An htmx request for a part of a page (``hx-get`` with a target): the route answers
    with the part's template alone. Not a boosted whole page, nor htmx restoring a page of its
    history (it asks for the whole page, with ``HX-Request`` too)."""
    headers = request.headers
    return (
        headers.get("hx-request") == "true"
        and "hx-boosted" not in headers
        and "hx-history-restore-request" not in headers
    )


def error_page(request: Request, side: Side, exc: BillingError) -> HTMLResponse:
    message = exc.message
    if exc.status_code >= 500:
        logger.warning("%s: %s", exc.code, exc.message)
    if isinstance(exc, StoreUnavailable):
        message = StoreUnavailable.message  # the detail is for the operator's log only
    response = render(
        request,
        "error.html",
        {"side": side, "code": exc.code, "message": message, "status": exc.status_code},
        status_code=exc.status_code,
    )
    response.headers.update(exc.headers or {})
    return response


def _side_of(path: str) -> Side:
    return "portal" if "/billing/portal" in path else "console"


class PageRoute(APIRoute):
    """A page's route: errors become pages (see the module), bodies are capped."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        side = _side_of(self.path)

        async def page_handler(request: Request) -> Response:
            limit = get_settings().max_body_bytes
            declared = declared_length(request.headers)
            if declared is not None and declared > limit:
                return _closing(error_page(request, side, PayloadTooLarge()))
            guard = BodyGuard(limit, request.receive)
            try:
                return await handler(Request(request.scope, guard.receive))
            except SignInRequired as exc:
                return redirect(request, sign_in_path(exc.side, exc.reason))
            except BillingError as exc:
                return error_page(request, side, exc)
            except RequestValidationError as exc:
                return _invalid_form(request, side, exc)
            except Exception:
                if guard.exceeded:
                    return _closing(error_page(request, side, PayloadTooLarge()))
                raise

        return page_handler


def _closing(response: Response) -> Response:
    response.headers["Connection"] = "close"  # the rest of the body is never read
    return response


def _invalid_form(request: Request, side: Side, exc: RequestValidationError) -> HTMLResponse:
    """422: which fields were refused and why (never the values sent)."""
    problems = [
        f"{'.'.join(str(part) for part in e.get('loc', ())[1:]) or 'form'}: {e.get('msg', '')}"
        for e in exc.errors()
    ]
    return render(
        request,
        "error.html",
        {
            "side": side,
            "code": "validation_error",
            "message": "Some fields of the form were refused.",
            "problems": problems,
            "status": 422,
        },
        status_code=422,
    )
