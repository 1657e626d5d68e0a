"""anvil (npm ``@foundry-rs/anvil``) for the tests: one node per test module, the dev accounts unlocked.

``anvil`` is a module-scoped fixture (anvil starts in about 0.1 s, but a module's tests share one node
and wrap each test in ``rolled_back(anvil_w3)``); ``running_anvil()`` is the same as a context manager
for tests and benches that start their own (a second node, special flags)::

    with running_anvil("--no-mining") as node:
        w3 = Web3(HTTPProvider(node.url))

Both start ``cardless.devchain.anvil.AnvilNode``: chain id 31337, a free loopback port, keys ``1..10``
funded with 1,000,000 ETH and unlocked (the embedded chain's dev accounts; anvil's own mnemonic
accounts are not created), killed on exit. anvil mines asynchronously: wait for receipts
(``w3.eth.wait_for_transaction_receipt``), never assume the block exists when the hash returns.
A missing anvil fails the test (``npm ci``), it never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from web3 import HTTPProvider, Web3

from cardless.devchain.anvil import AnvilError, AnvilNode

__all__ = ["anvil", "anvil_w3", "running_anvil"]


@contextmanager
def running_anvil(*extra_args: str) -> Iterator[AnvilNode]:
    """An anvil with the dev accounts on a free loopback port, killed when the block ends."""
    try:
        node = AnvilNode(extra_args=tuple(extra_args)).start()
    except AnvilError as exc:
        pytest.fail(str(exc))
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilNode]:
    """One anvil per test module (chain id 31337, dev accounts 1..10 unlocked)."""
    with running_anvil() as node:
        yield node


@pytest.fixture(scope="module")
def anvil_w3(anvil: AnvilNode) -> Web3:
    """A plain web3 client of the module's anvil."""
    return Web3(HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
