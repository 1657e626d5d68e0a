"""The buyer's checkout in Chromium, by clicks, with the injected test wallet: a purchase to settled,
a typo'd account, a refunded order, and the wallet errors (declined, wrong network, too little)."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from tests.browser.conftest import Visit
from tests.browser.wallet import TestWallet
from tests.support.shop import Shop


def test_a_buyer_buys_by_clicks_and_watches_the_order_settle(
    visit: Callable[..., Visit], wallet_of: Callable[[int], TestWallet], shop: Shop
) -> None:
    wallet = wallet_of(8)
    v = visit(wallet=wallet)
    page = v.open("/checkout")
    page.get_by_label("Genshin Impact · 60 Genesis Crystals").check()
    v.shot("checkout-1-product")
    page.get_by_label("Game account (user ID)").fill("12345678")
    expect(page.get_by_test_id("account-check")).to_have_attribute("data-status", "ok")
    expect(page.get_by_test_id("account-check")).to_contain_text("player_5678")
    page.get_by_role("radio", name="0.99 tUSDC", exact=True).check()
    v.shot("checkout-2-account")
    page.get_by_role("button", name="Connect wallet").click()
    expect(page.get_by_test_id("wallet-address")).to_contain_text(wallet.address[:10])
    v.shot("checkout-3-wallet")
    page.get_by_test_id("pay").click()
    state = page.get_by_test_id("order-state")
    expect(state).to_have_attribute("data-state", "settled", timeout=30_000)
    assert wallet.sent() == 2  # approve, pay
    v.shot("checkout-4-settled")
    order_id = page.get_by_test_id("order-status").get_attribute("data-order") or ""
    assert v.axe() == []
    assert v.errors == []
