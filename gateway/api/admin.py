"""Who owns the webhook and money routes, the two ways the merchants' API names a merchant:

- ``/v1/merchants/{merchant_id}/...``: the operator key (tag ``admin``); an unknown merchant is 404;
- ``/v1/merchant/...``: the merchant's own API key with the route's scope (``webhooks:write`` for
  webhooks, ``payouts:read`` for money; tag ``merchant``), counted against the key's quota.

Either way the route gets the merchant's address, which orders, endpoints and payouts are keyed by;
another merchant's endpoint or delivery is then 404, like one that does not exist.
"""

# No `from __future__ import annotations`: FastAPI must see the closure-local dependency itself.

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path

from gateway.api.auth import OperatorOnlyDep, merchant_with
from gateway.api.deps import SessionDep
from gateway.services import NotFound
from gateway.services.api_keys import MerchantKey

__all__ = ["ADMIN_ERRORS", "KEY_ERRORS", "admin_merchant", "own_merchant"]

ADMIN_ERRORS = (401, 403, 404, 405, 422, 500)
KEY_ERRORS = (401, 403, 404, 405, 422, 429, 500)


def admin_merchant(
    _: OperatorOnlyDep,
    session: SessionDep,
    merchant_id: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")],
) -> str:
    from cardless.ledger import Merchant

    merchant = session.get(Merchant, merchant_id)
    if merchant is None:
        raise NotFound("merchant_id", f"no merchant {merchant_id!r}")
    return merchant.address


def own_merchant(scope: str) -> Callable[[MerchantKey], str]:
    def dependency(key: Annotated[MerchantKey, Depends(merchant_with(scope))]) -> str:
        return key.merchant_address

    return dependency
