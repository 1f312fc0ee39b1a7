"""A real browser for the tests of pages: Playwright driving Debian's ``chromium`` (Playwright
cannot download its own browser on this network; ``make test`` installs the Debian package).

:func:`offline_page` opens a page that may only talk to the gateway under test: any request to
another host is aborted and recorded, so a test can assert that a page needs nothing from the
internet. A test may also let it reach a local fake of a third party (``also_allow``), or name
a third party's origin whose requests a local fake answers instead (``stand_ins``: Stripe's
Checkout page, served by tests/fake_stripe.py): the browser sees the third party's origin, and
still nothing leaves the machine. Without chromium the tests that
need it fail under ``CI=true`` and skip elsewhere with how to enable them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, Route, sync_playwright

from tests.backends import service_unavailable

#: Debian's browser (package ``chromium``), or ``OPENCLAW_TEST_CHROMIUM``.
DEFAULT_CHROMIUM = "/usr/bin/chromium"
#: Milliseconds a page may take to show what a test waits for.
PAGE_TIMEOUT_MS = 20_000


def chromium_path() -> str:
    path = os.environ.get("OPENCLAW_TEST_CHROMIUM") or DEFAULT_CHROMIUM
    if shutil.which(path) is None:
        service_unavailable(
            "Debian's chromium for the browser tests",
            f"no browser at {path}; run `make test` (it installs Debian's chromium) or "
            "`apt-get install chromium`, or set OPENCLAW_TEST_CHROMIUM",
        )
    return path


@dataclass
class Visit:
    page: Page
    #: Requests the page tried to make to any other host (aborted).
    elsewhere: list[str] = field(default_factory=list)
    #: Uncaught script errors of the page.
    errors: list[str] = field(default_factory=list)
    #: What the browser refused by the page's Content-Security-Policy (console errors).
    refused: list[str] = field(default_factory=list)
    #: Requests to a stand-in's origin, answered by the local server standing in for it.
    served: list[str] = field(default_factory=list)


@contextmanager
def offline_page(
    base_url: str,
    *,
    clipboard: bool = False,
    also_allow: Iterable[str] = (),
    stand_ins: Mapping[str, str] | None = None,
) -> Iterator[Visit]:
    """A fresh headless page that can reach ``base_url``'s host and port only (``clipboard``:
    the page may write and read the clipboard, for copy buttons). ``also_allow``: base URLs of
    other local servers it may reach too. ``stand_ins`` maps an origin
    (``https://checkout.stripe.com``) to the base URL of a local server that answers its
    requests instead, redirects included (they are listed in :attr:`Visit.served`). Both take
    loopback addresses only: nothing else is ever reached."""
    allowed = {loopback(url) for url in (base_url, *also_allow)}
    local = {origin.rstrip("/"): target for origin, target in (stand_ins or {}).items()}
    for target in local.values():
        loopback(target)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            if clipboard:
                context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
            page = context.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            visit = Visit(page)

            def only_the_gateway(route: Route) -> None:
                url = route.request.url
                parts = urlsplit(url)
                target = local.get(f"{parts.scheme}://{parts.netloc}")
                if parts.netloc in allowed or url.startswith(("data:", "blob:")):
                    route.continue_()
                elif target is not None:
                    visit.served.append(url)
                    where = target.rstrip("/") + url.split(parts.netloc, 1)[1]
                    route.fulfill(response=route.fetch(url=where, max_redirects=0))
                else:
                    visit.elsewhere.append(url)
                    route.abort()

            page.route("**/*", only_the_gateway)
            page.on("pageerror", lambda exc: visit.errors.append(str(exc)))
            page.on(
                "console",
                lambda msg: (
                    visit.refused.append(msg.text)
                    if msg.type == "error" and "Content Security Policy" in msg.text
                    else None
                ),
            )
            yield visit
        finally:
            browser.close()


def loopback(base_url: str) -> str:
    """The host and port of ``base_url``, a server on this machine (else ValueError)."""
    parts = urlsplit(base_url)
    if parts.hostname not in {"127.0.0.1", "::1", "localhost"}:
        raise ValueError(f"{base_url} is not on this machine")
    return parts.netloc


#: axe-core impacts that fail a test: a page may not have these.
SERIOUS_IMPACTS = frozenset({"serious", "critical"})


def accessibility_violations(page: Page) -> list[str]:
    """The serious and critical WCAG violations axe-core finds on the page as it is now, one
    line each (rule, impact, how many elements)."""
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} on {len(v['nodes'])} element(s)"
        for v in results.response["violations"]
        if v.get("impact") in SERIOUS_IMPACTS
    ]


def screenshot(page: Page, name: str) -> None:
    """Save the page as ``<name>.png`` into ``OPENCLAW_SCREENSHOT_DIR`` when it is set (the
    README's images: ``OPENCLAW_SCREENSHOT_DIR=docs/images make pytest``); else nothing."""
    directory = os.environ.get("OPENCLAW_SCREENSHOT_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)
