"""OWASP API Security Top 10 over real HTTP, on every route the app has.

Routes are enumerated from the app's OpenAPI document (``tests/openapi_routes.py``), so a route
added later is covered without editing this file.

* API1 broken object-level authorisation (docs/ARCHITECTURE.md R13): client A's key on every route,
  with B's ids wherever a route takes one; B's stored record stays byte for byte the same.
* API2 broken authentication (R11, R12): ``tests/test_auth_matrix.py``, over the same
  enumeration.
* API3 broken object-property-level authorisation (R14, mass assignment): every body refuses
  fields it does not declare; no body a client sends can carry its plan, credits or id; every
  input is bounded.
* API4 unrestricted resource consumption (R15): bodies over ``OPENCLAW_MAX_BODY_BYTES`` are
  answered 413 before they are read (in-process and against a live uvicorn, declared and
  chunked), pages and ids are bounded.
"""

from __future__ import annotations

import asyncio
import json
import re
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

import gateway
from client_auth import router as client_auth_router
from conftest import ADMIN_TOKEN
from openclaw_billing.api.bodylimit import BodyLimitMiddleware, install_body_limit
from openclaw_billing.settings import DEFAULT_MAX_BODY_BYTES, Settings, get_settings
from openclaw_billing.stripe_billing import MAX_WEBHOOK_BYTES
from tests.factories import JOB_BODY, create_client, submit_job
from tests.invariants import records_of
from tests.openapi_routes import Operation, operations, request_schemas
from tests.server import running_gateway

KIB = 1024
MIB = 1024 * KIB
TOO_LARGE = {
    "code": "payload_too_large",
    "message": "Request body too large",
    "detail": "Request body too large",
}
OPERATIONS = operations(gateway.create_app())
BODY_OPERATIONS = [op for op in OPERATIONS if op.body_schema is not None]
#: Fields of the stored record (and the create response) a request body must never carry.
RECORD_FIELDS = {
    "client_id": "mine",
    "credits_remaining": 10**6,
    "credits_limit": 10**6,
    "plan": "enterprise",
    "active": True,
    "api_key": "oc_live_" + "a" * 32,
    "api_key_hash": "0" * 64,
    "api_key_prefix": "oc_live_aaaa",
    "api_keys": [],
    "total_spent": 0.0,
    "metadata": {"cost_log": []},
    "stripe_customer_id": "cus_mine",
    "subscription_status": "active",
    "billing_cycle_end": "2099-01-01T00:00:00+00:00",
    "rate_limit_per_minute": 10**6,
    "ip_allowlist": [],
}


def _ids(op: Operation) -> str:
    return str(op)


@dataclass
class World:
    """Clients A and B (both pro); B has submitted a job."""

    a: dict[str, Any]
    b: dict[str, Any]
    b_job: str
    b_key_id: str
    store_path: Path

    def b_ids(self) -> dict[str, str]:
        return {"client_id": self.b["client_id"], "key_id": self.b_key_id, "job_id": self.b_job}

    def stored(self, client_id: str) -> bytes:
        """The client's record as the store holds it (its snapshot with the journal replayed)."""
        [record] = [r for r in records_of(self.store_path) if r.client_id == client_id]
        return record.model_dump_json().encode()

    def all_stored(self) -> bytes:
        return b"\n".join(r.model_dump_json().encode() for r in records_of(self.store_path))


@pytest.fixture
def world(http: TestClient, store_path: Path, admin_headers: dict[str, str]) -> World:
    a = create_client(http, "pro")
    b = create_client(http, "pro")
    job = submit_job(http, b["api_key"])
    assert job.status_code == 201, job.text
    detail = http.get(f"/api/admin/clients/{b['client_id']}", headers=admin_headers).json()
    # Keys are touched (last_used_at) at most once a minute: use A's once now, so that later
    # requests with it change nothing stored.
    assert http.get("/api/billing/usage", headers={"X-Client-Key": a["api_key"]}).is_success
    return World(a, b, job.json()["job_id"], detail["api_keys"][0]["key_id"], store_path)


# -- API1 / R13: object-level authorisation ---------------------------------------------------


