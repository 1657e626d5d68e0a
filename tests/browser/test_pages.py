"""Every page in Chromium: served by the gateway with its own assets only, Chinese first when the
browser prefers it (and the switch remembered), usable at phone width, and WCAG 2.1 AA by axe-core;
the wallet set-up page names the network and the dev accounts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Request, expect

from tests.browser.conftest import Visit
from tests.browser.wallet import TestWallet
from tests.support.shop import Shop, dev_wallet

PAGES = ["/", "/checkout", "/merchant", "/audit", "/wallet-setup"]


# Chromium against the whole embedded system: `make test` runs it, `make test-fast` does not. One xdist
# group, meant to keep every browser test on one worker (one Chromium); pytest-xdist 3.8 here was seen
# spreading grouped tests over both workers anyway, which costs a second Chromium, not correctness.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("browser")]


@pytest.mark.parametrize("path", PAGES)
def test_each_page_meets_wcag_aa_at_phone_width_in_chinese(
    visit: Callable[..., Visit], path: str, shop: Shop
) -> None:
    v = visit(locale="zh-CN", phone=True)
    foreign: list[str] = []

    def record(request: Request) -> None:
        if not request.url.startswith((shop.system.gateway_url, "data:")):
            foreign.append(request.url)

    v.page.on("request", record)
    page = v.open(path)
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.get_by_role("navigation")).to_contain_text("结账")
    page.wait_for_load_state("networkidle")
    # Nothing wider than the phone: no sideways scrolling of the page itself.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert v.axe() == []
    assert foreign == []  # no CDN, no third party: every asset from the gateway
    name = {"/": "home"}.get(path, path.strip("/"))
    v.shot(f"phone-zh-{name}")
    assert v.errors == []


def test_the_language_switch_is_remembered_and_keyboard_reachable(visit: Callable[..., Visit]) -> None:
    v = visit(locale="en-US")
    page = v.open("/checkout")
    expect(page.get_by_role("heading", level=1)).to_have_text("Checkout")
    page.keyboard.press("Tab")  # the skip link comes first
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    switch = page.get_by_role("button", name="中文")
    switch.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("结账")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("结账")  # the cookie, not the browser


def test_wallet_setup_names_the_network_and_the_dev_accounts(visit: Callable[..., Visit], shop: Shop) -> None:
    v = visit()
    page = v.open("/wallet-setup")
    network = page.get_by_test_id("network")
    expect(network).to_contain_text("31337")
    assert shop.system.node is not None
    expect(network).to_contain_text(shop.system.node.url)
    accounts = page.get_by_test_id("dev-accounts")
    expect(accounts).to_contain_text(dev_wallet(3).address)
    expect(accounts.locator("tbody tr")).to_have_count(10)
    v.shot("wallet-setup")
    assert v.axe() == []


def test_the_checkout_can_be_filled_in_with_the_keyboard_alone(
    visit: Callable[..., Visit], wallet_of: Callable[[int], TestWallet]
) -> None:
    v = visit(wallet=wallet_of(8))
    page = v.open("/checkout")
    page.get_by_label("Genshin Impact · 60 Genesis Crystals").wait_for()
    reached: list[str] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("(e => e.id || e.name || e.textContent.trim())(document.activeElement)"))
        if reached[-1] == "sku":  # the product radio group: arrows move within it
            page.keyboard.press("ArrowDown")
        if reached[-1] == "account":
            page.keyboard.type("12345678")
        if reached[-1] == "Connect wallet":
            page.keyboard.press("Enter")
            break
    assert {"sku", "account", "token", "method", "Connect wallet"} <= set(reached), reached
    expect(page.get_by_label("Genshin Impact · 300 Genesis Crystals")).to_be_checked()
    expect(page.get_by_test_id("account-check")).to_have_attribute("data-status", "ok")
    expect(page.get_by_test_id("wallet-address")).to_be_visible()
    page.get_by_test_id("pay").focus()
    expect(page.get_by_test_id("pay")).to_be_focused()
