"""Gateway services: the logic behind the routes. Each takes what it needs (a Session, the adapters,
the catalogue) and returns :mod:`gateway.schemas` objects or raises a :class:`GatewayError`; none
knows about HTTP."""

from gateway.services._exceptions import (
    CallbackRejected,
    Conflict,
    Forbidden,
    GatewayError,
    InvalidField,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from gateway.services.callbacks import accept_callback
from gateway.services.health import check_health
from gateway.services.orders import order_status, public_order_status
from gateway.services.quotes import QuoteService
from gateway.services.ratelimits import Allowance, QuoteLimits
from gateway.services.skus import describe_catalogue

__all__ = [
    "Allowance",
    "CallbackRejected",
    "Conflict",
    "Forbidden",
    "GatewayError",
    "InvalidField",
    "NotFound",
    "QuoteLimits",
    "QuoteService",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
    "accept_callback",
    "check_health",
    "describe_catalogue",
    "order_status",
    "public_order_status",
]
