"""The buyer's checkout in Chromium, by clicks, with the injected test wallet: a purchase to settled,
a typo'd account, a refunded order, and the wallet errors (declined, wrong network, too little), each
with a clear message and nothing lost."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account import Account
from playwright.sync_api import Page, expect
from web3 import Web3

from tests.browser.conftest import Visit
from tests.browser.wallet import TestWallet
from tests.support.shop import Shop

# Chromium against the whole embedded system: `make test` runs it, `make test-fast` does not. One xdist
# group, meant to keep every browser test on one worker (one Chromium); pytest-xdist 3.8 here was seen
# spreading grouped tests over both workers anyway, which costs a second Chromium, not correctness.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("browser")]


def _choose(page: Page, sku_title: str, account: str, price: str) -> None:
    page.get_by_label(sku_title).check()
    page.get_by_label("Game account (user ID)").fill(account)
    expect(page.get_by_test_id("account-check")).to_have_attribute("data-status", "ok")
    page.get_by_role("radio", name=price, exact=True).check()


def _connect(page: Page) -> None:
    page.get_by_role("button", name="Connect wallet").click()
    expect(page.get_by_test_id("wallet-address")).to_be_visible()


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
    _connect(page)
    expect(page.get_by_test_id("wallet-address")).to_contain_text(wallet.address[:10])
    v.shot("checkout-3-wallet")
    page.get_by_test_id("pay").click()
    state = page.get_by_test_id("order-state")
    expect(state).not_to_have_attribute("data-state", "", timeout=30_000)
    v.shot("checkout-4-paid")
    expect(state).to_have_attribute("data-state", "settled", timeout=30_000)
    assert wallet.sent() == 2  # approve, then pay
    v.shot("checkout-5-settled")
    order_id = page.get_by_test_id("order-status").get_attribute("data-order") or ""
    order = shop.order(order_id)
    assert order["state"] == "settled" and order["buyer"] == wallet.address
    expect(page.get_by_text(order["chain"]["settle_tx"])).to_be_visible()
    assert v.axe() == []

    # The buyer comes back later and signs in with the wallet (EIP-4361) to see the order.
    page.get_by_test_id("siwe").click()
    row = page.get_by_test_id("order-row").filter(has_text=order_id[:10])
    expect(row).to_have_attribute("data-state", "settled")
    assert "personal_sign" in wallet.calls
    v.shot("checkout-6-my-orders")
    assert v.errors == []


def test_a_buyer_pays_with_one_permit_signature_and_one_transaction(
    visit: Callable[..., Visit], wallet_of: Callable[[int], TestWallet], shop: Shop
) -> None:
    wallet = wallet_of(8)
    v = visit(wallet=wallet)
    page = v.open("/checkout")
    _choose(page, "PUBG Mobile · 60 UC", "23456789", "0.99 tUSDC")
    page.get_by_label("Sign a permit, then pay (one transaction)").check()
    _connect(page)
    page.get_by_test_id("pay").click()
    expect(page.get_by_test_id("order-state")).to_have_attribute("data-state", "settled", timeout=30_000)
    assert wallet.calls.count("eth_signTypedData_v4") == 1 and wallet.sent() == 1
    order_id = page.get_by_test_id("order-status").get_attribute("data-order") or ""
    paid_tx = shop.order(order_id)["chain"]["paid_tx"]
    calldata = shop.w3.eth.get_transaction(paid_tx)["input"]
    assert shop.escrow.decode_function_input(calldata)[0].fn_name == "payWithPermit"
    v.shot("checkout-permit-settled")
    assert v.errors == []


def test_a_typo_in_the_game_account_is_caught_before_anything_is_paid(
    visit: Callable[..., Visit], wallet_of: Callable[[int], TestWallet], shop: Shop
) -> None:
    before = shop.counts()
    v = visit(wallet=wallet_of(8))
    page = v.open("/checkout")
    page.get_by_label("Genshin Impact · 60 Genesis Crystals").check()
    account = page.get_by_label("Game account (user ID)")
    account.fill("99999999")  # the provider knows no such account
    check = page.get_by_test_id("account-check")
    expect(check).to_have_attribute("data-status", "error")
    expect(check).to_contain_text("does not know game account “99999999”")
    expect(account).to_have_attribute("aria-invalid", "true")
    _connect(page)
    expect(page.get_by_test_id("pay")).to_be_disabled()
    v.shot("checkout-typo")
    assert v.axe() == []
    account.fill("１２３４５６７８")  # full-width digits: a look-alike of 12345678
    expect(check).to_contain_text("we read it as '12345678'")
    account.fill("1234")
    expect(check).to_contain_text("5 to 12 digits")
    assert shop.counts() == before  # no quote, no order row, no event
    assert v.wallet is not None and v.wallet.sent() == 0


def test_a_failed_top_up_is_refunded_and_explained(
    visit: Callable[..., Visit], wallet_of: Callable[[int], TestWallet], faults: Shop
) -> None:
    wallet = wallet_of(8)
    # Once quoted (the account checks passed), both its providers refuse every top-up: sold out.
    wallet.before_send = lambda: faults.arm("out_of_stock", sku="genshin-300")
    v = visit(wallet=wallet)
    page = v.open("/checkout?sku=genshin-300")
    _choose(page, "Genshin Impact · 300 Genesis Crystals", "87654321", "4.99 tUSDC")
    _connect(page)
    page.get_by_test_id("pay").click()
    state = page.get_by_test_id("order-state")
    expect(state).to_have_attribute("data-state", "refunded", timeout=30_000)
    expect(page.get_by_test_id("order-status")).to_contain_text("the full amount is back in your wallet")
    expect(page.get_by_test_id("order-status")).to_contain_text(
        "Why: the product is sold out at the provider"
    )
    expect(page.get_by_test_id("order-status")).to_contain_text("Refund transaction")
    v.shot("checkout-refunded")
    assert v.axe() == []
    assert v.errors == []


def test_declining_the_payment_in_the_wallet_keeps_the_order_and_try_again_finishes_it(
    visit: Callable[..., Visit], wallet_of: Callable[[int], TestWallet], shop: Shop
) -> None:
    wallet = wallet_of(8)
    wallet.reject("eth_sendTransaction", after=1)  # approves, then declines the payment
    v = visit(wallet=wallet)
    page = v.open("/checkout")
    _choose(page, "Genshin Impact · 60 Genesis Crystals", "12345678", "0.99 tUSDC")
    _connect(page)
    page.get_by_test_id("pay").click()
    error = page.get_by_test_id("pay-error")
    expect(error).to_contain_text("You approved the token but declined the payment. Nothing was paid")
    expect(error).to_have_attribute("role", "alert")
    v.shot("checkout-wallet-declined")
    assert wallet.sent() == 2
    first = shop.counts()
    # The buyer comes back after the quote expired: a new quote, the approval still in place is kept.
    shop.warp(601)
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_test_id("order-state")).to_have_attribute("data-state", "settled", timeout=30_000)
    assert wallet.sent() == 3  # only the payment was sent again
    assert shop.counts()[0] == first[0] + 1  # one new order; the first quote expires unpaid
    assert v.errors == []


def test_a_wallet_on_another_network_is_told_and_switched(
    visit: Callable[..., Visit], wallet_of: Callable[[int], TestWallet]
) -> None:
    wallet = wallet_of(8)
    wallet.chain_id = 1  # on Ethereum mainnet
    v = visit(wallet=wallet)
    page = v.open("/checkout")
    _choose(page, "Genshin Impact · 60 Genesis Crystals", "12345678", "0.99 tUSDC")
    _connect(page)
    issue = page.get_by_test_id("wallet-issue")
    expect(issue).to_contain_text("Your wallet is on network 1; this shop takes payments on chain 31337")
    expect(page.get_by_test_id("pay")).to_be_disabled()
    v.shot("checkout-wrong-network")
    page.get_by_role("button", name="Switch network").click()
    expect(issue).to_have_count(0)
    expect(page.get_by_test_id("pay")).to_be_enabled()
    assert wallet.chain_id == 31337 and wallet.sent() == 0


def test_too_little_balance_is_told_before_any_quote_or_transaction(
    visit: Callable[..., Visit], shop: Shop
) -> None:
    poor = Account.create()
    funder = shop.w3.eth.accounts[9]
    tx = shop.w3.eth.send_transaction({"from": funder, "to": poor.address, "value": Web3.to_wei(1, "ether")})
    shop.w3.eth.wait_for_transaction_receipt(tx)
    wallet = TestWallet(account=poor, w3=shop.w3, chain_id=shop.chain_id, known_chains=(shop.chain_id,))
    before = shop.counts()
    v = visit(wallet=wallet)
    page = v.open("/checkout")
    _choose(page, "Genshin Impact · 60 Genesis Crystals", "12345678", "0.99 tUSDC")
    _connect(page)
    page.get_by_test_id("pay").click()
    expect(page.get_by_test_id("pay-error")).to_contain_text(
        "Your wallet holds 0.00 tUSDC; this order costs 0.99 tUSDC. Nothing was sent and nothing was charged."
    )
    v.shot("checkout-insufficient-balance")
    assert wallet.sent() == 0 and shop.counts() == before
