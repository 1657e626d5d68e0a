"""The catalogue in the database: SKUs per merchant, edited through the API, seeded from the TOML file.

Quotes read it here (:func:`quotable`): a SKU is on sale when it is enabled and its merchant is not
disabled; anything else reads as unknown, exactly like an id that never existed.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_utils import to_checksum_address
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session, selectinload, sessionmaker

from cardless.ledger.models import Merchant, Order, OrderState, Sku, SkuPrice, utcnow
from cardless.protocol.deployment import Deployment
from gateway.catalogue import Catalogue
from gateway.merchant_schemas import SkuAdminOut, SkuCreate, SkuPriceIn, SkuPriceOut, SkuUpdate
from gateway.schemas import CatalogueOut, MerchantOut, PriceOut, SkuOut
from gateway.services._exceptions import Conflict, InvalidField, NotFound, ServiceUnavailable

__all__ = [
    "QuotableCache",
    "QuotableSku",
    "check_daily_limits",
    "create_sku",
    "describe_catalogue",
    "get_sku",
    "list_skus",
    "quotable",
    "seed_catalogue",
    "update_sku",
]


@dataclasses.dataclass(frozen=True)
class QuotableSku:
    id: str
    providers: tuple[str, ...]
    prices: dict[str, int]
    merchant_address: str
    fee_bps: int
    daily_limit: int | None
    buyer_daily_limit: int | None


def seed_catalogue(session: Session, catalogue: Catalogue) -> tuple[int, int]:
    """Insert the file's merchants and SKUs that the database lacks; existing rows are left as edited.
    Returns (merchants added, SKUs added)."""
    merchants = skus = 0
    # The catalogue lists in creation order: give the seeded rows the file's order.
    base = utcnow()
    for i, m in enumerate(catalogue.merchants):
        if session.get(Merchant, m.id) is None:
            session.add(
                Merchant(
                    id=m.id,
                    name=m.name,
                    address=m.address,
                    fee_bps=m.fee_bps,
                    created_at=base + timedelta(microseconds=i),
                )
            )
            merchants += 1
    session.flush()
    for i, s in enumerate(catalogue.skus):
        if session.get(Sku, s.id) is None:
            session.add(
                Sku(
                    id=s.id,
                    created_at=base + timedelta(microseconds=i),
                    merchant_id=s.merchant,
                    title=s.title,
                    face_value=s.face_value,
                    providers=list(s.providers),
                    enabled=s.enabled,
                    daily_limit=s.daily_limit,
                    buyer_daily_limit=s.buyer_daily_limit,
                    prices=[
                        SkuPrice(token=token, amount=amount, position=i)
                        for i, (token, amount) in enumerate(s.prices.items())
                    ],
                )
            )
            skus += 1
    session.commit()
    return merchants, skus


def _on_sale(session: Session) -> list[Sku]:
    return list(
        session.scalars(
            select(Sku)
            .join(Merchant, Merchant.id == Sku.merchant_id)
            .where(Sku.enabled.is_(True), Merchant.disabled_at.is_(None))
            .options(selectinload(Sku.prices))
            .order_by(Sku.created_at, Sku.id)
        )
    )


def describe_catalogue(session: Session, deployment: Deployment) -> CatalogueOut:
    """Every active merchant and every SKU on sale; a SKU lists only prices in tokens this escrow takes."""
    tokens = {t.symbol: t for t in deployment.tokens}
    merchants = session.scalars(
        select(Merchant).where(Merchant.disabled_at.is_(None)).order_by(Merchant.created_at, Merchant.id)
    )
    return CatalogueOut(
        chain_id=deployment.chain_id,
        escrow=deployment.escrow,
        merchants=[
            MerchantOut(id=m.id, name=m.name, address=m.address, fee_bps=m.fee_bps) for m in merchants
        ],
        skus=[
            SkuOut(
                id=s.id,
                title=s.title,
                merchant=s.merchant_id,
                prices=[
                    PriceOut(
                        token=p.token,
                        address=tokens[p.token].address,
                        decimals=tokens[p.token].decimals,
                        amount=str(p.amount),
                    )
                    for p in s.prices
                    if p.token in tokens
                ],
            )
            for s in _on_sale(session)
        ],
    )


def quotable(session: Session, sku_id: str) -> QuotableSku | None:
    """The SKU ``sku_id`` with its merchant's terms, if it is on sale now."""
    row = session.scalar(select(Sku).where(Sku.id == sku_id).options(selectinload(Sku.prices)))
    if row is None or not row.enabled:
        return None
    merchant = session.get(Merchant, row.merchant_id)
    if merchant is None or merchant.disabled_at is not None:
        return None
    return QuotableSku(
        id=row.id,
        providers=tuple(row.providers),
        prices={p.token: p.amount for p in row.prices},
        merchant_address=to_checksum_address(merchant.address),
        fee_bps=merchant.fee_bps,
        daily_limit=row.daily_limit,
        buyer_daily_limit=row.buyer_daily_limit,
    )


