"""Who is asking: one bearer scheme, four kinds of credentials, told apart by their form.

- the operator key (``CARDLESS_OPERATOR_KEY``): the admin credential, reads and manages everything;
- a merchant API key (``ck_live_<prefix>_<secret>``): its merchant's resources, within its scopes, and
  counted against its quota (RateLimit headers on every answer);
- a merchant wallet session (``cm_sess_<token>``, from Sign-In with Ethereum by the merchant's
  settlement address): accepted wherever a merchant key is, within the dashboard's scopes, counted
  against the default per-key quota; it is a ``MerchantKey`` with ``session`` set;
- a buyer session (``cs_sess_<token>``, from Sign-In with Ethereum): that wallet's orders.

No ``Authorization`` header is the anonymous caller; a header that does not verify is 401, never read
as anonymous. A credential that verifies but does not allow the request is 403.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.api.deps import ContextDep, GatewayContext
from gateway.api.ratelimits import rate_limit_headers
from gateway.services import Forbidden, Unauthorized
from gateway.services.api_keys import KEY_PREFIX, MerchantKey, authenticate_key, require_scope
from gateway.services.merchant_sessions import SESSION_PREFIX as MERCHANT_SESSION_PREFIX
from gateway.services.merchant_sessions import authenticate_merchant_session
from gateway.services.order_lists import Visibility
from gateway.services.siwe import SESSION_PREFIX, authenticate_session

__all__ = [
    "MerchantKeyDep",
    "OperatorOnlyDep",
    "Principal",
    "PrincipalDep",
    "credential_scope",
    "merchant_with",
    "visibility_of",
]


@dataclasses.dataclass(frozen=True)
class Principal:
    operator: bool = False
    merchant: MerchantKey | None = None
    buyer: str | None = None

    @property
    def anonymous(self) -> bool:
        return not self.operator and self.merchant is None and self.buyer is None


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="One of: the operator key; a merchant API key `ck_live_<prefix>_<secret>`; a merchant "
    "wallet session `cm_sess_...` from POST /v1/auth/siwe/merchant; a buyer session `cs_sess_...` from "
    "POST /v1/auth/siwe. Optional where the route says so; a wrong one is 401.",
)


def get_principal(
    request: Request,
    response: Response,
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if "authorization" not in request.headers:
        return Principal()
    if credentials is None:
        raise Unauthorized("the Authorization header must be `Bearer <credential>`")
    token = credentials.credentials
    if len(token) > 512:
        raise Unauthorized("invalid credentials")
    if token.startswith((KEY_PREFIX, MERCHANT_SESSION_PREFIX)):
        with context.sessions() as session:
            if token.startswith(KEY_PREFIX):
                key = authenticate_key(session, token)
            else:
                key = authenticate_merchant_session(session, token)
        allowances = context.key_quota.hit(key)
        request.state.rate_limits = allowances  # for the error handlers, should the request be refused
        response.headers.update(rate_limit_headers(allowances))
        return Principal(merchant=key)
    if token.startswith(SESSION_PREFIX):
        with context.sessions() as session:
            return Principal(buyer=authenticate_session(session, token))
    expected = context.operator_key
    if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return Principal(operator=True)
    raise Unauthorized("the Authorization header does not hold a valid credential")


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _operator_only(principal: PrincipalDep) -> Principal:
    if principal.anonymous:
        raise Unauthorized("this request needs the operator key")
    if not principal.operator:
        raise Forbidden("only the operator may do this")
    return principal


OperatorOnlyDep = Annotated[Principal, Depends(_operator_only)]


def merchant_with(scope: str | None) -> Callable[[Principal], MerchantKey]:
    """A dependency: the calling merchant's key or wallet session, which must carry ``scope`` (None:
    any scope)."""

    def dependency(principal: PrincipalDep) -> MerchantKey:
        if principal.anonymous:
            raise Unauthorized("this request needs a merchant API key or wallet session")
        if principal.merchant is None:
            raise Forbidden("this request needs a merchant API key or wallet session")
        if scope is not None:
            require_scope(principal.merchant, scope)
        return principal.merchant

    return dependency


MerchantKeyDep = Annotated[MerchantKey, Depends(merchant_with(None))]


def visibility_of(principal: Principal) -> Visibility:
    """Whose orders ``principal`` may list or read in full: the operator all, a merchant key (or wallet
    session) with `orders:read` its own, a buyer session its wallet's. Anonymous callers none (401)."""
    if principal.operator:
        return Visibility()
    if principal.merchant is not None:
        require_scope(principal.merchant, "orders:read")
        return Visibility(merchant=principal.merchant.merchant_address)
    if principal.buyer is not None:
        return Visibility(buyer=principal.buyer)
    raise Unauthorized("this needs credentials: the operator key, a merchant API key or a buyer session")


def credential_scope(context: GatewayContext, authorization: str) -> str | None:
    """Whose ``Authorization`` header this is, for scoping Idempotency-Keys: ``operator``,
    ``merchant:<id>`` (all of a merchant's keys and wallet sessions share one scope, so a retry after a
    key rotation still replays) or ``buyer:<address>``; None when it does not verify (the route will
    answer 401). Counts nothing against a quota."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    try:
        if token.startswith(KEY_PREFIX):
            with context.sessions() as session:
                return f"merchant:{authenticate_key(session, token).merchant_id}"
        if token.startswith(MERCHANT_SESSION_PREFIX):
            with context.sessions() as session:
                return f"merchant:{authenticate_merchant_session(session, token).merchant_id}"
        if token.startswith(SESSION_PREFIX):
            with context.sessions() as session:
                return f"buyer:{authenticate_session(session, token)}"
    except Unauthorized:
        return None
    expected = context.operator_key
    if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return "operator"
    return None
