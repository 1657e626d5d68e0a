"""Fixtures for the oracle tests: a real dev chain node per test module, reached over HTTP JSON-RPC."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import HTTPProvider, Web3

from cardless.devchain.node import DevNode


@pytest.fixture(scope="module")
def node() -> Iterator[DevNode]:
    """The embedded py-evm chain served on a free loopback port, fresh for each test module."""
    with DevNode(port=0) as node:
        yield node


@pytest.fixture(scope="module")
def w3(node: DevNode) -> Web3:
    """A plain web3 client of the node, as any wallet or service would connect."""
    return Web3(HTTPProvider(node.url))
