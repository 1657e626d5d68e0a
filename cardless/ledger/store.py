"""The order store: the one place an order row and a protocol order are converted into each other.

The gateway writes a quoted order with :func:`new_order_row`; the oracle reads it back with
:func:`order_from_row` to pay, settle or refund it. Both directions live here so a field added to the
order is mapped once.

The store also owns *work claims*. Before a worker makes an external call for an order (a provider
call, a settle or refund transaction) it takes a lease with :func:`claim`: one conditional ``UPDATE``
that succeeds only if the order is still in the expected state and nobody else holds an unexpired
lease. The caller commits the claim *before* the external call, so the claim is visible to every other
worker on SQLite and PostgreSQL alike; no correctness rests on a row lock outliving its transaction.
A lease that is not renewed (:func:`renew`) expires and may then be claimed by another worker;
:func:`release` clears it when the work is done.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, Select, bindparam, or_, select, update
from sqlalchemy.orm import Session

from cardless import protocol
from cardless.ledger.models import Order, OrderEvent, OrderState

__all__ = [
    "candidates",
    "claim",
    "claim_many",
    "due",
    "lease_free",
    "lease_holders",
    "new_order_row",
    "new_order_values",
    "order_from_row",
    "release",
    "release_holders",
    "renew",
]


def order_from_row(row: Order) -> protocol.Order:
    """The order exactly as the quote signed it (and as ``OrderPaid`` carries it)."""
    return protocol.Order(
        order_id=protocol.order_id_from_hex(row.id),
        buyer=row.buyer,
        merchant=row.merchant,
        token=row.token,
        amount=row.amount,
        fee_bps=row.fee_bps,
        quote_expiry=row.quote_expiry,
        fulfilment_deadline=row.fulfilment_deadline,
        sku_hash=protocol.hash32_from_hex("sku_hash", row.sku_hash),
        account_commitment=protocol.hash32_from_hex("account_commitment", row.account_commitment),
    )


def _hex(value: bytes) -> str:
    return "0x" + value.hex()  # eth_utils.to_hex of bytes, without its argument checks (a quote's hot path)


def new_order_values(
    order: protocol.Order,
    *,
    domain: protocol.EscrowDomain,
    sku: str,
    providers: Sequence[str],
    account_ciphertext: bytes,
    quote_signer: str,
    quote_signature: bytes,
    reason: str,
    account_hash: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A freshly quoted order's columns and those of the first entry of its timeline, by column name (the
    others take their column defaults): what :func:`new_order_row` builds, for a caller that inserts them
    with Core (the gateway's quote path) rather than through a session."""
    order_id = _hex(order.order_id)
    row: dict[str, Any] = {
        "id": order_id,
        "state": OrderState.QUOTED.value,
        "chain_id": domain.chain_id,
        "escrow": domain.verifying_contract,
        "sku": sku,
        "providers": list(providers),
        "provider_index": 0,
        "buyer": order.buyer,
        "merchant": order.merchant,
        "token": order.token,
        "amount": order.amount,
        "fee_bps": order.fee_bps,
        "quote_expiry": order.quote_expiry,
        "fulfilment_deadline": order.fulfilment_deadline,
        "sku_hash": _hex(order.sku_hash),
        "account_commitment": _hex(order.account_commitment),
        "account_ciphertext": account_ciphertext,
        "quote_signer": quote_signer,
        "quote_signature": _hex(quote_signature),
    }
    if account_hash is not None:
        row["account_hash"] = account_hash
    event = {"order_id": order_id, "from_state": None, "to_state": OrderState.QUOTED.value, "reason": reason}
    return row, event


def new_order_row(
    order: protocol.Order,
    *,
    domain: protocol.EscrowDomain,
    sku: str,
    providers: Sequence[str],
    account_ciphertext: bytes,
    quote_signer: str,
    quote_signature: bytes,
    reason: str,
    account_hash: str | None = None,
) -> Order:
    """A freshly quoted order with the first entry of its timeline; the caller adds it to a session."""
    values, event = new_order_values(
        order,
        domain=domain,
        sku=sku,
        providers=providers,
        account_ciphertext=account_ciphertext,
        quote_signer=quote_signer,
        quote_signature=quote_signature,
        reason=reason,
        account_hash=account_hash,
    )
    row = Order(**values)
    del event["order_id"]  # set by the relationship when the session flushes
    row.events.append(OrderEvent(**event))
    return row


# ---------------------------------------------------------------------- work claims