@pytest.mark.parametrize("op", OPERATIONS, ids=_ids)
def test_r13_client_a_never_reaches_client_b(http: TestClient, world: World, op: Operation) -> None:
    before = world.stored(world.b["client_id"])
    params = {"client_id": world.b["client_id"]} if "client_id" in op.query_params else None
    response = http.request(
        op.method,
        op.url(**world.b_ids()),
        headers={"X-Client-Key": world.a["api_key"]},
        params=params,
        json=op.sample_body(),
    )
    # Without Stripe configured, checkout, portal and webhook answer 503 stripe_not_configured.
    assert response.status_code < 500 or response.json()["code"] == "stripe_not_configured"
    if op.is_admin:
        assert response.status_code == 401  # a client key is never an admin credential
    if "job_id" in op.path_params and not op.is_admin:
        assert response.status_code == 404  # another client's job does not exist for A
    for secret in (world.b["client_id"], world.b["api_key_prefix"], world.b_job, world.b_key_id):
        assert secret not in response.text
    if response.is_success and isinstance(body := response.json(), dict) and "client_id" in body:
        assert body["client_id"] == world.a["client_id"]
    assert world.stored(world.b["client_id"]) == before


def test_r13_a_client_lists_only_its_own_jobs(http: TestClient, world: World) -> None:
    own = submit_job(http, world.a["api_key"]).json()["job_id"]
    listed = http.get("/api/jobs", headers={"X-Client-Key": world.a["api_key"]}).json()
    assert [job["job_id"] for job in listed["jobs"]] == [own]
    usage = http.get("/api/billing/usage", headers={"X-Client-Key": world.a["api_key"]}).json()
    assert usage["client_id"] == world.a["client_id"]


# -- API3 / R14: mass assignment and input bounds ---------------------------------------------


@pytest.mark.parametrize("op", BODY_OPERATIONS, ids=_ids)
def test_r14_every_body_refuses_record_fields(
    http: TestClient, world: World, op: Operation
) -> None:
    """Both credentials are sent, so what refuses the field is the body's schema, not auth."""
    headers = {"X-Client-Key": world.a["api_key"], "X-Auth-Token": ADMIN_TOKEN}
    declared = request_schemas(gateway.create_app())[str(op.body_schema)]["properties"]
    url = op.url(client_id=world.a["client_id"], key_id="key_" + "0" * 12, job_id="x")
    before = world.all_stored()
    tried = 0
    for field, value in RECORD_FIELDS.items():
        if field in declared:
            continue
        response = http.request(
            op.method, url, headers=headers, json={**(op.sample_body() or {}), field: value}
        )
        assert response.status_code == 422, (field, response.text)
        body = response.json()
        assert body["code"] == "validation_error"
        assert any(e["loc"][-1] == field and e["type"] == "extra_forbidden" for e in body["errors"])
        tried += 1
    assert tried >= len(RECORD_FIELDS) - 2
    assert world.all_stored() == before


def test_r14_no_client_body_carries_a_record_field() -> None:
    """What a client sends can never set its credits, id, plan or access policy directly.
    (Checkout's ``plan`` is the plan to buy: it changes only when Stripe confirms payment.)"""
    schemas = request_schemas(gateway.create_app())
    client_bodies = {op.body_schema for op in BODY_OPERATIONS if op.is_client}
    assert client_bodies >= {"JobCreate", "QuoteRequest", "CheckoutRequest", "PortalRequest"}
    for name in client_bodies:
        fields = set(schemas[str(name)]["properties"]) - (
            {"plan"} if name == "CheckoutRequest" else set()
        )
        assert not fields & set(RECORD_FIELDS), name


def test_every_request_body_forbids_unknown_fields() -> None:
    schemas = request_schemas(gateway.create_app())
    assert len(schemas) >= 5
    for name, schema in schemas.items():
        assert schema.get("additionalProperties") is False, name


_UNBOUNDED_QUANTIFIER = re.compile(r"(?<!\\)[*+]|\{\d+,\}")


