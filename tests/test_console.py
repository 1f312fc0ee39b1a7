"""The operator console's sessions and forms over HTTP (openclaw_billing/web/): signing in
with the admin token, the cookie, CSRF, the same-origin check, signing out, escaping, and
actions audited as the console. The browser flows are in tests/test_browser_console.py."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from conftest import ADMIN_TOKEN
from openclaw_billing.audit import AuditAction
from openclaw_billing.service import BillingService
from openclaw_billing.settings import get_settings
from openclaw_billing.web.security import CONTENT_SECURITY_POLICY
from tests.factories import create_client

CONSOLE = "/billing/console"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_token(page: str) -> str:
    found = _CSRF.search(page)
    assert found is not None, "the page has no form token"
    return found.group(1)


def sign_in(http: TestClient, token: str = ADMIN_TOKEN) -> str:
    """Sign in through the form; returns the CSRF token of the signed-in pages."""
    page = http.get(f"{CONSOLE}/sign-in")
    answer = http.post(
        f"{CONSOLE}/sign-in",
        data={"admin_token": token, "csrf_token": form_token(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return form_token(http.get(f"{CONSOLE}/clients/new").text)


def cookie_attributes(set_cookie: list[str], name: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for header in set_cookie:
        if header.startswith(f"{name}="):
            jar.load(header)
    morsel = jar[name]
    return {key: str(morsel[key]) for key in ("httponly", "samesite", "path", "max-age", "secure")}


def test_pages_need_a_session(http: TestClient) -> None:
    for path in ("/", "/clients", "/clients/new", "/clients/some-id"):
        answer = http.get(f"{CONSOLE}{path}", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == f"{CONSOLE}/sign-in"


def test_htmx_requests_are_redirected_with_hx_redirect(http: TestClient) -> None:
    answer = http.get(f"{CONSOLE}/clients", headers={"HX-Request": "true"})
    assert answer.status_code == 204
    assert answer.headers["hx-redirect"] == f"{CONSOLE}/sign-in"


def test_signing_in_sets_a_strict_http_only_session_cookie(http: TestClient) -> None:
    page = http.get(f"{CONSOLE}/sign-in")
    answer = http.post(
        f"{CONSOLE}/sign-in",
        data={"admin_token": ADMIN_TOKEN, "csrf_token": form_token(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{CONSOLE}/"
    attributes = cookie_attributes(answer.headers.get_list("set-cookie"), "oc_console")
    assert attributes["httponly"]
    assert attributes["samesite"].lower() == "strict"
    assert attributes["path"] == f"{CONSOLE}/"
    assert attributes["max-age"] == str(get_settings().session_minutes * 60)
    assert attributes["secure"] == ""  # served over http here; https sets it
    assert ADMIN_TOKEN not in answer.headers.get("set-cookie", "")
    assert http.get(f"{CONSOLE}/clients").status_code == 200


def test_the_cookie_is_secure_over_https(app: FastAPI) -> None:
    with TestClient(app, base_url="https://testserver") as https:
        page = https.get(f"{CONSOLE}/sign-in")
        answer = https.post(
            f"{CONSOLE}/sign-in",
            data={"admin_token": ADMIN_TOKEN, "csrf_token": form_token(page.text)},
            follow_redirects=False,
        )
    assert cookie_attributes(answer.headers.get_list("set-cookie"), "oc_console")["secure"]


def test_a_wrong_token_shows_the_form_again_and_is_audited(
    http: TestClient, service: BillingService
) -> None:
    page = http.get(f"{CONSOLE}/sign-in")
    answer = http.post(
        f"{CONSOLE}/sign-in",
        data={"admin_token": "wrong-token-0123456789", "csrf_token": form_token(page.text)},
    )
    assert answer.status_code == 401
    assert 'data-code="invalid_admin_token"' in answer.text
    assert "oc_console=" not in answer.headers.get("set-cookie", "")
    events, _ = service.audit_events()
    assert [e.action for e in events] == [AuditAction.AUTH_ADMIN_FAILED]


def test_failed_sign_ins_share_the_apis_brute_force_throttle(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failures through the form and through the API count against one limit per address;
    past it even the right token is refused (a right guess is not confirmed)."""
    limit = int(get_settings().auth_failure_limit.split("/")[0])
    token = form_token(http.get(f"{CONSOLE}/sign-in").text)
    for n in range(limit):
        if n % 2:
            http.get("/api/admin/clients", headers={"X-Auth-Token": "wrong-0123456789abcdef"})
        else:
            wrong = {"admin_token": "wrong-0123456789abcdef", "csrf_token": token}
            assert http.post(f"{CONSOLE}/sign-in", data=wrong).status_code == 401
    right = http.post(f"{CONSOLE}/sign-in", data={"admin_token": ADMIN_TOKEN, "csrf_token": token})
    assert right.status_code == 429
    assert int(right.headers["retry-after"]) >= 1
    assert 'data-code="rate_limited"' in right.text


def test_the_sign_in_form_needs_its_token(http: TestClient) -> None:
    http.get(f"{CONSOLE}/sign-in")  # the form's cookie, but no token sent
    for data in ({"admin_token": ADMIN_TOKEN}, {"admin_token": ADMIN_TOKEN, "csrf_token": "x"}):
        answer = http.post(f"{CONSOLE}/sign-in", data=data, follow_redirects=False)
        assert answer.status_code == 403
        assert 'data-code="csrf_refused"' in answer.text
    http.cookies.clear()  # a token without its cookie (another browser's form)
    token = form_token(TestClient(http.app).get(f"{CONSOLE}/sign-in").text)
    answer = http.post(f"{CONSOLE}/sign-in", data={"admin_token": ADMIN_TOKEN, "csrf_token": token})
    assert answer.status_code == 403


