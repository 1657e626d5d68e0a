"""Analytics routes (``cardless.ledger.analytics``): one figure per route, one SQL statement each.

The operator sees every merchant (or one, with `merchant`); a merchant key with `orders:read` its own.
The range is the `days` before `until` (default: now), by payment time. Calendar figures are read at
`tz_offset_minutes` from UTC (default 0, UTC; 480 for China Standard Time); weekdays run 0 = Sunday to
6 = Saturday. Amounts are base units of each token, as decimal strings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from eth_utils import to_checksum_address
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from cardless.ledger import analytics
from gateway.api.auth import PrincipalDep
from gateway.api.deps import SessionDep
from gateway.api.errors import problem_responses
from gateway.api.routes import operation_id
from gateway.services import Forbidden, Unauthorized
from gateway.services.api_keys import require_scope

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/analytics",
    tags=["analytics"],
    generate_unique_id_function=operation_id,
    responses=problem_responses(401, 403, 405, 422, 429, 500),
)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeatmapCell(_Out):
    weekday: int = Field(ge=0, le=6, description="0 = Sunday ... 6 = Saturday, local")
    hour: int = Field(ge=0, le=23, description="Local hour")
    orders: int


class HeatmapOut(_Out):
    since: datetime
    until: datetime
    tz_offset_minutes: int
    cells: list[HeatmapCell] = Field(description="Only the cells with orders")
    peak: HeatmapCell | None


class SkuDay(_Out):
    day: str = Field(description="Local date, YYYY-MM-DD")
    sku: str
    token: str
    orders: int
    amount: str


class SkuDailyOut(_Out):
    since: datetime
    until: datetime
    tz_offset_minutes: int
    rows: list[SkuDay]


class RepeatOut(_Out):
    since: datetime
    until: datetime
    buyers: int
    repeat_buyers: int = Field(description="Buyers with two or more orders in the range")
    orders: int
    repeat_rate: float


class CohortCell(_Out):
    cohort: int = Field(description="Week of the buyers' first order, counted from `since`")
    week: int = Field(description="Weeks after the cohort's week")
    buyers: int


class CohortsOut(_Out):
    since: datetime
    until: datetime
    week_seconds: int
    rows: list[CohortCell]


class Bucket(_Out):
    le_seconds: int | None = Field(description="Upper bound (exclusive); null: the open last bucket")
    orders: int


class FulfilmentOut(_Out):
    since: datetime
    until: datetime
    orders: int
    mean_seconds: float | None
    max_seconds: int | None
    histogram: list[Bucket]


class ProviderStats(_Out):
    provider: str
    attempts: int
    succeeded: int
    failed: int
    unknown: int
    retried: int
    success_rate: float | None = Field(description="succeeded / (succeeded + failed)")
    mean_seconds: float | None = Field(description="Submit to the provider's answer")
    max_seconds: float | None


class ProvidersOut(_Out):
    since: datetime
    until: datetime
    providers: list[ProviderStats]


class RefundCount(_Out):
    code: int
    reason: str
    orders: int


class RefundsOut(_Out):
    since: datetime
    until: datetime
    reasons: list[RefundCount]


Days = Annotated[int, Query(ge=1, le=366, description="How many days before `until`")]
Until = Annotated[datetime | None, Query(description="End of the range (exclusive); default now")]
Offset = Annotated[
    int,
    Query(
        ge=-720,
        le=840,
        multiple_of=15,
        description="Local time = UTC + this many minutes: a whole number of quarter hours, as every zone is",
    ),
]
MerchantAddress = Annotated[
    str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$", description="Operator only: one merchant's orders")
]


def _range(
    principal: PrincipalDep,
    days: Days = 30,
    until: Until = None,
    tz_offset_minutes: Offset = 0,
    merchant: MerchantAddress = None,
) -> analytics.Range:
    """The caller's range: who may read which merchant's figures, over which days, at which offset."""
    end = until or datetime.now(UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    who: str | None
    if principal.operator:
        who = to_checksum_address(merchant) if merchant else None
    elif principal.merchant is not None:
        require_scope(principal.merchant, "orders:read")
        if merchant is not None and merchant.lower() != principal.merchant.merchant_address.lower():
            raise Forbidden("a merchant key reads its own merchant's analytics only")
        who = principal.merchant.merchant_address
    elif principal.anonymous:
        raise Unauthorized("analytics need the operator key or a merchant API key")
    else:
        raise Forbidden("analytics are for the operator and merchants")
    return analytics.Range(end - timedelta(days=days), end, merchant=who, tz_offset_minutes=tz_offset_minutes)


def _utc_range(
    principal: PrincipalDep, days: Days = 30, until: Until = None, merchant: MerchantAddress = None
) -> analytics.Range:
    """The same, for the figures that are not calendar figures (no local offset)."""
    return _range(principal, days, until, 0, merchant)


LocalRange = Annotated[analytics.Range, Depends(_range)]
UtcRange = Annotated[analytics.Range, Depends(_utc_range)]


def _figure(name: str, session: SessionDep, r: analytics.Range) -> dict[str, Any]:
    return {"since": r.since, "until": r.until, **analytics.FIGURES[name](session, r)}


@router.get("/heatmap")
def get_sales_heatmap(session: SessionDep, r: LocalRange) -> HeatmapOut:
    """Paid orders by local weekday x hour, and the busiest cell."""
    return HeatmapOut.model_validate(_figure("heatmap", session, r))


@router.get("/sku-daily")
def get_sku_daily_volume(session: SessionDep, r: LocalRange) -> SkuDailyOut:
    """Orders and volume per local day, SKU and token."""
    return SkuDailyOut.model_validate(_figure("sku_daily", session, r))


@router.get("/repeat")
def get_repeat_purchases(session: SessionDep, r: UtcRange) -> RepeatOut:
    """Buyers, repeat buyers (two or more orders) and the repeat-purchase rate."""
    return RepeatOut.model_validate(_figure("repeat", session, r))


@router.get("/cohorts")
def get_wallet_cohorts(session: SessionDep, r: UtcRange) -> CohortsOut:
    """Buyers by the week of their first order, and how many bought in each later week."""
    return CohortsOut.model_validate(_figure("cohorts", session, r))


@router.get("/fulfilment")
def get_fulfilment_time(session: SessionDep, r: UtcRange) -> FulfilmentOut:
    """Seconds from payment to confirmed top-up: histogram, mean, maximum."""
    return FulfilmentOut.model_validate(_figure("fulfilment", session, r))


@router.get("/providers")
def get_provider_stats(session: SessionDep, r: UtcRange) -> ProvidersOut:
    """Per provider: attempts, outcomes, success rate and latency."""
    return ProvidersOut.model_validate(_figure("providers", session, r))


@router.get("/refunds")
def get_refund_reasons(session: SessionDep, r: UtcRange) -> RefundsOut:
    """Refunded orders by reason."""
    return RefundsOut.model_validate(_figure("refunds", session, r))
