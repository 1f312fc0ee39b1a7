"""Usage reported to Stripe as meter events (openclaw_billing/stripe_billing/meters.py), with
the real SDK against the fake Stripe: each report is one event at Stripe however often it is
sent (retries after a failure, a lost answer, a crash before the sender marked it sent), and
every answer is classified: reported, already reported, try later, or refused for good."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stripe
from pydantic import ValidationError

from openclaw_billing.errors import StripeNotConfigured
from openclaw_billing.settings import Settings
from openclaw_billing.stripe_billing.client import build_stripe_client, set_stripe_client
from openclaw_billing.stripe_billing.meters import (
    MeterOutcome,
    MeterReporter,
    idempotency_key,
    meter_identifier,
)
from tests.fake_stripe import FakeStripe
from tests.fake_stripe_meters import IDENTIFIER_WINDOW, METER_EVENTS_PATH, duplicate_message
from tests.stripe_contract import check

T0 = 1_800_000_000
AT = datetime.fromtimestamp(T0 - 30, UTC)  # the settlement, 30 s before Stripe's clock
EVENT_NAME = "openclaw_credits"
REPORT: dict[str, Any] = {
    "client_id": "client_1",
    "job_id": "job_1",
    "customer_id": "cus_1",
    "credits": 7,
    "at": AT,
}
IDENTIFIER = meter_identifier("client_1", "job_1")


def _settings(fake: FakeStripe, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "STRIPE_SECRET_KEY": fake.secret_key,
        "STRIPE_API_BASE": fake.base_url,
        "STRIPE_METER_EVENT_NAME": EVENT_NAME,
    }
    return Settings(**(values | extra))


@pytest.fixture(name="fake")
def fake_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStripe]:
    """A fake Stripe whose clock stands at ``T0``; the SDK does not wait between retries."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.0)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.0)
    with FakeStripe() as server:
        server.now = lambda: T0
        yield server


def _reporter(fake: FakeStripe, retries: int = 2) -> MeterReporter:
    """A reporter with the client the settings build (with ``retries`` network retries)."""
    client = build_stripe_client(_settings(fake, STRIPE_MAX_NETWORK_RETRIES=retries))
    return MeterReporter(client, EVENT_NAME)


def _posts(fake: FakeStripe) -> list[Any]:
    return fake.requests_to("post", METER_EVENTS_PATH)


def test_one_report_reaches_stripe_once(fake: FakeStripe) -> None:
    report = _reporter(fake).report_usage(**REPORT)

    assert (report.outcome, report.done, report.identifier) == (
        MeterOutcome.REPORTED,
        True,
        IDENTIFIER,
    )
    [event] = fake.meter_events.events
    check(event)
    assert event["event_name"] == EVENT_NAME
    assert event["payload"] == {"stripe_customer_id": "cus_1", "value": "7"}
    assert (event["identifier"], event["timestamp"]) == (IDENTIFIER, T0 - 30)
    [request] = _posts(fake)
    assert request.idempotency_key == idempotency_key(IDENTIFIER, 1)


def test_the_identifier_is_one_per_job_and_fits_stripe() -> None:
    assert meter_identifier("client_1", "job_1") == IDENTIFIER  # after a restart, the same
    others = {meter_identifier(c, j) for c, j in [("client_1", "job_2"), ("client_2", "job_1")]}
    assert len(others | {IDENTIFIER}) == 3
    assert meter_identifier("ab", "c") != meter_identifier("a", "bc")
    assert len(meter_identifier("c" * 255, "j" * 255)) <= 100
    assert idempotency_key(IDENTIFIER, 1) != idempotency_key(IDENTIFIER, 2)


