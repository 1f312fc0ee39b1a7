"""What the console's client actions refuse, over HTTP: a refusal of the service shows the
client's page with its message under its status, an invalid form is a 422 naming the field,
a form without the session's CSRF token is a 403, and none of them changes anything; hostile
text is escaped on every page (openclaw_billing/web/console_client.py and its actions)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from tests.console_pages import ESCAPED, HOSTILE, KEY, Console, open_console, subscribe
from tests.test_console import CONSOLE, assert_safe_page, sign_in


@pytest.fixture
def console(http: TestClient, service: BillingService) -> Console:
    return open_console(http, service)


# -- refusals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    path: str
    data: dict[str, str]
    status: int
    code: str
    before: Callable[[BillingService, str, str], Any] = field(default=lambda s, c, k: None)


def _many_keys(service: BillingService, client_id: str, _: str) -> None:
    for _n in range(9):
        service.issue_key(client_id)


REFUSALS = {
    "credits_below_zero": Refusal(
        "/credits", {"credits": "-201", "reason": "x"}, 409, "insufficient_credits"
    ),
    "credits_unlimited": Refusal(
        "/credits",
        {"credits": "5", "reason": "x"},
        409,
        "unlimited_plan",
        lambda s, c, k: s.change_plan(c, PlanId.ENTERPRISE),
    ),
    "plan_same": Refusal("/plan", {"plan": "pro"}, 409, "already_on_plan"),
    "plan_stripe": Refusal(
        "/plan",
        {"plan": "starter"},
        409,
        "subscription_exists",
        lambda s, c, k: subscribe(s, c),
    ),
    "policy_network": Refusal(
        "/policy",
        {"rate_limit_per_minute": "", "ip_allowlist": "10.0.0.0/33"},
        422,
        "invalid_request",
    ),
    "issue_past_expiry": Refusal(
        "/keys", {"expires_at": "2001-01-01T00:00"}, 422, "invalid_request"
    ),
    "issue_too_many": Refusal("/keys", {"label": "one more"}, 409, "too_many_keys", _many_keys),
    "expiry_past": Refusal(
        "/keys/{key_id}/expiry", {"expires_at": "2001-01-01T00:00"}, 422, "invalid_request"
    ),
    "rotate_revoked": Refusal(
        "/keys/{key_id}/rotate",
        {"grace_seconds": "60"},
        409,
        "key_revoked",
        lambda s, c, k: s.revoke_key(c, k),
    ),
    "expiry_revoked": Refusal(
        "/keys/{key_id}/expiry",
        {"expires_at": "2099-01-01T00:00"},
        409,
        "key_revoked",
        lambda s, c, k: s.revoke_key(c, k),
    ),
    "revoke_unknown_key": Refusal("/keys/key_000000000000/revoke", {}, 404, "key_not_found"),
    "rotate_unknown_key": Refusal(
        "/keys/key_000000000000/rotate", {"grace_seconds": "0"}, 404, "key_not_found"
    ),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_a_refused_action_shows_the_page_with_its_message_and_changes_nothing(
    console: Console, name: str
) -> None:
    refusal = REFUSALS[name]
    refusal.before(console.service, console.client_id, console.key_id)
    before = console.state()
    answer = console.post(refusal.path.format(key_id=console.key_id), refusal.data)
    assert answer.status_code == refusal.status, answer.text
    assert f'<p class="alert" role="alert" data-code="{refusal.code}">' in answer.text
    assert "Nothing was changed." in answer.text
    assert "<h1>Acme Corp</h1>" in answer.text  # the client's page, with its forms
    assert console.state() == before
    assert_safe_page(answer)


INVALID_FORMS = {
    "credits_zero": ("/credits", {"credits": "0", "reason": "x"}, "credits"),
    "credits_text": ("/credits", {"credits": "ten", "reason": "x"}, "credits"),
    "credits_decimal": ("/credits", {"credits": "1.5", "reason": "x"}, "credits"),
    "credits_too_many": ("/credits", {"credits": "1000001", "reason": "x"}, "credits"),
    "credits_no_reason": ("/credits", {"credits": "5"}, "reason"),
    "credits_reason_lines": ("/credits", {"credits": "5", "reason": "a\nb"}, "reason"),
    "credits_extra_field": ("/credits", {"credits": "5", "reason": "x", "plan": "free"}, "plan"),
    "plan_unknown": ("/plan", {"plan": "gold"}, "plan"),
    "policy_rate_zero": (
        "/policy",
        {"rate_limit_per_minute": "0", "ip_allowlist": ""},
        "rate_limit_per_minute",
    ),
    "policy_no_allowlist": ("/policy", {"rate_limit_per_minute": "5"}, "ip_allowlist"),
    "policy_too_many": (
        "/policy",
        {
            "rate_limit_per_minute": "",
            "ip_allowlist": "\n".join(f"10.0.{n}.0/24" for n in range(101)),
        },
        "ip_allowlist",
    ),
    "issue_label_lines": ("/keys", {"label": "a\rb"}, "label"),
    "issue_expiry_garbage": ("/keys", {"expires_at": "tomorrow"}, "expires_at"),
    "issue_expiry_beyond": ("/keys", {"expires_at": "9999-12-31T23:59"}, "expires_at"),
    "rotate_grace_negative": ("/keys/{key_id}/rotate", {"grace_seconds": "-1"}, "grace_seconds"),
    "rotate_grace_too_long": (
        "/keys/{key_id}/rotate",
        {"grace_seconds": "2592001"},
        "grace_seconds",
    ),
    "rotate_no_grace": ("/keys/{key_id}/rotate", {}, "grace_seconds"),
    "expiry_garbage": ("/keys/{key_id}/expiry", {"expires_at": "2099-13-01T00:00"}, "expires_at"),
}


@pytest.mark.parametrize("name", INVALID_FORMS)
def test_an_invalid_form_is_a_422_naming_the_field_and_changes_nothing(
    console: Console, name: str
) -> None:
    path, data, field_name = INVALID_FORMS[name]
    before = console.state()
    answer = console.post(path.format(key_id=console.key_id), data)
    assert answer.status_code == 422, answer.text
    assert 'data-code="validation_error"' in answer.text
    assert f"<li>{field_name}:" in answer.text
    assert console.state() == before


def test_an_unknown_client_or_a_malformed_key_id_changes_nothing(console: Console) -> None:
    before = console.state()
    unknown = f"{CONSOLE}/clients/no-such-client"
    for path, data in (
        ("/credits", {"credits": "5", "reason": "x"}),
        ("/deactivate", {}),
        ("/keys", {}),
        ("/keys/key_000000000000/revoke", {}),
        ("/outcome", {"job_id": "job-1", "status": "succeeded"}),
    ):
        answer = console.http.post(f"{unknown}{path}", data=data | {"csrf_token": console.csrf})
        assert answer.status_code == 404, path
        assert 'data-code="client_not_found"' in answer.text
    for path in ("/jobs", "/outcomes", "/audit"):
        assert console.http.get(f"{unknown}{path}").status_code == 404
    answer = console.post("/keys/not-a-key/revoke", {})
    assert answer.status_code == 422
    assert console.state() == before


# -- CSRF ------------------------------------------------------------------------------------

EVERY_ACTION = [
    ("/credits", {"credits": "5", "reason": "x"}),
    ("/deactivate", {}),
    ("/reactivate", {}),
    ("/plan", {"plan": "starter"}),
    ("/policy", {"rate_limit_per_minute": "9", "ip_allowlist": "10.0.0.1"}),
    ("/keys", {"label": "x"}),
    ("/keys/{key_id}/rotate", {"grace_seconds": "60"}),
    ("/keys/{key_id}/revoke", {}),
    ("/keys/{key_id}/expiry", {"expires_at": "2099-01-01T00:00"}),
    ("/outcome", {"job_id": "job-1", "status": "succeeded"}),
]


@pytest.mark.parametrize(("path", "data"), EVERY_ACTION, ids=[p for p, _ in EVERY_ACTION])
def test_an_action_without_the_sessions_token_is_refused_and_changes_nothing(
    console: Console, path: str, data: dict[str, str]
) -> None:
    before = console.state()
    target = path.format(key_id=console.key_id)
    for token in (None, "", "0" * 64, console.csrf[:-1]):
        body = data if token is None else data | {"csrf_token": token}
        answer = console.post(target, body, csrf=False)
        assert answer.status_code == 403, (token, answer.text)
        assert 'data-code="csrf_refused"' in answer.text
    other_site = console.http.post(
        f"{console.url}{target}",
        data=data | {"csrf_token": console.csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403
    assert console.state() == before
    assert KEY.search(other_site.text) is None


# -- escaping --------------------------------------------------------------------------------


def test_hostile_names_labels_and_reasons_are_escaped_on_every_page(
    http: TestClient, service: BillingService
) -> None:
    csrf = sign_in(http)
    created = http.post(
        f"{CONSOLE}/clients",
        data={"name": HOSTILE, "email": "a@acmecorp.com", "plan": "pro", "csrf_token": csrf},
    )
    [record], _ = service.list_clients()
    url = f"{CONSOLE}/clients/{record.client_id}"
    service.charge(record.client_id, job_id=HOSTILE)
    answers = [created]
    answers.append(http.post(f"{url}/keys", data={"label": HOSTILE, "csrf_token": csrf}))
    answers.append(
        http.post(
            f"{url}/credits", data={"credits": "-1000", "reason": HOSTILE, "csrf_token": csrf}
        )
    )  # refused: the client's page under 409
    http.post(f"{url}/credits", data={"credits": "3", "reason": HOSTILE, "csrf_token": csrf})
    key_id = service.get_client(record.client_id).api_keys[-1].key_id
    answers.append(
        http.post(f"{url}/keys/{key_id}/rotate", data={"grace_seconds": "60", "csrf_token": csrf})
    )
    for path in (url, f"{url}/jobs", f"{url}/audit", f"{CONSOLE}/audit", f"{CONSOLE}/clients"):
        answers.append(http.get(path))
        answers.append(http.get(path, headers={"HX-Request": "true"}))
    answers.append(http.get(f"{CONSOLE}/audit", params={"client_id": HOSTILE}))
    answers.append(http.get(url, params={"notice": HOSTILE}))
    for answer in answers:
        assert answer.status_code in (200, 201, 409), answer.url
        assert HOSTILE not in answer.text, answer.url
        assert ESCAPED in answer.text, answer.url
        if "<html" in answer.text:
            assert_safe_page(answer, shown_text=ESCAPED)
