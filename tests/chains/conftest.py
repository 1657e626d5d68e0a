"""Which tests of the shared chain suite run in ``make test`` and which in ``make test-long`` (CI runs both).

``make test`` keeps the embedded node's watcher and transaction-manager suites (they were its unit
tests before the suite was shared) and, on anvil, the reorganisation and stuck-transaction core the
real-chains issue asks CI to show: a payment reorganised out before its confirmations is never topped up
(``evm_revert``), an ``anvil_reorg`` deeper than the depth undoes an unfulfilled payment, a deep reorg
after the top-up marks the order for an operator, a dropped settlement is re-sent, and a transaction
left behind by a rising base fee is replaced. Everything else here (the same suites again on anvil,
the flows on the embedded node) is ``long``: each test is cheap, but together they cost a minute of
CPU that ``make test``'s six-minute budget does not have. The anvil tests of ``make test`` share one
xdist worker, so one anvil and one deployment serve them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

IN_MAKE_TEST = (
    "test_embedded.py::TestWatcherEmbedded::",
    "test_embedded.py::TestTxManagerEmbedded::",
    "test_anvil.py::TestEscrowFlowsAnvil::test_a_payment_reorganised_out_before_its_confirmations_is_never_topped_up",
    "test_anvil.py::TestEscrowFlowsAnvil::test_a_deep_reorg_after_the_top_up_marks_the_order_for_an_operator",
    "test_anvil.py::TestEscrowFlowsAnvil::test_a_settlement_dropped_by_a_deep_reorg_is_re_sent",
    "test_anvil.py::TestEscrowFlowsAnvil::test_a_transaction_left_behind_by_a_rising_base_fee",
    "test_anvil.py::TestAnvilReorgs::test_anvil_reorg_deeper_than_the_depth_undoes_an_unfulfilled_payment",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path)).resolve()
        if path.parent != HERE:
            continue
        local = f"{path.name}::{item.nodeid.split('::', 1)[1]}"
        if path.name == "test_anvil.py":
            item.add_marker(pytest.mark.slow)  # a node of its own: not in make test-fast
            item.add_marker(pytest.mark.xdist_group("anvil-chain-suite"))
        if not local.startswith(IN_MAKE_TEST):
            item.add_marker(pytest.mark.long)
            item.add_marker(pytest.mark.slow)  # make test-fast selects by `slow` only
