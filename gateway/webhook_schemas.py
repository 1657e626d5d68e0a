"""Webhook endpoints, deliveries and their attempt log on the wire (the style of :mod:`gateway.schemas`,
kept in a module of their own while the merchants' API is built beside them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from cardless.protocol.webhooks import EVENT_TYPES

__all__ = [
    "EventType",
    "SecretRotationCreate",
    "WebhookAttemptOut",
    "WebhookDeliveryList",
    "WebhookDeliveryOut",
    "WebhookEndpointCreate",
    "WebhookEndpointCreated",
    "WebhookEndpointList",
    "WebhookEndpointOut",
    "WebhookEndpointUpdate",
    "WebhookSecretOut",
]

EventType = Literal[
    "order.paid", "order.fulfilled", "order.settled", "order.refunded", "order.reclaimed", "payout.sent"
]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]

WebhookUrl = Annotated[
    str,
    Field(
        min_length=8,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="Where deliveries are POSTed. https outside development; its host must resolve to "
        "public addresses only (loopback and private networks are refused outside development)",
    ),
]
EventTypes = Annotated[
    list[EventType],
    Field(min_length=1, max_length=len(EVENT_TYPES), description="The event types this endpoint receives"),
]
Description = Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookEndpointCreate(_In):
    url: WebhookUrl
    events: EventTypes
    description: Description | None = None


class WebhookEndpointUpdate(_In):
    """Only the fields sent change. ``enabled: true`` re-enables an endpoint that was disabled for
    failing, and its waiting deliveries are sent."""

    url: WebhookUrl | None = None
    events: EventTypes | None = None
    description: Description | None = None
    enabled: bool | None = None


class SecretRotationCreate(_In):
    overlap_seconds: int = Field(
        86_400,
        ge=0,
        le=7 * 86_400,
        description="How long the previous secret keeps signing beside the new one (a second v1)",
    )


class WebhookEndpointOut(_Out):
    id: str
    merchant: str
    url: str
    events: list[EventType]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(description="Why Cardless disabled the endpoint, if it did")
    disabled_at: datetime | None
    failing_since: datetime | None = Field(description="First failed attempt since the last success")
    previous_secret_expires_at: datetime | None = Field(
        description="While set and in the future, deliveries carry a second v1 signed by the previous secret"
    )
    created_at: datetime


class WebhookEndpointCreated(WebhookEndpointOut):
    secret: str = Field(description="The signing secret: shown once, here")


class WebhookEndpointList(_Out):
    data: list[WebhookEndpointOut]


class WebhookSecretOut(_Out):
    secret: str = Field(description="The new signing secret: shown once, here")
    previous_secret_expires_at: datetime | None


class WebhookAttemptOut(_Out):
    number: int
    trigger: Literal["scheduled", "manual"]
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    response_excerpt: str | None = Field(description="The first KiB of the endpoint's answer")


class WebhookDeliveryOut(_Out):
    id: int
    event_id: str = Field(description="Stable across attempts: receivers de-duplicate on it")
    event_type: EventType
    order_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    log: list[WebhookAttemptOut]


class WebhookDeliveryList(_Out):
    data: list[WebhookDeliveryOut]
    has_more: bool
