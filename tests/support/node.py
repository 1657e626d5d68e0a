"""A dev chain node per test module, reached over HTTP JSON-RPC, and the JSON-RPC helpers its tests use.

``rpc`` sends one raw JSON-RPC request and fails the test on an error reply; ``rolled_back`` is the
per-test snapshot a module's autouse fixture wraps around each test::

    @pytest.fixture(autouse=True)
    def _rolled_back(w3: Web3, system: Deployment) -> Iterator[None]:
        with rolled_back(w3):
            yield
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from web3 import HTTPProvider, Web3

from cardless.devchain.node import DevNode

__all__ = ["node", "rolled_back", "rpc", "w3"]


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    """Send one JSON-RPC request (``evm_snapshot``, ``anvil_mine``, ...) and return its result."""
    response = w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response["result"]


@contextmanager
def rolled_back(w3: Web3) -> Iterator[None]:
    """Everything the block does on the chain is reverted afterwards (``evm_snapshot``/``evm_revert``)."""
    snapshot = rpc(w3, "evm_snapshot")
    try:
        yield
    finally:
        assert rpc(w3, "evm_revert", snapshot) is True


@pytest.fixture(scope="module")
def node() -> Iterator[DevNode]:
    """The embedded py-evm chain served on a free loopback port, fresh for each test module."""
    with DevNode(port=0) as node:
        yield node


@pytest.fixture(scope="module")
def w3(node: DevNode) -> Web3:
    """A plain web3 client of the node, as any wallet or service would connect."""
    return Web3(HTTPProvider(node.url))
