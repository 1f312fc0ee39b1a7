"""The client portal over HTTP (openclaw_billing/web/portal.py): signing in with an API key,
the session and when it ends, the dashboard's numbers and advice, one client's data only,
CSRF, escaping and the pages' policy. Upgrades and Stripe's portal are in
tests/test_portal_stripe.py, the logo and the brand in tests/test_portal_brand.py."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from openclaw_billing.audit import AuditAction
from openclaw_billing.cycles import utcnow
from openclaw_billing.jobs import JobStatus
from openclaw_billing.ledger import OPEN_DISPUTES
from openclaw_billing.models import ClientRecord
from openclaw_billing.outcomes import Report
from openclaw_billing.service import BillingService
from openclaw_billing.settings import get_settings
from openclaw_billing.web.security import PORTAL_CONTENT_SECURITY_POLICY
from tests.factories import create_client, submit_job
from tests.test_console import cookie_attributes, form_token
from tests.test_console import sign_in as console_sign_in

PORTAL = "/billing/portal"


def sign_in_answer(http: TestClient, key: str, **headers: str) -> Any:
    """The answer to the sign-in form posted with ``key``."""
    page = http.get(f"{PORTAL}/sign-in")
    return http.post(
        f"{PORTAL}/sign-in",
        data={"api_key": key, "csrf_token": form_token(page.text)},
        headers=headers,
        follow_redirects=False,
    )


def portal_sign_in(http: TestClient, key: str) -> str:
    """Sign in through the form; returns the CSRF token of the signed-in pages."""
    answer = sign_in_answer(http, key)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == f"{PORTAL}/"
    return form_token(http.get(f"{PORTAL}/").text)


def numbers(page: str) -> dict[str, str]:
    """The dashboard's figures, by their data attributes."""
    return dict(re.findall(r'data-(credits-left|jobs|status|plan)="([^"]*)"', page))


def set_state(service: BillingService, client_id: str, **state: Any) -> None:
    """Give the client a subscription status or open disputes, as Stripe's events would."""

    def change(record: ClientRecord) -> tuple[ClientRecord, bool]:
        if "subscription_status" in state:
            record.metadata.subscription_status = state["subscription_status"]
        if "disputes" in state:
            setattr(record.metadata, OPEN_DISPUTES, state["disputes"])
        return record, True

    service.store.mutate(client_id, utcnow(), change)


