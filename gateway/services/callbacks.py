"""Provider status callbacks. A callback is only a hint: the oracle re-queries the provider by our key,
so a forged or replayed callback can at most cause one extra query. Forged ones are refused."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy.orm import Session

from adapters import CallbackRejected as UntrustedCallback
from adapters import ProviderAdapter
from cardless.ledger.models import Order, OrderState
from gateway.schemas import CallbackAck
from gateway.services._exceptions import CallbackRejected, InvalidField, NotFound

__all__ = ["accept_callback"]

log = logging.getLogger(__name__)

# States in which the oracle is waiting to (re)query the provider: a callback makes that happen now.
_WAITING = frozenset({OrderState.SUBMITTING.value, OrderState.UNKNOWN.value})


async def accept_callback(
    session: Session,
    adapters: Mapping[str, ProviderAdapter],
    provider: str,
    raw: bytes,
    headers: Mapping[str, str],
    now: float,
) -> CallbackAck:
    """Verify ``raw`` with the provider's adapter, then bring the oracle's next query of the order
    forward. Changes nothing when the callback is refused or names an order we do not have."""
    adapter = adapters.get(provider)
    if adapter is None:
        raise NotFound("provider", f"unknown provider {provider!r}")
    try:
        result = await adapter.verify_callback(raw, headers, now)
    except UntrustedCallback as exc:
        log.warning("rejected callback from %s: %s", provider, exc)
        raise CallbackRejected(f"callback rejected: {exc}") from exc
    if result.order_key is None:
        raise InvalidField("body", "the callback names no order")
    with session.begin():
        row = session.get(Order, result.order_key.lower())
        if row is None:
            log.warning("callback from %s for unknown order %s", provider, result.order_key)
            raise NotFound("order_id", f"order {result.order_key} not found")
        if row.state in _WAITING:
            row.next_attempt_at = None  # query now
    return CallbackAck()
