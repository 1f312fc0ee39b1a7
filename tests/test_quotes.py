"""Job quotes (issue 15, item 4): ``POST /api/billing/quote`` over HTTP, and the quote id the
service honours (``BillingService.honour_quote``, what the intake will call) until its expiry.

The clock is frozen (the ``clock`` fixture, 2026-02-19T10:30:00Z): a quote made then expires at
10:45:00Z exactly.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN_TOKEN, Clock
from openclaw_billing.errors import (
    BillingError,
    InvalidQuote,
    InvalidRequest,
    QuoteExpired,
    QuotesNotConfigured,
)
from openclaw_billing.plans import PLANS, PlanId
from openclaw_billing.quotes import (
    MAX_QUOTE_ID_LENGTH,
    QUOTE_ID_PREFIX,
    QUOTE_TTL,
    honour,
    make_quote,
)
from openclaw_billing.service import BillingService
from openclaw_billing.settings import get_settings
from tests.factories import JOB_BODY, create_client
from tests.test_console import CONSOLE, sign_in

QUOTE = "/api/billing/quote"
FROZEN = datetime(2026, 2, 19, 10, 30, tzinfo=UTC)
EXPIRES = "2026-02-19T10:45:00+00:00"
SECRET = b"s" * 32


@pytest.fixture
def pro(http: TestClient, clock: Clock) -> dict[str, Any]:
    """A pro client, created at the frozen time."""
    return create_client(http, "pro")


def quote(http: TestClient, client: dict[str, Any], body: Any = None) -> Any:
    body = {} if body is None else body
    return http.post(QUOTE, headers={"X-Client-Key": client["api_key"]}, json=body)


def quoted(http: TestClient, client: dict[str, Any], body: Any = None) -> dict[str, Any]:
    answer = quote(http, client, body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


@pytest.fixture
def price_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pro prices jobs by a table: feature_build 3, bug_fix 2, any other type 5; P0 +4, P1 +1."""
    priced = dataclasses.replace(
        PLANS[PlanId.PRO],
        task_prices={"feature_build": 3, "bug_fix": 2, "*": 5},
        priority_surcharges={"P0": 4, "P1": 1},
    )
    monkeypatch.setitem(PLANS, PlanId.PRO, priced)


# -- the price ----------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", [p.value for p in PlanId])
def test_a_default_job_costs_one_credit_on_every_plan(
    http: TestClient, clock: Clock, plan: str
) -> None:
    client = create_client(http, plan)
    for body, priority in (({}, "P2"), (JOB_BODY, "P1"), ({"priority": "P0"}, "P0")):
        assert quoted(http, client, body) | {"quote_id": "-"} == {
            "quote_id": "-",
            "credits": 1,
            "task_type": "feature_build",
            "priority": priority,
            "plan": plan,
            "expires_at": EXPIRES,
        }
    usage = http.get("/api/billing/usage", headers={"X-Client-Key": client["api_key"]}).json()
    assert usage["credits_used"] == 0  # a quote charges nothing


@pytest.mark.parametrize(
    ("task_type", "priority", "credits"),
    [
        ("feature_build", "P2", 3),
        ("feature_build", "P1", 4),
        ("bug_fix", "P3", 2),
        ("bug_fix", "P0", 6),
        ("research", "P2", 5),
        ("research", "P0", 9),
    ],
)
def test_a_price_table_prices_by_task_type_and_priority(
    http: TestClient,
    pro: dict[str, Any],
    service: BillingService,
    price_table: None,
    monkeypatch: pytest.MonkeyPatch,
    task_type: str,
    priority: str,
    credits: int,
) -> None:
    body = JOB_BODY | {"task_type": task_type, "priority": priority}
    answer = quoted(http, pro, body)
    assert (answer["credits"], answer["task_type"], answer["priority"]) == (
        credits,
        task_type,
        priority,
    )
    free = create_client(http, "free")
    assert quoted(http, free, body)["credits"] == 1  # another plan, no table
    # The quote id keeps its price when the table changes: the intake reserves what was quoted.
    monkeypatch.setitem(PLANS, PlanId.PRO, dataclasses.replace(PLANS[PlanId.PRO], task_prices={}))
    assert quoted(http, pro, body)["credits"] == {"P0": 5, "P1": 2}.get(priority, 1)
    honoured = service.honour_quote(answer["quote_id"], pro["client_id"], task_type, priority)
    assert honoured == credits


