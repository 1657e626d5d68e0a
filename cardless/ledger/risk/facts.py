"""Facts for one risk decision, gathered in one SQL statement of indexed scalar subqueries (every
window is keyed on ``(buyer|account_hash|sku, paid_at)``): a decision costs one round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, exists, func, literal, or_, select
from sqlalchemy.orm import Session

from cardless.ledger.models import Order
from cardless.ledger.risk.models import ALL_MERCHANTS, RequestSignal, RiskListEntry
from cardless.ledger.risk.rules import Facts, RiskRules, VelocityLimit
from cardless.ledger.risk.screening import ScreeningList

__all__ = ["gather"]


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _count(column: Any, value: Any, since: datetime, until: datetime, *, upper_inclusive: bool = True) -> Any:
    upper = Order.paid_at <= until if upper_inclusive else Order.paid_at < until
    return (
        select(func.count())
        .select_from(Order)
        .where(column == value, Order.paid_at > since, upper)
        .scalar_subquery()
    )


def _listed(kind: str, value: str, merchant: str) -> ColumnElement[bool]:
    return exists().where(
        RiskListEntry.kind == kind,
        RiskListEntry.value == value,
        RiskListEntry.merchant.in_([merchant, ALL_MERCHANTS]),
    )


def _seen(
    before: datetime, buyer: str, account: str | None, *extra: ColumnElement[bool]
) -> ColumnElement[bool]:
    """A signal of this wallet (or game account) older than ``before``, matching ``extra``."""
    by_wallet = exists().where(RequestSignal.buyer == buyer, RequestSignal.seen_at < before, *extra)
    if account is None:
        return by_wallet
    return or_(
        by_wallet,
        exists().where(RequestSignal.account_hash == account, RequestSignal.seen_at < before, *extra),
    )


def gather(
    session: Session, order: Order, rules: RiskRules, *, at: datetime, screening: ScreeningList | None = None
) -> Facts:
    t = _utc(at)
    account = order.account_hash

    def windows(column: Any, value: Any, limits: tuple[VelocityLimit, ...]) -> list[Any]:
        if value is None:
            return [literal(0) for _ in limits]
        return [_count(column, value, t - timedelta(seconds=limit.seconds), t) for limit in limits]

    w = timedelta(seconds=rules.burst_window_seconds)
    b = timedelta(seconds=rules.baseline_seconds)
    signal = session.get(RequestSignal, order.id)
    cut = t - w
    columns: list[Any] = [
        *windows(Order.buyer, order.buyer, rules.wallet_velocity),
        *windows(Order.account_hash, account, rules.account_velocity),
        *windows(Order.sku, order.sku, rules.sku_velocity),
        select(func.min(Order.paid_at))
        .where(Order.buyer == order.buyer, Order.paid_at < t)
        .scalar_subquery(),
        _count(Order.buyer, order.buyer, t - timedelta(seconds=rules.new_wallet_seconds), t),
        _listed("wallet", order.buyer, order.merchant),
        _listed("account", account, order.merchant) if account else literal(False),
        _count(Order.buyer, order.buyer, t - w, t),
        _count(Order.buyer, order.buyer, t - b, t - w),
        _count(Order.account_hash, account, t - w, t) if account else literal(0),
        _count(Order.account_hash, account, t - b, t - w) if account else literal(0),
    ]
    if signal is not None:
        columns += [
            _seen(cut, order.buyer, account),
            ~_seen(cut, order.buyer, account, RequestSignal.network_hash == signal.network_hash),
            ~_seen(cut, order.buyer, account, RequestSignal.agent_hash == signal.agent_hash),
        ]
    else:
        columns += [literal(False), literal(False), literal(False)]
    row = list(session.execute(select(*columns)).one())
    nw, na, ns = len(rules.wallet_velocity), len(rules.account_velocity), len(rules.sku_velocity)
    wallet_counts = tuple(int(v) for v in row[:nw])
    account_counts = tuple(int(v) for v in row[nw : nw + na])
    sku_counts = tuple(int(v) for v in row[nw + na : nw + na + ns])
    (first, while_new, wallet_blocked, account_blocked, wb, wbase, ab, abase, history, new_net, new_agent) = (
        row[nw + na + ns :]
    )
    if isinstance(first, str):  # SQLite returns min() of a DateTime column as text
        first = datetime.fromisoformat(first)
    age = None if first is None else (t - _utc(first)).total_seconds()
    return Facts(
        token=order.token,
        amount=order.amount,
        wallet_counts=wallet_counts,
        account_counts=account_counts,
        sku_counts=sku_counts,
        wallet_age_seconds=age,
        wallet_orders_while_new=int(while_new),
        wallet_blocked=bool(wallet_blocked),
        account_blocked=bool(account_blocked),
        screened=screening is not None and order.buyer in screening,
        wallet_burst=int(wb),
        wallet_baseline=int(wbase),
        account_burst=int(ab),
        account_baseline=int(abase),
        has_history=bool(history),
        new_network=bool(new_net),
        new_agent=bool(new_agent),
    )
