"""Hostile values at the edge, through real HTTP on every backend: out-of-range times, NUL bytes,
control characters and Unicode line breaks are a 422 ``validation_error`` (never a 500 or a
503), nothing is written, and the store still opens. Log lines never carry a raw control
character from input. The one-line rule and the time window are defined once
(:mod:`openclaw_billing.safetext`, ``api/schemas.py``); these tests go through every input
that uses them."""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

import gateway
from openclaw_billing.safetext import PACKAGE_LOGGERS, EscapeControls, escape_controls
from openclaw_billing.service import set_service
from openclaw_billing.settings import get_settings
from tests.backends import store_url_fixture  # noqa: F401 - the fixture "store_url"
from tests.stripe_events import signed, unknown_event

#: One of each kind the one-line rule refuses: NUL, a C0 control, DEL, NEL and another C1
#: control, the Unicode line and paragraph separators, a bidi override and a bidi isolate.
HOSTILE_CHARACTERS = [
    "\x00",
    "\n",
    "\r",
    "\t",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9b",
    "\u2028",
    "\u2029",
    "\u202e",
    "\u2066",
    "\ud800",  # a lone surrogate: JSON can spell it, UTF-8 and PostgreSQL cannot hold it
]
#: Valid ISO 8601 times outside the window (1970 to 9998 in UTC): the first is the year 10000
#: in UTC, the second the year 0.
HOSTILE_TIMES = [
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+00:01",
    "9999-06-01T00:00:00+00:00",
    "1969-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00+00:00",
]
WEBHOOK_SECRET = "whsec_test_openclaw_hostile_0123456789"
JSON = {"Content-Type": "application/json"}


class Admin:
    """The gateway over one store (any backend), with the admin token, reopened at will."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.http: TestClient | None = None

    def open(self) -> TestClient:
        self.close()
        set_service(None)  # a restart: the store is opened (and validated) afresh
        self.http = TestClient(gateway.create_app())
        self.http.__enter__()
        return self.http

    def close(self) -> None:
        if self.http is not None:
            self.http.__exit__(None, None, None)
            self.http = None

    def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        assert self.http is not None
        return self.http.request(
            method, path, headers={**self.headers, **(headers or {})}, **kwargs
        )

    def create(self, name: str = "Acme") -> dict[str, Any]:
        reply = self.call("POST", "/api/admin/clients", json={"name": name, "email": "a@b.co"})
        assert reply.status_code == 201, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def key_id(self, client_id: str) -> str:
        reply = self.call("GET", f"/api/admin/clients/{client_id}/keys")
        assert reply.status_code == 200, reply.text
        key_id: str = reply.json()["keys"][0]["key_id"]
        return key_id


@pytest.fixture
def admin(
    env: Path, store_url: str, monkeypatch: pytest.MonkeyPatch, admin_headers: dict[str, str]
) -> Iterator[Admin]:
    monkeypatch.setenv("OPENCLAW_BILLING_DB", store_url)
    get_settings.cache_clear()
    opened = Admin(admin_headers)
    opened.open()
    yield opened
    opened.close()


def _refused(reply: Any) -> None:
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "validation_error", reply.text


def _still_reads(admin: Admin, client_id: str) -> dict[str, Any]:
    """The client reads back now and after a restart (the store opens)."""
    for _ in range(2):
        reply = admin.call("GET", f"/api/admin/clients/{client_id}")
        assert reply.status_code == 200, reply.text
        admin.open()
    detail: dict[str, Any] = reply.json()
    return detail


# -- times ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE_TIMES)
def test_a_time_outside_the_window_is_a_422_and_writes_nothing(admin: Admin, value: str) -> None:
    client = admin.create()
    cid = client["client_id"]
    key_id = admin.key_id(cid)
    before = admin.call("GET", f"/api/admin/clients/{cid}").json()
    _refused(
        admin.call(
            "PUT", f"/api/admin/clients/{cid}/keys/{key_id}/expiry", json={"expires_at": value}
        )
    )
    _refused(admin.call("POST", f"/api/admin/clients/{cid}/keys", json={"expires_at": value}))
    for name in ("since", "until"):
        _refused(admin.call("GET", "/api/admin/audit", params={name: value}))
    after = _still_reads(admin, cid)
    assert after["api_keys"] == before["api_keys"]

    # The edges of the window are taken, and kept in UTC: 9999-01-01T10:00 at +23:59 is
    # 9998-12-31T10:01 in UTC.
    path = f"/api/admin/clients/{cid}/keys/{key_id}/expiry"
    reply = admin.call("PUT", path, json={"expires_at": "9999-01-01T10:00:00+23:59"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["expires_at"] == "9998-12-31T10:01:00+00:00"
    latest = "9998-12-31T23:59:59.999999+00:00"
    issued = admin.call("POST", f"/api/admin/clients/{cid}/keys", json={"expires_at": latest})
    assert issued.status_code == 201, issued.text
    for name, edge in (("since", "1970-01-01T00:00:00Z"), ("until", latest)):
        assert admin.call("GET", "/api/admin/audit", params={name: edge}).status_code == 200
    keys = _still_reads(admin, cid)["api_keys"]
    assert [k["expires_at"] for k in keys] == ["9998-12-31T10:01:00+00:00", latest]


# -- strings ----------------------------------------------------------------------------------


def _bodies(cid: str, key_id: str, text: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every single-line body field, each holding ``text``."""
    keys = f"/api/admin/clients/{cid}/keys"
    return [
        ("POST", "/api/admin/clients", {"name": text, "email": "a@b.co"}),
        ("POST", "/api/admin/clients", {"name": "Acme", "email": f"a{text}b@b.co"}),
        ("PUT", f"/api/admin/clients/{cid}/credits", {"credits": 5, "reason": text}),
        ("POST", keys, {"label": text}),
        ("POST", f"{keys}/{key_id}/rotate", {"grace_seconds": 0, "label": text}),
        (
            "PUT",
            f"/api/admin/clients/{cid}/policy",
            {"rate_limit_per_minute": None, "ip_allowlist": [f"10.0.0.0/8{text}"]},
        ),
    ]


