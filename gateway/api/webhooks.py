"""Routes of merchants' webhook endpoints, twice (see :mod:`gateway.api.admin`):
``/v1/merchants/{merchant_id}/webhook-endpoints`` for the operator and ``/v1/merchant/webhook-endpoints``
for the merchant's own API key with the ``webhooks:write`` scope. An endpoint or delivery of another
merchant is 404, like one that does not exist."""

# No `from __future__ import annotations`: FastAPI must see the factory-local `Owner` alias itself.

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from gateway.api.admin import ADMIN_ERRORS, KEY_ERRORS, admin_merchant, own_merchant
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

__all__ = ["admin_router", "own_router"]


def _endpoints(context: ContextDep) -> WebhookEndpoints:
    if context.webhook_endpoints is None:
        raise NotFound("endpoint_id", "webhooks are not configured on this gateway")
    return context.webhook_endpoints


EndpointsDep = Annotated[WebhookEndpoints, Depends(_endpoints)]
EndpointId = Annotated[str, Path(pattern=r"^we_[0-9a-f]{24}$")]
_BODY = (400, 413)


def _router(prefix: str, owner: Callable[..., Any], *, own: bool) -> APIRouter:
    router = APIRouter(
        prefix=prefix,
        tags=["merchant" if own else "admin", "webhooks"],
        generate_unique_id_function=operation_id,
        responses=problem_responses(*(KEY_ERRORS if own else ADMIN_ERRORS)),
    )
    Owner = Annotated[str, Depends(owner)]  # noqa: N806 - a type alias
    mine = "own_" if own else ""

    @router.post(
        "", status_code=201, responses=problem_responses(*_BODY), name=f"create_{mine}webhook_endpoint"
    )
    def create(
        body: WebhookEndpointCreate, session: SessionDep, merchant: Owner, endpoints: EndpointsDep
    ) -> WebhookEndpointCreated:
        """Register a URL for the event types it wants. The answer holds the signing secret, shown
        only here. 422 names ``url`` when it is not https (outside development), carries credentials,
        does not resolve, or resolves to a loopback or private address (outside development)."""
        return endpoints.create(session, merchant, body)

    @router.get("", name=f"list_{mine}webhook_endpoints")
    def list_all(session: SessionDep, merchant: Owner, endpoints: EndpointsDep) -> WebhookEndpointList:
        """The merchant's endpoints; a disabled one says why (``disabled_reason``)."""
        return WebhookEndpointList(data=endpoints.list(session, merchant))

    @router.get("/{endpoint_id}", name=f"get_{mine}webhook_endpoint")
    def get(
        endpoint_id: EndpointId, session: SessionDep, merchant: Owner, endpoints: EndpointsDep
    ) -> WebhookEndpointOut:
        """One endpoint, with why it was disabled if it was."""
        return endpoints.get(session, merchant, endpoint_id)

    @router.patch(
        "/{endpoint_id}", responses=problem_responses(*_BODY), name=f"update_{mine}webhook_endpoint"
    )
    def update(
        endpoint_id: EndpointId,
        body: WebhookEndpointUpdate,
        session: SessionDep,
        merchant: Owner,
        endpoints: EndpointsDep,
    ) -> WebhookEndpointOut:
        """Change the URL, the event types or the description; ``enabled: true`` re-enables an endpoint
        Cardless disabled, and its waiting deliveries go out."""
        return endpoints.update(session, merchant, endpoint_id, body)

    @router.post(
        "/{endpoint_id}/rotate-secret",
        responses=problem_responses(*_BODY),
        name=f"rotate_{mine}webhook_secret",
    )
    def rotate(
        endpoint_id: EndpointId,
        body: SecretRotationCreate,
        session: SessionDep,
        merchant: Owner,
        endpoints: EndpointsDep,
    ) -> WebhookSecretOut:
        """A new secret; the previous one keeps signing beside it (a second ``v1``) for
        ``overlap_seconds``, so the receiver can switch without missing a delivery."""
        return endpoints.rotate_secret(
            session, merchant, endpoint_id, timedelta(seconds=body.overlap_seconds)
        )

    @router.delete("/{endpoint_id}", name=f"delete_{mine}webhook_endpoint")
    def delete(
        endpoint_id: EndpointId, session: SessionDep, merchant: Owner, endpoints: EndpointsDep
    ) -> WebhookEndpointOut:
        """Remove the endpoint and its deliveries (the events stay); answers what was removed."""
        removed = endpoints.get(session, merchant, endpoint_id)
        endpoints.delete(session, merchant, endpoint_id)
        return removed

    @router.get("/{endpoint_id}/deliveries", name=f"list_{mine}webhook_deliveries")
    def deliveries(
        endpoint_id: EndpointId,
        session: SessionDep,
        merchant: Owner,
        endpoints: EndpointsDep,
        status: Literal["pending", "delivered", "failed"] | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        starting_after: Annotated[int | None, Query(ge=1, le=2**53)] = None,
    ) -> WebhookDeliveryList:
        """Deliveries to this endpoint, newest first, each with its attempt log (status code, error,
        duration, the first KiB of the answer). Page with ``starting_after`` = the last id seen."""
        return endpoints.deliveries(
            session, merchant, endpoint_id, status=status, limit=limit, starting_after=starting_after
        )

    @router.post(
        "/{endpoint_id}/deliveries/{delivery_id}/redeliver", status_code=202, name=f"redeliver_{mine}webhook"
    )
    def redeliver(
        endpoint_id: EndpointId,
        session: SessionDep,
        merchant: Owner,
        endpoints: EndpointsDep,
        delivery_id: Annotated[int, Path(ge=1, le=2**53)],
    ) -> WebhookDeliveryOut:
        """Send this delivery again (same event id, fresh signature) at the delivery job's next run,
        whatever its status and even to a disabled endpoint."""
        return endpoints.redeliver(session, merchant, endpoint_id, delivery_id)

    return router


admin_router = _router("/v1/merchants/{merchant_id}/webhook-endpoints", admin_merchant, own=False)
own_router = _router("/v1/merchant/webhook-endpoints", own_merchant("webhooks:write"), own=True)