def _bounded(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    if "$ref" in schema:
        return _bounded(components[schema["$ref"].rsplit("/", 1)[1]], components)
    if "anyOf" in schema:  # keywords beside anyOf apply to every branch
        outer = {key: value for key, value in schema.items() if key != "anyOf"}
        return all(_bounded(outer | branch, components) for branch in schema["anyOf"])
    if "enum" in schema or "const" in schema:
        return True
    kind = schema.get("type")
    if kind == "string":
        pattern = schema.get("pattern", "")
        anchored = pattern.startswith("^") and pattern.endswith("$")
        return (
            "maxLength" in schema
            or schema.get("format") == "date-time"
            or (anchored and not _UNBOUNDED_QUANTIFIER.search(pattern))
        )
    if kind in ("integer", "number"):
        return "maximum" in schema and "minimum" in schema
    if kind == "array":
        return "maxItems" in schema and _bounded(schema.get("items", {}), components)
    if kind == "object":  # a map: a bounded count of bounded names and values
        values, names = schema.get("additionalProperties"), schema.get("propertyNames", {})
        return (
            "maxProperties" in schema
            and isinstance(values, dict)
            and _bounded(values, components)
            and _bounded({"type": "string", **names}, components)
        )
    return kind in ("boolean", "null")


def test_every_input_is_bounded() -> None:
    """Strings have a maximum length (or an enum, a date-time, an anchored bounded pattern),
    numbers a range, lists a maximum size: in every body and every path, query and header
    parameter."""
    spec = gateway.create_app().openapi()
    components = spec["components"]["schemas"]
    unbounded = []
    for name, schema in request_schemas(gateway.create_app()).items():
        for field, sub in schema["properties"].items():
            if not _bounded(sub, components):
                unbounded.append(f"{name}.{field}")
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for param in operation.get("parameters", []):
                if not _bounded(param["schema"], components):
                    unbounded.append(f"{method.upper()} {path} {param['in']} {param['name']}")
    assert unbounded == []


def test_the_bounds_check_can_fail() -> None:
    components: dict[str, Any] = {}
    assert not _bounded({"type": "string"}, components)
    assert not _bounded({"type": "string", "pattern": "^a+$"}, components)
    assert not _bounded({"type": "integer", "minimum": 0}, components)
    assert not _bounded({"type": "array", "items": {"type": "integer"}}, components)
    assert _bounded({"type": "string", "pattern": "^[a-z]{0,49}$"}, components)


@pytest.mark.parametrize(
    ("credits", "status"),
    [
        (0, 422),
        (1_000_001, 422),
        (-1_000_001, 422),
        (True, 422),
        ("5", 422),
        (5.0, 422),
        (None, 422),
        (-201, 409),  # more than the balance: never below zero
        (-200, 200),
        (1_000_000, 200),
    ],
)
def test_credit_adjustments_are_bounded_integers(
    http: TestClient, world: World, admin_headers: dict[str, str], credits: Any, status: int
) -> None:
    before = world.stored(world.a["client_id"])
    response = http.put(
        f"/api/admin/clients/{world.a['client_id']}/credits",
        headers=admin_headers,
        json={"credits": credits, "reason": "bounds"},
    )
    assert response.status_code == status, response.text
    if status == 409:
        assert response.json()["code"] == "insufficient_credits"
    if status != 200:
        assert world.stored(world.a["client_id"]) == before
    else:
        assert response.json()["credits_remaining"] == 200 + credits


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Acme\nINFO forged log line", "email": "a@acmecorp.com"},
        {"name": "Acme\x00", "email": "a@acmecorp.com"},
        {"name": "x" * 201, "email": "a@acmecorp.com"},
        {"name": "   ", "email": "a@acmecorp.com"},
        {"name": "Acme", "email": "not-an-email"},
        {"name": "Acme", "email": "a" * 64 + "@" + ("b" * 63 + ".") * 3 + "com"},
        {"name": "Acme", "email": "a@acmecorp.com", "plan": "platinum"},
        {"name": "Acme", "email": "a@acmecorp.com", "plan": "PRO"},
        {"name": ["Acme"], "email": "a@acmecorp.com"},
    ],
    ids=["newline", "nul", "201", "blank", "email", "long-email", "plan", "plan-case", "list"],
)
def test_admin_create_refuses_bad_fields(
    http: TestClient, admin_headers: dict[str, str], store_path: Path, body: dict[str, Any]
) -> None:
    response = http.post("/api/admin/clients", headers=admin_headers, json=body)
    assert response.status_code == 422, response.text
    assert not store_path.exists() or records_of(store_path) == []  # snapshot and journal


