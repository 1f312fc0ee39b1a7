"""How the fake Stripe refuses a request: Stripe's error body, and the exception a route raises
to answer with one (shared by :mod:`tests.fake_stripe` and its route modules)."""

from __future__ import annotations

from typing import Any


class StripeRequestError(Exception):
    """Raised inside a route to answer with a Stripe-shaped error body (and, when given,
    response headers such as ``Stripe-Should-Retry``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(error_type, message, code=code, param=param)
        self.headers = dict(headers or {})


def error_body(
    error_type: str, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """``{"error": {...}}`` as Stripe sends it (``code``/``param`` only when set)."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param is not None:
        error["param"] = param
    return {"error": error}