def test_a_form_without_the_sessions_token_changes_nothing(
    http: TestClient, service: BillingService
) -> None:
    sign_in(http)
    body = {"name": "Acme", "email": "a@acmecorp.com", "plan": "pro"}
    for extra in ({}, {"csrf_token": "0" * 64}):
        answer = http.post(f"{CONSOLE}/clients", data=body | extra)
        assert answer.status_code == 403, answer.text
    assert service.list_clients() == ([], 0)


def test_a_post_from_another_site_is_refused(http: TestClient, service: BillingService) -> None:
    csrf = sign_in(http)
    body = {"name": "Acme", "email": "a@acmecorp.com", "plan": "pro", "csrf_token": csrf}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        assert http.post(f"{CONSOLE}/clients", data=body, headers=headers).status_code == 403
    assert service.list_clients() == ([], 0)
    same = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert http.post(f"{CONSOLE}/clients", data=body, headers=same).status_code == 201


def test_signing_out_ends_every_copy_of_the_cookie(http: TestClient) -> None:
    csrf = sign_in(http)
    copy = dict(http.cookies)
    answer = http.post(f"{CONSOLE}/sign-out", data={"csrf_token": csrf}, follow_redirects=False)
    assert answer.headers["location"] == f"{CONSOLE}/sign-in?reason=signed_out"
    with TestClient(http.app, cookies=copy) as replay:
        again = replay.get(f"{CONSOLE}/clients", follow_redirects=False)
    assert again.status_code == 303
    assert again.headers["location"] == f"{CONSOLE}/sign-in?reason=expired"


def test_a_forged_or_foreign_cookie_is_no_session(http: TestClient) -> None:
    sign_in(http)
    value = http.cookies["oc_console"]
    http.cookies.clear()
    for forged in (value[:-2] + "AA", value.split(".")[0], "x" * 600):
        http.cookies.set("oc_console", forged)
        assert http.get(f"{CONSOLE}/clients", follow_redirects=False).status_code == 303
    http.cookies.clear()
    http.cookies.set("oc_portal", value)  # a console session presented as a portal one
    assert http.get(f"{CONSOLE}/clients", follow_redirects=False).status_code == 303


def test_changing_the_admin_token_ends_console_sessions(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_SESSION_SECRET", "s" * 40)  # the cookie still verifies
    get_settings.cache_clear()
    sign_in(http)
    monkeypatch.setenv("OPENCLAW_ADMIN_TOKEN", "another-admin-token-0123456789")
    get_settings.cache_clear()
    answer = http.get(f"{CONSOLE}/clients", follow_redirects=False)
    assert answer.headers["location"] == f"{CONSOLE}/sign-in?reason=expired"


def test_without_any_secret_the_pages_answer_503(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENCLAW_ADMIN_TOKEN")
    get_settings.cache_clear()
    answer = http.get(f"{CONSOLE}/sign-in")
    assert answer.status_code == 503
    assert 'data-code="pages_not_configured"' in answer.text


def test_creating_a_client_shows_its_key_once_and_escapes_its_name(
    http: TestClient, service: BillingService
) -> None:
    csrf = sign_in(http)
    name = "<img src=x onerror=alert(1)>"
    created = http.post(
        f"{CONSOLE}/clients",
        data={"name": name, "email": "a@acmecorp.com", "plan": "pro", "csrf_token": csrf},
    )
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    [key] = re.findall(r"oc_live_[0-9a-f]{32}", created.text)
    [record], _ = service.list_clients()
    assert service.authenticate(key) is not None
    assert name not in created.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in created.text
    for path in ("/clients", f"/clients/{record.client_id}"):
        page = http.get(f"{CONSOLE}{path}")
        assert name not in page.text
        assert "&lt;img src=x" in page.text
        assert key not in page.text
    [event] = [e for e in service.audit_events()[0] if e.action == AuditAction.CLIENT_CREATE]
    assert event.actor == "console"


def test_an_invalid_form_is_a_422_page_naming_the_fields(http: TestClient) -> None:
    csrf = sign_in(http)
    answer = http.post(
        f"{CONSOLE}/clients",
        data={"name": "Acme\nCorp", "email": "not-an-email", "plan": "gold", "csrf_token": csrf},
    )
    assert answer.status_code == 422
    for field in ("name", "email", "plan"):
        assert f"<li>{field}:" in answer.text
    assert "Acme\nCorp" not in answer.text


def assert_safe_page(answer: httpx.Response, shown_text: str = "") -> None:
    """The pages' headers, and no inline script, style or event handler attribute (in the
    page without ``shown_text``: escaped text the page shows, which may read ``onerror=``)."""
    text = answer.text.replace(shown_text, "") if shown_text else answer.text
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-frame-options"] == "DENY"
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text) is None
    assert re.search(r"\son[a-z]+=", text) is None  # no event handler attributes
    assert 'style="' not in text


def test_every_page_carries_the_policy_and_no_inline_script(http: TestClient) -> None:
    pages = [f"{CONSOLE}/sign-in"]
    sign_in(http)
    client = f"{CONSOLE}/clients/{create_client(http)['client_id']}"
    pages += [f"{CONSOLE}/", f"{CONSOLE}/clients", f"{CONSOLE}/clients/new", f"{CONSOLE}/audit"]
    pages += [client, f"{client}/jobs", f"{client}/outcomes", f"{client}/audit"]
    for path in pages:
        answer = http.get(path)
        assert answer.status_code == 200, path
        assert_safe_page(answer)


def test_an_unknown_client_is_a_404_page(http: TestClient) -> None:
    sign_in(http)
    answer = http.get(f"{CONSOLE}/clients/no-such-client")
    assert answer.status_code == 404
    assert 'data-code="client_not_found"' in answer.text