@pytest.mark.parametrize(
    "overrides",
    [
        {"description": "x" * 20_001},
        {"description": ""},
        {"project_name": "x" * 201},
        {"task_type": "Feature-Build"},
        {"task_type": "a" * 51},
        {"priority": "P9"},
        {"description": 42},
    ],
    ids=["description", "empty", "project", "task-type", "task-type-long", "priority", "type"],
)
def test_intake_refuses_bad_job_fields(
    http: TestClient, world: World, overrides: dict[str, Any]
) -> None:
    before = world.stored(world.a["client_id"])
    response = submit_job(http, world.a["api_key"], **overrides)
    assert response.status_code == 422, response.text
    assert world.stored(world.a["client_id"]) == before


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "ftp://example.com/",
        "https://example.com/" + "a" * 2000,
        "https:// x",
    ],
)
def test_checkout_refuses_bad_return_urls(http: TestClient, world: World, url: str) -> None:
    response = http.post(
        "/api/billing/checkout",
        headers={"X-Client-Key": world.a["api_key"]},
        json={"plan": "starter", "success_url": url},
    )
    assert response.status_code == 422, response.text


# -- API4 / R15: unrestricted resource consumption --------------------------------------------


PAGED = [op for op in OPERATIONS if "limit" in op.query_params]


def test_paged_routes_are_found() -> None:
    assert {str(op) for op in PAGED} >= {"GET /api/admin/clients"}


@pytest.mark.parametrize("op", PAGED, ids=_ids)
@pytest.mark.parametrize(
    "params",
    [{"limit": 100_000}, {"limit": 0}, {"limit": -1}, {"offset": -1}, {"offset": 10**19}],
    ids=["limit-huge", "limit-0", "limit-neg", "offset-neg", "offset-huge"],
)
def test_pagination_is_bounded(
    http: TestClient, admin_headers: dict[str, str], op: Operation, params: dict[str, int]
) -> None:
    headers = admin_headers if op.is_admin else {}
    response = http.request(op.method, op.path, headers=headers, params=params)
    assert response.status_code == 422, response.text


ODD_IDS = ["a" * 10_000, "a" * 101, "..%2F..%2Fetc%2Fpasswd", "%00", "%C3%A9%E2%80%AE", "%20"]


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.path_params], ids=_ids)
def test_long_and_odd_path_ids_are_404_or_422(
    http: TestClient, world: World, op: Operation
) -> None:
    headers = {"X-Client-Key": world.a["api_key"], "X-Auth-Token": ADMIN_TOKEN}
    before = world.all_stored()
    for odd in ODD_IDS:
        ids = dict.fromkeys(op.path_params, odd)
        response = http.request(op.method, op.url(**ids), headers=headers, json=op.sample_body())
        assert response.status_code in (404, 405, 422), (odd[:20], response.text[:200])
    assert world.all_stored() == before


# Request bodies over the cap, in-process: the ASGI middleware alone.


def _reading_app(received: list[int]) -> Any:
    """An ASGI app that reads its whole body, then answers 200 (what the cap protects)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            received.append(len(message.get("body", b"")))
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _http_scope(path: str = "/api/intake", length: int | None = None) -> Scope:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


class _Stream:
    """``receive`` for a body of ``total`` bytes in ``chunk``-byte messages; counts reads."""

    def __init__(self, total: int, chunk: int = 64 * KIB) -> None:
        self.left = total
        self.chunk = chunk
        self.reads = 0

    async def __call__(self) -> Message:
        self.reads += 1
        size = min(self.chunk, self.left)
        self.left -= size
        return {"type": "http.request", "body": b"x" * size, "more_body": self.left > 0}


class _Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))


async def _run(app: Any, scope: Scope, receive: Receive) -> _Sent:
    sent = _Sent()
    await app(scope, receive, sent)
    return sent


def test_a_declared_length_over_the_cap_is_refused_before_any_read() -> None:
    received: list[int] = []
    stream = _Stream(10 * MIB)
    middleware = BodyLimitMiddleware(_reading_app(received), max_body_bytes=64 * KIB)
    sent = asyncio.run(_run(middleware, _http_scope(length=10 * MIB), stream))
    assert (sent.status, sent.json()) == (413, TOO_LARGE)
    assert sent.headers[b"connection"] == b"close"
    assert stream.reads == 0
    assert received == []  # the app never ran


def test_a_chunked_body_is_stopped_as_soon_as_it_passes_the_cap() -> None:
    received: list[int] = []
    stream = _Stream(10 * MIB)
    middleware = BodyLimitMiddleware(_reading_app(received), max_body_bytes=64 * KIB)
    sent = asyncio.run(_run(middleware, _http_scope(), stream))
    assert (sent.status, sent.json()) == (413, TOO_LARGE)
    assert stream.reads == 2  # 64 KiB fit, the next message passes the cap: 128 KiB of 10 MiB
    assert len(sent.messages) == 2  # the app's own answer never went out


def test_an_app_that_answers_the_interrupted_read_itself_is_overridden() -> None:
    """FastAPI turns a failed body read into its own 400; the client gets the 413."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
            status = 200
        except Exception:
            status = 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent = asyncio.run(
        _run(BodyLimitMiddleware(app, max_body_bytes=KIB), _http_scope(), _Stream(MIB))
    )
    assert (sent.status, sent.json()) == (413, TOO_LARGE)
    assert len(sent.messages) == 2


