"""A merchant's money: balances per token and the settlement report of a period (JSON or CSV), for
the operator (``/v1/merchants/{merchant_id}/...``) and for the merchant's own key with the
``payouts:read`` scope (``/v1/merchant/...``); see :mod:`gateway.api.admin`."""

# No `from __future__ import annotations`: FastAPI must see the factory-local `Owner` alias itself.

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse

from gateway.api.admin import ADMIN_ERRORS, KEY_ERRORS, admin_merchant, own_merchant
from gateway.api.deps import ContextDep, SessionDep
from gateway.api.errors import problem_responses
from gateway.api.routes import operation_id
from gateway.money_schemas import BalancesOut, SettlementReport
from gateway.services import InvalidField
from gateway.services.money import balances, report_csv, settlement_report

__all__ = ["admin_router", "own_router"]


def _router(prefix: str, owner: Callable[..., Any], *, own: bool) -> APIRouter:
    router = APIRouter(
        prefix=prefix,
        tags=["merchant" if own else "admin", "money"],
        generate_unique_id_function=operation_id,
        responses=problem_responses(*(KEY_ERRORS if own else ADMIN_ERRORS)),
    )
    Owner = Annotated[str, Depends(owner)]  # noqa: N806 - a type alias
    mine = "own_" if own else "merchant_"

    @router.get("/balances", name=f"get_{mine}balances")
    def get_balances(context: ContextDep, session: SessionDep, merchant: Owner) -> BalancesOut:
        """Per accepted token: the escrow's balance for the merchant (read from the chain now), what
        was paid out, what buyers have paid that is not settled yet, and whether it all reconciles to
        the wei."""
        return balances(session, context.w3, context.deployment, merchant)

    @router.get(
        "/settlement-report",
        responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
        name=f"get_{mine}settlement_report",
    )
    def get_report(
        context: ContextDep,
        session: SessionDep,
        merchant: Owner,
        start: Annotated[datetime, Query(description="Period start (inclusive), ISO 8601 with a zone")],
        end: Annotated[
            datetime | None,
            Query(description="Period end (exclusive); absent: now, checked against the chain"),
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

    return router


admin_router = _router("/v1/merchants/{merchant_id}", admin_merchant, own=False)
own_router = _router("/v1/merchant", own_merchant("payouts:read"), own=True)
