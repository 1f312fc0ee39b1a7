"""``/docs`` and ``/redoc`` work on an offline host: every script, style and icon they load
is served by the gateway itself from files shipped in the package (openclaw_billing/static/),
and nothing in either page points to another host."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from openclaw_billing.api.docs_pages import ASSETS, STATIC_DIR

#: Every URL a page loads: src and href attributes, and the ReDoc spec-url.
_LOADED = re.compile(r'(?:src|href|spec-url)\s*=\s*"([^"]*)"')
#: The versions shipped (openclaw_billing/static/ASSETS.txt); a file replaced without
#: updating the list fails here.
VERSIONS = {
    "swagger-ui-bundle.js": "swagger-ui-dist 5.35.0",
    "redoc.standalone.js": "redoc 2.5.4",
    "htmx.min.js": "htmx.org 2.0.11",
}


@pytest.mark.parametrize(("page", "needs"), [("/docs", 3), ("/redoc", 2)])
def test_the_page_loads_only_files_the_gateway_serves(
    http: TestClient, page: str, needs: int
) -> None:
    response = http.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "://" not in response.text  # no CDN, no web font, no online validator
    assert '"validatorUrl": null' in response.text or page == "/redoc"
    loaded = _LOADED.findall(response.text)
    assets = [url for url in loaded if url.startswith("/billing/static/")]
    assert len(assets) == needs, loaded
    assert set(loaded) - set(assets) <= {"/openapi.json"}
    for url in assets:
        name = url.removeprefix("/billing/static/")
        served = http.get(url)
        assert served.status_code == 200, url
        assert served.headers["content-type"].split(";")[0] == ASSETS[name]
        assert served.headers["cache-control"] == "public, max-age=86400"
        assert served.content == (STATIC_DIR / name).read_bytes()
    assert http.get("/openapi.json").status_code == 200


def test_every_listed_asset_is_shipped_with_its_version_and_licence() -> None:
    listing = (STATIC_DIR / "ASSETS.txt").read_text(encoding="utf-8")
    for name in ASSETS:
        assert (STATIC_DIR / name).stat().st_size > 0, name
        assert name in listing, name
    for name, version in VERSIONS.items():
        assert version in listing
        assert version.split()[1] in (STATIC_DIR / name).read_text(encoding="utf-8"), name
    for licence in ("swagger-ui.LICENSE", "redoc.LICENSE", "htmx.LICENSE"):
        assert licence in listing
        assert (STATIC_DIR / licence).stat().st_size > 0


@pytest.mark.parametrize(
    "name", ["ASSETS.txt", "htmx.LICENSE", "..%2Fsettings.py", "..%2F..%2Fgateway.py", "x.js"]
)
def test_nothing_else_of_the_package_is_served(http: TestClient, name: str) -> None:
    response = http.get(f"/billing/static/{name}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_the_pages_are_not_in_the_openapi_document(http: TestClient) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert not any(p in ("/docs", "/redoc") or p.startswith("/billing/static") for p in paths)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_may_load_from_the_gateway_only(http: TestClient, page: str) -> None:
    policy = http.get(page).headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    script = directives["script-src"].split()
    assert script[0] == "'self'"
    assert all(source.startswith("'sha256-") for source in script[1:])  # never unsafe-inline
    assert len(script) == (2 if page == "/docs" else 1)
    for name in ("img-src", "connect-src", "style-src"):
        assert "://" not in directives[name]
        assert "*" not in directives[name]
