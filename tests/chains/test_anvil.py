"""The shared chain suite on anvil (npm ``@foundry-rs/anvil``), plus what only a real node can show:
reorganisations (``anvil_reorg``, ``evm_snapshot``/``evm_revert``) and stuck transactions (automine off,
the base fee raised)."""

from __future__ import annotations

import pytest

from cardless.devchain.anvil import AnvilNode
from tests.chains.backends import AnvilBackend
from tests.chains.flows_suite import EscrowFlowSuite
from tests.chains.txmanager_suite import TxManagerSuite
from tests.chains.watcher_suite import WatcherSuite


@pytest.fixture(scope="module")
def backend(anvil: AnvilNode) -> AnvilBackend:
    return AnvilBackend(anvil)


class TestWatcherAnvil(WatcherSuite):
    pass


class TestTxManagerAnvil(TxManagerSuite):
    pass


class TestEscrowFlowsAnvil(EscrowFlowSuite):
    pass
