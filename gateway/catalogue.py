"""The catalogue file: merchants, SKUs, their providers (failover order) and prices per token.

The catalogue lives in the database (``gateway.services.skus``); this TOML file is its seed, loaded by
the embedded system at start (``make run``) and by ``cardless catalogue load``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Self

from eth_utils import is_address, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["Catalogue", "CatalogueError", "Merchant", "Sku", "load_catalogue"]


class CatalogueError(Exception):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Merchant(_Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    name: str = Field(min_length=1)
    address: str
    fee_bps: int = Field(ge=0, le=10_000)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not is_address(value):
            raise ValueError("not a 20-byte hex address")
        return to_checksum_address(value)


class Sku(_Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    title: str = Field(min_length=1)
    merchant: str
    providers: tuple[str, ...] = Field(min_length=1)
    prices: dict[str, int]
    """Token symbol -> price in the token's base units."""
    face_value: int | None = Field(default=None, ge=1)
    enabled: bool = True
    daily_limit: int | None = Field(default=None, ge=1)
    buyer_daily_limit: int | None = Field(default=None, ge=1)

    @field_validator("prices")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        if not value:
            raise ValueError("at least one price is required")
        for symbol, amount in value.items():
            if amount <= 0:
                raise ValueError(f"price for {symbol} must be a positive integer in base units")
        return value


class Catalogue(_Model):
    merchants: tuple[Merchant, ...] = Field(min_length=1)
    skus: tuple[Sku, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Self:
        merchant_ids = [m.id for m in self.merchants]
        if len(set(merchant_ids)) != len(merchant_ids):
            raise ValueError("merchant ids must be unique")
        sku_ids = [s.id for s in self.skus]
        if len(set(sku_ids)) != len(sku_ids):
            raise ValueError("sku ids must be unique")
        for sku in self.skus:
            if sku.merchant not in merchant_ids:
                raise ValueError(f"sku {sku.id}: unknown merchant {sku.merchant!r}")
        return self

    def sku(self, sku_id: str) -> Sku | None:
        return next((s for s in self.skus if s.id == sku_id), None)

    def merchant(self, merchant_id: str) -> Merchant:
        return next(m for m in self.merchants if m.id == merchant_id)

    def check_providers(self, known: set[str]) -> None:
        for sku in self.skus:
            missing = [p for p in sku.providers if p not in known]
            if missing:
                raise CatalogueError(f"sku {sku.id}: providers {missing} are not configured")


def load_catalogue(path: Path) -> Catalogue:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"{path}: {exc}") from exc
    try:
        return Catalogue.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise CatalogueError(f"{path}: {problems}") from exc
