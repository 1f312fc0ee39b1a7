"""What keeps the console's and the portal's pages safe: signed session cookies, CSRF tokens,
the same-origin check and the response headers of every page.

* **Cookies.** A session cookie holds a random token (its digest is the stored session, see
  :mod:`openclaw_billing.sessions`) signed with the session secret (itsdangerous, a salt per
  side, so a console cookie does not even verify in the portal). It is HttpOnly,
  SameSite=Strict, scoped to its side's path, Secure when the page is served over https, and
  lasts as long as the session.
* **The session secret** is ``OPENCLAW_SESSION_SECRET``, else derived from the admin token
  (HMAC), so changing the token signs everyone out. With neither, the pages answer 503: there
  is no default secret.
* **CSRF.** Every form that changes something carries a token derived from the session (HMAC
  of its digest): a page of another site cannot read it, so cannot post a valid form. The
  sign-in forms, before any session, carry one derived from a short-lived ``*_signin`` cookie
  (double submit). A POST whose ``Origin`` or ``Sec-Fetch-Site`` says another site sent it is
  refused before anything else.
* **Headers.** A Content-Security-Policy with no inline script or style at all, no framing,
  forms posting only to the gateway (the portal's may end at Stripe's Checkout and customer
  portal, where its Upgrade and Manage billing forms are redirected); ``Cache-Control:
  no-store`` (pages show balances and, once, keys); ``Referrer-Policy: same-origin``;
  ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from fastapi import Request, Response
from itsdangerous import BadSignature, TimestampSigner

from ..errors import BillingError
from ..keys import secret_matches
from ..settings import Settings, get_settings

#: The pages' policy: every script, style, image and request from the gateway only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: Where the portal's Upgrade and Manage billing forms end up: Stripe's hosted Checkout and
#: customer portal. Chromium applies ``form-action`` to the redirect that answers a form, so the
#: portal's policy names them (and nothing else); the console's allows the gateway only.
STRIPE_PAGES = ("https://checkout.stripe.com", "https://billing.stripe.com")
PORTAL_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "form-action 'self'", "form-action 'self' " + " ".join(STRIPE_PAGES)
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
#: The form field and the header (htmx) that carry the CSRF token.
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
#: How long a sign-in form stays valid (its double-submit cookie's lifetime).
SIGNIN_FORM_SECONDS = 30 * 60

Side = Literal["console", "portal"]


class PagesNotConfigured(BillingError):
    status_code = 503
    code = "pages_not_configured"
    message = (
        "The console and the portal need a session secret: set OPENCLAW_SESSION_SECRET "
        "(or OPENCLAW_ADMIN_TOKEN, from which one is derived)"
    )


class CsrfRefused(BillingError):
    status_code = 403
    code = "csrf_refused"
    message = "This form has expired or did not come from this site; reload the page and retry"


def session_secret(settings: Settings) -> bytes:
    """The key that signs cookies and CSRF tokens (``Settings.signing_secret``); raises
    :class:`PagesNotConfigured`."""
    secret = settings.signing_secret
    if secret is None:
        raise PagesNotConfigured()
    return secret


def _mac(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(secret, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()


#: The binding of console sessions when the session secret is derived from the admin token:
#: the cookies' signatures already change with the token, so nothing of it is stored.
DERIVED_BINDING = "token-derived-secret"


def admin_binding(settings: Settings) -> str | None:
    """What ties a console session to the admin token it was opened with: a session whose
    binding differs from today's is over. With ``OPENCLAW_SESSION_SECRET`` set, an HMAC of the
    token under that secret (which the store never holds, so a copy of the store cannot test
    guesses of the token); without it, a constant, since the cookie's key is derived from the
    token and a changed token already fails every signature. None: no token configured."""
    if settings.admin_token is None:
        return None
    if settings.session_secret is None:
        return DERIVED_BINDING
    token = settings.admin_token.get_secret_value()
    return _mac(session_secret(settings), "console-binding", token)


@dataclass(frozen=True)
class CookieJar:
    """The cookies of one side (``console`` or ``portal``), under its path."""

    side: Side
    path: str

    @property
    def session_name(self) -> str:
        return f"oc_{self.side}"

    @property
    def signin_name(self) -> str:
        return f"oc_{self.side}_signin"

    def _signer(self, secret: bytes, what: str) -> TimestampSigner:
        return TimestampSigner(secret, salt=f"openclaw-billing.{self.side}.{what}")

    def read_session(self, request: Request, secret: bytes, max_age: int) -> str | None:
        """The session token of the request's cookie, if it is ours and not older than
        ``max_age`` seconds; None otherwise (absent, forged, of the other side, too old)."""
        return self._unsign(request.cookies.get(self.session_name), secret, "session", max_age)

    def set_session(
        self, response: Response, request: Request, token: str, secret: bytes, max_age: int
    ) -> None:
        value = self._signer(secret, "session").sign(token).decode()
        self._set(response, request, self.session_name, value, max_age)
        response.delete_cookie(self.signin_name, path=self.path)

    def clear_session(self, response: Response, request: Request) -> None:
        response.delete_cookie(
            self.session_name,
            path=self.path,
            secure=is_https(request),
            httponly=True,
            samesite="strict",
        )

    def signin_form(self, request: Request, secret: bytes) -> tuple[str, str | None]:
        """The CSRF token of a sign-in form, and the value of the double-submit cookie to set
        with the page (None: the request's cookie is still good)."""
        nonce = self._unsign(
            request.cookies.get(self.signin_name), secret, "signin", SIGNIN_FORM_SECONDS
        )
        cookie = None
        if nonce is None:
            nonce = secrets.token_hex(32)
            cookie = self._signer(secret, "signin").sign(nonce).decode()
        return _mac(secret, f"{self.side}-signin", nonce), cookie

    def set_signin(self, response: Response, request: Request, cookie: str | None) -> None:
        if cookie is not None:
            self._set(response, request, self.signin_name, cookie, SIGNIN_FORM_SECONDS)

    def check_signin(self, request: Request, secret: bytes, submitted: str | None) -> None:
        nonce = self._unsign(
            request.cookies.get(self.signin_name), secret, "signin", SIGNIN_FORM_SECONDS
        )
        if nonce is None or not secret_matches(
            submitted, _mac(secret, f"{self.side}-signin", nonce)
        ):
            raise CsrfRefused()

    def _unsign(self, value: str | None, secret: bytes, what: str, max_age: int) -> str | None:
        if not value or len(value) > 512:
            return None
        try:
            return self._signer(secret, what).unsign(value, max_age=max_age).decode()
        except (BadSignature, UnicodeDecodeError):
            return None

    def _set(
        self, response: Response, request: Request, name: str, value: str, max_age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.path,
            secure=is_https(request),
            httponly=True,
            samesite="strict",
        )


def csrf_token(secret: bytes, session_digest: str) -> str:
    """The CSRF token of every form of a session (the same for the session's life)."""
    return _mac(secret, "csrf", session_digest)


def check_csrf(secret: bytes, session_digest: str, submitted: str | None) -> None:
    if not secret_matches(submitted, csrf_token(secret, session_digest)):
        raise CsrfRefused()


def is_https(request: Request) -> bool:
    """Whether cookies must be ``Secure``: the page came over https, or the gateway's public
    address is https (behind a proxy that ends TLS and that uvicorn was not told to trust, the
    request itself looks like http)."""
    return request.url.scheme == "https" or get_settings().public_url.startswith("https://")


def check_same_origin(request: Request) -> None:
    """Refuse a state-changing request that a browser says another site sent: a
    ``Sec-Fetch-Site`` other than same-origin (or none, typed by the user), or an ``Origin``
    whose host is not this request's."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in {"same-origin", "none"}:
        raise CsrfRefused()
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    try:
        parts = urlsplit(origin)
    except ValueError:
        raise CsrfRefused() from None
    if origin == "null" or parts.netloc.lower() != host.lower():
        raise CsrfRefused()
