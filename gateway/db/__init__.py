"""Storage: SQLAlchemy 2 typed models, engine/session factory, Alembic migrations."""

from gateway.db.models import (
    Base,
    ChainCursor,
    ChainTx,
    ChainTxState,
    Order,
    OrderEvent,
    OrderState,
    SeenLog,
    SignerNonce,
)
from gateway.db.session import create_engine_for, migrate, session_factory

__all__ = [
    "Base",
    "ChainCursor",
    "ChainTx",
    "ChainTxState",
    "Order",
    "OrderEvent",
    "OrderState",
    "SeenLog",
    "SignerNonce",
    "create_engine_for",
    "migrate",
    "session_factory",
]