# -- honouring a quote --------------------------------------------------------------------------


def test_a_quote_is_honoured_until_its_expiry_and_refused_from_it(
    http: TestClient, pro: dict[str, Any], service: BillingService, clock: Clock
) -> None:
    quote_id = quoted(http, pro, JOB_BODY)["quote_id"]
    job = (pro["client_id"], "feature_build", "P1")
    assert service.honour_quote(quote_id, *job) == 1
    clock.advance(minutes=14, seconds=59, microseconds=999_999)
    assert service.honour_quote(quote_id, *job) == 1  # honoured again: a quote is no charge
    clock.advance(microseconds=1)  # 10:45:00 exactly
    with pytest.raises(QuoteExpired) as refused:
        service.honour_quote(quote_id, *job)
    assert (refused.value.status_code, refused.value.code) == (409, "quote_expired")
    assert "ask for a new quote" in refused.value.message
    assert EXPIRES in refused.value.message
    clock.advance(days=400)
    with pytest.raises(QuoteExpired):
        service.honour_quote(quote_id, *job)
    # A new quote, asked for now, is honoured for another QUOTE_TTL.
    fresh = quoted(http, pro, JOB_BODY)
    assert datetime.fromisoformat(fresh["expires_at"]) == clock.now + QUOTE_TTL
    assert service.honour_quote(fresh["quote_id"], *job) == 1


def test_the_validity_is_fifteen_minutes_to_the_second(
    http: TestClient, pro: dict[str, Any], clock: Clock
) -> None:
    assert timedelta(minutes=15) == QUOTE_TTL
    clock.advance(seconds=0.75)  # a fraction of a second is dropped: never honoured longer
    assert quoted(http, pro)["expires_at"] == EXPIRES


def _tampered(quote_id: str) -> list[str]:
    payload, signature = quote_id.rsplit(".", 1)
    body = json.dumps([1, "0" * 32, "feature_build", "P1", 1, 2**40])
    return [
        payload + "." + signature[:-2] + ("AA" if not signature.endswith("AA") else "BB"),
        payload[:-2] + ("xy" if not payload.endswith("xy") else "zw") + "." + signature,
        payload,  # no signature at all
        QUOTE_ID_PREFIX + body.encode().hex() + "." + signature,
        quote_id + "." + signature,
    ]


def test_another_clients_tampered_or_mismatched_quote_is_invalid(
    http: TestClient, pro: dict[str, Any], service: BillingService
) -> None:
    other = create_client(http, "pro")
    quote_id = quoted(http, pro, JOB_BODY)["quote_id"]
    refusals = {
        "another client": (quote_id, other["client_id"], "feature_build", "P1"),
        "task type": (quote_id, pro["client_id"], "bug_fix", "P1"),
        "priority": (quote_id, pro["client_id"], "feature_build", "P0"),
        **{
            f"tampered {n}": (forged, pro["client_id"], "feature_build", "P1")
            for n, forged in enumerate(_tampered(quote_id))
        },
    }
    messages = {}
    for label, job in refusals.items():
        with pytest.raises(InvalidQuote) as refused:
            service.honour_quote(*job)
        assert (refused.value.status_code, refused.value.code) == (422, "invalid_quote"), label
        messages[label] = refused.value.message
    assert "another client" in messages["another client"]
    assert "task type 'feature_build'" in messages["task type"]
    assert "priority P1" in messages["priority"]
    assert all("altered" in m or "malformed" in m for k, m in messages.items() if "tamp" in k)
    secret = get_settings().signing_secret
    assert secret is not None
    for message in messages.values():
        assert ADMIN_TOKEN not in message
        assert secret.hex() not in message
    # The same quote id, for its own job, is still good.
    assert service.honour_quote(quote_id, pro["client_id"], "feature_build", "P1") == 1