# ------------------------------------------------------------------------------ the quote's cache

_generation = 0
"""Bumped after every commit in this process that wrote a SKU, a price or a merchant (ORM flushes)."""
_generation_lock = threading.Lock()


def _note_catalogue_edit(_mapper: Any, _connection: Any, target: Any) -> None:
    # Mapper events: they fire for these three classes only, so other flushes (the oracle's) pay nothing.
    session = object_session(target)
    if session is not None:
        session.info["catalogue_edited"] = True


for _model in (Sku, SkuPrice, Merchant):
    for _name in ("after_insert", "after_update", "after_delete"):
        event.listen(_model, _name, _note_catalogue_edit)


@event.listens_for(Session, "after_commit")
def _catalogue_committed(session: Session) -> None:
    global _generation
    if session.info.pop("catalogue_edited", False):
        with _generation_lock:
            _generation += 1


@event.listens_for(Session, "after_rollback")
def _catalogue_rolled_back(session: Session) -> None:
    session.info.pop("catalogue_edited", None)


class QuotableCache:
    """:func:`quotable` per SKU (and the public catalogue), kept until the catalogue is edited or ``ttl``
    seconds pass.

    Every quote read the SKU, its prices and its merchant (three queries, a tenth of a quote's CPU).
    An edit committed in this process (the merchants' API, the CLI in-process, a test's session) empties
    the cache at once: ORM flushes that touch a SKU, a price or a merchant are noted and the commit bumps
    a generation. An edit by another process (a second gateway, ``cardless merchant`` run elsewhere)
    takes effect within ``ttl``. An entry is stored under the generation read *before* its query, so a
    read racing an edit is never kept past it. Unknown ids are cached too, within ``max_entries``."""

    def __init__(self, ttl: float = 1.0, max_entries: int = 1024) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        # Per database (a copied service may point at another one), then per SKU id.
        self._by_db: weakref.WeakKeyDictionary[Any, dict[str, tuple[int, float, QuotableSku | None]]]
        self._by_db = weakref.WeakKeyDictionary()
        self._described: weakref.WeakKeyDictionary[Any, tuple[int, float, Deployment, CatalogueOut]]
        self._described = weakref.WeakKeyDictionary()

    def get(self, sessions: sessionmaker[Session], sku_id: str) -> QuotableSku | None:
        bind = sessions.kw.get("bind")
        entries = self._by_db.setdefault(bind if bind is not None else sessions, {})
        generation, now = _generation, time.monotonic()
        hit = entries.get(sku_id)
        if hit is not None and hit[0] == generation and now - hit[1] < self.ttl:
            return hit[2]
        with sessions() as session:
            found = quotable(session, sku_id)
        if len(entries) >= self.max_entries:
            entries.clear()
        entries[sku_id] = (generation, now, found)
        return found

    def describe(self, sessions: sessionmaker[Session], deployment: Deployment) -> CatalogueOut:
        """:func:`describe_catalogue` (``GET /v1/catalogue``), kept on the same terms as the SKUs."""
        bind = sessions.kw.get("bind")
        key = bind if bind is not None else sessions
        generation, now = _generation, time.monotonic()
        hit = self._described.get(key)
        if hit is not None and hit[0] == generation and now - hit[1] < self.ttl and hit[2] is deployment:
            return hit[3]
        with sessions() as session:
            found = describe_catalogue(session, deployment)
        self._described[key] = (generation, now, deployment, found)
        return found


def check_daily_limits(session: Session, sku: QuotableSku, buyer: str, now: datetime | None = None) -> None:
    """Refuse a quote past the SKU's orders per UTC day (all buyers, or this buyer). Counted over the
    orders created today that did not expire unpaid; two quotes racing for the last slot may both pass
    (a count, not a reservation), which a daily cap tolerates."""
    if sku.daily_limit is None and sku.buyer_daily_limit is None:
        return
    now = now or utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    retry = int((midnight + timedelta(days=1) - now).total_seconds()) + 1
    today = (
        select(func.count())
        .select_from(Order)
        .where(Order.sku == sku.id, Order.created_at >= midnight, Order.state != OrderState.EXPIRED.value)
    )
    if sku.daily_limit is not None and (session.scalar(today) or 0) >= sku.daily_limit:
        raise ServiceUnavailable(f"{sku.id} is sold out for today (UTC)", retry_after=retry)
    if sku.buyer_daily_limit is not None:
        mine = session.scalar(today.where(Order.buyer == to_checksum_address(buyer))) or 0
        if mine >= sku.buyer_daily_limit:
            raise ServiceUnavailable(
                f"this wallet has bought {sku.id} {mine} times today (UTC), the most allowed",
                retry_after=retry,
            )