def test_a_5xx_then_a_retry_stores_the_event_once(fake: FakeStripe) -> None:
    """Stripe keeps a 5xx for the request's key and replays it: the same attempt gets it again;
    the next attempt, a new key, reports the event. The SDK does not retry an attempt."""
    fake.fail_next(500, path=METER_EVENTS_PATH)
    reporter = _reporter(fake)

    first = reporter.report_usage(**REPORT)
    again = reporter.report_usage(**REPORT)
    second = reporter.report_usage(**REPORT, attempt=2)

    assert (first.outcome, first.http_status, first.done) == (MeterOutcome.RETRY_LATER, 500, False)
    assert first.code == "api_error"
    assert again.outcome is MeterOutcome.RETRY_LATER
    assert second.outcome is MeterOutcome.REPORTED
    assert [e["identifier"] for e in fake.meter_events.events] == [IDENTIFIER]
    assert [r.replayed for r in _posts(fake)] == [False, True, False]


def test_no_answer_then_a_retry_stores_the_event_once(fake: FakeStripe) -> None:
    """A connection closed without an answer: the attempt is one request (the SDK, set to
    retry twice, does not retry it), and Stripe may have recorded it."""
    fake.drop_next(path=METER_EVENTS_PATH)
    reporter = _reporter(fake)

    first = reporter.report_usage(**REPORT)
    second = reporter.report_usage(**REPORT, attempt=2)

    assert (first.outcome, first.http_status) == (MeterOutcome.RETRY_LATER, None)
    assert first.maybe_recorded
    assert second.outcome is MeterOutcome.REPORTED
    assert [e["identifier"] for e in fake.meter_events.events] == [IDENTIFIER]
    assert [r.dropped for r in _posts(fake)] == [True, False]


def test_a_lost_answer_is_one_event(fake: FakeStripe) -> None:
    """Stripe recorded the event but the answer never came: the next attempt is refused as a
    duplicate, which is done."""
    fake.drop_next(path=METER_EVENTS_PATH, executed=True)
    reporter = _reporter(fake)
    lost = reporter.report_usage(**REPORT)
    resent = reporter.report_usage(**REPORT, attempt=2)

    assert (lost.outcome, lost.maybe_recorded) == (MeterOutcome.RETRY_LATER, True)
    assert (resent.outcome, resent.done) == (MeterOutcome.ALREADY_REPORTED, True)
    assert [e["identifier"] for e in fake.meter_events.events] == [IDENTIFIER]


def test_stripe_unreachable_certainly_has_nothing(fake: FakeStripe, free_tcp_port: int) -> None:
    """A connection refused (nothing listens on the port): nothing was sent, so Stripe holds
    nothing."""
    down = _settings(fake, STRIPE_API_BASE=f"http://127.0.0.1:{free_tcp_port}")
    report = MeterReporter(build_stripe_client(down), EVENT_NAME).report_usage(**REPORT)
    assert (report.outcome, report.http_status) == (MeterOutcome.RETRY_LATER, None)
    assert not report.maybe_recorded


@pytest.mark.parametrize(
    ("status", "maybe"),
    [(500, True), (503, True), (409, True), (429, False), (400, False), (404, False)],
)
def test_which_answers_stripe_may_have_recorded(fake: FakeStripe, status: int, maybe: bool) -> None:
    """A 5xx's result is indeterminate, a 409 is a request with the key still running; a 429
    comes before Stripe's idempotency layer, and a 4xx refuses the event."""
    fake.fail_next(status, path=METER_EVENTS_PATH, stored=False)
    assert _reporter(fake).report_usage(**REPORT).maybe_recorded is maybe


@pytest.mark.parametrize(
    ("attempt", "outcome"),
    [(1, MeterOutcome.REPORTED), (2, MeterOutcome.ALREADY_REPORTED)],
)
def test_the_same_report_sent_twice_is_one_event(
    fake: FakeStripe, attempt: int, outcome: MeterOutcome
) -> None:
    """A crash after the send, before the sender marked the report sent: a new process sends
    it again (as the same attempt: Stripe replays its answer; as the next: a duplicate)."""
    assert _reporter(fake).report_usage(**REPORT).outcome is MeterOutcome.REPORTED
    resent = _reporter(fake).report_usage(**REPORT, attempt=attempt)

    assert (resent.outcome, resent.done, resent.identifier) == (outcome, True, IDENTIFIER)
    assert len(fake.meter_events.events) == 1


