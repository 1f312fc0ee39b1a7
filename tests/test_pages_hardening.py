"""What a review of the pages found, each kept fixed: the stored console binding tells nothing
about the admin token, sign-ins pass the same-origin check and (the portal's) the client's
rate limit, a credential in a page's address is refused as the API refuses it, and cookies
are Secure when the gateway's public address is https."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN_TOKEN
from openclaw_billing.audit import AuditAction, AuditQuery
from openclaw_billing.service import BillingService
from openclaw_billing.sessions import SessionKind
from openclaw_billing.settings import get_settings
from openclaw_billing.web.security import DERIVED_BINDING
from tests.factories import create_client
from tests.test_console import CONSOLE, cookie_attributes, form_token, sign_in
from tests.test_portal import PORTAL, sign_in_answer

CROSS_SITE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}


def console_bindings(service: BillingService) -> list[str | None]:
    """The binding of every stored console session (read as a copy of the store would be)."""
    store = service.store
    path = getattr(store, "path", None)
    assert path is not None  # the JSON store of the tests' environment
    raw = path.with_name(path.stem + ".sessions.json").read_text()
    return [
        s["binding"] for s in json.loads(raw)["sessions"] if s["kind"] == SessionKind.CONSOLE.value
    ]


def test_without_a_session_secret_nothing_of_the_token_is_stored(
    http: TestClient, service: BillingService
) -> None:
    sign_in(http)
    assert console_bindings(service) == [DERIVED_BINDING]


def test_with_a_session_secret_the_binding_needs_the_secret(
    http: TestClient, service: BillingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the store cannot test guesses of the admin token: the binding is keyed with
    the session secret, which the store never holds."""
    bindings = []
    for secret in ("s" * 40, "t" * 40):
        monkeypatch.setenv("OPENCLAW_SESSION_SECRET", secret)
        get_settings.cache_clear()
        http.cookies.clear()
        sign_in(http)
        bindings.append(console_bindings(service)[-1])
    guess = hashlib.sha256(f"openclaw-console\0{ADMIN_TOKEN}".encode()).hexdigest()
    assert bindings[0] != bindings[1]  # same token, another secret: another binding
    assert guess not in bindings


def test_sign_ins_from_another_site_are_refused(http: TestClient) -> None:
    key = create_client(http, "pro")["api_key"]
    page = http.get(f"{CONSOLE}/sign-in")
    console = http.post(
        f"{CONSOLE}/sign-in",
        data={"admin_token": ADMIN_TOKEN, "csrf_token": form_token(page.text)},
        headers=CROSS_SITE,
        follow_redirects=False,
    )
    assert console.status_code == 403
    assert "oc_console=" not in console.headers.get("set-cookie", "")
    portal = sign_in_answer(http, key, **CROSS_SITE)
    assert portal.status_code == 403
    assert "oc_portal=" not in portal.headers.get("set-cookie", "")


def test_portal_sign_ins_count_against_the_clients_rate_limit(
    http: TestClient, service: BillingService
) -> None:
    client = create_client(http, "pro")
    service.set_policy(client["client_id"], rate_limit_per_minute=2, ip_allowlist=[])
    answers = [sign_in_answer(http, client["api_key"]).status_code for _ in range(4)]
    assert answers == [303, 303, 429, 429]
    wanted = AuditQuery(client_id=client["client_id"], action=AuditAction.PORTAL_SIGN_IN)
    assert service.audit_events(wanted)[1] == 2


@pytest.mark.parametrize(
    "path",
    [
        f"{CONSOLE}/sign-in?admin_token={ADMIN_TOKEN}",
        f"{CONSOLE}/?token=anything",
        f"{CONSOLE}/clients?q={ADMIN_TOKEN}",  # the token itself, under any name
        f"{PORTAL}/?api_key=oc_live_0123456789abcdef0123456789abcdef",
        f"{PORTAL}/checkout/cancel?x=oc_live_0123",
    ],
)
def test_a_credential_in_a_pages_address_is_refused(http: TestClient, path: str) -> None:
    sign_in(http)
    answer = http.get(path, follow_redirects=False)
    assert answer.status_code == 401
    assert 'data-code="credentials_in_query"' in answer.text
    assert ADMIN_TOKEN not in answer.text


def test_cookies_are_secure_when_the_public_address_is_https(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a proxy that ends TLS the request looks like http; the public address says."""
    monkeypatch.setenv("OPENCLAW_PUBLIC_URL", "https://billing.example.com")
    get_settings.cache_clear()
    page = http.get(f"{CONSOLE}/sign-in")
    assert cookie_attributes(page.headers.get_list("set-cookie"), "oc_console_signin")["secure"]
