"""Configuration of the simulated provider: merchants, catalogue, account rules and timings.

`default_config()` is what `python -m adapters.simulator` serves; `load_config(path)` reads the same
shape from TOML (top-level keys as in `SimulatorConfig`, `[[merchants]]` and `[[skus]]` tables).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.simulator.signing import SignScheme

__all__ = ["MerchantConfig", "SimulatorConfig", "SkuConfig", "default_config", "load_config"]

Cents = Annotated[int, Field(ge=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MerchantConfig(_Frozen):
    """A merchant account at the provider: how it signs, how its callbacks are signed, its prepaid float."""

    id: str = Field(min_length=1)
    secret: str = Field(min_length=1)
    scheme: SignScheme
    callback_secret: str = Field(min_length=1)
    balance_cents: Cents


class SkuConfig(_Frozen):
    """A product: crediting it adds `points` to the account's balance in `game` and costs `cost_cents`."""

    id: str = Field(min_length=1)
    game: str = Field(min_length=1)
    points: int = Field(gt=0)
    cost_cents: int = Field(gt=0)
    stock: int = Field(ge=0)


class SimulatorConfig(_Frozen):
    merchants: tuple[MerchantConfig, ...] = Field(min_length=1)
    skus: tuple[SkuConfig, ...] = Field(min_length=1)
    # An account id is valid when it fully matches this pattern and is not banned.
    account_pattern: str = r"^\d{5,12}$"
    banned_accounts: frozenset[str] = frozenset()
    # Async mode: top-ups reply PROCESSING and are credited `async_delay_ms` later (then a callback).
    async_mode: bool = False
    async_delay_ms: int = Field(default=500, ge=0)
    timestamp_tolerance_s: int = Field(default=300, ge=0)
    # How long the `timeout` fault holds a request before dropping it; longer than any sane client timeout.
    timeout_hold_s: float = Field(default=30.0, gt=0)
    callback_timeout_s: float = Field(default=5.0, gt=0)
    # Seed for fault probabilities, so a run with `probability < 1` can be replayed.
    seed: int | None = None

    @field_validator("account_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"account_pattern does not compile: {exc}") from exc
        return pattern

    @model_validator(mode="after")
    def _unique_ids(self) -> SimulatorConfig:
        for kind, ids in (("merchant", [m.id for m in self.merchants]), ("sku", [s.id for s in self.skus])):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} ids: {', '.join(duplicates)}")
        return self


def default_config() -> SimulatorConfig:
    """Two merchants (one per signing scheme) and six SKUs over two games; `pubg-660uc` is sold out.

    These ids and secrets are fixtures of a local simulator, documented in docs/design/simulator-api.md so
    the provider file of the generic adapter can match them; they guard nothing.
    """
    return SimulatorConfig(
        merchants=(
            MerchantConfig(
                id="cardless-hmac",
                secret="sim-hmac-secret",
                scheme="hmac-sha256",
                callback_secret="sim-hmac-callback-secret",
                balance_cents=1_000_000,
            ),
            MerchantConfig(
                id="cardless-md5",
                secret="sim-md5-secret",
                scheme="md5-sorted-params",
                callback_secret="sim-md5-callback-secret",
                balance_cents=100_000,
            ),
        ),
        skus=(
            SkuConfig(id="genshin-60", game="genshin", points=60, cost_cents=99, stock=10_000),
            SkuConfig(id="genshin-300", game="genshin", points=300, cost_cents=499, stock=1_000),
            SkuConfig(id="genshin-980", game="genshin", points=980, cost_cents=1_499, stock=100),
            SkuConfig(id="pubg-60uc", game="pubg", points=60, cost_cents=99, stock=10_000),
            SkuConfig(id="pubg-325uc", game="pubg", points=325, cost_cents=499, stock=1_000),
            SkuConfig(id="pubg-660uc", game="pubg", points=660, cost_cents=999, stock=0),
        ),
        banned_accounts=frozenset({"99999999"}),
    )


def load_config(path: str | Path) -> SimulatorConfig:
    """Read a TOML config; anything missing or malformed raises pydantic's `ValidationError`."""
    with Path(path).open("rb") as fh:
        return SimulatorConfig.model_validate(tomllib.load(fh))
