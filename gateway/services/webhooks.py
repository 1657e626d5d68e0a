"""Merchants' webhook endpoints: register (the secret shown once), read, change, rotate the secret,
delete; read the deliveries with their attempt log, and ask for one to be sent again.

Endpoints are the merchant's (by address). A URL is checked when it is written: a scheme Cardless
speaks (https outside development), no credentials in it, and a host whose *every* address is public
outside development (``cardless.protocol.webhooks.address_refusal``). The delivery job checks the
addresses again at each attempt, since DNS answers change.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardless.ledger.cipher import AccountCipher
from cardless.ledger.models import utcnow
from cardless.ledger.outbox import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    aware,
    new_endpoint_id,
    secret_context,
)
from cardless.protocol.webhooks import address_refusal, generate_secret
from gateway.services._exceptions import InvalidField, NotFound
from gateway.webhook_schemas import (
    WebhookAttemptOut,
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
    WebhookSecretOut,
)

__all__ = ["Resolve", "WebhookEndpoints", "check_url", "system_resolve"]

Resolve = Callable[[str, int], list[str]]
"""(host, port) -> every IP address the host resolves to; raises OSError when it does not."""


def system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_url(url: str, *, allow_private: bool, resolve: Resolve = system_resolve) -> str:
    """``url`` if deliveries may be sent to it, else :class:`InvalidField` naming ``url`` and why."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidField("url", f"not a URL: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise InvalidField("url", "must be an https:// URL")
    if parts.scheme == "http" and not allow_private:
        raise InvalidField("url", "must be https:// outside development")
    if parts.username is not None or parts.password is not None:
        raise InvalidField(
            "url", "must not carry credentials; deliveries are authenticated by their signature"
        )
    host = parts.hostname
    if not host:
        raise InvalidField("url", "names no host")
    try:
        addresses = resolve(host, port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError):
        raise InvalidField("url", f"the host {host} does not resolve") from None
    if not addresses:
        raise InvalidField("url", f"the host {host} does not resolve")
    if not allow_private:
        for address in addresses:
            refusal = address_refusal(address)
            if refusal is not None:
                raise InvalidField("url", f"{host} resolves to {refusal}: refused outside development")
    return url