def lease_free(now: datetime | ColumnElement[datetime]) -> ColumnElement[bool]:
    """The condition "nobody holds an unexpired lease on this order" (for candidate queries)."""
    return or_(Order.lease_until.is_(None), Order.lease_until < now)


def candidates(
    session: Session,
    states: Collection[OrderState],
    *,
    now: datetime,
    limit: int = 500,
    where: Sequence[ColumnElement[bool]] = (),
) -> list[Order]:
    """Unleased orders in ``states`` (and matching ``where``), oldest first. ``SKIP LOCKED`` only keeps
    concurrent workers from queueing on each other's rows inside *this* transaction (PostgreSQL; SQLite
    ignores it): a caller that changes the rows does so in the same transaction, and one that acts on
    them outside it claims them first.

    Every row returned stays locked until the caller's transaction ends, and other workers skip it
    meanwhile: a stage that acts on a few of them says which in ``where`` and ``limit`` rather than
    filtering in Python, or it hides all the others from every other worker for as long as it runs."""
    query = _candidates_query(tuple(sorted(s.value for s in states)))
    if where:
        query = query.where(*where)
    query = query.limit(limit).with_for_update(skip_locked=True)
    return list(session.execute(query, {_NOW: now}).scalars())


_NOW = "cardless_candidates_now"


@functools.lru_cache(maxsize=64)
def _candidates_query(states: tuple[str, ...]) -> Select[Order]:
    """The part of :func:`candidates`' query that depends only on the states, built once per set of
    states with the time as a named parameter: building it per call (``in_``, ``lease_free``,
    ``order_by``) was 2 % of the oracle's CPU at saturation."""
    now = bindparam(_NOW, type_=Order.__table__.c.lease_until.type)
    return select(Order).where(Order.state.in_(states), lease_free(now)).order_by(Order.created_at)


def due(now: datetime) -> ColumnElement[bool]:
    """The condition "its next attempt is due" (no back-off pending)."""
    return or_(Order.next_attempt_at.is_(None), Order.next_attempt_at <= now)


def claim(
    session: Session,
    order_id: str,
    owner: str,
    *,
    states: Collection[OrderState],
    ttl: timedelta,
    now: datetime,
) -> bool:
    """Lease ``order_id`` to ``owner`` until ``now + ttl`` if it is in one of ``states`` and unleased (or
    its lease has expired). Returns whether this call took the lease. The caller must commit before
    acting on it."""
    result = session.execute(
        update(Order)
        .where(Order.id == order_id, Order.state.in_([s.value for s in states]), lease_free(now))
        .values(lease_owner=owner, lease_until=now + ttl)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


def claim_many(
    session: Session,
    order_ids: Collection[str],
    owner: str,
    *,
    states: Collection[OrderState],
    ttl: timedelta,
    now: datetime,
) -> set[str]:
    """:func:`claim` for many orders in one statement (``UPDATE ... RETURNING``): returns the ids this call
    leased. The caller must commit before acting on them."""
    if not order_ids:
        return set()
    result = session.execute(
        update(Order)
        .where(Order.id.in_(list(order_ids)), Order.state.in_([s.value for s in states]), lease_free(now))
        .values(lease_owner=owner, lease_until=now + ttl)
        .returning(Order.id)
        .execution_options(synchronize_session=False)
    )
    return set(result.scalars())


def renew(session: Session, order_ids: Collection[str], owner: str, *, ttl: timedelta, now: datetime) -> int:
    """Extend ``owner``'s leases on ``order_ids`` to ``now + ttl``; returns how many it still held."""
    if not order_ids:
        return 0
    result = session.execute(
        update(Order)
        .where(Order.id.in_(list(order_ids)), Order.lease_owner == owner)
        .values(lease_until=now + ttl)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount


def release(session: Session, order_ids: Collection[str], owner: str) -> None:
    """Clear ``owner``'s leases on ``order_ids`` (a lease another worker has taken over is left alone)."""
    if not order_ids:
        return
    session.execute(
        update(Order)
        .where(Order.id.in_(list(order_ids)), Order.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )


def lease_holders(session: Session, *, prefix: str) -> list[str]:
    """The distinct owners of current leases whose worker id starts with ``prefix``."""
    query = select(Order.lease_owner).where(Order.lease_owner.startswith(prefix, autoescape=True)).distinct()
    return [owner for owner in session.execute(query).scalars() if owner is not None]


def release_holders(session: Session, owners: Collection[str]) -> int:
    """Clear every lease held by ``owners`` (workers known to be dead); returns how many were cleared."""
    if not owners:
        return 0
    result = session.execute(
        update(Order)
        .where(Order.lease_owner.in_(list(owners)))
        .values(lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount
