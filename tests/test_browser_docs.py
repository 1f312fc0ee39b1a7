"""``/docs`` and ``/redoc`` in a real browser with no way out of the gateway's host: each
renders every operation of the OpenAPI document, and neither page asks another host for
anything."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.browser import offline_page
from tests.server import running_gateway


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("browser")) as base:
        yield base


def operation_count(base: str) -> int:
    paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    return sum(len(methods) for methods in paths.values())


def test_swagger_ui_renders_every_operation_offline(gateway_url: str) -> None:
    with offline_page(gateway_url) as visit:
        visit.page.goto(f"{gateway_url}/docs")
        visit.page.wait_for_selector(".opblock")
        shown = visit.page.locator(".opblock").count()
        title = visit.page.locator(".title").first.inner_text()
    assert shown == operation_count(gateway_url)
    assert title.startswith("OpenClaw gateway")
    assert visit.elsewhere == []
    assert visit.errors == []
    assert visit.refused == []  # its inline start-up script runs by its hash


def test_redoc_renders_every_operation_offline(gateway_url: str) -> None:
    with offline_page(gateway_url) as visit:
        visit.page.goto(f"{gateway_url}/redoc")
        visit.page.wait_for_selector('[data-section-id^="operation/"]')
        shown = visit.page.locator('[data-section-id^="operation/"]').count()
    assert shown == operation_count(gateway_url)
    assert visit.elsewhere == []
    assert visit.errors == []
    # The page's policy keeps ReDoc's footer from fetching its logo from cdn.redoc.ly.
    assert all("cdn.redoc.ly" in refused for refused in visit.refused), visit.refused
