"""One client's page in the operator console and its actions, over HTTP
(openclaw_billing/web/console_client.py, console_actions.py, console_keys.py): what the page
shows, its htmx sections, each action done through the API's service method and audited as
the console, a new key shown once, times entered as UTC. Refusals, CSRF and escaping are in
tests/test_console_refusals.py, the audit log page in tests/test_console_audit.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Clock
from openclaw_billing.audit import AuditAction
from openclaw_billing.keys import digest_key
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.web import console_client
from openclaw_billing.web.console_client import NOTICES
from tests.console_pages import HOSTILE, KEY, Console, open_console, subscribe
from tests.factories import submit_job
from tests.test_console import CONSOLE


@pytest.fixture
def console(http: TestClient, service: BillingService) -> Console:
    return open_console(http, service)


# -- the page --------------------------------------------------------------------------------


def test_the_page_shows_usage_cycle_plan_keys_policy_jobs_and_trail(console: Console) -> None:
    assert submit_job(console.http, console.api_key).status_code == 201  # through intake
    for n in range(3):
        console.service.charge(console.client_id, job_id=f"job-{n}", cost=0.25)
    console.service.add_credits(console.client_id, 5, "goodwill")
    console.service.set_policy(
        console.client_id, rate_limit_per_minute=42, ip_allowlist=["10.0.0.0/8"]
    )
    subscribe(console.service, console.client_id)
    page = console.http.get(console.url)
    assert page.status_code == 200
    text = page.text
    record = console.service.get_client(console.client_id)
    assert '<meter min="0" max="205" value="4"' in text  # 200 + 5, of which 4 used
    assert "4 used, 201 left" in text
    assert "<dt>Spent this cycle</dt><dd>0.75</dd>" in text
    assert record.billing_cycle_start.strftime("%Y-%m-%d %H:%M:%S") in text
    assert record.billing_cycle_end.strftime("%Y-%m-%d %H:%M:%S") in text
    assert "Pro ($199/month, 200 jobs a cycle)" in text
    assert "cus_test123" in text
    assert "sub_test123" in text
    assert "42 a minute (override)" in text
    assert '<textarea id="ip_allowlist" name="ip_allowlist" rows="4">10.0.0.0/8</textarea>' in text
    assert "+5</td><td>goodwill</td>" in text
    jobs = re.findall(r"<code>(job-\d)</code>", text)
    assert jobs == ["job-2", "job-1", "job-0"]  # newest first, then the intake's job
    assert "4 jobs charged this cycle" in text
    assert "<td>0.25</td>" in text
    assert f"<code>{record.api_keys[0].prefix}…</code>" in text
    assert "client.credits" in text
    assert "client.create" in text
    assert "Every time on this page is UTC" in text


@pytest.mark.parametrize(
    ("setup", "shown"),
    [
        (lambda s, cid: None, "can submit jobs"),
        (lambda s, cid: s.set_active(cid, False), "deactivated"),
        (lambda s, cid: subscribe(s, cid, "past_due"), "payment past due"),
        (lambda s, cid: subscribe(s, cid, "paused"), "subscription paused"),
        (lambda s, cid: s.add_credits(cid, -200, "used up"), "at its credit limit"),
    ],
    ids=["active", "deactivated", "past_due", "paused", "at_limit"],
)
def test_the_page_shows_the_clients_status(
    console: Console, setup: Callable[[BillingService, str], None], shown: str
) -> None:
    setup(console.service, console.client_id)
    text = console.http.get(console.url).text
    assert re.search(r'<dd data-status="[a-z_]+">' + re.escape(shown) + "</dd>", text)


def test_past_cycles_are_summarised(
    console: Console, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_client, "utcnow", clock)
    record = console.service.create_client(name="Later", email="l@acmecorp.com", plan=PlanId.PRO)
    client_id = record[0].client_id
    console.service.charge(client_id, job_id="old-job")
    console.service.add_credits(client_id, -10, "correction")
    clock.advance(days=31)
    text = console.http.get(f"{CONSOLE}/clients/{client_id}").text
    [row] = re.findall(r"<table class=\"history\">.*?</table>", text, re.S)
    cells = re.findall(r"<td>(.*?)</td>", row.split("<tbody>")[1], re.S)
    assert cells[1:] == ["pro", "200", "-10 (1)", "1", "0.00", "189"]
    assert "No job this cycle." in text


def test_the_jobs_and_the_audit_trail_are_paged_and_htmx_gets_the_section_alone(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_client, "JOBS_PAGE", 2)
    monkeypatch.setattr(console_client, "TRAIL_PAGE", 2)
    for n in range(5):
        console.service.charge(console.client_id, job_id=f"job-{n}")
        console.service.add_credits(console.client_id, 1, f"credit {n}")
    page = console.http.get(console.url).text
    assert re.findall(r"<code>(job-\d)</code>", page) == ["job-4", "job-3"]
    older = f"{console.url}/jobs?offset=2"
    assert f'<a href="{older}" hx-get="{older}" hx-target="#jobs">Older</a>' in page
    assert f'hx-get="{console.url}/audit?offset=2" hx-target="#audit-trail"' in page

    whole = console.http.get(older)  # without JavaScript: the section as a page
    assert "<html" in whole.text
    assert re.findall(r"<code>(job-\d)</code>", whole.text) == ["job-2", "job-1"]
    assert 'id="jobs"' in whole.text  # the pager's target is on this page too
    part = console.http.get(older, headers={"HX-Request": "true"})
    assert "<html" not in part.text
    assert '<nav aria-label="Console">' not in part.text
    assert re.findall(r"<code>(job-\d)</code>", part.text) == ["job-2", "job-1"]
    last = console.http.get(f"{console.url}/jobs?offset=4", headers={"HX-Request": "true"})
    assert re.findall(r"<code>(job-\d)</code>", last.text) == ["job-0"]
    assert "Older" not in last.text

    trail = console.http.get(f"{console.url}/audit?offset=2", headers={"HX-Request": "true"})
    reasons = re.findall(r"reason: (credit \d)", trail.text)
    assert reasons == ["credit 2", "credit 1"]  # events 3 and 4 of 6, newest first
    for headers in (
        {"HX-Request": "true", "HX-Boosted": "true"},
        {"HX-Request": "true", "HX-History-Restore-Request": "true"},
    ):
        assert "<html" in console.http.get(f"{console.url}/audit", headers=headers).text


# -- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    path: str
    data: dict[str, str]
    notice: str
    audited: AuditAction
    #: What the stored record shows once the action is done.
    done: Callable[[Any], bool]
    #: Run first (through the service), for actions that undo something.
    before: Callable[[BillingService, str, str], Any] = field(default=lambda s, c, k: None)


ACTIONS = {
    "credits": Action(
        "/credits",
        {"credits": "7", "reason": "promo"},
        "credits",
        AuditAction.CLIENT_CREDITS,
        lambda r: (
            r.credits_remaining == 207 and r.metadata.credit_adjustments[-1].reason == "promo"
        ),
    ),
    "credits_removed": Action(
        "/credits",
        {"credits": "-3", "reason": "correction"},
        "credits",
        AuditAction.CLIENT_CREDITS,
        lambda r: r.credits_remaining == 197,
    ),
    "deactivate": Action(
        "/deactivate", {}, "deactivated", AuditAction.CLIENT_DEACTIVATE, lambda r: not r.active
    ),
    "reactivate": Action(
        "/reactivate",
        {},
        "reactivated",
        AuditAction.CLIENT_REACTIVATE,
        lambda r: r.active,
        lambda s, c, k: s.set_active(c, False),
    ),
    "plan": Action(
        "/plan",
        {"plan": "starter"},
        "plan",
        AuditAction.CLIENT_PLAN_CHANGE,
        lambda r: r.plan == PlanId.STARTER,
    ),
    "policy": Action(
        "/policy",
        {"rate_limit_per_minute": "120", "ip_allowlist": "10.0.0.0/8\r\n\r\n 2001:db8::/32 \r\n"},
        "policy",
        AuditAction.CLIENT_POLICY,
        lambda r: (
            r.rate_limit_per_minute == 120 and r.ip_allowlist == ["10.0.0.0/8", "2001:db8::/32"]
        ),
    ),
    "policy_cleared": Action(
        "/policy",
        {"rate_limit_per_minute": "", "ip_allowlist": ""},
        "policy",
        AuditAction.CLIENT_POLICY,
        lambda r: r.rate_limit_per_minute is None and r.ip_allowlist == [],
        lambda s, c, k: s.set_policy(c, rate_limit_per_minute=5, ip_allowlist=["10.0.0.1"]),
    ),
    "revoke": Action(
        "/keys/{key_id}/revoke",
        {},
        "key_revoked",
        AuditAction.KEY_REVOKE,
        lambda r: r.api_keys[0].revoked_at is not None,
    ),
    "expiry": Action(
        "/keys/{key_id}/expiry",
        {"expires_at": "2099-01-02T03:04"},  # datetime-local: no zone, taken as UTC
        "key_expiry",
        AuditAction.KEY_EXPIRY,
        lambda r: r.api_keys[0].expires_at == datetime(2099, 1, 2, 3, 4, tzinfo=UTC),
    ),
    "expiry_cleared": Action(
        "/keys/{key_id}/expiry",
        {},  # the "Never expire" form: an empty expiry
        "key_expiry",
        AuditAction.KEY_EXPIRY,
        lambda r: r.api_keys[0].expires_at is None,
        lambda s, c, k: s.set_key_expiry(c, k, datetime(2099, 1, 1, tzinfo=UTC)),
    ),
}


@pytest.mark.parametrize("name", ACTIONS)
def test_each_action_is_done_audited_as_the_console_and_noticed(
    console: Console, name: str
) -> None:
    action = ACTIONS[name]
    action.before(console.service, console.client_id, console.key_id)
    answer = console.post(action.path.format(key_id=console.key_id), action.data)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == f"{console.url}?notice={action.notice}"
    assert action.done(console.service.get_client(console.client_id))
    event = console.events(action.audited)[0]
    assert (event.actor, event.source) == ("console", "testclient")
    page = console.http.get(answer.headers["location"])
    assert f'<p class="notice" role="status">{NOTICES[action.notice]}</p>' in page.text


def test_htmx_posts_are_redirected_with_hx_redirect(console: Console) -> None:
    answer = console.http.post(
        f"{console.url}/deactivate",
        data={"csrf_token": console.csrf},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 204
    assert answer.headers["hx-redirect"] == f"{console.url}?notice=deactivated"


def test_a_notice_is_only_ever_a_fixed_message(console: Console) -> None:
    for notice in (HOSTILE, "unknown", "x" * 5000, "credits\n"):
        page = console.http.get(console.url, params={"notice": notice})
        assert page.status_code == 200
        assert 'class="notice"' not in page.text
        assert HOSTILE not in page.text


def test_issuing_a_key_shows_it_once(console: Console) -> None:
    answer = console.post("/keys", {"label": "ci", "expires_at": "2099-06-01T12:00"})
    assert answer.status_code == 201
    assert answer.headers["cache-control"] == "no-store"
    [key] = set(KEY.findall(answer.text))
    assert "works until" in answer.text
    record = console.service.get_client(console.client_id)
    issued = record.api_keys[-1]
    assert (issued.label, issued.digest) == ("ci", digest_key(key))
    assert issued.expires_at == datetime(2099, 6, 1, 12, tzinfo=UTC)
    assert console.service.authenticate(key) is not None
    [event] = console.events(AuditAction.KEY_ISSUE)
    assert (event.actor, event.source, event.detail["key_id"]) == (
        "console",
        "testclient",
        issued.key_id,
    )
    for path in ("", "/jobs", "/outcomes", "/audit"):
        page = console.http.get(f"{console.url}{path}").text
        assert key not in page
        assert KEY.search(page) is None
        assert all(k.digest not in page for k in record.api_keys)


def test_rotating_a_key_shows_the_new_one_once_and_keeps_the_old_for_the_grace(
    console: Console,
) -> None:
    old = console.key_id
    answer = console.post(f"/keys/{old}/rotate", {"grace_seconds": "3600", "label": "ci-2"})
    assert answer.status_code == 201
    [key] = set(KEY.findall(answer.text))
    assert "keeps working until" in answer.text
    assert console.service.authenticate(key) is not None
    assert console.service.authenticate(console.api_key) is not None  # in its grace period
    [event] = console.events(AuditAction.KEY_ROTATE)
    assert (event.actor, event.detail["key_id"], event.detail["grace_seconds"]) == (
        "console",
        old,
        3600,
    )
    page = console.http.get(console.url).text
    assert key not in page
    states = dict(
        re.findall(r'<span class="hint">(key_[0-9a-f]{12})</span>.*?data-state="(\w+)"', page, re.S)
    )
    assert states[old] == "grace"
    assert list(states.values()).count("active") == 1

    newest = console.service.get_client(console.client_id).api_keys[-1].key_id
    stopped = console.post(f"/keys/{newest}/rotate", {"grace_seconds": "0"})
    assert stopped.status_code == 201
    assert "has stopped working" in stopped.text
    assert console.service.authenticate(key) is None
    page = console.http.get(console.url).text
    assert re.search(rf"{newest}</span>.*?data-state=\"expired\"", page, re.S)


def test_times_entered_are_utc_whatever_the_browsers_zone(console: Console) -> None:
    """A datetime-local value has no zone: it is UTC; a value with a zone keeps it."""
    console.post(f"/keys/{console.key_id}/expiry", {"expires_at": "2099-01-02T03:04:05"})
    key = console.service.get_client(console.client_id).api_keys[0]
    assert key.expires_at == datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    page = console.http.get(console.url).text
    assert 'value="2099-01-02T03:04:05"' in page  # shown back as it was entered
    console.post(
        f"/keys/{console.key_id}/expiry",
        {"expires_at": "2099-01-02T03:04:05+02:00"},
    )
    key = console.service.get_client(console.client_id).api_keys[0]
    assert key.expires_at == datetime(2099, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert key.expires_at - datetime.now(UTC) > timedelta(days=1)
