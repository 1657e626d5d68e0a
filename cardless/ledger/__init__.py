"""Storage: SQLAlchemy 2 typed models, engine/session factory, Alembic migrations."""

from cardless.ledger.engine import create_engine_for, migrate, session_factory
from cardless.ledger.models import (
    Base,
    ChainCursor,
    ChainReorg,
    ChainTx,
    ChainTxOrder,
    ChainTxState,
    Order,
    OrderEvent,
    OrderState,
    SeenLog,
    SignerNonce,
)

__all__ = [
    "Base",
    "ChainCursor",
    "ChainReorg",
    "ChainTx",
    "ChainTxOrder",
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
