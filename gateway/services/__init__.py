"""Gateway services: the logic behind the routes. Each takes what it needs (a Session, the adapters,
the catalogue) and returns :mod:`gateway.schemas` objects or raises a :class:`GatewayError`; none
knows about HTTP."""

from gateway.services._exceptions import (
    CallbackRejected,
    GatewayError,
    InvalidField,
    NotFound,
    ServiceUnavailable,
)
from gateway.services.callbacks import accept_callback
from gateway.services.catalogue import describe_catalogue
from gateway.services.health import check_health
from gateway.services.orders import order_status
from gateway.services.quotes import QuoteService

__all__ = [
    "CallbackRejected",
    "GatewayError",
    "InvalidField",
    "NotFound",
    "QuoteService",
    "ServiceUnavailable",
    "accept_callback",
    "check_health",
    "describe_catalogue",
    "order_status",
]
