"""Browser tests: Debian's Chromium driven by Playwright (PyPI) against the session's embedded system
(tests/support/shop.py: dev chain, escrow, simulated provider, gateway, oracle worker).

One Chromium per session (per xdist worker), one browser context per test (its own cookies, storage
and injected test wallet, tests/browser/wallet.py). Chromium comes from the Debian package
(`.ci/chromium` installs it; `make test` runs that when it is missing): the tests fail, never skip,
without it. Screenshots go to ``$CARDLESS_SCREENSHOTS`` (default ``var/test-artifacts/screenshots``);
``make screenshots`` writes the committed set in docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.browser.wallet import TestWallet
from tests.support.shop import Shop

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CARDLESS_CHROMIUM", "/usr/bin/chromium")
# Offline machines: without these Chromium waits on the network for components, sync and updates.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-first-run",
]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def screenshot_dir() -> Path:
    target = Path(os.environ.get("CARDLESS_SCREENSHOTS", ROOT / "var" / "test-artifacts" / "screenshots"))
    target.mkdir(parents=True, exist_ok=True)
    return target


# Module scope, not session: Playwright's sync API keeps its asyncio loop marked as running in this
# thread while it is open, so any later test on the same xdist worker that calls asyncio.run() (the
# in-process gateway tests) would fail. Closing it after each browser module ends that; the browser
# modules run as one xdist group, so it costs one Chromium start per module.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run .ci/chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()  # and with it every Chromium process this session started


class Visit:
    """One test's browser context: a page, its test wallet, its console errors, screenshots, axe."""

    def __init__(self, context: BrowserContext, wallet: TestWallet | None, base_url: str) -> None:
        self.context = context
        self.wallet = wallet
        self.base_url = base_url
        self.page: Page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        # Chromium logs every 4xx answer; the pages show those themselves (a refused key, no analytics).
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text}")

    def open(self, path: str) -> Page:
        self.page.goto(self.base_url + path)
        self.page.wait_for_selector("header.top")
        return self.page

    def shot(self, name: str, *, full_page: bool = True) -> Path:
        target = screenshot_dir() / f"{name}.png"
        self.page.screenshot(path=str(target), full_page=full_page)
        return target

    def axe(self, *, context: str = "body") -> list[dict[str, Any]]:
        """WCAG 2.1 A and AA violations axe-core finds in the page as it is now (none is the goal)."""
        if not AXE.is_file():
            pytest.fail(f"{AXE} is missing: run `npm ci` (axe-core is pinned in package.json)")
        if not self.page.evaluate("typeof window.axe !== 'undefined'"):
            # DevTools evaluation, not a <script>: the pages' CSP allows scripts from the gateway only.
            self.page.evaluate(AXE.read_text(encoding="utf-8") + "\n;true")
        result: dict[str, Any] = self.page.evaluate(
            """async (selector) => await axe.run(document.querySelector(selector), {
                 runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']},
                 resultTypes: ['violations'] })""",
            context,
        )
        return [
            {"id": v["id"], "help": v["help"], "nodes": [n["html"][:160] for n in v["nodes"][:3]]}
            for v in result["violations"]
        ]


@pytest.fixture
def visit(browser: Browser, shop: Shop) -> Iterator[Callable[..., Visit]]:
    """``visit(wallet=TestWallet | None, locale="en-US", phone=False)``: a fresh context on the gateway."""
    contexts: list[BrowserContext] = []

    def make(*, wallet: TestWallet | None = None, locale: str = "en-US", phone: bool = False) -> Visit:
        context = browser.new_context(
            locale=locale,
            viewport=PHONE if phone else DESKTOP,
            device_scale_factor=1,
            is_mobile=phone,
            has_touch=phone,
        )
        context.set_default_timeout(20_000)
        contexts.append(context)
        if wallet is not None:
            wallet.install(context)
        return Visit(context, wallet, shop.system.gateway_url)

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def wallet_of(shop: Shop) -> Callable[[int], TestWallet]:
    return lambda index: TestWallet.dev(index, shop.w3)