@pytest.mark.parametrize(
    "quote_id",
    [
        "",
        "x",
        QUOTE_ID_PREFIX,
        QUOTE_ID_PREFIX + "a" * MAX_QUOTE_ID_LENGTH,
        QUOTE_ID_PREFIX + "a" * 1_000_000,
        QUOTE_ID_PREFIX + "abc\ndef.ghi",
        QUOTE_ID_PREFIX + "abc\x00.def",
        QUOTE_ID_PREFIX + "ab\u202ec.def",
        QUOTE_ID_PREFIX + "\ud800.x",
        None,
        42,
        ["oc_quote_x"],
    ],
    ids=[
        "empty",
        "no-prefix",
        "prefix-only",
        "over-512",
        "1MB",
        "newline",
        "nul",
        "bidi",
        "surrogate",
        "none",
        "int",
        "list",
    ],
)
def test_a_malformed_quote_id_is_invalid_never_an_error(
    http: TestClient, pro: dict[str, Any], service: BillingService, quote_id: Any
) -> None:
    with pytest.raises(InvalidQuote) as refused:
        service.honour_quote(quote_id, pro["client_id"], "feature_build", "P2")
    assert "malformed" in refused.value.message


def test_the_quote_id_is_bounded_whatever_the_client_id() -> None:
    plan = PLANS[PlanId.PRO]
    ids = ["c", "x" * 10_000, "\u00e9" * 500, "\ud800"]
    made = [make_quote(i, plan, "a" * 50, "P0", FROZEN, secret=SECRET) for i in ids]
    # The id is a digest: the longest task type (50) gives about 150 characters, any client.
    assert max(len(q.quote_id) for q in made) <= 200 < MAX_QUOTE_ID_LENGTH
    for client_id, made_quote in zip(ids, made, strict=True):
        assert honour(made_quote.quote_id, client_id, "a" * 50, "P0", FROZEN, secret=SECRET) == 1


