"""Request signals kept at quote time: the client's network (IPv4 /24, IPv6 /48) and user agent, each as
a keyed hash (they identify a person), purged after the operator's retention period."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cardless.ledger.cipher import AccountCipher
from cardless.ledger.models import utcnow
from cardless.ledger.risk.models import RequestSignal

__all__ = ["network_of", "purge_signals", "request_signal"]


def network_of(client: str) -> str:
    """The /24 of an IPv4 address, the /48 of an IPv6 one (an IPv4-mapped IPv6 address counts as IPv4);
    anything else (a test client, a Unix socket) as given."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client[:100]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def request_signal(
    cipher: AccountCipher,
    *,
    order_id: str,
    buyer: str,
    account_hash: str | None,
    client: str,
    user_agent: str,
    at: datetime | None = None,
) -> RequestSignal:
    return RequestSignal(
        order_id=order_id,
        buyer=buyer,
        account_hash=account_hash,
        network_hash=cipher.keyed_hash("network", network_of(client)),
        agent_hash=cipher.keyed_hash("agent", user_agent[:512]),
        seen_at=at or utcnow(),
    )


def purge_signals(
    session: Session, retention: timedelta, *, now: datetime | None = None, batch: int = 5_000
) -> int:
    """Delete signals older than ``retention``; at most ``batch`` per call. Returns how many."""
    cutoff = (now or utcnow()) - retention
    ids = list(
        session.execute(
            select(RequestSignal.order_id).where(RequestSignal.seen_at < cutoff).limit(batch)
        ).scalars()
    )
    if ids:
        session.execute(delete(RequestSignal).where(RequestSignal.order_id.in_(ids)))
    return len(ids)
