"""Request signals kept at quote time: the client's network (IPv4 /24, IPv6 /48) and user agent, each as
a keyed hash (they identify a person), purged after the operator's retention period."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cardless.ledger.cipher import AccountCipher
from cardless.ledger.models import utcnow
from cardless.ledger.risk.models import RequestSignal

__all__ = ["MAX_KEPT_HASHES", "network_of", "purge_signals", "request_signal", "request_signal_values"]


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


MAX_KEPT_HASHES: Final = 4096
"""Keyed hashes of client networks and user agents a caller's ``hashes`` keeps (then it starts again)."""


def request_signal_values(
    cipher: AccountCipher,
    *,
    order_id: str,
    buyer: str,
    account_hash: str | None,
    client: str,
    user_agent: str,
    at: datetime | None = None,
    hashes: dict[tuple[str, str], str] | None = None,
) -> dict[str, Any]:
    """A quote's request signal as column values (what :func:`request_signal` builds), for a caller that
    inserts it with Core. ``hashes``, when given, keeps the keyed hashes of the client's network and of the
    user agent between calls (a flash sale's clients come back; parsing the address and two HMACs were a
    twentieth of a quote), at most :data:`MAX_KEPT_HASHES` of them, each kept by at most 512 characters."""

    def keyed(label: str, given: str, value: Callable[[str], str]) -> str:
        """The keyed hash of ``value(given)`` under ``label``, kept by ``given``."""
        if hashes is None or len(given) > 512:  # each kept key is short: the cache stays small
            return cipher.keyed_hash(label, value(given))
        found = hashes.get((label, given))
        if found is None:
            if len(hashes) >= MAX_KEPT_HASHES:
                hashes.clear()
            found = hashes[(label, given)] = cipher.keyed_hash(label, value(given))
        return found

    return {
        "order_id": order_id,
        "buyer": buyer,
        "account_hash": account_hash,
        "network_hash": keyed("network", client, network_of),
        "agent_hash": keyed("agent", user_agent[:512], lambda agent: agent),
        "seen_at": at or utcnow(),
    }


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
        **request_signal_values(
            cipher,
            order_id=order_id,
            buyer=buyer,
            account_hash=account_hash,
            client=client,
            user_agent=user_agent,
            at=at,
        )
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
