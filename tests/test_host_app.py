"""A host app built as the integration guide says, served by a real uvicorn: its own routes'
errors have the one JSON shape (an unhandled exception is 500 ``internal_error`` with nothing
of the exception in the body), and every answer after the key check carries ``RateLimit-*``,
the 402 of a client out of credits included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_TOKEN
from tests.factories import create_client_at
from tests.host_app import BOOM
from tests.server import log_path, running_gateway

RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
JOB = {"project_name": "Feature Build", "description": "Add user authentication"}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    state = tmp_path_factory.mktemp("host")
    with running_gateway(state, app="tests.host_app:app", ready_path="/api/billing/plans") as base:
        yield base, state


def new_client(base: str) -> str:
    key: str = create_client_at(base, "free")["api_key"]  # free: 5 jobs, 10 a minute
    return key


def assert_rate_limited_answer(response: httpx.Response, remaining: int) -> None:
    for name in RATE_LIMIT_HEADERS:
        assert name in response.headers, (response.status_code, dict(response.headers))
    assert response.headers["RateLimit-Limit"] == "10"
    assert response.headers["RateLimit-Remaining"] == str(remaining)


@pytest.mark.parametrize("route", ["/api/intake", "/api/deferred-intake"])
def test_every_intake_answer_carries_the_rate_limit_headers_the_402_included(
    host: tuple[str, Path], route: str
) -> None:
    base, _ = host
    key = new_client(base)
    for sent in range(1, 6):
        accepted = httpx.post(f"{base}{route}", headers={"X-Client-Key": key}, json=JOB)
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["credits_remaining"] == 5 - sent
        assert_rate_limited_answer(accepted, 10 - sent)
    refused = httpx.post(f"{base}{route}", headers={"X-Client-Key": key}, json=JOB)
    assert refused.status_code == 402
    assert refused.json()["code"] == "credit_limit_reached"
    assert_rate_limited_answer(refused, 4)
    invalid = httpx.post(f"{base}{route}", headers={"X-Client-Key": key}, json={"x": 1})
    assert invalid.status_code == 422
    assert_rate_limited_answer(invalid, 3)


def test_an_unhandled_exception_in_a_host_route_is_a_json_500_without_the_exception(
    host: tuple[str, Path],
) -> None:
    base, state = host
    key = new_client(base)
    for path, headers in (
        ("/api/broken", {"X-Client-Key": key}),
        ("/api/broken-without-key", {}),
    ):
        response = httpx.get(f"{base}{path}", headers=headers)
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {
            "code": "internal_error",
            "message": "Internal server error",
            "detail": "Internal server error",
        }
        for leak in (BOOM, "Traceback", "RuntimeError", "ValueError", "host_app.py"):
            assert leak not in response.text
        if headers:  # after the key check: the client still learns where it stands
            assert_rate_limited_answer(response, 9)
    # The operator still gets the exception, with its traceback, in the server's log.
    port = base.rsplit(":", 1)[1]
    log = log_path(state, port).read_text()
    assert "Traceback" in log
    assert BOOM in log


def test_a_host_routes_http_error_keeps_the_shape_and_the_headers(host: tuple[str, Path]) -> None:
    base, _ = host
    key = new_client(base)
    response = httpx.get(f"{base}/api/missing-thing", headers={"X-Client-Key": key})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert response.json()["message"] == "No such thing"
    assert_rate_limited_answer(response, 9)


def test_the_guides_host_app_serves_its_docs_pages_offline(host: tuple[str, Path]) -> None:
    base, _ = host
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        response = httpx.get(f"{base}{page}")
        assert response.status_code == 200
        assert "://" not in response.text
        assert f'src="/billing/static/{asset}"' in response.text
        assert httpx.get(f"{base}/billing/static/{asset}").status_code == 200


def test_the_guides_host_app_writes_no_key_to_its_access_log(tmp_path: Path) -> None:
    """The lifespan of the guide's section 1 redacts uvicorn's access log, so a key a client
    put in a URL, or the admin token pasted into a path, never reaches the log file."""
    with running_gateway(
        tmp_path, app="tests.host_app:app", ready_path="/api/billing/plans", log_level="info"
    ) as base:
        key = new_client(base)
        refused = httpx.post(f"{base}/api/intake?api_key={key}", json=JOB)
        assert (refused.status_code, refused.json()["code"]) == (401, "credentials_in_query")
        httpx.get(f"{base}/api/admin/clients/{ADMIN_TOKEN}")
    log = log_path(tmp_path, base.rsplit(":", 1)[1]).read_text()
    assert '"POST /api/intake?[redacted] HTTP/1.1" 401' in log
    assert key[8:] not in log
    assert ADMIN_TOKEN not in log
