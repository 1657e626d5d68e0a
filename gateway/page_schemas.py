"""Wire models of the routes the pages needed and any other client may use (gateway.api.live)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AccountCheckCreate"]


class AccountCheckCreate(BaseModel):
    """A game account to check with the SKU's providers before the buyer connects a wallet."""

    model_config = ConfigDict(extra="forbid")

    sku: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$", examples=["genshin-60"])
    account: str = Field(
        min_length=1, max_length=64, description="The game account to credit", examples=["12345678"]
    )
