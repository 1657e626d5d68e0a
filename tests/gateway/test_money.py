"""A merchant's money against the session's embedded system (dev chain, oracle, simulator): orders paid
and settled, the sweep pays the merchant out, the watcher records the ``Withdrawn`` log as a payout
(with its ``payout.sent`` event), and the balances and the settlement report reconcile to the chain to
the wei: every settled order's amount less its fee == the escrow's balanceOf + what was paid out, and
what was paid out is exactly what reached the merchant's payout address."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from cardless.cli.system import System
from cardless.ledger import Payout, WebhookEvent
from oracles.settlement import MerchantSweep
from tests.support.books import Books
from tests.support.shop import Shop, assert_problem, dev_wallet

MERCHANT = "0xE57bFE9F44b819898F47BF37E5AF72a0783e1141"  # paimon-shop (genshin SKUs)
MERCHANT_ID = "paimon-shop"


def _paid_out_since(system: System, start: datetime) -> int:
    """What the ledger recorded as paid out of the escrow to the merchant in tUSDC since ``start``."""
    assert system.sessions is not None and system.deployment is not None
    tusdc = next(t for t in system.deployment.tokens if t.symbol == "tUSDC")
    with system.sessions() as session:
        amounts = session.scalars(
            select(Payout.amount).where(
                Payout.merchant == MERCHANT, Payout.token == tusdc.address, Payout.created_at >= start
            )
        )
        return sum(int(a) for a in amounts)


@pytest.mark.slow
def test_balances_payouts_and_the_settlement_report_reconcile_to_the_chain_to_the_wei(
    shop: Shop, system: System
) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    auth = shop.operator_headers
    tusdc = next(t for t in system.deployment.tokens if t.symbol == "tUSDC")  # type: ignore[union-attr]
    escrow = shop.escrow
    payout_address = escrow.functions.payoutAddressOf(MERCHANT).call()
    books = Books(shop.w3, escrow)
    # The oracle's own sweep runs every minute and may pay this merchant out at any moment of the
    # test: every figure below is measured from `start`, so it holds whichever sweep moved the money.
    wallet_start = books.wallet(tusdc.address, payout_address)
    mine = []
    for index, sku in ((8, "genshin-60"), (9, "genshin-300")):
        quote = shop.quote(dev_wallet(index), sku=sku, token="tUSDC").json()
        mine.append(quote["order_id"])
        shop.pay(dev_wallet(index), quote)
        shop.wait_for(quote["order_id"], "settled")
    owed = escrow.functions.balanceOf(MERCHANT, tusdc.address).call()
    assert owed > 0

    before = shop.api.get(f"/v1/merchants/{MERCHANT_ID}/balances", headers=auth).json()
    row = next(b for b in before["balances"] if b["symbol"] == "tUSDC")
    assert row["reconciled"] is True and int(row["balance_on_chain"]) == owed

    # The sweep the oracle runs every minute, now (0 when the scheduled one just did it); the watcher
    # records every Withdrawn log as a payout.
    worker = system.worker
    assert worker is not None
    assert MerchantSweep(escrow, worker.tx, [MERCHANT], [tusdc.address])() in (0, 1)
    # Escrow v2 keeps one base unit of every balance (no gas cliff for the next settlement): what left
    # the escrow since `start` is everything owed but that unit, to the wei.
    assert escrow.functions.balanceOf(MERCHANT, tusdc.address).call() == 1
    paid_out = books.wallet(tusdc.address, payout_address) - wallet_start
    assert paid_out >= owed - 1
    deadline = time.monotonic() + 15
    while _paid_out_since(system, start) != paid_out:
        assert time.monotonic() < deadline, "the Withdrawn logs were not recorded as payouts"
        time.sleep(0.05)

    after = shop.api.get(f"/v1/merchants/{MERCHANT_ID}/balances", headers=auth).json()
    row = next(b for b in after["balances"] if b["symbol"] == "tUSDC")
    assert row["balance_on_chain"] == "1"
    assert int(row["settled_net"]) == int(row["withdrawn"]) + int(row["balance_on_chain"])
    assert row["reconciled"] is True

    report = shop.api.get(
        f"/v1/merchants/{MERCHANT_ID}/settlement-report", params={"start": start.isoformat()}, headers=auth
    )
    assert report.status_code == 200, report.text
    token = next(t for t in report.json()["tokens"] if t["symbol"] == "tUSDC")
    # Ours, and any other test's order of this session that settled since `start`.
    assert set(mine) <= {line["order_id"] for line in token["settlements"]}
    assert token["settled_count"] == len(token["settlements"])
    assert token["reconciled"] is True and token["closing_balance"] == token["balance_on_chain"] == "1"
    assert int(token["withdrawn"]) == paid_out
    assert int(token["opening_balance"]) + int(token["net"]) - int(token["withdrawn"]) == 1
    for line in token["settlements"]:
        assert int(line["gross"]) - int(line["fee"]) == int(line["net"])
        assert int(line["fee"]) == int(line["gross"]) * 250 // 10_000  # the escrow's rounding

    as_csv = shop.api.get(
        f"/v1/merchants/{MERCHANT_ID}/settlement-report",
        params={"start": start.isoformat(), "format": "csv"},
        headers=auth,
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = [r for r in csv.DictReader(io.StringIO(as_csv.text)) if r["symbol"] == "tUSDC"]
    net = sum(int(r["net"]) for r in rows if r["kind"] == "settlement")
    withdrawn = sum(int(r["withdrawn"]) for r in rows if r["kind"] == "payout")
    (opening,) = [int(r["balance"]) for r in rows if r["kind"] == "opening"]
    (closing,) = [int(r["balance"]) for r in rows if r["kind"] == "closing"]
    assert opening + net - withdrawn == closing == escrow.functions.balanceOf(MERCHANT, tusdc.address).call()

    assert system.sessions is not None
    with system.sessions() as session:
        recorded = session.scalars(
            select(Payout.amount).where(Payout.merchant == MERCHANT, Payout.created_at >= start)
        ).all()
        sent = session.scalars(select(WebhookEvent).where(WebhookEvent.type == "payout.sent")).all()
        for amount in recorded:  # each payout announced to the merchant with its exact amount
            assert any(f'"amount":"{int(amount)}"' in e.body for e in sent)


def test_money_routes_need_the_operator_key_and_a_known_merchant(shop: Shop) -> None:
    assert_problem(shop.api.get(f"/v1/merchants/{MERCHANT_ID}/balances"), 401)
    unknown = shop.api.get("/v1/merchants/no-such-shop/balances", headers=shop.operator_headers)
    assert_problem(unknown, 404, "merchant_id")
    naive = shop.api.get(
        f"/v1/merchants/{MERCHANT_ID}/settlement-report",
        params={"start": "2026-01-01T00:00:00"},
        headers=shop.operator_headers,
    )
    assert_problem(naive, 422, "start")
    backwards = shop.api.get(
        f"/v1/merchants/{MERCHANT_ID}/settlement-report",
        params={"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        headers=shop.operator_headers,
    )
    assert_problem(backwards, 422, "end")
