"""Storage: SQLAlchemy 2 typed models, engine/session factory, Alembic migrations."""

from cardless.ledger.engine import create_engine_for, migrate, session_factory
from cardless.ledger.models import (
    Base,
    ChainCursor,
    ChainTx,
    ChainTxOrder,
    ChainTxState,
    Order,
    OrderEvent,
    OrderState,
    SeenLog,
    SignerNonce,
)
from cardless.ledger.outbox import (
    DeliveryStatus,
    Payout,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

__all__ = [
    "Base",
    "ChainCursor",
    "ChainTx",
    "ChainTxOrder",
    "ChainTxState",
    "DeliveryStatus",
    "Order",
    "OrderEvent",
    "OrderState",
    "Payout",
    "SeenLog",
    "SignerNonce",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "create_engine_for",
    "migrate",
    "session_factory",
]
