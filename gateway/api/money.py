"""A merchant's money: balances per token and the settlement report of a period (JSON or CSV).

Operator key required until merchants' API keys (scope ``payouts:read``) replace it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse

from gateway.api.admin import MerchantDep, operator_only
from gateway.api.deps import ContextDep, SessionDep
from gateway.api.errors import problem_responses
from gateway.api.routes import operation_id
from gateway.money_schemas import BalancesOut, SettlementReport
from gateway.services import InvalidField
from gateway.services.money import balances, report_csv, settlement_report

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/merchants/{merchant}",
    tags=["money"],
    generate_unique_id_function=operation_id,
    dependencies=[Depends(operator_only)],
    responses=problem_responses(401, 404, 405, 422, 500),
)


@router.get("/balances")
def get_merchant_balances(context: ContextDep, session: SessionDep, merchant: MerchantDep) -> BalancesOut:
    """Per accepted token: the escrow's balance for the merchant (read from the chain now), what was
    paid out, what buyers have paid that is not settled yet, and whether it all reconciles to the wei."""
    return balances(session, context.w3, context.deployment, merchant)


@router.get(
    "/settlement-report",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def get_settlement_report(
    context: ContextDep,
    session: SessionDep,
    merchant: MerchantDep,
    start: Annotated[datetime, Query(description="Period start (inclusive), ISO 8601 with a zone")],
    end: Annotated[
        datetime | None, Query(description="Period end (exclusive); absent: now, checked against the chain")
    ] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> SettlementReport:
    """Settlements (gross, fee, net per order) and payouts in the period, per token, with opening and
    closing balances; a period running to now also carries the escrow's balance and whether the
    closing balance equals it to the wei. ``format=csv`` answers the same as CSV lines."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise InvalidField(name, "give a time zone (e.g. 2026-12-01T00:00:00Z)")
    if end is not None and end <= start:
        raise InvalidField("end", "must be after start")
    if end is not None and end > datetime.now(UTC):
        end = None  # a period reaching into the future runs to now
    report = settlement_report(session, context.w3, context.deployment, merchant, start=start, end=end)
    if format == "csv":
        return PlainTextResponse(report_csv(report), media_type="text/csv")  # type: ignore[return-value]
    return report
