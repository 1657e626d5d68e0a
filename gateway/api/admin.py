"""Dependencies of the merchant-scoped admin routes (webhooks, money): the operator key is required,
and the merchant named in the path must be one of the catalogue's. Merchants' own API keys (with
scopes such as ``webhooks:write`` and ``payouts:read``) replace the operator key when they land."""

from __future__ import annotations

from typing import Annotated

from eth_utils import to_checksum_address
from fastapi import Depends, Path

from gateway.api.deps import ContextDep, OperatorDep
from gateway.services import NotFound, Unauthorized

__all__ = ["MerchantDep", "operator_only"]


def operator_only(operator: OperatorDep) -> None:
    if not operator:
        raise Unauthorized("this route needs the operator key (Authorization: Bearer ...)")


def _merchant(
    context: ContextDep,
    merchant: str = Path(pattern=r"^0x[0-9a-fA-F]{40}$", description="The merchant's address"),
) -> str:
    address = to_checksum_address(merchant)
    if all(m.address != address for m in context.catalogue.merchants):
        raise NotFound("merchant", f"no merchant {address}")
    return address


MerchantDep = Annotated[str, Depends(_merchant)]
