"""``GET /v1/audit/receipts``: settled orders' receipts for ``cardless audit --receipts``.

The operator key exports every settled order; a merchant API key with the ``audit:read`` scope its
own. The answer is exactly the receipts file the auditor reads (docs/audit.md), paginated by the
``next`` cursor. It carries buyers' game accounts in plain text (``accounts=false`` leaves them
out), so it is never cached (``Cache-Control: no-store``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from gateway.api.auth import PrincipalDep
from gateway.api.deps import ContextDep, SessionDep
from gateway.api.errors import problem_responses
from gateway.api.routes import operation_id
from gateway.audit_schemas import ReceiptsOut
from gateway.services import Forbidden, Unauthorized
from gateway.services.api_keys import require_scope
from gateway.services.audit_export import DEFAULT_PAGE, MAX_PAGE, export_receipts, parse_cursor

__all__ = ["AUDIT_SCOPE", "router"]

AUDIT_SCOPE = "audit:read"

router = APIRouter(
    prefix="/v1/audit",
    tags=["audit"],
    generate_unique_id_function=operation_id,
    responses=problem_responses(405, 500),
)


@router.get(
    "/receipts",
    responses=problem_responses(401, 403, 422, 429),
)
def export_audit_receipts(
    principal: PrincipalDep,
    context: ContextDep,
    session: SessionDep,
    response: Response,
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=66,
            description="Where to start: a previous page's `next` (an order id; the page starts after "
            "it) or an RFC 3339 date-time (orders settled at or after it; no zone is UTC). Absent: "
            "the first settlement.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Receipts per page")] = DEFAULT_PAGE,
    accounts: Annotated[
        bool,
        Query(description="Include each buyer's game account and its commitment salt (personal data)"),
    ] = True,
) -> ReceiptsOut:
    """Settled orders' receipts, oldest settlement first, in the format `cardless audit --receipts
    FILE` reads: for each, the receipt exactly as hashed into `OrderSettled.receiptHash` and, unless
    `accounts=false`, the plaintext account and the salt of `OrderPaid.accountCommitment`. The
    operator key: every order; a merchant API key with `audit:read`: its own orders. Follow `next`
    (as `from`) until it is null."""
    if principal.anonymous:
        raise Unauthorized("this request needs the operator key or a merchant API key with audit:read")
    merchant: str | None = None
    if not principal.operator:
        if principal.merchant is None:
            raise Forbidden("only the operator or a merchant API key may export receipts")
        require_scope(principal.merchant, AUDIT_SCOPE)
        merchant = principal.merchant.merchant_address
    page = export_receipts(
        session,
        context.quotes.cipher,
        merchant=merchant,
        cursor=parse_cursor(from_),
        limit=limit,
        accounts=accounts,
    )
    response.headers["Cache-Control"] = "no-store"
    return page
