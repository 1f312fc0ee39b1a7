"""Request body limits: 413 ``payload_too_large`` before a body is ever read whole.

Two layers, one rule (``OPENCLAW_MAX_BODY_BYTES``, default 128 KiB):

* :class:`BodyLimitMiddleware`, a pure ASGI middleware for the whole app
  (:func:`install_body_limit`). A request whose ``Content-Length`` is over the cap is answered
  at once, before the app runs, and nothing of its body is read. A body of unknown length
  (chunked) is counted as it arrives: the app is stopped the moment the running total passes
  the cap, and the answer is the 413 whatever the app would have said. Paths may have their
  own cap (``path_limits``); by default the Stripe webhook keeps its 1 MB
  (:data:`~openclaw_billing.stripe_billing.MAX_WEBHOOK_BYTES`), since a signed event can be
  larger than an API call and must never be refused for size.
* :class:`BodyLimitedRoute`, the route class of the billing router and of the reference
  gateway, puts the same guard in front of every route whose JSON body FastAPI parses. So a
  host app that only includes ``router`` and never installs the middleware still cannot be
  made to read an unbounded body. Routes that read the raw stream themselves (the webhook)
  bound it themselves.

Every 413 carries ``Connection: close``: the rest of the body is never read, so the
connection cannot carry another request.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.dependencies.utils import get_flat_params
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge
from ..settings import get_settings
from ..stripe_billing import MAX_WEBHOOK_BYTES
from .errors import BillingRoute, billing_error_response, http_error_response
from .schemas import ErrorPublic, ValidationErrorPublic

#: The Stripe webhook's path as ``router`` mounts it.
WEBHOOK_PATH = "/api/billing/webhook"
#: Per-path caps of :class:`BodyLimitMiddleware` unless told otherwise.
DEFAULT_PATH_LIMITS: Mapping[str, int] = {WEBHOOK_PATH: MAX_WEBHOOK_BYTES}


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once the body passes the cap; never leaves this module."""


def too_large_response() -> Response:
    """The one 413 answer (the project's error shape), closing the connection."""
    response = billing_error_response(PayloadTooLarge())
    response.headers["Connection"] = "close"
    return response


def declared_length(headers: Headers) -> int | None:
    """``Content-Length`` as a number, or None when absent or unreadable (then the body is
    counted as it arrives)."""
    value = headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


class BodyGuard:
    """Counts the body as the app reads it and stops the app once it passes ``limit``."""

    def __init__(self, limit: int, receive: Receive, send: Send | None = None) -> None:
        self.limit = limit
        self.received = 0
        self.exceeded = False
        self.response_started = False
        self.replaced = False
        self._receive = receive
        self._send = send

    async def receive(self) -> Message:
        if self.exceeded:
            raise _BodyTooLarge
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.exceeded = True
                raise _BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        assert self._send is not None
        if self.replaced:
            return  # the app's own answer after ours: dropped
        if message["type"] == "http.response.start":
            if self.exceeded:
                # The app turned the interrupted read into some other answer (FastAPI: 400
                # "error parsing the body"); the client gets the 413 instead.
                self.replaced = True
                await _send_response(too_large_response(), self._send)
                return
            self.response_started = True
        await self._send(message)


async def _send_response(response: Response, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


class BodyLimitMiddleware:
    """Cap request bodies at ``max_body_bytes`` (default: ``OPENCLAW_MAX_BODY_BYTES``, read
    per request from the cached settings), or at ``path_limits[path]`` for an exact path."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int | None = None,
        path_limits: Mapping[str, int] | None = None,
    ) -> None:
        if max_body_bytes is not None and max_body_bytes < 0:
            raise ValueError("max_body_bytes must not be negative")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_limits = dict(DEFAULT_PATH_LIMITS if path_limits is None else path_limits)

    def limit_for(self, path: str) -> int:
        limit = self.path_limits.get(path)
        if limit is not None:
            return limit
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return get_settings().max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = declared_length(Headers(scope=scope))
        if declared is not None and declared > limit:
            await _send_response(too_large_response(), send)
            return
        guard = BodyGuard(limit, receive, send)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if not guard.exceeded or guard.response_started:
                raise
        if guard.exceeded and not guard.response_started and not guard.replaced:
            await _send_response(too_large_response(), send)


def install_body_limit(
    app: FastAPI,
    *,
    max_body_bytes: int | None = None,
    path_limits: Mapping[str, int] | None = None,
) -> None:
    """Install :class:`BodyLimitMiddleware` on a host app. Call it before the app serves; with
    the router mounted under a prefix, give the webhook's full path its cap in
    ``path_limits`` (for example ``{"/billing/api/billing/webhook": MAX_WEBHOOK_BYTES}``)."""
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=max_body_bytes,
        path_limits=path_limits,
    )


def _error_doc(model: type[ErrorPublic], description: str) -> dict[str, Any]:
    return {"model": model, "description": description}


class BodyLimitedRoute(BillingRoute):
    """A :class:`BillingRoute` whose parsed JSON body is capped at ``OPENCLAW_MAX_BODY_BYTES``
    even without the middleware (over the cap: 413 before the whole body is read).

    It also documents, in the OpenAPI schema, the answers the framework gives any such route
    whatever the route does, so that the schema is complete without every route repeating
    them: 422 ``validation_error`` (our shape, not FastAPI's ``HTTPValidationError``) for a
    route with parameters or a body, and for a body 400 (not decodable) and 413."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        declared = {str(code) for code in self.responses}
        missing = {
            code: doc for code, doc in self._framework_errors().items() if str(code) not in declared
        }
        if missing:  # the response models are bound at construction: construct again
            kwargs["responses"] = {**(kwargs.get("responses") or {}), **missing}
            super().__init__(path, endpoint, **kwargs)

    def _framework_errors(self) -> dict[int | str, dict[str, Any]]:
        errors: dict[int | str, dict[str, Any]] = {}
        if self.body_field is not None:
            errors[400] = _error_doc(ErrorPublic, "The body could not be decoded")
            errors[413] = _error_doc(ErrorPublic, "The body is over OPENCLAW_MAX_BODY_BYTES")
        if self.body_field is not None or get_flat_params(self.dependant):
            errors[422] = _error_doc(ValidationErrorPublic, "Validation Error")
        return errors

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler  # no parsed body: nothing read here (raw readers bound themselves)

        async def limited_handler(request: Request) -> Response:
            limit = get_settings().max_body_bytes
            declared = declared_length(request.headers)
            if declared is not None and declared > limit:
                return too_large_response()
            guard = BodyGuard(limit, request.receive)
            try:
                response = await handler(Request(request.scope, guard.receive))
            except Exception as exc:
                if guard.exceeded:  # FastAPI turns the interrupted read into a 400: not ours
                    return too_large_response()
                if isinstance(exc, StarletteHTTPException):
                    # FastAPI's 400 for a body it cannot decode: the one shape, even in a host
                    # app without install_error_handlers.
                    return http_error_response(exc)
                raise
            return too_large_response() if guard.exceeded else response

        return limited_handler


__all__ = [
    "DEFAULT_PATH_LIMITS",
    "WEBHOOK_PATH",
    "BodyGuard",
    "BodyLimitMiddleware",
    "BodyLimitedRoute",
    "install_body_limit",
    "too_large_response",
]
