"""One JSON error shape everywhere: ``{"code": ..., "message": ..., "detail": ...}``.

``code`` is stable and machine-readable; ``message`` is for people; ``detail`` repeats the
message for clients written against the original module (FastAPI's ``{"detail": ...}``).
Validation errors add ``errors`` (where and what).

Routes use :class:`BillingRoute`, so the shape holds even when a host gateway includes the
router without installing any handler; :func:`install_error_handlers` covers the rest of an
app (unknown paths, wrong methods, its own routes, and an exception nobody handled: 500
``internal_error``, whose body never carries the exception or a traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import BillingError, StoreUnavailable

logger = logging.getLogger("openclaw_billing.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


#: ``request.state`` attribute where the client dependency leaves the ``RateLimit-*`` headers,
#: so that an error answered after it (402, 409, 503, ...) carries them too.
RATE_LIMIT_HEADERS_STATE = "rate_limit_headers"
#: ``request.state`` attribute where a deferred client check (``deps.ClientCheck``) waits; on
#: a validation error it is settled before the 422, so that a bad key still gets its 401.
PENDING_CLIENT_CHECK_STATE = "pending_client_check"


class PendingCheck(Protocol):
    async def settle(self) -> None: ...


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "detail": message, **extra}


def billing_error_response(exc: BillingError) -> JSONResponse:
    message = exc.message
    if exc.status_code >= 500:
        logger.warning("%s: %s", exc.code, exc.message)
    if isinstance(exc, StoreUnavailable):
        # The detail (a file's path, the system's error) is for the operator's log only.
        message = StoreUnavailable.message
    return JSONResponse(
        error_body(exc.code, message), status_code=exc.status_code, headers=exc.headers
    )


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse(
        jsonable_encoder(
            error_body("validation_error", "Request validation failed", errors=errors)
        ),
        status_code=422,
    )


def http_error_response(exc: StarletteHTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").capitalize()
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


class BillingRoute(APIRoute):
    """Translates domain and validation errors raised by a route or its dependencies."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except BillingError as exc:
                return _with_rate_limit_headers(request, billing_error_response(exc))
            except RequestValidationError as exc:
                return await validation_answer(request, exc)

        return route_handler


async def validation_answer(request: Request, exc: RequestValidationError) -> Response:
    """422 ``validation_error``; but a deferred client check (``DeferredClient``) of the
    request is settled first, so that a bad key gets 401 and a client's invalid request
    counts against its rate limit, as with ``CurrentClient``."""
    check: PendingCheck | None = getattr(request.state, PENDING_CLIENT_CHECK_STATE, None)
    if check is not None:
        try:
            await check.settle()
        except BillingError as auth_error:
            return _with_rate_limit_headers(request, billing_error_response(auth_error))
    return _with_rate_limit_headers(request, validation_error_response(exc))


def _with_rate_limit_headers(request: Request, response: Response) -> Response:
    headers: dict[str, str] | None = getattr(request.state, RATE_LIMIT_HEADERS_STATE, None)
    for name, value in (headers or {}).items():
        response.headers.setdefault(name, value)
    return response


INTERNAL_ERROR_MESSAGE = "Internal server error"


def internal_error_response() -> JSONResponse:
    """500 ``internal_error``: nothing of the exception goes to the client."""
    return JSONResponse(error_body("internal_error", INTERNAL_ERROR_MESSAGE), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Give the whole app the one error shape (404/405, the app's own routes, and 500
    ``internal_error`` for an unhandled exception). An error answered after the client's key
    was checked carries its ``RateLimit-*`` headers, as a success does (a 402 from the app's
    own intake included)."""

    async def on_billing_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BillingError)
        return _with_rate_limit_headers(request, billing_error_response(exc))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return await validation_answer(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return _with_rate_limit_headers(request, http_error_response(exc))

    async def on_unhandled(request: Request, _: Exception) -> Response:
        # Starlette's ServerErrorMiddleware calls this, then raises the exception again, so
        # the server still logs it with its traceback; the client sees only the shape.
        return _with_rate_limit_headers(request, internal_error_response())

    app.add_exception_handler(BillingError, on_billing_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unhandled)