def test_after_stripes_window_a_resend_would_count_again(fake: FakeStripe) -> None:
    """Stripe keeps identifiers for (at least) 24 hours: a report must be marked sent well
    within that, or resent usage is billed twice. The fake forgets them after 24 hours."""
    _reporter(fake).report_usage(**REPORT)
    fake.now = lambda: T0 + IDENTIFIER_WINDOW
    late = _reporter(fake).report_usage(**REPORT, attempt=2)
    assert late.outcome is MeterOutcome.REPORTED
    assert len(fake.meter_events.events) == 2


@pytest.mark.parametrize(
    ("status", "fault", "outcome"),
    [
        # API v2's name for the refusal, should v1 ever send it
        (400, {"code": "duplicate_meter_event"}, MeterOutcome.ALREADY_REPORTED),
        (400, {"message": duplicate_message(IDENTIFIER)}, MeterOutcome.ALREADY_REPORTED),
        (400, {"message": "Missing required param: payload."}, MeterOutcome.FAILED),
        (500, {"message": duplicate_message(IDENTIFIER)}, MeterOutcome.RETRY_LATER),
    ],
)
def test_a_duplicate_is_told_by_stripes_message_or_code(
    fake: FakeStripe, status: int, fault: dict[str, Any], outcome: MeterOutcome
) -> None:
    fake.fail_next(status, error_type="invalid_request_error", path=METER_EVENTS_PATH, **fault)
    assert _reporter(fake, retries=0).report_usage(**REPORT).outcome is outcome


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ({"error_type": "invalid_request_error", "code": "parameter_missing"}, 400, None),
        ({"error_type": "invalid_request_error", "code": "resource_missing"}, 404, None),
        ({"error_type": "permission_error"}, 403, "permission_error"),
        ({"error_type": "api_error"}, 402, "api_error"),
    ],
)
def test_a_refusal_is_permanent_with_stripes_code(
    fake: FakeStripe, fault: dict[str, Any], status: int, code: str | None
) -> None:
    fake.fail_next(status, path=METER_EVENTS_PATH, **fault)
    report = _reporter(fake).report_usage(**REPORT)

    assert (report.outcome, report.done, report.http_status) == (MeterOutcome.FAILED, False, status)
    assert report.code == (code or fault["code"])
    assert "injected by FakeStripe" in (report.message or "")
    assert len(_posts(fake)) == 1  # nothing retried
    assert fake.meter_events.events == []


def test_a_bad_key_and_an_old_settlement_are_refused_for_good(fake: FakeStripe) -> None:
    bad_key = stripe.StripeClient("not_a_key", base_addresses={"api": fake.base_url})
    unauthorised = MeterReporter(bad_key, EVENT_NAME).report_usage(**REPORT)
    too_old = _reporter(fake).report_usage(**REPORT | {"at": datetime(2020, 1, 1, tzinfo=UTC)})

    assert (unauthorised.outcome, unauthorised.http_status) == (MeterOutcome.FAILED, 401)
    assert unauthorised.code == "authentication_error"
    assert (too_old.outcome, too_old.http_status) == (MeterOutcome.FAILED, 400)
    assert too_old.message == "Timestamp must be no more than 35 days in the past."
    assert fake.meter_events.events == []


@pytest.mark.parametrize(
    ("status", "fault"),
    [
        (429, {"error_type": "invalid_request_error", "code": "rate_limit"}),
        (409, {"error_type": "invalid_request_error", "code": "lock_timeout"}),
        (503, {}),
    ],
)
def test_busy_or_down_is_retry_later(fake: FakeStripe, status: int, fault: dict[str, Any]) -> None:
    fake.fail_next(status, path=METER_EVENTS_PATH, stored=False, **fault)
    report = _reporter(fake, retries=0).report_usage(**REPORT)
    assert (report.outcome, report.http_status) == (MeterOutcome.RETRY_LATER, status)
    assert _reporter(fake, retries=0).report_usage(**REPORT, attempt=2).done