def test_pages_need_a_session(http: TestClient) -> None:
    for path in ("/", "/checkout/success?resumed=1", "/checkout/cancel?resumed=1"):
        answer = http.get(f"{PORTAL}{path}", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == f"{PORTAL}/sign-in"
    for path in ("/sign-out", "/upgrade", "/manage-billing"):
        answer = http.post(f"{PORTAL}{path}", data={"plan": "pro"}, follow_redirects=False)
        assert answer.headers["location"] == f"{PORTAL}/sign-in", path


def test_signing_in_with_a_key_opens_a_strict_session(
    http: TestClient, service: BillingService
) -> None:
    client = create_client(http, "pro", name="Acme Corp")
    answer = sign_in_answer(http, client["api_key"])
    assert answer.status_code == 303
    attributes = cookie_attributes(answer.headers.get_list("set-cookie"), "oc_portal")
    assert attributes["httponly"]
    assert attributes["samesite"].lower() == "strict"
    assert attributes["path"] == f"{PORTAL}/"
    assert client["api_key"] not in " ".join(answer.headers.get_list("set-cookie"))
    assert client["api_key"] not in answer.headers["location"]
    page = http.get(f"{PORTAL}/")
    assert page.status_code == 200
    assert "<h1>Acme Corp</h1>" in page.text
    assert client["api_key"] not in page.text
    [event] = [e for e in service.audit_events()[0] if e.action == AuditAction.PORTAL_SIGN_IN]
    assert event.client_id == client["client_id"]


def test_the_sign_in_form_posts_a_password_field_in_the_body(http: TestClient) -> None:
    page = http.get(f"{PORTAL}/sign-in").text
    assert '<form method="post" action="/billing/portal/sign-in"' in page
    assert re.search(r'<input id="api_key" name="api_key" type="password"', page)
    assert "value=" not in re.search(r'<input id="api_key"[^>]*>', page).group(0)  # type: ignore[union-attr]


def test_a_wrong_key_shows_the_form_again_without_it(
    http: TestClient, service: BillingService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "oc_live_" + "0" * 32
    answer = sign_in_answer(http, wrong)
    assert answer.status_code == 401
    assert 'data-code="invalid_api_key"' in answer.text
    assert wrong not in answer.text
    assert "oc_portal=" not in answer.headers.get("set-cookie", "")
    assert wrong not in caplog.text
    assert AuditAction.AUTH_KEY_FAILED in [e.action for e in service.audit_events()[0]]


def test_the_key_never_reaches_a_page_or_a_log(
    http: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = create_client(http, "pro")["api_key"]
    portal_sign_in(http, key)
    for path in ("/", "/checkout/cancel", "/checkout/success"):
        assert key not in http.get(f"{PORTAL}{path}").text
    too_long = sign_in_answer(http, key + "x" * 600)  # refused by the form: a 422 page
    assert too_long.status_code == 422
    assert key not in too_long.text
    assert key not in caplog.text


def test_a_key_in_the_url_is_refused_and_not_used(http: TestClient) -> None:
    key = create_client(http, "pro")["api_key"]
    for query in ({"api_key": key}, {"k": key.upper()}, {"token": "anything"}):
        page = http.get(f"{PORTAL}/sign-in", params=query)
        assert page.status_code == 401
        assert 'data-code="credentials_in_query"' in page.text
        assert key not in page.text
    token = form_token(http.get(f"{PORTAL}/sign-in").text)
    answer = http.post(
        f"{PORTAL}/sign-in",
        params={"api_key": key},
        data={"api_key": key, "csrf_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 401
    assert "oc_portal=" not in answer.headers.get("set-cookie", "")


def test_refused_sign_ins_share_the_apis_throttle(http: TestClient) -> None:
    key = create_client(http, "pro")["api_key"]
    limit = int(get_settings().auth_failure_limit.split("/")[0])
    for n in range(limit):
        wrong = "oc_live_" + f"{n:032x}"
        if n % 2:
            http.get("/api/billing/usage", headers={"X-Client-Key": wrong})
        else:
            assert sign_in_answer(http, wrong).status_code == 401
    right = sign_in_answer(http, key)
    assert right.status_code == 429
    assert int(right.headers["retry-after"]) >= 1
    assert 'data-code="rate_limited"' in right.text


def test_a_key_from_outside_its_allowlist_is_refused(
    http: TestClient, service: BillingService
) -> None:
    client = create_client(http, "pro")
    service.set_policy(client["client_id"], rate_limit_per_minute=None, ip_allowlist=["10.0.0.0/8"])
    answer = sign_in_answer(http, client["api_key"])
    assert answer.status_code == 403
    assert 'data-code="ip_not_allowed"' in answer.text


def test_the_sign_in_form_needs_its_token(http: TestClient) -> None:
    key = create_client(http, "pro")["api_key"]
    http.get(f"{PORTAL}/sign-in")
    for data in ({"api_key": key}, {"api_key": key, "csrf_token": "x" * 64}):
        answer = http.post(f"{PORTAL}/sign-in", data=data, follow_redirects=False)
        assert answer.status_code == 403
        assert 'data-code="csrf_refused"' in answer.text
    console_token = form_token(http.get("/billing/console/sign-in").text)
    answer = http.post(f"{PORTAL}/sign-in", data={"api_key": key, "csrf_token": console_token})
    assert answer.status_code == 403  # the console's form token is not the portal's


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("expired", "Your session has ended."),
        ("signed_out", "You have signed out."),
        ("inactive", "This account is deactivated. Contact OpenClaw support."),
        ("key", "has been revoked or has expired"),
        ("address", "does not accept requests from this network address"),
    ],
)
def test_each_reason_has_its_message(http: TestClient, reason: str, message: str) -> None:
    page = http.get(f"{PORTAL}/sign-in", params={"reason": reason})
    assert page.status_code == 200
    assert message in page.text


def test_an_unknown_reason_shows_no_text_of_its_own(http: TestClient) -> None:
    page = http.get(f"{PORTAL}/sign-in", params={"reason": "<b>hi</b>"})
    assert page.status_code == 200
    assert "hi</b>" not in page.text
    assert 'class="notice"' not in page.text


def test_the_dashboard_shows_credits_cycle_and_jobs(
    http: TestClient, service: BillingService
) -> None:
    client = create_client(http, "pro")
    portal_sign_in(http, client["api_key"])
    page = http.get(f"{PORTAL}/").text
    assert numbers(page) == {"status": "active", "credits-left": "200", "jobs": "0"}
    assert '<meter min="0" max="200" value="0"' in page
    record = service.get_client(client["client_id"])
    for moment in (record.billing_cycle_start, record.billing_cycle_end):
        assert f'<time datetime="{moment.isoformat()}">' in page
    assert "No job this cycle yet." in page

    accepted = submit_job(http, client["api_key"])
    assert accepted.status_code == 201
    job_id = accepted.json()["job_id"]
    page = http.get(f"{PORTAL}/").text
    assert numbers(page) == {"status": "active", "credits-left": "199", "jobs": "1"}
    assert '<meter min="0" max="200" value="1"' in page
    assert f"<code>{job_id}</code>" in page
    assert "1 job this cycle" in page


def test_recent_jobs_are_newest_first_and_bounded(
    http: TestClient, service: BillingService
) -> None:
    client = create_client(http, "pro")
    for n in range(25):
        service.charge(client["client_id"], job_id=f"job-{n:02d}")
    portal_sign_in(http, client["api_key"])
    page = http.get(f"{PORTAL}/").text
    shown = re.findall(r"<code>(job-\d\d)</code>", page)
    assert shown == [f"job-{n:02d}" for n in range(24, 4, -1)]
    assert "25 jobs this cycle; the 20 newest." in page


def test_an_unlimited_plan_has_no_meter(http: TestClient) -> None:
    client = create_client(http, "enterprise")
    portal_sign_in(http, client["api_key"])
    page = http.get(f"{PORTAL}/").text
    assert numbers(page)["credits-left"] == "unlimited"
    assert "<meter" not in page


def test_a_used_up_cycle_says_upgrade_or_wait_until_its_end(
    http: TestClient, service: BillingService
) -> None:
    client = create_client(http, "free")
    for _ in range(5):  # one at a time: the free plan runs one job at once
        accepted = submit_job(http, client["api_key"])
        assert accepted.status_code == 201
        done = Report(JobStatus.SUCCEEDED)
        service.report_job(accepted.json()["job_id"], done, client_id=client["client_id"])
    portal_sign_in(http, client["api_key"])
    page = http.get(f"{PORTAL}/").text
    end = service.get_client(client["client_id"]).billing_cycle_end
    assert numbers(page)["status"] == "limit_reached"
    assert "Upgrade your plan, or wait until" in page
    assert end.strftime("%Y-%m-%d %H:%M UTC") in page


@pytest.mark.parametrize(
    ("state", "status", "advice"),
    [
        ({"subscription_status": "past_due"}, "past_due", "Update your card in Manage billing."),
        ({"subscription_status": "unpaid"}, "past_due", "Update your card in Manage billing."),
        ({"subscription_status": "paused"}, "paused", "Resume it in Manage billing."),
        ({"disputes": ["dp_test_1"]}, "disputed", "Contact OpenClaw support."),
    ],
)
def test_a_refusing_status_says_what_to_do(
    http: TestClient, service: BillingService, state: dict[str, Any], status: str, advice: str
) -> None:
    client = create_client(http, "pro")
    set_state(service, client["client_id"], **state)
    portal_sign_in(http, client["api_key"])
    page = http.get(f"{PORTAL}/").text
    assert numbers(page)["status"] == status
    assert advice in page
    assert 'role="alert"' in page


def test_deactivating_the_client_ends_its_sessions(
    http: TestClient, service: BillingService
) -> None:
    client = create_client(http, "pro")
    portal_sign_in(http, client["api_key"])
    service.set_active(client["client_id"], False)
    answer = http.get(f"{PORTAL}/", follow_redirects=False)
    assert answer.headers["location"] == f"{PORTAL}/sign-in?reason=inactive"
    page = http.get(answer.headers["location"])
    assert "This account is deactivated. Contact OpenClaw support." in page.text
    assert sign_in_answer(http, client["api_key"]).status_code == 401
    service.set_active(client["client_id"], True)  # the ended session does not come back
    assert http.get(f"{PORTAL}/", follow_redirects=False).status_code == 303


def test_revoking_the_key_ends_its_sessions(http: TestClient, service: BillingService) -> None:
    client = create_client(http, "pro")
    portal_sign_in(http, client["api_key"])
    [key] = service.get_client(client["client_id"]).api_keys
    service.revoke_key(client["client_id"], key.key_id)
    answer = http.get(f"{PORTAL}/", follow_redirects=False)
    assert answer.headers["location"] == f"{PORTAL}/sign-in?reason=key"
    assert "has been revoked or has expired" in http.get(answer.headers["location"]).text
    assert sign_in_answer(http, client["api_key"]).status_code == 401


def test_a_session_is_refused_outside_the_allowlist(
    http: TestClient, service: BillingService
) -> None:
    client = create_client(http, "pro")
    portal_sign_in(http, client["api_key"])
    service.set_policy(client["client_id"], rate_limit_per_minute=None, ip_allowlist=["10.0.0.0/8"])
    answer = http.get(f"{PORTAL}/", follow_redirects=False)
    assert answer.headers["location"] == f"{PORTAL}/sign-in?reason=address"


def test_a_client_sees_only_its_own_data(http: TestClient, service: BillingService) -> None:
    a = create_client(http, "pro", name="Alpha Client")
    b = create_client(http, "starter", name="Bravo Client")
    service.charge(a["client_id"], job_id="alpha-job")
    service.charge(b["client_id"], job_id="bravo-job")
    with TestClient(http.app) as other:
        portal_sign_in(http, a["api_key"])
        portal_sign_in(other, b["api_key"])
        page_a, page_b = http.get(f"{PORTAL}/").text, other.get(f"{PORTAL}/").text
    assert "Alpha Client" in page_a
    assert "alpha-job" in page_a
    assert "Bravo Client" not in page_a
    assert "bravo-job" not in page_a
    assert b["client_id"] not in page_a
    assert "Bravo Client" in page_b
    assert "bravo-job" in page_b
    assert "Alpha Client" not in page_b
    assert "alpha-job" not in page_b
    assert numbers(page_a)["credits-left"] == "199"
    assert numbers(page_b)["credits-left"] == "49"


def test_a_console_session_is_useless_in_the_portal_and_back(http: TestClient) -> None:
    key = create_client(http, "pro")["api_key"]
    console_sign_in(http)
    console_cookie = http.cookies["oc_console"]
    assert http.get(f"{PORTAL}/", follow_redirects=False).status_code == 303  # not signed in
    http.cookies.clear()
    http.cookies.set("oc_portal", console_cookie)
    assert http.get(f"{PORTAL}/", follow_redirects=False).status_code == 303
    http.cookies.clear()
    portal_sign_in(http, key)
    portal_cookie = http.cookies["oc_portal"]
    assert http.get("/billing/console/clients", follow_redirects=False).status_code == 303
    http.cookies.clear()
    http.cookies.set("oc_console", portal_cookie)
    assert http.get("/billing/console/clients", follow_redirects=False).status_code == 303


def test_signing_out_needs_the_token_and_ends_every_copy(http: TestClient) -> None:
    key = create_client(http, "pro")["api_key"]
    csrf = portal_sign_in(http, key)
    refused = http.post(f"{PORTAL}/sign-out", data={}, follow_redirects=False)
    assert refused.status_code == 403
    assert http.get(f"{PORTAL}/").status_code == 200  # still signed in
    copy = dict(http.cookies)
    answer = http.post(f"{PORTAL}/sign-out", data={"csrf_token": csrf}, follow_redirects=False)
    assert answer.headers["location"] == f"{PORTAL}/sign-in?reason=signed_out"
    with TestClient(http.app, cookies=copy) as replay:
        again = replay.get(f"{PORTAL}/", follow_redirects=False)
    assert again.headers["location"] == f"{PORTAL}/sign-in?reason=expired"


def test_a_post_from_another_site_is_refused(http: TestClient) -> None:
    key = create_client(http, "pro")["api_key"]
    csrf = portal_sign_in(http, key)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        answer = http.post(f"{PORTAL}/sign-out", data={"csrf_token": csrf}, headers=headers)
        assert answer.status_code == 403
    assert http.get(f"{PORTAL}/").status_code == 200


def test_every_value_is_escaped(http: TestClient, service: BillingService) -> None:
    name = "<img src=x onerror=alert(1)>"
    client = create_client(http, "pro", name=name)
    service.charge(client["client_id"], job_id="<script>alert(2)</script>")
    portal_sign_in(http, client["api_key"])
    for path in ("/", "/checkout/cancel", "/checkout/success"):
        page = http.get(f"{PORTAL}{path}").text
        assert "<img src=x" not in page
        assert "<script>alert" not in page
    page = http.get(f"{PORTAL}/").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page


def test_every_page_carries_the_policy_and_no_inline_script(http: TestClient) -> None:
    key = create_client(http, "pro")["api_key"]
    pages = [f"{PORTAL}/sign-in", f"{PORTAL}/sign-in?reason=inactive"]
    portal_sign_in(http, key)
    pages += [f"{PORTAL}/", f"{PORTAL}/checkout/success", f"{PORTAL}/checkout/cancel"]
    pages += [f"{PORTAL}/checkout/success?session_id=nope"]  # the 422 page
    for path in pages:
        answer = http.get(path)
        policy = answer.headers["content-security-policy"]
        assert policy == PORTAL_CONTENT_SECURITY_POLICY, path
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", answer.text) is None, path
        assert re.search(r"\son[a-z]+=", answer.text) is None, path
        assert 'style="' not in answer.text, path
        assert "<style" not in answer.text, path


def test_back_from_stripe_without_the_cookie_the_page_sends_the_browser_to_itself(
    http: TestClient,
) -> None:
    """Stripe's redirect is another site's navigation: the SameSite=Strict cookie is left
    out. The page sends the browser to itself once (a navigation of this site, with the
    cookie); a second arrival without it signs in."""
    key = create_client(http, "pro")["api_key"]
    portal_sign_in(http, key)
    cookies = dict(http.cookies)
    http.cookies.clear()
    for path, query in (
        ("checkout/success", "?session_id=cs_test_abc"),
        ("checkout/cancel", ""),
    ):
        bounce = http.get(f"{PORTAL}/{path}{query}", follow_redirects=False)
        assert bounce.status_code == 200
        again = f"{PORTAL}/{path}{query}{'&amp;' if query else '?'}resumed=1"
        assert f'<meta http-equiv="refresh" content="0;url={again}">' in bounce.text
        assert bounce.headers["content-security-policy"] == PORTAL_CONTENT_SECURITY_POLICY
        second = http.get(again.replace("&amp;", "&"), follow_redirects=False)
        assert second.status_code == 303
        assert second.headers["location"] == f"{PORTAL}/sign-in"
        with TestClient(http.app, cookies=cookies) as back:
            page = back.get(again.replace("&amp;", "&"), follow_redirects=False)
        assert page.status_code == 200
        assert "http-equiv" not in page.text


def test_a_console_cookie_is_no_portal_session_on_the_return_pages(http: TestClient) -> None:
    console_sign_in(http)
    http.cookies.set("oc_portal", http.cookies["oc_console"])
    answer = http.get(f"{PORTAL}/checkout/cancel", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{PORTAL}/sign-in?reason=expired"
