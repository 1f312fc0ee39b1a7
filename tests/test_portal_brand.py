"""White-label: the product name (``OPENCLAW_BRAND_NAME``) and the logo
(``OPENCLAW_BRAND_LOGO``, openclaw_billing/branding.py and web/branding.py): checked at start,
served with its own media type and a policy that lets no SVG run a script, shown in the
portal's and the console's header."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

import gateway
from openclaw_billing.branding import MAX_LOGO_BYTES, media_type_of
from openclaw_billing.service import BillingService
from openclaw_billing.settings import Settings, get_settings
from tests.factories import create_client
from tests.test_portal import PORTAL, portal_sign_in

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32
HOSTILE_SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- the logo -->\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
    b"<script>alert(2)</script></svg>"
)
LOGO_TAG = '<img src="/billing/portal/logo" alt="">'


def use_logo(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setenv("OPENCLAW_BRAND_LOGO", str(path))
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("name", "content", "media_type"),
    [
        ("logo.png", PNG, "image/png"),
        ("logo.JPG", JPEG, "image/jpeg"),
        ("logo.jpeg", JPEG, "image/jpeg"),
        ("logo.webp", WEBP, "image/webp"),
        ("logo.svg", HOSTILE_SVG, "image/svg+xml"),
    ],
)
def test_the_logo_is_served_as_an_image_that_runs_nothing(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    content: bytes,
    media_type: str,
) -> None:
    logo = env / name
    logo.write_bytes(content)
    use_logo(monkeypatch, logo)
    with TestClient(gateway.create_app()) as http:
        answer = http.get(f"{PORTAL}/logo")
    assert answer.status_code == 200
    assert answer.content == content
    assert answer.headers["content-type"] == media_type
    assert answer.headers["x-content-type-options"] == "nosniff"
    policy = [p.strip() for p in answer.headers["content-security-policy"].split(";")]
    assert "default-src 'none'" in policy
    assert "sandbox" in policy
    assert not any("script-src" in p for p in policy)
    assert "set-cookie" not in answer.headers


def test_the_logo_is_in_the_header_of_the_portal_and_the_console(
    env: Path, monkeypatch: pytest.MonkeyPatch, http: TestClient
) -> None:
    assert LOGO_TAG not in http.get(f"{PORTAL}/sign-in").text
    assert http.get(f"{PORTAL}/logo").status_code == 404
    (env / "logo.png").write_bytes(PNG)
    use_logo(monkeypatch, env / "logo.png")
    key = create_client(http, "pro")["api_key"]
    pages = [f"{PORTAL}/sign-in", "/billing/console/sign-in"]
    portal_sign_in(http, key)
    pages += [f"{PORTAL}/", f"{PORTAL}/checkout/cancel"]
    for path in pages:
        page = http.get(path).text
        header = page.split('<header class="top">', 1)[1].split("</header>", 1)[0]
        assert LOGO_TAG in header, path


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("logo.gif", b"GIF89a" + b"\x00" * 10, "must be a file ending in"),
        ("logo.png", b"not an image at all", "is not a PNG, JPEG, SVG or WebP image"),
        ("logo.png", HOSTILE_SVG, "holds image/svg+xml, not the image/png"),
        ("logo.svg", PNG, "holds image/png, not the image/svg+xml"),
        ("logo.svg", b'<!DOCTYPE svg [<!ENTITY x "y">]><svg/>', "is not a PNG"),
        ("logo.png", PNG + b"\x00" * MAX_LOGO_BYTES, "is larger than 512 KB"),
    ],
)
def test_a_logo_that_is_not_one_stops_the_start(
    env: Path, monkeypatch: pytest.MonkeyPatch, name: str, content: bytes, problem: str
) -> None:
    (env / name).write_bytes(content)
    monkeypatch.setenv("OPENCLAW_BRAND_LOGO", str(env / name))
    with pytest.raises(ValidationError, match=re.escape(problem)):
        Settings()


def test_a_missing_or_unreadable_logo_stops_the_start(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_BRAND_LOGO", str(env / "none.png"))
    with pytest.raises(ValidationError, match=r"none\.png cannot be read"):
        Settings()
    (env / "folder.png").mkdir()
    monkeypatch.setenv("OPENCLAW_BRAND_LOGO", str(env / "folder.png"))
    with pytest.raises(ValidationError, match="is not a regular file"):
        Settings()
    get_settings.cache_clear()
    with pytest.raises(ValidationError), TestClient(gateway.create_app()):
        pass  # the gateway refuses to start


def test_a_logo_of_exactly_the_limit_is_accepted(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logo = env / "logo.png"
    logo.write_bytes(PNG + b"\x00" * (MAX_LOGO_BYTES - len(PNG)))
    monkeypatch.setenv("OPENCLAW_BRAND_LOGO", str(logo))
    assert Settings().brand_logo == logo
    monkeypatch.setenv("OPENCLAW_BRAND_LOGO", "  ")
    assert Settings().brand_logo is None


def test_a_logo_broken_after_the_start_is_not_served(
    env: Path, monkeypatch: pytest.MonkeyPatch, http: TestClient
) -> None:
    logo = env / "logo.png"
    logo.write_bytes(PNG)
    use_logo(monkeypatch, logo)
    assert http.get(f"{PORTAL}/logo").content == PNG
    logo.write_bytes(HOSTILE_SVG)  # replaced by something else: refused, not sniffed
    answer = http.get(f"{PORTAL}/logo")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    logo.unlink()
    assert http.get(f"{PORTAL}/logo").status_code == 404


def test_svg_detection_reads_the_root_element() -> None:
    assert media_type_of(b"\xef\xbb\xbf  <svg>") == "image/svg+xml"
    assert media_type_of(b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd"><svg/>') == (
        "image/svg+xml"
    )
    assert media_type_of(b"<html><svg></svg></html>") is None
    assert media_type_of(b"<svgfoo>") is None


def test_the_brand_name_is_shown_and_escaped(
    monkeypatch: pytest.MonkeyPatch, http: TestClient, service: BillingService
) -> None:
    monkeypatch.setenv("OPENCLAW_BRAND_NAME", "Acme <b>Cloud</b>")
    get_settings.cache_clear()
    client = create_client(http, "pro")
    escaped = "Acme &lt;b&gt;Cloud&lt;/b&gt;"
    page = http.get(f"{PORTAL}/sign-in").text
    assert f"<title>Sign in · {escaped}</title>" in page
    assert f'<span class="brand">{escaped}</span>' in page
    assert "<b>Cloud" not in page
    portal_sign_in(http, client["api_key"])
    assert f"· {escaped}</title>" in http.get(f"{PORTAL}/").text
    service.set_active(client["client_id"], False)
    page = http.get(f"{PORTAL}/").text  # sent to sign in again, with the reason
    assert f"This account is deactivated. Contact {escaped} support." in page