def test_not_configured_says_what_is_missing(fake: FakeStripe) -> None:
    client = build_stripe_client(_settings(fake))
    for reporter, missing in [
        (MeterReporter(client, None), "STRIPE_METER_EVENT_NAME"),
        (MeterReporter(None, EVENT_NAME), "STRIPE_SECRET_KEY"),
        (MeterReporter.from_settings(_settings(fake, STRIPE_METER_EVENT_NAME=" ")), "METER"),
    ]:
        assert not reporter.configured
        with pytest.raises(StripeNotConfigured, match=missing) as caught:
            reporter.report_usage(**REPORT)
        assert (caught.value.status_code, caught.value.code) == (503, "stripe_not_configured")
    assert fake.requests == []


def test_from_settings_reports_with_the_process_client(fake: FakeStripe) -> None:
    set_stripe_client(None)
    try:
        reporter = MeterReporter.from_settings(_settings(fake))
        assert (reporter.configured, reporter.event_name) == (True, EVENT_NAME)
        assert reporter.report_usage(**REPORT).outcome is MeterOutcome.REPORTED
    finally:
        set_stripe_client(None)
    assert len(fake.meter_events.events) == 1


@pytest.mark.parametrize("name", ["x" * 101, "two\nlines"])
def test_the_event_name_setting_is_bounded(fake: FakeStripe, name: str) -> None:
    with pytest.raises(ValidationError, match="STRIPE_METER_EVENT_NAME"):
        _settings(fake, STRIPE_METER_EVENT_NAME=name)


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"credits": 0}, "credits"),
        ({"credits": -1}, "credits"),
        ({"credits": True}, "credits"),
        ({"credits": 1.5}, "credits"),
        ({"credits": 2**63}, "credits"),
        ({"client_id": ""}, "client_id"),
        ({"job_id": "a\nb"}, "job_id must be one line"),
        ({"job_id": "j" * 256}, "job_id must be 1 to 255"),
        ({"customer_id": "cus_\u2028"}, "customer_id must be one line"),
        ({"at": datetime(2027, 1, 1)}, "time zone"),
        ({"attempt": 0}, "attempt"),
    ],
    ids=repr,
)
def test_inputs_out_of_bounds_are_refused_before_stripe(
    fake: FakeStripe, change: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(ValueError, match=refusal):
        _reporter(fake).report_usage(**(REPORT | change))
    assert fake.requests == []


#: A self-signed certificate for 127.0.0.1, valid a day (Debian's openssl).
SELF_SIGNED = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
SELF_SIGNED += ["-subj", "/CN=127.0.0.1"]


def test_a_certificate_refused_is_an_attempt_stripe_never_got(
    fake: FakeStripe, tmp_path: Path
) -> None:
    """A TLS server whose certificate the client does not trust (self-signed): the handshake
    fails before any request is sent, so the attempt is not one Stripe may hold."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [*SELF_SIGNED, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    received: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)

        def serve() -> None:
            with (
                contextlib.suppress(OSError),
                server.accept()[0] as raw,
                context.wrap_socket(raw, server_side=True) as tls,
            ):
                received.append(tls.recv(1024))

        thread = threading.Thread(target=serve)
        thread.start()
        port = server.getsockname()[1]
        settings = _settings(
            fake, STRIPE_API_BASE=f"https://127.0.0.1:{port}", STRIPE_MAX_NETWORK_RETRIES=0
        )
        report = MeterReporter(build_stripe_client(settings), EVENT_NAME).report_usage(**REPORT)
        thread.join(timeout=10)

    assert report.outcome is MeterOutcome.RETRY_LATER
    assert report.maybe_recorded is False
    assert received == []  # the handshake failed: no request reached the server
