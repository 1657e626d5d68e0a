"""The shared chain suite on the embedded py-evm node (``cardless.devchain.node.DevNode``) over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cardless.devchain.node import DevNode
from tests.chains.backends import EmbeddedBackend
from tests.chains.flows_suite import EscrowFlowSuite
from tests.chains.txmanager_suite import TxManagerSuite
from tests.chains.watcher_suite import WatcherSuite


@pytest.fixture(scope="module")
def backend() -> Iterator[EmbeddedBackend]:
    with DevNode(port=0) as node:
        yield EmbeddedBackend(node)


class TestWatcherEmbedded(WatcherSuite):
    pass


class TestTxManagerEmbedded(TxManagerSuite):
    pass


class TestEscrowFlowsEmbedded(EscrowFlowSuite):
    pass
