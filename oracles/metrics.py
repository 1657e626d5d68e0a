"""The oracle's Prometheus metrics (``prometheus_client``, the process's default registry).

Alarms are a metric *and* a log line: the metric for the dashboard and the alert rule, the log for the
person reading it. ``cardless oracle`` serves them on ``CARDLESS_METRICS_PORT`` when set
(docs/operations/chains.md lists the alert rules).

======================================  =========================================================
``cardless_chain_reorgs_total``          reorganisations that dropped applied logs (deeper than the
                                         confirmation depth): every one is an alarm
``cardless_reorg_orders_total``          orders marked for an operator by such a reorg, by reason
``cardless_chain_reorg_depth_blocks``    depth of the last such reorg
``cardless_tx_replaced_total``           stuck transactions replaced with higher fees
``cardless_tx_resent_total``             transactions the node no longer knew (dropped from its pool
                                         or reorganised out) broadcast again, same bytes
``cardless_tx_nonce_gaps_filled_total``  nonces filled with a no-op after a crash left them unused
``cardless_tx_already_done_total``       reverts that only said "already settled/refunded": success
``cardless_gas_balance_wei``             the gas key's balance
``cardless_gas_balance_low``             1 while that balance is under the alarm threshold
======================================  =========================================================
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

__all__ = [
    "GAS_BALANCE",
    "GAS_BALANCE_LOW",
    "REORGS",
    "REORG_DEPTH",
    "REORG_ORDERS",
    "TX_ALREADY_DONE",
    "TX_NONCE_GAPS",
    "TX_REPLACED",
    "TX_RESENT",
]

REORGS: Final = Counter("cardless_chain_reorgs_total", "Reorgs that dropped logs already applied")
REORG_ORDERS: Final = Counter(
    "cardless_reorg_orders_total", "Orders marked for an operator after a deep reorg", ["reason"]
)
REORG_DEPTH: Final = Gauge("cardless_chain_reorg_depth_blocks", "Depth of the last deep reorg")
TX_REPLACED: Final = Counter("cardless_tx_replaced_total", "Stuck transactions replaced with higher fees")
TX_RESENT: Final = Counter("cardless_tx_resent_total", "Transactions the node lost, broadcast again")
TX_NONCE_GAPS: Final = Counter("cardless_tx_nonce_gaps_filled_total", "Unused nonces filled with a no-op")
TX_ALREADY_DONE: Final = Counter(
    "cardless_tx_already_done_total", "Reverted transactions whose effect was already on chain"
)
GAS_BALANCE: Final = Gauge("cardless_gas_balance_wei", "Balance of the gas-paying key", ["address"])
GAS_BALANCE_LOW: Final = Gauge(
    "cardless_gas_balance_low", "1 while the gas key's balance is under the threshold", ["address"]
)
