"""Errors raised by the gateway's services. They say what went wrong in the domain's words; only
:mod:`gateway.api.errors` turns them into HTTP (status, problem+json, headers)::

    CardlessError                  root of every Cardless error (cardless.protocol)
    └── GatewayError               root of this package; ``field`` names the input at fault, if one is
        ├── NotFound               the named thing does not exist: an SKU, an order, a provider
        ├── InvalidField           an input is well-formed but not acceptable (token not sold, account
        │                          refused by the provider, a callback naming no order)
        ├── CallbackRejected       a provider callback cannot be trusted (forged, stale): change nothing
        ├── Unauthorized           the credentials sent with a request do not verify: send none or good ones
        ├── Forbidden              the credentials verify but do not allow this (an API key's scopes)
        ├── Conflict               the request collides with the state of a resource (a taken id, an
        │                          Idempotency-Key reused with other parameters or still in flight)
        ├── ServiceUnavailable     no provider can take the order now: try again after ``retry_after`` s
        └── RateLimited            this client or wallet asked too often: try again after ``retry_after`` s

Each class is named for what the caller does next: fix the named field, stop, or retry later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cardless.protocol import CardlessError

if TYPE_CHECKING:
    from gateway.services.ratelimits import Allowance

__all__ = [
    "CallbackRejected",
    "Conflict",
    "Forbidden",
    "GatewayError",
    "InvalidField",
    "NotFound",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
]


class GatewayError(CardlessError):
    """Root of every error the gateway's services raise.

    ``field`` is the input at fault (``sku``, ``order_id``, ...) or None; ``message`` says why. The
    string form is ``"field: message"`` so a client reading only the detail still sees the field.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class NotFound(GatewayError):  # noqa: N818 (reads as the outcome, like adapters' errors)
    """The thing ``field`` names does not exist."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


class InvalidField(GatewayError):  # noqa: N818
    """``field`` is well-formed but cannot be accepted; nothing was written."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


class CallbackRejected(GatewayError):  # noqa: N818
    """A provider callback is not trustworthy (bad signature, outside the time window)."""


class Unauthorized(GatewayError):  # noqa: N818
    """The request carried credentials that do not verify, or none to a route that needs them. Where a
    route has a public view (an order), sending none gets that view; wrong credentials are refused, so
    a client with a mistyped or revoked key learns it instead of silently reading less."""


class Forbidden(GatewayError):  # noqa: N818
    """The credentials verify but do not grant this request (an API key without the scope it needs)."""


class Conflict(GatewayError):  # noqa: N818
    """The request cannot be applied to the resource as it is now; nothing was written."""


class ServiceUnavailable(GatewayError):  # noqa: N818
    """No provider can take the order right now; the quote is refused rather than taking money."""

    def __init__(self, message: str, *, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(GatewayError):  # noqa: N818
    """Too many requests from one client address or for one buyer wallet; nothing was done.
    ``allowances`` says what is left of each limit (``gateway.services.ratelimits``)."""

    def __init__(self, message: str, *, retry_after: int, allowances: list[Allowance]) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.allowances = allowances
