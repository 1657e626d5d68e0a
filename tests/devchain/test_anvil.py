"""The anvil launcher (``cardless.devchain.anvil``, ``tests/support/anvil.py``): anvil from npm on a free
loopback port, chain id 31337, the embedded chain's dev accounts funded and unlocked, killed on exit."""

from __future__ import annotations

import os

import pytest
from web3 import HTTPProvider, Web3

from cardless.devchain.anvil import DEV_ACCOUNT_BALANCE, AnvilError, AnvilNode, anvil_binary, dev_accounts
from cardless.devchain.node import DevNode
from tests.support.anvil import running_anvil


def test_anvil_has_the_dev_chains_accounts_and_id(anvil: AnvilNode, anvil_w3: Web3) -> None:
    assert anvil.url.startswith("http://127.0.0.1:")
    assert anvil_w3.eth.chain_id == 31337
    keys_1_to_10 = [a.address for a in dev_accounts()]
    with DevNode(port=0) as embedded:  # the same accounts as the embedded chain, and no others
        assert sorted(Web3(HTTPProvider(embedded.url)).eth.accounts) == sorted(keys_1_to_10)
    assert sorted(anvil_w3.eth.accounts) == sorted(keys_1_to_10)
    assert {anvil_w3.eth.get_balance(a) for a in keys_1_to_10} == {DEV_ACCOUNT_BALANCE}
    # unlocked: the node signs for them, as the embedded node does
    tx = anvil_w3.eth.send_transaction({"from": keys_1_to_10[2], "to": keys_1_to_10[3], "value": 5})
    assert anvil_w3.eth.wait_for_transaction_receipt(tx)["status"] == 1


def test_anvil_is_killed_on_exit_and_its_port_freed() -> None:
    with running_anvil("--block-time", "1") as node:
        pid, url = node.pid, node.url
        assert Web3(HTTPProvider(url)).eth.block_number >= 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not Web3(HTTPProvider(url, request_kwargs={"timeout": 2})).is_connected()


def test_anvils_persisted_states_go_to_a_directory_removed_at_stop() -> None:
    """Past the states it keeps in memory anvil writes each block's state to disk; by default under
    ``~/.foundry/anvil/tmp``, left behind at stop (tens of GB over a day of benches)."""
    node = AnvilNode()
    with node:
        cache = node._cache
        assert cache is not None and cache.is_dir()
        with open(f"/proc/{node.pid}/cmdline", "rb") as cmdline:
            assert cmdline.read().split(b"\0").count(str(cache).encode()) == 1
    assert not cache.exists()


def test_a_port_in_use_is_a_clear_error(anvil: AnvilNode) -> None:
    port = int(anvil.url.rsplit(":", 1)[1])
    with pytest.raises(AnvilError, match="anvil exited"):
        AnvilNode(port=port).start()


def test_the_binary_comes_from_node_modules() -> None:
    assert "node_modules" in anvil_binary().parts