@pytest.mark.parametrize("character", HOSTILE_CHARACTERS, ids=repr)
def test_control_characters_in_single_line_fields_are_a_422(admin: Admin, character: str) -> None:
    client = admin.create()
    cid = client["client_id"]
    key_id = admin.key_id(cid)
    before = admin.call("GET", f"/api/admin/clients/{cid}").json()
    for method, path, body in _bodies(cid, key_id, f"x{character}y"):
        # json.dumps escapes every character as \uXXXX, a lone surrogate included.
        _refused(admin.call(method, path, content=json.dumps(body), headers=JSON))
    if character != "\ud800":  # a URL cannot carry a lone surrogate
        encoded = quote(f"x{character}y", safe="")
        for method, path, params in (
            ("GET", f"/api/admin/clients/{encoded}", {}),
            ("GET", f"/api/admin/clients/{encoded}/keys", {}),
            ("DELETE", f"/api/admin/clients/{encoded}", {}),
            ("GET", "/api/admin/audit", {"client_id": f"x{character}y"}),
            ("GET", "/api/billing/return", {"checkout": f"x{character}y"}),
        ):
            _refused(admin.call(method, path, params=params))
    assert _still_reads(admin, cid) == before
    listed = admin.call("GET", "/api/admin/clients").json()
    assert listed["total"] == 1  # no client was created
    # The rule refuses controls, not languages: accents, CJK, an emoji with a joiner.
    name = "Zoë 株式会社 👩\u200d💻"
    reply = admin.call("POST", "/api/admin/clients", json={"name": name, "email": "zoë@b.co"})
    assert reply.status_code == 201, reply.text
    other = reply.json()["client_id"]
    reason = {"credits": 3, "reason": "geschenk für Zoë"}
    credits = admin.call("PUT", f"/api/admin/clients/{other}/credits", json=reason)
    assert credits.status_code == 200, credits.text
    assert _still_reads(admin, other)["name"] == name


# -- logs -------------------------------------------------------------------------------------

_RAW_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def test_no_log_line_carries_a_raw_control_character(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    admin_headers: dict[str, str],
) -> None:
    """Hostile values through real requests, among them a signed Stripe event whose type (data
    the billing code logs) holds line breaks and a bidi override."""
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_hostile")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    get_settings.cache_clear()
    forged = "\n2026-01-01 00:00:00 - openclaw_billing - CRITICAL - forged\u2028\u202e\x85"
    caplog.set_level(logging.INFO, logger="openclaw_billing")
    with TestClient(gateway.create_app()) as http:
        # The type is logged as it came (an id must look like Stripe's: a forged one is 400).
        event = unknown_event(f"customer.created{forged}", created=int(time.time()))
        payload, headers = signed(event, WEBHOOK_SECRET)
        reply = http.post("/api/billing/webhook", content=payload, headers=headers)
        assert reply.status_code < 500, reply.text
        for character in HOSTILE_CHARACTERS:
            hostile = f"x{character}y"
            body = json.dumps({"name": hostile, "email": "a@b.co"})
            http.post("/api/admin/clients", content=body, headers={**admin_headers, **JSON})
            if character == "\ud800":
                continue  # a URL or a header cannot carry it
            http.get(f"/api/admin/clients/{quote(hostile, safe='')}", headers=admin_headers)
            key = f"oc_live_{character}".encode()
            http.get("/api/billing/usage", headers={"X-Client-Key": key})
    messages = [record.getMessage() for record in caplog.records]
    assert any("forged\\u2028\\u202e\\x85" in m for m in messages), messages  # it got there
    for message in messages:
        assert _RAW_CONTROL.search(message) is None, repr(message)
    for line in caplog.text.splitlines():
        assert "CRITICAL - forged" not in line.split(" ", 3)[-1][:40], line


def test_escape_controls_covers_every_line_break_and_control() -> None:
    refused = [
        chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) in {"Cc", "Zl", "Zp", "Cs"}
    ] + ["\u061c", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e"]
    refused += ["\u2066", "\u2067", "\u2068", "\u2069"]
    text = "".join(refused)
    escaped = escape_controls(text)
    assert escaped.isascii()
    assert escaped.isprintable()
    assert escaped.count("\\") == len(refused)
    assert escape_controls("Zoë 👩\u200d💻 株式会社") == "Zoë 👩\u200d💻 株式会社"
    assert escape_controls("a\nb") == "a\\x0ab"
    assert escape_controls("a\u2028b") == "a\\u2028b"


def test_every_logger_of_the_package_escapes() -> None:
    """Each logger named in the source has the filter (a host app's own handlers see escaped
    messages too), so a new module's logger cannot be forgotten."""
    root = Path(__file__).resolve().parent.parent
    sources = [*root.joinpath("openclaw_billing").rglob("*.py"), root / "gateway.py"]
    named = {
        name
        for source in sources
        for name in re.findall(r'getLogger\("([^"]+)"\)', source.read_text())
    }
    assert named
    assert named <= set(PACKAGE_LOGGERS)
    for name in named:
        assert any(isinstance(f, EscapeControls) for f in logging.getLogger(name).filters), name
