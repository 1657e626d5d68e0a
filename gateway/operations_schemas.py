"""Liveness and readiness on the wire (the style of :mod:`gateway.schemas`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["CheckOut", "LiveOut", "ReadyOut"]


class LiveOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["ok"]


class CheckOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool
    detail: str


class ReadyOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["ready"]
    checks: dict[str, CheckOut]
