"""A real browser for the tests of pages: Playwright driving Debian's ``chromium`` (Playwright
cannot download its own browser on this network; ``make test`` installs the Debian package).

:func:`offline_page` opens a page that may only talk to the gateway under test: any request to
another host is aborted and recorded, so a test can assert that a page needs nothing from the
internet. Without chromium the tests that need it fail under ``CI=true`` and skip elsewhere
with how to enable them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
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


@contextmanager
def offline_page(base_url: str, *, clipboard: bool = False) -> Iterator[Visit]:
    """A fresh headless page that can reach ``base_url``'s host and port only (``clipboard``:
    the page may write and read the clipboard, for copy buttons)."""
    allowed = urlsplit(base_url).netloc
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
                if urlsplit(url).netloc == allowed or url.startswith(("data:", "blob:")):
                    route.continue_()
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