def test_a_body_within_the_cap_passes_untouched() -> None:
    received: list[int] = []
    middleware = BodyLimitMiddleware(_reading_app(received), max_body_bytes=64 * KIB)
    sent = asyncio.run(_run(middleware, _http_scope(length=64 * KIB), _Stream(64 * KIB, chunk=KIB)))
    assert sent.status == 200
    assert sum(received) == 64 * KIB


def test_the_webhook_path_keeps_its_own_cap() -> None:
    received: list[int] = []
    middleware = BodyLimitMiddleware(_reading_app(received), max_body_bytes=64 * KIB)
    webhook = "/api/billing/webhook"
    ok = asyncio.run(_run(middleware, _http_scope(webhook, length=MAX_WEBHOOK_BYTES), _Stream(0)))
    assert ok.status == 200
    over = asyncio.run(_run(middleware, _http_scope(webhook), _Stream(MAX_WEBHOOK_BYTES + 1)))
    assert over.status == 413


# Over HTTP in-process: the gateway, and a host app without the middleware.


def test_the_gateway_refuses_a_body_over_the_cap(http: TestClient, world: World) -> None:
    before = world.all_stored()
    big = JOB_BODY | {"description": "x" * (DEFAULT_MAX_BODY_BYTES + 1)}
    response = http.post("/api/intake", headers={"X-Client-Key": world.a["api_key"]}, json=big)
    assert (response.status_code, response.json()) == (413, TOO_LARGE)
    assert world.all_stored() == before


def test_the_cap_follows_the_setting(
    monkeypatch: pytest.MonkeyPatch, http: TestClient, world: World
) -> None:
    monkeypatch.setenv("OPENCLAW_MAX_BODY_BYTES", "2048")
    get_settings.cache_clear()
    headers = {"X-Client-Key": world.a["api_key"]}
    small = http.post("/api/intake", headers=headers, json=JOB_BODY | {"description": "x" * 1500})
    assert small.status_code == 201, small.text
    large = http.post("/api/intake", headers=headers, json=JOB_BODY | {"description": "x" * 2100})
    assert large.status_code == 413


@pytest.mark.parametrize("value", ["100", "1023", "abc", "-1", str(64 * MIB + 1)])
def test_the_cap_setting_is_validated(
    monkeypatch: pytest.MonkeyPatch, env: Path, value: str
) -> None:
    monkeypatch.setenv("OPENCLAW_MAX_BODY_BYTES", value)
    with pytest.raises(ValidationError):
        Settings()


def test_the_cap_defaults_to_64_kib(env: Path) -> None:
    assert get_settings().max_body_bytes == DEFAULT_MAX_BODY_BYTES == 128 * KIB


