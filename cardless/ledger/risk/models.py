"""Risk tables: per-merchant rule configuration, block lists, request signals kept at quote time, and
every decision with its reasons (the review queue reads held decisions)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cardless.ledger.models import Base, utcnow

__all__ = ["ALL_MERCHANTS", "Decision", "RequestSignal", "RiskConfig", "RiskDecision", "RiskListEntry"]

ALL_MERCHANTS = "*"
"""``RiskListEntry.merchant`` of the operator's entries: they apply to every merchant."""


class Decision(enum.StrEnum):
    ALLOW = "allow"
    HOLD = "hold"
    REFUND = "refund"


class RiskConfig(Base):
    """A merchant's rule settings (``cardless.ledger.risk.rules.RiskRules`` as JSON); a merchant without
    a row gets the operator's defaults."""

    __tablename__ = "risk_configs"

    merchant: Mapped[str] = mapped_column(String(42), primary_key=True)  # the settlement address
    rules: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RiskListEntry(Base):
    """A blocked wallet (checksummed address) or game account (its keyed hash, never the account)."""

    __tablename__ = "risk_lists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant: Mapped[str] = mapped_column(String(42))
    """The merchant (settlement address) whose list it is, or ``*`` for the operator's (every merchant)."""
    kind: Mapped[str] = mapped_column(String(16))  # wallet | account
    value: Mapped[str] = mapped_column(String(66))
    note: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("merchant", "kind", "value", name="uq_risk_lists_entry"),
        Index("ix_risk_lists_kind_value", "kind", "value"),
    )


class RequestSignal(Base):
    """Where a quote was asked from: the client network (IPv4 /24, IPv6 /48) and the user agent, each
    as a keyed hash; kept for the operator's retention period (``purge_signals``)."""

    __tablename__ = "risk_signals"

    order_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    buyer: Mapped[str] = mapped_column(String(42))
    account_hash: Mapped[str | None] = mapped_column(String(64))
    network_hash: Mapped[str] = mapped_column(String(64))
    agent_hash: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    # "Seen from this network (client) before?" is one index probe per question, however many signals
    # a heavy buyer or account has; the same indexes answer "any signal before?" from their first entry.
    __table_args__ = (
        Index("ix_risk_signals_buyer_network", "buyer", "network_hash", "seen_at"),
        Index("ix_risk_signals_buyer_agent", "buyer", "agent_hash", "seen_at"),
        Index("ix_risk_signals_account_network", "account_hash", "network_hash", "seen_at"),
        Index("ix_risk_signals_account_agent", "account_hash", "agent_hash", "seen_at"),
    )


class RiskDecision(Base):
    """One decision on one paid order, with its score and reasons; a review closes a hold."""

    __tablename__ = "risk_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(String(66), index=True)
    merchant: Mapped[str] = mapped_column(String(42))
    decision: Mapped[str] = mapped_column(String(16))
    score: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    review_action: Mapped[str | None] = mapped_column(String(16))  # approve | refund | expired
    reviewer: Mapped[str | None] = mapped_column(String(80))
    reviewed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_risk_decisions_merchant_decision", "merchant", "decision", "decided_at"),)
