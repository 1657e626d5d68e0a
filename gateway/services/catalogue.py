"""The catalogue as clients see it: what is sold, by whom, for how much in which token."""

from __future__ import annotations

from cardless.protocol.deployment import Deployment
from gateway.catalogue import Catalogue
from gateway.schemas import CatalogueOut, MerchantOut, PriceOut, SkuOut

__all__ = ["describe_catalogue"]


def describe_catalogue(catalogue: Catalogue, deployment: Deployment) -> CatalogueOut:
    """Every merchant and SKU; a SKU lists only the prices in tokens this escrow accepts."""
    tokens = {t.symbol: t for t in deployment.tokens}
    return CatalogueOut(
        chain_id=deployment.chain_id,
        escrow=deployment.escrow,
        merchants=[
            MerchantOut(id=m.id, name=m.name, address=m.address, fee_bps=m.fee_bps)
            for m in catalogue.merchants
        ],
        skus=[
            SkuOut(
                id=s.id,
                title=s.title,
                merchant=s.merchant,
                prices=[
                    PriceOut(
                        token=symbol,
                        address=tokens[symbol].address,
                        decimals=tokens[symbol].decimals,
                        amount=str(amount),
                    )
                    for symbol, amount in s.prices.items()
                    if symbol in tokens
                ],
            )
            for s in catalogue.skus
        ],
    )