def test_the_largest_valid_job_fits_the_default_cap_even_fully_escaped(
    http: TestClient, world: World
) -> None:
    """json.dumps writes each non-ASCII character as a 6-byte \\uXXXX escape."""
    job = {"project_name": "\u00e9" * 200, "description": "\u4e2d" * 20_000}
    body = json.dumps(job, ensure_ascii=True).encode()
    assert len(body) > 120_000
    response = http.post(
        "/api/intake",
        headers={"X-Client-Key": world.a["api_key"], "Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code == 201, response.text[:200]
    too_long = json.dumps(job | {"description": "\u4e2d" * 20_001}, ensure_ascii=True)
    refused = http.post(
        "/api/intake",
        headers={"X-Client-Key": world.a["api_key"], "Content-Type": "application/json"},
        content=too_long,
    )
    assert refused.status_code == 422  # the schema's bound, not the size cap


def _chunks(count: int, size: int) -> Iterator[bytes]:
    for _ in range(count):
        yield b" " * size


def _asgi_post(app: Any, path: str, headers: dict[str, str], receive: Receive) -> _Sent:
    """POST straight into an ASGI app (TestClient reads a streamed body whole before sending)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    return asyncio.run(_run(app, scope, receive))


def test_a_host_app_without_the_middleware_still_refuses_large_bodies(env: Path) -> None:
    """``include_router`` alone: the router's route class caps the bodies it parses."""
    app = FastAPI()
    app.include_router(client_auth_router)
    admin = {"X-Auth-Token": ADMIN_TOKEN, "Content-Type": "application/json"}
    stream = _Stream(10 * MIB)
    chunked = _asgi_post(app, "/api/admin/clients", admin, stream)
    assert (chunked.status, chunked.json()) == (413, TOO_LARGE)
    assert stream.reads == 3  # stopped as soon as the body passed 128 KiB
    with TestClient(app) as http:
        declared = http.post(
            "/api/admin/clients",
            headers={"X-Auth-Token": ADMIN_TOKEN},
            json={"name": "x" * (DEFAULT_MAX_BODY_BYTES + 1), "email": "a@acmecorp.com"},
        )
        undecodable = http.post(
            "/api/admin/clients", headers=admin, content=b'{"name": "\xff\xfe"}'
        )
        listed = http.get("/api/admin/clients", headers=admin).json()
    assert (declared.status_code, declared.json()) == (413, TOO_LARGE)
    # FastAPI's 400 for a body it cannot decode, in the one error shape all the same.
    assert undecodable.status_code == 400
    assert undecodable.json()["code"] == "bad_request"
    assert listed["total"] == 0


def test_install_body_limit_covers_a_host_apps_own_routes(env: Path) -> None:
    app = FastAPI()
    install_body_limit(app, max_body_bytes=KIB)
    seen: list[int] = []

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        seen.append(len(await request.body()))
        return {"bytes": seen[-1]}

    with TestClient(app) as http:
        assert http.post("/upload", content=b"x" * KIB).json() == {"bytes": KIB}
        refused = http.post("/upload", content=b"x" * (KIB + 1))
        streamed = http.post("/upload", content=_chunks(100, KIB))
    assert (refused.status_code, refused.json()) == (413, TOO_LARGE)
    assert (streamed.status_code, streamed.json()) == (413, TOO_LARGE)
    assert seen == [KIB]  # the route never saw the large bodies


def test_the_webhook_takes_bodies_over_the_general_cap(
    monkeypatch: pytest.MonkeyPatch, env: Path
) -> None:
    """A Stripe event over the general cap reaches signature verification (400: unsigned);
    past the webhook's own 1 MB cap it is 413."""
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_test_owasp_0123456789abcdef")
    get_settings.cache_clear()
    with TestClient(gateway.create_app()) as http:
        event = json.dumps({"id": "evt_1", "padding": "x" * (200 * KIB)})
        large = http.post(
            "/api/billing/webhook", content=event, headers={"Stripe-Signature": "t=1"}
        )
        huge = http.post("/api/billing/webhook", content=b"x" * (MAX_WEBHOOK_BYTES + 1))
    assert large.status_code == 400, large.text
    assert (huge.status_code, huge.json()) == (413, TOO_LARGE)


# Against a live uvicorn: the 413 comes before the body does.


@dataclass
class LiveGateway:
    port: int
    api_key: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    # Many wrong keys below come from one address: keep brute-force throttling (R15, tested on
    # its own) from answering them 429.
    env = {"OPENCLAW_AUTH_FAILURE_LIMIT": "10000/minute"}
    with running_gateway(tmp_path_factory.mktemp("owasp"), extra_env=env) as base:
        created = httpx.post(
            f"{base}/api/admin/clients",
            headers={"X-Auth-Token": ADMIN_TOKEN},
            json={"name": "Live", "email": "live@acmecorp.com", "plan": "pro"},
        ).json()
        yield LiveGateway(int(base.rsplit(":", 1)[1]), created["api_key"])


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket) -> tuple[int, Any]:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # closed with our unread body in its buffer: what came, came
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _credentials(live: LiveGateway, path: str) -> dict[str, str]:
    return (
        {"X-Auth-Token": ADMIN_TOKEN}
        if path.startswith("/api/admin")
        else {"X-Client-Key": live.api_key}
    )


@pytest.mark.parametrize("path", ["/api/intake", "/api/admin/clients"])
def test_live_a_declared_10_mb_body_is_answered_before_it_is_sent(
    live_gateway: LiveGateway, path: str
) -> None:
    headers = _credentials(live_gateway, path) | {"Content-Length": str(10 * MIB)}
    with socket.create_connection(("127.0.0.1", live_gateway.port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(_head(path, headers) + b'{"project_name": ')  # 17 of 10 MiB bytes
        status, body = _read_response(sock)
        elapsed = time.monotonic() - start
    assert (status, body) == (413, TOO_LARGE)
    assert elapsed < 2  # not waiting for the 10 MiB that never come


@pytest.mark.parametrize("path", ["/api/intake", "/api/admin/clients"])
def test_live_a_chunked_10_mb_body_is_stopped_early(live_gateway: LiveGateway, path: str) -> None:
    headers = _credentials(live_gateway, path) | {"Transfer-Encoding": "chunked"}
    chunk = b" " * (64 * KIB)
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", live_gateway.port), timeout=5) as sock:
        sock.sendall(_head(path, headers))
        while sent < 10 * MIB:
            if select.select([sock], [], [], 0.2)[0]:
                break  # the server has answered
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            assert sent <= 2 * MIB, "no answer after 2 MiB: the body is being read whole"
        status, body = _read_response(sock)
    assert (status, body) == (413, TOO_LARGE)
    assert sent < MIB


INVALID_KEY = {
    "code": "invalid_api_key",
    "message": "Invalid or inactive API key",
    "detail": "Invalid or inactive API key",
}


def test_live_r11_r12_bad_credentials_over_real_http(live_gateway: LiveGateway) -> None:
    """What uvicorn's HTTP parser lets through (raw bytes, long headers) is one 401, or a 4xx
    from the parser itself for an oversized header; never a 5xx."""
    key = live_gateway.api_key
    bad_keys: dict[str, bytes | None] = {
        "none": None,
        "wrong prefix": ("oc_test_" + key[8:]).encode(),
        "31 hex": key[:-1].encode(),
        "uppercase hex": ("oc_live_" + key[8:].upper()).encode(),
        "latin-1 bytes": b"oc_live_" + b"\xe9" * 32,
        "utf-8 bytes": ("oc_live_" + "\u00e9" * 32).encode(),
        "16 kB": b"oc_live_" + b"a" * 16_000,
    }
    with httpx.Client(base_url=live_gateway.base) as http:
        for label, value in bad_keys.items():
            headers = {} if value is None else {b"X-Client-Key": value}
            response = http.get("/api/billing/usage", headers=headers)
            assert (response.status_code, response.json()) == (401, INVALID_KEY), label
        in_query = http.get("/api/billing/usage", params={"api_key": key, "X-Client-Key": key})
        # Refused, never used: a key in a URL is a leaked key (and the answer names the header).
        assert (in_query.status_code, in_query.json()["code"]) == (401, "credentials_in_query")
        for token in [b"t\xf6ken-" + b"\xe9" * 20, ADMIN_TOKEN[:-1].encode() + b"\xff"]:
            response = http.get("/api/admin/clients", headers={b"X-Auth-Token": token})
            assert response.status_code == 401
            assert response.json()["code"] == "invalid_admin_token"
        huge = http.get("/api/billing/usage", headers={"X-Client-Key": "a" * 200_000})
        assert 400 <= huge.status_code < 500
