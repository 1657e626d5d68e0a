"""A merchant's money per token: what the escrow holds for it, what was paid out, what buyers have paid
that is not settled yet; and the settlement report of a period, which reconciles to the chain.

The identity every figure obeys (the escrow's own arithmetic, ``_fee = amount * feeBps / 10_000``
rounded down)::

    sum over settled orders (amount - fee)  ==  escrow.balanceOf(merchant, token)  +  sum of payouts

Settlements are the ledger's settled orders (their ``OrderSettled`` applied by the watcher), payouts
the escrow's ``Withdrawn`` logs for the merchant (``ledger.outbox.Payout``). Both are placed in a
period by when the ledger recorded them (one clock for both: a dev chain's block times can run ahead
of the wall clock), and each payout also shows its block and block time.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from web3 import Web3

from cardless.ledger.models import TERMINAL_STATES, Order, OrderEvent, OrderState
from cardless.ledger.outbox import Payout, aware
from cardless.protocol import MAX_BPS
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment
from gateway.money_schemas import (
    BalanceOut,
    BalancesOut,
    PayoutOut,
    SettlementLine,
    SettlementReport,
    TokenReport,
)

__all__ = ["balances", "fee_of", "report_csv", "settlement_report"]

# Paid and still open: the buyer's money is in the escrow for this merchant.
_OPEN_PAID = [
    s.value
    for s in OrderState
    if s not in TERMINAL_STATES and s not in (OrderState.QUOTED, OrderState.EXPIRED)
]


def fee_of(amount: int, fee_bps: int) -> int:
    """The escrow's ``_fee``: rounded down."""
    return amount * fee_bps // MAX_BPS


def _escrow_balance(w3: Web3, deployment: Deployment, merchant: str, token: str, block: int) -> int:
    escrow = w3.eth.contract(address=deployment.escrow, abi=load_artifact("CardlessEscrow").abi)
    return int(escrow.functions.balanceOf(merchant, token).call(block_identifier=block))


def _settlements(session: Session, merchant: str, token: str) -> list[tuple[Order, datetime]]:
    rows = session.execute(
        select(Order, OrderEvent.at)
        .join(OrderEvent, OrderEvent.order_id == Order.id)
        .where(
            Order.merchant == merchant,
            Order.token == token,
            Order.state == OrderState.SETTLED.value,
            OrderEvent.to_state == OrderState.SETTLED.value,
        )
        .order_by(OrderEvent.at, Order.id)
    ).all()
    return [(order, aware(at) or at) for order, at in rows]


def _payouts(session: Session, merchant: str, token: str) -> list[Payout]:
    return list(
        session.scalars(
            select(Payout)
            .where(Payout.merchant == merchant, Payout.token == token)
            .order_by(Payout.block_number, Payout.log_index)
        )
    )


def balances(session: Session, w3: Web3, deployment: Deployment, merchant: str) -> BalancesOut:
    block = int(w3.eth.block_number)
    out = []
    for token in deployment.tokens:
        settled = sum(
            o.amount - fee_of(o.amount, o.fee_bps) for o, _ in _settlements(session, merchant, token.address)
        )
        withdrawn = sum(p.amount for p in _payouts(session, merchant, token.address))
        in_escrow = sum(
            session.scalars(
                select(Order.amount).where(
                    Order.merchant == merchant, Order.token == token.address, Order.state.in_(_OPEN_PAID)
                )
            )
        )
        on_chain = _escrow_balance(w3, deployment, merchant, token.address, block)
        out.append(
            BalanceOut(
                token=token.address,
                symbol=token.symbol,
                balance_on_chain=str(on_chain),
                withdrawn=str(withdrawn),
                in_escrow=str(in_escrow),
                settled_net=str(settled),
                reconciled=settled == on_chain + withdrawn,
                block=block,
            )
        )
    return BalancesOut(merchant=merchant, balances=out)


def settlement_report(
    session: Session,
    w3: Web3,
    deployment: Deployment,
    merchant: str,
    *,
    start: datetime,
    end: datetime | None,
) -> SettlementReport:
    """Settlements and payouts in ``[start, end)`` per token; with no ``end`` the period runs to now and
    each closing balance is checked against the escrow's ``balanceOf`` at the current block."""
    now = datetime.now(UTC)
    stop = end or now
    block = int(w3.eth.block_number)
    tokens = []
    for token in deployment.tokens:
        opening = 0
        lines: list[SettlementLine] = []
        gross = fees = 0
        for order, at in _settlements(session, merchant, token.address):
            fee = fee_of(order.amount, order.fee_bps)
            if at < start:
                opening += order.amount - fee
            elif at < stop:
                gross += order.amount
                fees += fee
                lines.append(
                    SettlementLine(
                        order_id=order.id,
                        settled_at=at,
                        settle_tx=order.settle_tx,
                        gross=str(order.amount),
                        fee=str(fee),
                        net=str(order.amount - fee),
                    )
                )
        payouts: list[PayoutOut] = []
        withdrawn = 0
        for payout in _payouts(session, merchant, token.address):
            at = aware(payout.created_at) or payout.created_at
            if at < start:
                opening -= payout.amount
            elif at < stop:
                withdrawn += payout.amount
                payouts.append(
                    PayoutOut(
                        tx_hash=payout.tx_hash,
                        block_number=payout.block_number,
                        block_time=payout.block_time,
                        to=payout.to_address,
                        amount=str(payout.amount),
                    )
                )
        closing = opening + (gross - fees) - withdrawn
        on_chain = _escrow_balance(w3, deployment, merchant, token.address, block) if end is None else None
        tokens.append(
            TokenReport(
                token=token.address,
                symbol=token.symbol,
                opening_balance=str(opening),
                settled_count=len(lines),
                gross=str(gross),
                fees=str(fees),
                net=str(gross - fees),
                withdrawn=str(withdrawn),
                closing_balance=str(closing),
                balance_on_chain=None if on_chain is None else str(on_chain),
                reconciled=None if on_chain is None else on_chain == closing,
                settlements=lines,
                payouts=payouts,
            )
        )
    return SettlementReport(merchant=merchant, period_start=start, period_end=stop, tokens=tokens)


def report_csv(report: SettlementReport) -> str:
    """One line per settlement and per payout, then one total line per token; amounts in base units."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["kind", "token", "symbol", "reference", "at", "gross", "fee", "net", "withdrawn", "balance"]
    )
    for t in report.tokens:
        writer.writerow(
            [
                "opening",
                t.token,
                t.symbol,
                "",
                report.period_start.isoformat(),
                "",
                "",
                "",
                "",
                t.opening_balance,
            ]
        )
        for line in t.settlements:
            writer.writerow(
                [
                    "settlement",
                    t.token,
                    t.symbol,
                    line.order_id,
                    line.settled_at.isoformat(),
                    line.gross,
                    line.fee,
                    line.net,
                    "",
                    "",
                ]
            )
        for payout in t.payouts:
            at = datetime.fromtimestamp(payout.block_time, UTC).isoformat()
            writer.writerow(["payout", t.token, t.symbol, payout.tx_hash, at, "", "", "", payout.amount, ""])
        writer.writerow(
            [
                "closing",
                t.token,
                t.symbol,
                "",
                report.period_end.isoformat(),
                t.gross,
                t.fees,
                t.net,
                t.withdrawn,
                t.closing_balance,
            ]
        )
    return buffer.getvalue()