def test_a_quote_signed_under_another_secret_is_invalid(
    http: TestClient, pro: dict[str, Any], service: BillingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changing the secret voids outstanding quotes: OPENCLAW_SESSION_SECRET replaces the
    secret derived from the admin token."""
    quote_id = quoted(http, pro, JOB_BODY)["quote_id"]
    monkeypatch.setenv("OPENCLAW_SESSION_SECRET", "q" * 40)
    get_settings.cache_clear()
    with pytest.raises(InvalidQuote, match="not one this gateway issued"):
        service.honour_quote(quote_id, pro["client_id"], "feature_build", "P1")
    again = quoted(http, pro, JOB_BODY)["quote_id"]
    assert service.honour_quote(again, pro["client_id"], "feature_build", "P1") == 1


def test_a_quote_is_no_cookie_and_a_cookie_no_quote(
    http: TestClient, pro: dict[str, Any], service: BillingService
) -> None:
    """Same secret, another salt: neither verifies as the other."""
    quote_id = quoted(http, pro, JOB_BODY)["quote_id"]
    sign_in(http)
    cookie = http.cookies["oc_console"]
    with pytest.raises(InvalidQuote, match="not one this gateway issued"):
        service.honour_quote(QUOTE_ID_PREFIX + cookie, pro["client_id"], "feature_build", "P1")
    http.cookies.clear()
    for value in (quote_id, quote_id.removeprefix(QUOTE_ID_PREFIX)):
        http.cookies.set("oc_console", value)
        assert http.get(f"{CONSOLE}/clients", follow_redirects=False).status_code == 303


def test_a_time_without_a_zone_is_refused(pro: dict[str, Any], service: BillingService) -> None:
    client = service.get_client(pro["client_id"])
    with pytest.raises(ValueError, match="time zone"):
        service.quote(client, now=datetime(2026, 2, 19, 10, 30))
    good = service.quote(client, now=FROZEN)
    with pytest.raises(ValueError, match="time zone"):
        service.honour_quote(
            good.quote_id, pro["client_id"], "feature_build", "P2", now=datetime(2026, 2, 19)
        )


def test_a_host_cannot_quote_a_job_the_intake_would_refuse(
    pro: dict[str, Any], service: BillingService
) -> None:
    client = service.get_client(pro["client_id"])
    for task_type, priority in (("Feature", "P2"), ("a" * 51, "P2"), ("build", "P4")):
        with pytest.raises(InvalidRequest) as refused:
            service.quote(client, task_type, priority)
        assert refused.value.status_code == 422


# -- configuration and the edge -----------------------------------------------------------------


def test_without_a_secret_quoting_is_refused_with_503(
    http: TestClient, pro: dict[str, Any], service: BillingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    quote_id = quoted(http, pro)["quote_id"]
    monkeypatch.delenv("OPENCLAW_ADMIN_TOKEN")
    monkeypatch.delenv("OPENCLAW_SESSION_SECRET", raising=False)
    get_settings.cache_clear()
    answer = quote(http, pro, JOB_BODY)
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "quotes_not_configured"
    assert "OPENCLAW_SESSION_SECRET" in answer.json()["message"]
    with pytest.raises(QuotesNotConfigured):
        service.honour_quote(quote_id, pro["client_id"], "feature_build", "P2")
    # A bad key is still the one 401, secret or not.
    bad_key = http.post(QUOTE, headers={"X-Client-Key": "oc_live_" + "f" * 32}, json={})
    assert (bad_key.status_code, bad_key.json()["code"]) == (401, "invalid_api_key")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"priority": "P9"}, 422, "validation_error"),
        ({"priority": "p1"}, 422, "validation_error"),
        ({"priority": ["P1"]}, 422, "validation_error"),
        ({"task_type": "Feature-Build"}, 422, "validation_error"),
        ({"task_type": "a" * 51}, 422, "validation_error"),
        ({"task_type": {"nested": [{"junk": [1, 2, {"x": None}]}]}}, 422, "validation_error"),
        ({"task_type": None}, 422, "validation_error"),
        ({"description": "x" * 20_001}, 422, "validation_error"),
        ({"project_name": {"a": [1]}}, 422, "validation_error"),
        ({"credits": 0}, 422, "validation_error"),
        ({"plan": "enterprise"}, 422, "validation_error"),
        ({"quote_id": "oc_quote_x"}, 422, "validation_error"),
        ([JOB_BODY], 422, "validation_error"),
        ("feature_build", 422, "validation_error"),
        (None, 422, "validation_error"),
        ({"description": "x" * 200_000}, 413, "payload_too_large"),
    ],
    ids=[
        "priority",
        "priority-case",
        "priority-list",
        "task-type",
        "task-type-long",
        "nested-junk",
        "task-type-null",
        "description-long",
        "project-nested",
        "credits",
        "plan",
        "quote-id",
        "list",
        "string",
        "null",
        "huge",
    ],
)
def test_bad_input_is_a_4xx_with_a_stable_code(
    http: TestClient, pro: dict[str, Any], body: Any, status: int, code: str
) -> None:
    answer = http.post(QUOTE, headers={"X-Client-Key": pro["api_key"]}, json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code


@pytest.mark.parametrize(
    "raw",
    [b"[" * 50_000 + b"]" * 50_000, b"{", b"\xff\xfe", b'{"priority": "P1"}' * 2],
    ids=["deep", "truncated", "not-utf8", "two-documents"],
)
def test_a_body_that_is_no_json_object_is_a_4xx(
    http: TestClient, pro: dict[str, Any], raw: bytes
) -> None:
    headers = {"X-Client-Key": pro["api_key"], "Content-Type": "application/json"}
    answer = http.post(QUOTE, headers=headers, content=raw)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["code"] in {"bad_request", "validation_error", "payload_too_large"}


def test_quotes_count_against_the_clients_rate_limit(
    http: TestClient, pro: dict[str, Any], service: BillingService
) -> None:
    service.set_policy(pro["client_id"], rate_limit_per_minute=2, ip_allowlist=[])
    first = quote(http, pro)
    assert first.headers["RateLimit-Limit"] == "2"
    assert quote(http, pro).status_code == 200
    third = quote(http, pro)
    assert third.status_code == 429
    assert third.json()["code"] == "rate_limited"
    assert int(third.headers["Retry-After"]) >= 1


def test_errors_carry_their_documented_status() -> None:
    assert [(e.status_code, e.code) for e in (InvalidQuote, QuoteExpired, QuotesNotConfigured)] == [
        (422, "invalid_quote"),
        (409, "quote_expired"),
        (503, "quotes_not_configured"),
    ]
    assert all(issubclass(e, BillingError) for e in (InvalidQuote, QuoteExpired))
