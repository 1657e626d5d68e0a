"""Routes of merchants' webhook endpoints, under ``/v1/merchants/{merchant}/webhook-endpoints``.

Admin routes: they take the operator key (``Authorization: Bearer``) until merchants' own API keys
(scope ``webhooks:write``) replace it; a request without it is 401. A merchant is named by its address,
and an endpoint or delivery of another merchant is 404, like one that does not exist.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from gateway.api.admin import MerchantDep, operator_only
from gateway.api.deps import ContextDep, SessionDep
from gateway.api.errors import problem_responses
from gateway.api.routes import operation_id
from gateway.services import NotFound
from gateway.services.webhooks import WebhookEndpoints
from gateway.webhook_schemas import (
    SecretRotationCreate,
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
    WebhookSecretOut,
)

__all__ = ["router"]


def _endpoints(context: ContextDep) -> WebhookEndpoints:
    if context.webhook_endpoints is None:
        raise NotFound("merchant", "webhooks are not configured on this gateway")
    return context.webhook_endpoints


EndpointsDep = Annotated[WebhookEndpoints, Depends(_endpoints)]
EndpointId = Annotated[str, Path(pattern=r"^we_[0-9a-f]{24}$")]

_BODY = (400, 413)
router = APIRouter(
    prefix="/v1/merchants/{merchant}/webhook-endpoints",
    tags=["webhooks"],
    generate_unique_id_function=operation_id,
    dependencies=[Depends(operator_only)],
    responses=problem_responses(401, 404, 405, 422, 500),
)


@router.post("", status_code=201, responses=problem_responses(*_BODY))
def create_webhook_endpoint(
    body: WebhookEndpointCreate, session: SessionDep, merchant: MerchantDep, endpoints: EndpointsDep
) -> WebhookEndpointCreated:
    """Register a URL for the event types it wants. The answer holds the signing secret, shown only
    here. 422 names ``url`` when it is not https (outside development), carries credentials, does not
    resolve, or resolves to a loopback or private address (outside development)."""
    return endpoints.create(session, merchant, body)


@router.get("")
def list_webhook_endpoints(
    session: SessionDep, merchant: MerchantDep, endpoints: EndpointsDep
) -> WebhookEndpointList:
    """The merchant's endpoints; a disabled one says why (``disabled_reason``)."""
    return WebhookEndpointList(data=endpoints.list(session, merchant))


@router.get("/{endpoint_id}")
def get_webhook_endpoint(
    endpoint_id: EndpointId, session: SessionDep, merchant: MerchantDep, endpoints: EndpointsDep
) -> WebhookEndpointOut:
    """One endpoint, with why it was disabled if it was."""
    return endpoints.get(session, merchant, endpoint_id)


@router.patch("/{endpoint_id}", responses=problem_responses(*_BODY))
def update_webhook_endpoint(
    endpoint_id: EndpointId,
    body: WebhookEndpointUpdate,
    session: SessionDep,
    merchant: MerchantDep,
    endpoints: EndpointsDep,
) -> WebhookEndpointOut:
    """Change the URL, the event types or the description; ``enabled: true`` re-enables an endpoint
    Cardless disabled, and its waiting deliveries go out."""
    return endpoints.update(session, merchant, endpoint_id, body)


@router.post("/{endpoint_id}/rotate-secret", responses=problem_responses(*_BODY))
def rotate_webhook_secret(
    endpoint_id: EndpointId,
    body: SecretRotationCreate,
    session: SessionDep,
    merchant: MerchantDep,
    endpoints: EndpointsDep,
) -> WebhookSecretOut:
    """A new secret; the previous one keeps signing beside it (a second ``v1``) for
    ``overlap_seconds``, so the receiver can switch without missing a delivery."""
    return endpoints.rotate_secret(session, merchant, endpoint_id, timedelta(seconds=body.overlap_seconds))


@router.delete("/{endpoint_id}")
def delete_webhook_endpoint(
    endpoint_id: EndpointId, session: SessionDep, merchant: MerchantDep, endpoints: EndpointsDep
) -> WebhookEndpointOut:
    """Remove the endpoint and its deliveries (the events stay); answers what was removed."""
    removed = endpoints.get(session, merchant, endpoint_id)
    endpoints.delete(session, merchant, endpoint_id)
    return removed


@router.get("/{endpoint_id}/deliveries")
def list_webhook_deliveries(
    endpoint_id: EndpointId,
    session: SessionDep,
    merchant: MerchantDep,
    endpoints: EndpointsDep,
    status: Literal["pending", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> WebhookDeliveryList:
    """Deliveries to this endpoint, newest first, each with its attempt log (status code, error,
    duration, the first KiB of the answer). Page with ``starting_after`` = the last id seen."""
    return endpoints.deliveries(
        session, merchant, endpoint_id, status=status, limit=limit, starting_after=starting_after
    )


@router.post("/{endpoint_id}/deliveries/{delivery_id}/redeliver", status_code=202)
def redeliver_webhook(
    endpoint_id: EndpointId,
    session: SessionDep,
    merchant: MerchantDep,
    endpoints: EndpointsDep,
    delivery_id: Annotated[int, Path(ge=1, le=2**62)],
) -> WebhookDeliveryOut:
    """Send this delivery again (same event id, fresh signature) at the delivery job's next run,
    whatever its status and even to a disabled endpoint."""
    return endpoints.redeliver(session, merchant, endpoint_id, delivery_id)