# ------------------------------------------------------------------------------ merchant editing


def sku_out(row: Sku) -> SkuAdminOut:
    return SkuAdminOut(
        id=row.id,
        merchant=row.merchant_id,
        title=row.title,
        face_value=row.face_value,
        providers=list(row.providers),
        prices=[SkuPriceOut(token=p.token, amount=str(p.amount)) for p in row.prices],
        enabled=row.enabled,
        daily_limit=row.daily_limit,
        buyer_daily_limit=row.buyer_daily_limit,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _check_providers(providers: list[str], known: Collection[str]) -> None:
    if len(set(providers)) != len(providers):
        raise InvalidField("providers", "a provider may appear once in the failover list")
    missing = [p for p in providers if p not in known]
    if missing:
        raise InvalidField("providers", f"not configured on this gateway: {missing}; known: {sorted(known)}")


def _prices(prices: list[SkuPriceIn], tokens: Collection[str]) -> list[SkuPrice]:
    symbols = [p.token for p in prices]
    if len(set(symbols)) != len(symbols):
        raise InvalidField("prices", "one price per token")
    unknown = [s for s in symbols if s not in tokens]
    if unknown:
        raise InvalidField(
            "prices", f"tokens not accepted by this escrow: {unknown}; accepted: {sorted(tokens)}"
        )
    rows = []
    for i, p in enumerate(prices):
        amount = int(p.amount)
        if amount <= 0 or amount >= 2**256 // 10_000:
            raise InvalidField(
                "prices", f"{p.token}: the amount must be positive and below the escrow's maximum"
            )
        rows.append(SkuPrice(token=p.token, amount=amount, position=i))
    return rows


def create_sku(
    session: Session,
    merchant_id: str,
    body: SkuCreate,
    *,
    providers: Collection[str],
    tokens: Collection[str],
) -> SkuAdminOut:
    _check_providers(body.providers, providers)
    prices = _prices(body.prices, tokens)
    if session.get(Sku, body.id) is not None:
        raise Conflict(f"SKU id {body.id!r} is taken", field="id")
    row = Sku(
        id=body.id,
        merchant_id=merchant_id,
        title=body.title,
        face_value=body.face_value,
        providers=body.providers,
        enabled=body.enabled,
        daily_limit=body.daily_limit,
        buyer_daily_limit=body.buyer_daily_limit,
        prices=prices,
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"SKU id {body.id!r} is taken", field="id") from None
    return sku_out(row)


def _own(session: Session, merchant_id: str, sku_id: str) -> Sku:
    row = session.scalar(select(Sku).where(Sku.id == sku_id).options(selectinload(Sku.prices)))
    if row is None or row.merchant_id != merchant_id:  # another merchant's SKU reads as absent
        raise NotFound("sku_id", f"SKU {sku_id!r} not found")
    return row


def get_sku(session: Session, merchant_id: str, sku_id: str) -> SkuAdminOut:
    return sku_out(_own(session, merchant_id, sku_id))


def list_skus(session: Session, merchant_id: str) -> list[SkuAdminOut]:
    rows = session.scalars(
        select(Sku).where(Sku.merchant_id == merchant_id).options(selectinload(Sku.prices)).order_by(Sku.id)
    )
    return [sku_out(r) for r in rows]


def update_sku(
    session: Session,
    merchant_id: str,
    sku_id: str,
    body: SkuUpdate,
    *,
    providers: Collection[str],
    tokens: Collection[str],
) -> SkuAdminOut:
    """Change the fields ``body`` sets (an explicit null clears a limit). Orders already quoted keep
    the terms they were signed with."""
    row = _own(session, merchant_id, sku_id)
    fields = body.model_fields_set
    for name in ("title", "face_value", "enabled"):
        if name in fields and getattr(body, name) is None:
            raise InvalidField(name, "may not be null")
    if body.providers is not None:
        _check_providers(body.providers, providers)
        row.providers = body.providers
    elif "providers" in fields:
        raise InvalidField("providers", "may not be null")
    if body.prices is not None:
        new = _prices(body.prices, tokens)
        row.prices.clear()
        session.flush()
        row.prices.extend(new)
    elif "prices" in fields:
        raise InvalidField("prices", "may not be null")
    for name in ("title", "face_value", "enabled", "daily_limit", "buyer_daily_limit"):
        if name in fields:
            setattr(row, name, getattr(body, name))
    row.updated_at = utcnow()
    session.commit()
    return sku_out(row)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
