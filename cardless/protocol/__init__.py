"""The Cardless protocol: what every other package, and an auditor, agrees on (no I/O, no database).

- EIP-712 types and digests (quotes, fulfilment proofs, batches, refunds, permits), the receipt hash
  and the account commitment: :mod:`cardless.protocol._eip712`, documented in docs/protocol.md;
- contract artifacts (:mod:`.artifacts`), revert decoding (:mod:`.reverts`), the deployment model
  (:mod:`.deployment`), bounded JSON parsing (:mod:`.jsonlimits`).

``from cardless import protocol`` then ``protocol.Order``, ``protocol.receipt_hash``, ...
"""

from cardless.protocol._eip712 import (
    DOMAIN_NAME,
    DOMAIN_VERSION,
    EIP712_DOMAIN_FIELDS,
    MAX_AMOUNT,
    MAX_BPS,
    NATIVE_TOKEN,
    ChainId,
    EscrowDomain,
    Fulfilment,
    Order,
    OrderStatus,
    RefundReason,
    Wei,
    account_commitment,
    batch_digest,
    batch_typed_data,
    fulfilment_digest,
    fulfilment_typed_data,
    order_struct_hash,
    permit_typed_data,
    quote_digest,
    quote_typed_data,
    quote_types,
    receipt_hash,
    recover_signer,
    refund_digest,
    refund_typed_data,
    sign,
)
from cardless.protocol._exceptions import (
    ArtifactError,
    CardlessError,
    ContractRevert,
    ProtocolBaseError,
    ProtocolError,
)

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "EIP712_DOMAIN_FIELDS",
    "MAX_AMOUNT",
    "MAX_BPS",
    "NATIVE_TOKEN",
    "ArtifactError",
    "CardlessError",
    "ChainId",
    "ContractRevert",
    "EscrowDomain",
    "Fulfilment",
    "Order",
    "OrderStatus",
    "ProtocolBaseError",
    "ProtocolError",
    "RefundReason",
    "Wei",
    "account_commitment",
    "batch_digest",
    "batch_typed_data",
    "fulfilment_digest",
    "fulfilment_typed_data",
    "order_struct_hash",
    "permit_typed_data",
    "quote_digest",
    "quote_typed_data",
    "quote_types",
    "receipt_hash",
    "recover_signer",
    "refund_digest",
    "refund_typed_data",
    "sign",
]
