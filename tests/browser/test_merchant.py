"""The merchant dashboard in Chromium, signed in with a ck_live_ key the operator made: orders with a
filter and one order's timeline, balances and payouts, webhooks with their delivery log, and an edit
of the catalogue through the merchant API; and signed in with the merchant's settlement wallet (the
injected test wallet, tests/browser/wallet.py), declined, refused and signed out."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Visit
from tests.browser.wallet import TestWallet
from tests.support.shop import Shop, dev_wallet

# Chromium against the whole embedded system: `make test` runs it, `make test-fast` does not. One xdist
# group, meant to keep every browser test on one worker (one Chromium); pytest-xdist 3.8 here was seen
# spreading grouped tests over both workers anyway, which costs a second Chromium, not correctness.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("browser")]


def test_a_merchant_signs_in_with_an_api_key_and_runs_the_shop(
    visit: Callable[..., Visit], shop: Shop
) -> None:
    created = shop.api.post(
        "/v1/merchants/paimon-shop/keys",
        json={
            "name": "dashboard",
            "scopes": ["orders:read", "payouts:read", "catalogue:write", "webhooks:write"],
        },
        headers=shop.operator_headers,
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    hook = shop.api.post(
        "/v1/merchant/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/cardless", "events": ["order.paid", "order.settled"]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert hook.status_code == 201, hook.text
    buyer = dev_wallet(5)
    quote = shop.quote(buyer, sku="genshin-60").json()
    shop.pay(buyer, quote)
    shop.wait_for(quote["order_id"], "settled")

    v = visit()
    page = v.open("/merchant")
    page.get_by_label("API key").fill("ck_live_wrong_key")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("That key was refused")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Paimon Top-up Shop")

    page.get_by_test_id("filter-state").select_option("settled")
    page.get_by_role("button", name="Filter").click()
    # Only settled orders once the filtered page arrives (the unfiltered one may show refunds too).
    expect(page.locator('[data-testid="order-row"]:not([data-state="settled"])')).to_have_count(0)
    expect(page.get_by_test_id("order-row").first).to_be_visible()
    page.get_by_role("button", name=quote["order_id"][:10] + "…" + quote["order_id"][-6:]).click()
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_contain_text("settled")
    expect(timeline).to_contain_text("quote issued")

    balances = page.get_by_test_id("balances")
    expect(balances).to_contain_text("tUSDC")
    expect(balances).to_contain_text("Reconciled to the wei")
    charts = page.get_by_test_id("charts")
    if "/v1/analytics/heatmap" in shop.api.get("/openapi.json").json()["paths"]:
        # Issue 14's analytics: the weekday x hour grid, orders per SKU, providers' success and latency.
        expect(charts.get_by_test_id("heatmap").locator("tbody tr")).to_have_count(7)
        expect(charts).to_contain_text("Providers: success and latency")
    else:
        expect(charts).to_contain_text("/v1/analytics")
    webhooks = page.get_by_test_id("webhooks")
    expect(webhooks).to_contain_text("http://127.0.0.1:9/cardless")
    expect(webhooks.get_by_test_id("delivery").first).to_contain_text("order.")

    catalogue = page.get_by_test_id("catalogue")
    title = catalogue.get_by_label("Title of genshin-980")
    original = {s["id"]: s["title"] for s in shop.api.get("/v1/catalogue").json()["skus"]}["genshin-980"]
    try:
        title.fill("Genshin Impact · 980 Genesis Crystals (bonus)")
        title.press("Enter")
        expect(catalogue).to_contain_text("Saved.")
        skus = shop.api.get("/v1/catalogue").json()["skus"]
        assert {s["id"]: s["title"] for s in skus}[
            "genshin-980"
        ] == "Genshin Impact · 980 Genesis Crystals (bonus)"
    finally:  # the session's system is shared: later tests compare the catalogue with its seed file
        restored = shop.api.patch(
            "/v1/merchant/skus/genshin-980",
            json={"title": original},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert restored.status_code == 200, restored.text
    v.shot("merchant-dashboard")
    assert v.axe() == []
    assert v.errors == [], v.errors


def test_a_merchant_signs_in_with_the_settlement_wallet_by_keyboard_and_signs_out(
    visit: Callable[..., Visit], wallet_of: Callable[[int], TestWallet], shop: Shop
) -> None:
    """Dev key 6 is paimon-shop's settlement address: "Sign in with wallet" (EIP-1193 accounts, then
    personal_sign of the dashboard's EIP-4361 message) opens a wallet session; declining in the wallet
    is told and changes nothing; "Sign out" ends the session on the gateway too."""
    wallet = wallet_of(6)
    v = visit(wallet=wallet)
    page = v.open("/merchant")
    button = page.get_by_role("button", name="Sign in with wallet")
    expect(page.get_by_label("API key")).to_be_visible()  # the key form stays beside it
    v.shot("merchant-sign-in")
    wallet.reject("personal_sign")
    button.click()
    expect(page.get_by_role("alert")).to_contain_text("You declined in your wallet. You are not signed in")
    assert page.evaluate("sessionStorage.getItem('cardless_merchant_key')") is None
    assert v.axe() == []

    button.focus()  # by keyboard: the button is an ordinary, focusable <button>
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Paimon Top-up Shop")
    expect(page.get_by_test_id("signed-in-as")).to_contain_text(wallet.address)
    expect(page.get_by_test_id("balances")).to_contain_text("tUSDC")
    token = page.evaluate("sessionStorage.getItem('cardless_merchant_key')")
    assert token.startswith("cm_sess_")
    assert wallet.calls.count("personal_sign") == 2 and wallet.sent() == 0
    assert shop.api.get("/v1/merchant", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    page.get_by_role("button", name="Sign out").click()
    expect(button).to_be_visible()
    signed_out = shop.api.get("/v1/merchant", headers={"Authorization": f"Bearer {token}"})
    assert signed_out.status_code == 401, signed_out.text
    assert v.errors == [], v.errors


def test_a_wallet_that_is_no_merchants_is_told_so_in_chinese(
    visit: Callable[..., Visit], wallet_of: Callable[[int], TestWallet]
) -> None:
    wallet = wallet_of(22)
    v = visit(wallet=wallet, locale="zh-CN")
    page = v.open("/merchant")
    page.get_by_role("button", name="用钱包登录").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(f"{wallet.address} 不是本网关任何商户的结算地址")
    v.shot("merchant-wallet-not-a-merchant-zh")
    assert page.evaluate("sessionStorage.getItem('cardless_merchant_key')") is None
    assert v.axe() == []
    assert v.errors == [], v.errors