class WebhookEndpoints:
    def __init__(
        self, cipher: AccountCipher, *, allow_private: bool, resolve: Resolve = system_resolve
    ) -> None:
        self.cipher = cipher
        self.allow_private = allow_private
        self.resolve = resolve

    # ---------------------------------------------------------------------------------- endpoints

    def create(self, session: Session, merchant: str, body: WebhookEndpointCreate) -> WebhookEndpointCreated:
        url = check_url(body.url, allow_private=self.allow_private, resolve=self.resolve)
        endpoint_id = new_endpoint_id()
        secret = generate_secret()
        endpoint = WebhookEndpoint(
            id=endpoint_id,
            merchant=merchant,
            url=url,
            description=body.description,
            event_types=list(dict.fromkeys(body.events)),
            secret_ciphertext=self.cipher.encrypt(secret, secret_context(endpoint_id)),
            enabled=True,
        )
        session.add(endpoint)
        session.commit()
        return WebhookEndpointCreated(**_endpoint_out(endpoint).model_dump(), secret=secret)

    def list(self, session: Session, merchant: str) -> list[WebhookEndpointOut]:
        rows = session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.merchant == merchant)
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
        return [_endpoint_out(row) for row in rows]

    def get(self, session: Session, merchant: str, endpoint_id: str) -> WebhookEndpointOut:
        return _endpoint_out(_endpoint(session, merchant, endpoint_id))

    def update(
        self, session: Session, merchant: str, endpoint_id: str, body: WebhookEndpointUpdate
    ) -> WebhookEndpointOut:
        endpoint = _endpoint(session, merchant, endpoint_id)
        if body.url is not None:
            endpoint.url = check_url(body.url, allow_private=self.allow_private, resolve=self.resolve)
        if body.events is not None:
            endpoint.event_types = list(dict.fromkeys(body.events))
        if "description" in body.model_fields_set:
            endpoint.description = body.description
        if body.enabled is True and not endpoint.enabled:
            endpoint.enabled = True
            endpoint.disabled_at = None
            endpoint.disabled_reason = None
            endpoint.failing_since = None  # a fresh day of attempts before it can be disabled again
        elif body.enabled is False and endpoint.enabled:
            endpoint.enabled = False
            endpoint.disabled_at = utcnow()
            endpoint.disabled_reason = "disabled by the merchant"
        session.commit()
        return _endpoint_out(endpoint)

    def rotate_secret(
        self, session: Session, merchant: str, endpoint_id: str, overlap: timedelta
    ) -> WebhookSecretOut:
        """A new secret signs from now on; the current one keeps signing beside it for ``overlap``."""
        endpoint = _endpoint(session, merchant, endpoint_id)
        secret = generate_secret()
        expires = utcnow() + overlap if overlap > timedelta(0) else None
        endpoint.previous_secret_ciphertext = endpoint.secret_ciphertext if expires else None
        endpoint.previous_secret_expires_at = expires
        endpoint.secret_ciphertext = self.cipher.encrypt(secret, secret_context(endpoint.id))
        session.commit()
        return WebhookSecretOut(secret=secret, previous_secret_expires_at=expires)

    def delete(self, session: Session, merchant: str, endpoint_id: str) -> None:
        endpoint = _endpoint(session, merchant, endpoint_id)
        for delivery in session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
        ):
            session.delete(delivery)
        session.delete(endpoint)
        session.commit()

    # --------------------------------------------------------------------------------- deliveries

    def deliveries(
        self,
        session: Session,
        merchant: str,
        endpoint_id: str,
        *,
        status: str | None,
        limit: int,
        starting_after: int | None,
    ) -> WebhookDeliveryList:
        """Newest first; ``starting_after`` is the last id of the previous page."""
        endpoint = _endpoint(session, merchant, endpoint_id)
        query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        if starting_after is not None:
            query = query.where(WebhookDelivery.id < starting_after)
        rows = list(session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)))
        return WebhookDeliveryList(data=[_delivery_out(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def redeliver(
        self, session: Session, merchant: str, endpoint_id: str, delivery_id: int
    ) -> WebhookDeliveryOut:
        """Send the delivery again as soon as the delivery job runs, whatever its status, even to a
        disabled endpoint: the same event, the same id, a fresh signature."""
        endpoint = _endpoint(session, merchant, endpoint_id)
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.endpoint_id != endpoint.id:
            raise NotFound("delivery_id", f"no delivery {delivery_id} for endpoint {endpoint_id}")
        now = utcnow()
        delivery.status = DeliveryStatus.PENDING.value
        delivery.next_attempt_at = now
        delivery.manual_requested_at = now
        session.commit()
        return _delivery_out(delivery)


def _endpoint(session: Session, merchant: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.merchant != merchant:  # another merchant's endpoint does not exist
        raise NotFound("endpoint_id", f"no webhook endpoint {endpoint_id}")
    return endpoint


def _utc(value: datetime | None) -> datetime | None:
    return aware(value)


def _endpoint_out(row: WebhookEndpoint) -> WebhookEndpointOut:
    return WebhookEndpointOut(
        id=row.id,
        merchant=row.merchant,
        url=row.url,
        events=row.event_types,
        description=row.description,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        disabled_at=_utc(row.disabled_at),
        failing_since=_utc(row.failing_since),
        previous_secret_expires_at=_utc(row.previous_secret_expires_at),
        created_at=_utc(row.created_at) or utcnow(),
    )


def _delivery_out(row: WebhookDelivery) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event.type,
        order_id=row.event.order_id,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=_utc(row.next_attempt_at),
        delivered_at=_utc(row.delivered_at),
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        log=[
            WebhookAttemptOut(
                number=a.number,
                trigger=a.trigger,
                at=_utc(a.at) or a.at,
                status_code=a.status_code,
                error=a.error,
                duration_ms=a.duration_ms,
                response_excerpt=a.response_excerpt,
            )
            for a in row.log
        ],
    )
