"""The embedded chain over HTTP JSON-RPC, driven by a plain ``Web3(HTTPProvider(url))`` client.

``ChainRpcSuite`` is what Cardless needs from any JSON-RPC chain; it is bound here to the DevNode and
can be bound to anvil by an integration test that provides the same fixtures (``w3``, ``dev_keys``,
``system``). The tests after it cover what only the DevNode has: the transaction-hash index, its
JSON-RPC error handling and its loopback-only binding.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import PyEVMBackend
from eth_utils import event_abi_to_log_topic, keccak
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError

from cardless.devchain.deploy import DEV_MINT_AMOUNT, deploy_dev_system
from cardless.devchain.node import DevNode
from cardless.protocol import NATIVE_TOKEN, Order, account_commitment, quote_typed_data, sign
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment
from cardless.protocol.reverts import RevertDecoder, revert_data
from tests.support.node import rolled_back, rpc

QUOTE_KEY = Account.from_key(keccak(b"cardless-devnode-test-quote-signer"))
ORACLE_KEY = Account.from_key(keccak(b"cardless-devnode-test-oracle-signer"))


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dev_keys(node: DevNode) -> list[LocalAccount]:
    return node.chain.accounts


@pytest.fixture(scope="module")
def system(w3: Web3) -> Deployment:
    return deploy_dev_system(w3, quote_signer=QUOTE_KEY.address, oracle_signer=ORACLE_KEY.address)


@pytest.fixture(autouse=True)
def _rolled_back(w3: Web3, system: Deployment) -> Iterator[None]:
    """Every test starts from the deployed system; its blocks are reverted afterwards."""
    with rolled_back(w3):
        yield


def erc20(w3: Web3, system: Deployment) -> Contract:
    return w3.eth.contract(
        address=system.token("tUSDC").address, abi=load_artifact("test-helpers/MockERC20").abi
    )


def escrow(w3: Web3, system: Deployment) -> Contract:
    return w3.eth.contract(address=system.escrow, abi=load_artifact("CardlessEscrow").abi)


def native_order(w3: Web3, buyer: str, merchant: str, amount: int = 10**15) -> Order:
    now = int(w3.eth.get_block("latest")["timestamp"])
    return Order(
        order_id=os.urandom(32),
        buyer=buyer,
        merchant=merchant,
        token=NATIVE_TOKEN,
        amount=amount,
        fee_bps=250,
        quote_expiry=now + 600,
        fulfilment_deadline=now + 3_600,
        sku_hash=keccak(b"sku:genshin-60"),
        account_commitment=account_commitment("player#1", b"\x01" * 32),
    )


def send_signed(w3: Web3, key: LocalAccount, tx: dict[str, Any]) -> bytes:
    signed = key.sign_transaction(tx)
    return bytes(w3.eth.send_raw_transaction(signed.raw_transaction))


# ---------------------------------------------------------------------- any chain


class ChainRpcSuite:
    """What Cardless relies on from a JSON-RPC chain, exercised through a remote web3 client."""

    def test_chain_id_matches_the_deployment(self, w3: Web3, system: Deployment) -> None:
        assert w3.eth.chain_id == system.chain_id
        assert int(w3.net.version) == system.chain_id

    def test_dev_accounts_hold_eth_and_the_test_stablecoin(
        self, w3: Web3, dev_keys: list[LocalAccount], system: Deployment
    ) -> None:
        usdc = erc20(w3, system)
        assert (usdc.functions.name().call(), usdc.functions.symbol().call()) == ("Test USD Coin", "tUSDC")
        assert usdc.functions.decimals().call() == 6
        assert [k.address for k in dev_keys] == list(w3.eth.accounts)[: len(dev_keys)]
        for key in dev_keys:
            assert w3.eth.get_balance(key.address) > 1_000 * 10**18
            assert usdc.functions.balanceOf(key.address).call() == DEV_MINT_AMOUNT

    def test_raw_signed_erc20_transfer_and_its_receipt(
        self, w3: Web3, dev_keys: list[LocalAccount], system: Deployment
    ) -> None:
        usdc = erc20(w3, system)
        sender, receiver = dev_keys[2], dev_keys[3]
        tx = usdc.functions.transfer(receiver.address, 25 * 10**6).build_transaction(
            {"from": sender.address, "nonce": w3.eth.get_transaction_count(sender.address)}
        )
        tx_hash = send_signed(w3, sender, dict(tx))

        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
        assert receipt["status"] == 1
        assert receipt["transactionHash"] == tx_hash
        assert receipt["blockNumber"] == w3.eth.block_number
        assert receipt["from"] == sender.address and receipt["to"] == usdc.address
        (event,) = usdc.events.Transfer().process_receipt(receipt)
        assert (event["args"]["from"], event["args"]["to"], event["args"]["value"]) == (
            sender.address,
            receiver.address,
            25 * 10**6,
        )
        transaction = w3.eth.get_transaction(tx_hash)
        assert transaction["blockHash"] == receipt["blockHash"]
        assert transaction["nonce"] == tx["nonce"]
        assert usdc.functions.balanceOf(receiver.address).call() == DEV_MINT_AMOUNT + 25 * 10**6

    def test_unlocked_account_sends_without_gas_or_fees(self, w3: Web3, dev_keys: list[LocalAccount]) -> None:
        sender, receiver = dev_keys[4].address, dev_keys[5].address
        before = w3.eth.get_balance(receiver)
        tx_hash = w3.eth.send_transaction({"from": sender, "to": receiver, "value": 12345})
        assert w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)["status"] == 1
        assert w3.eth.get_balance(receiver) == before + 12345

    def test_custom_error_surfaces_with_decodable_data(
        self, w3: Web3, dev_keys: list[LocalAccount], system: Deployment
    ) -> None:
        contract = escrow(w3, system)
        decoder = RevertDecoder([contract.abi])
        buyer, merchant, impostor = dev_keys[2], dev_keys[5], Account.create()
        order = native_order(w3, buyer.address, merchant.address)
        signature = sign(impostor.key, quote_typed_data(system.domain, order))
        call = contract.functions.pay(order.as_tuple(), impostor.address, signature)

        for attempt in (
            lambda: call.call({"from": buyer.address, "value": order.amount}),
            lambda: call.estimate_gas({"from": buyer.address, "value": order.amount}),
            lambda: call.transact({"from": buyer.address, "value": order.amount}),  # estimates first
        ):
            with pytest.raises(ContractCustomError) as raised:
                attempt()
            decoded = decoder.from_exception(raised.value)
            assert decoded is not None
            assert (decoded.name, decoded.args_) == ("UnauthorisedQuoteSigner", (impostor.address,))
            assert revert_data(raised.value) == decoded.data

    def test_reverting_transaction_is_mined_with_status_zero(
        self, w3: Web3, dev_keys: list[LocalAccount], system: Deployment
    ) -> None:
        usdc = erc20(w3, system)
        sender = dev_keys[6]
        tx = usdc.functions.transfer(dev_keys[7].address, DEV_MINT_AMOUNT + 1).build_transaction(
            {
                "from": sender.address,
                "nonce": w3.eth.get_transaction_count(sender.address),
                "gas": 100_000,  # given, so the client does not estimate (which would refuse)
            }
        )
        receipt = w3.eth.wait_for_transaction_receipt(send_signed(w3, sender, dict(tx)), timeout=10)
        assert receipt["status"] == 0
        assert receipt["logs"] == []

    def test_batch_request(self, w3: Web3, dev_keys: list[LocalAccount], system: Deployment) -> None:
        usdc = erc20(w3, system)
        with w3.batch_requests() as batch:
            batch.add(w3.eth.get_block("latest"))
            batch.add(w3.eth.get_balance(dev_keys[0].address))
            batch.add(usdc.functions.balanceOf(dev_keys[1].address))
            block, balance, token_balance = batch.execute()
        assert block["number"] == w3.eth.block_number
        assert balance == w3.eth.get_balance(dev_keys[0].address)
        assert token_balance == DEV_MINT_AMOUNT

    def test_get_logs_returns_the_escrow_events(
        self, w3: Web3, dev_keys: list[LocalAccount], system: Deployment
    ) -> None:
        contract = escrow(w3, system)
        buyer, merchant = dev_keys[2], dev_keys[5]
        order = native_order(w3, buyer.address, merchant.address)
        signature = sign(QUOTE_KEY.key, quote_typed_data(system.domain, order))
        tx_hash = contract.functions.pay(order.as_tuple(), QUOTE_KEY.address, signature).transact(
            {"from": buyer.address, "value": order.amount}
        )
        paid_block = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)["blockNumber"]

        topics = {event_abi_to_log_topic(e): e["name"] for e in contract.abi if e["type"] == "event"}
        logs = w3.eth.get_logs({"address": contract.address, "fromBlock": system.deployed_block})
        names = [topics[bytes(log["topics"][0])] for log in logs]
        # the escrow's construction and configuration (deploy_escrow), then the payment
        assert {"OwnershipTransferred", "QuoteSignerSet", "OracleSignerSet"} <= set(names)
        assert names.count("TokenAllowedSet") == 2  # tUSDC and ETH
        assert names[-1] == "OrderPaid"

        paid_topic = Web3.to_hex(next(t for t, name in topics.items() if name == "OrderPaid"))
        (paid,) = w3.eth.get_logs(
            {
                "address": contract.address,
                "fromBlock": paid_block,
                "toBlock": paid_block,
                "topics": [paid_topic],
            }
        )
        event = contract.events.OrderPaid().process_log(paid)
        assert Order.from_event(event["args"]) == order
        assert paid["transactionHash"] == tx_hash
        assert w3.eth.get_logs({"address": contract.address, "blockHash": paid["blockHash"]}) == [paid]

    def test_snapshot_and_revert(self, w3: Web3, dev_keys: list[LocalAccount]) -> None:
        sender, receiver = dev_keys[8].address, dev_keys[9].address
        head, balance = w3.eth.block_number, w3.eth.get_balance(receiver)
        snapshot = rpc(w3, "evm_snapshot")
        tx_hash = w3.eth.send_transaction({"from": sender, "to": receiver, "value": 10**18})
        assert w3.eth.get_balance(receiver) == balance + 10**18

        assert rpc(w3, "evm_revert", snapshot) is True
        assert (w3.eth.block_number, w3.eth.get_balance(receiver)) == (head, balance)
        with pytest.raises(Exception, match="not found"):
            w3.eth.get_transaction_receipt(tx_hash)
        # The chain moves on from the snapshot: a new transaction takes the reverted one's block.
        other = w3.eth.send_transaction({"from": sender, "to": receiver, "value": 2})
        assert w3.eth.get_transaction_receipt(other)["blockNumber"] == head + 1

    def test_time_travel(self, w3: Web3) -> None:
        before = int(w3.eth.get_block("latest")["timestamp"])
        rpc(w3, "evm_increaseTime", 3_600)
        rpc(w3, "evm_mine")  # anvil applies the increase to the next block; the DevNode already mined one
        assert int(w3.eth.get_block("latest")["timestamp"]) >= before + 3_600

        target = int(w3.eth.get_block("latest")["timestamp"]) + 86_400
        rpc(w3, "evm_mine", target)
        assert int(w3.eth.get_block("latest")["timestamp"]) == target

        rpc(w3, "evm_setNextBlockTimestamp", target + 600)
        tx_hash = w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": w3.eth.accounts[1], "value": 1})
        mined_in = w3.eth.get_transaction_receipt(tx_hash)["blockNumber"]
        assert int(w3.eth.get_block(mined_in)["timestamp"]) == target + 600

    def test_fee_history_supports_eip1559_clients(self, w3: Web3) -> None:
        history = w3.eth.fee_history(4, "latest", [25, 75])
        assert len(history["baseFeePerGas"]) == len(history["gasUsedRatio"]) + 1
        assert history["oldestBlock"] + len(history["gasUsedRatio"]) - 1 == w3.eth.block_number
        assert all(len(r) == 2 for r in history["reward"])
        assert w3.eth.max_priority_fee > 0


class TestDevNodeRpc(ChainRpcSuite):
    """The suite on the embedded DevNode."""


# ---------------------------------------------------------------------- the DevNode only


def _best_time(fn: Callable[[], Any], runs: int = 25) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_receipt_lookup_cost_does_not_grow_with_the_chain(node: DevNode, w3: Web3) -> None:
    """eth-tester scans blocks backwards for a receipt; the DevNode's index goes straight to it."""
    sender, receiver = node.chain.accounts[1].address, node.chain.accounts[2].address
    early = bytes(w3.eth.send_transaction({"from": sender, "to": receiver, "value": 1}))
    early_block = w3.eth.block_number

    def lookups() -> tuple[float, float]:
        with node.lock:
            ours = node.backend.get_transaction_receipt(early)
            theirs = PyEVMBackend.get_transaction_receipt(node.backend, early)
            assert ours == theirs
            return (
                _best_time(lambda: node.backend.get_transaction_receipt(early)),
                _best_time(lambda: PyEVMBackend.get_transaction_receipt(node.backend, early), runs=5),
            )

    ours_before, theirs_before = lookups()
    head_before = w3.eth.block_number
    for _ in range(3):  # 300 blocks: 150 with a transaction each, 150 empty
        for _ in range(50):
            w3.eth.send_transaction({"from": sender, "to": receiver, "value": 1})
        rpc(w3, "anvil_mine", 50)
    head_after = w3.eth.block_number
    ours_after, theirs_after = lookups()
    over_http = _best_time(lambda: w3.eth.get_transaction_receipt(early), runs=10)

    print(
        f"\nreceipt lookup of the transaction in block {early_block}, best of runs:\n"
        f"  head {head_before:>4}: DevNode index {ours_before * 1e6:8.0f} us   "
        f"eth-tester scan {theirs_before * 1e6:8.0f} us\n"
        f"  head {head_after:>4}: DevNode index {ours_after * 1e6:8.0f} us   "
        f"eth-tester scan {theirs_after * 1e6:8.0f} us\n"
        f"  head {head_after:>4}: eth_getTransactionReceipt over HTTP {over_http * 1e6:8.0f} us"
    )
    assert head_after - head_before >= 300
    assert theirs_after > 5 * theirs_before, "eth-tester no longer scans; is the index still needed?"
    assert ours_after < 3 * ours_before, "the indexed lookup got slower as the chain grew"
    assert ours_after < theirs_after / 10


def test_index_follows_snapshot_reverts(node: DevNode, w3: Web3) -> None:
    key, receiver = node.chain.accounts[3], node.chain.accounts[4].address
    snapshot = rpc(w3, "evm_snapshot")
    tx = {
        "to": receiver,
        "value": 7,
        "gas": 21_000,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
        "nonce": w3.eth.get_transaction_count(key.address),
        "chainId": w3.eth.chain_id,
    }
    tx_hash = send_signed(w3, key, tx)
    first_block = w3.eth.get_transaction_receipt(tx_hash)["blockNumber"]
    rpc(w3, "evm_revert", snapshot)
    assert w3.provider.make_request("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])["result"] is None

    rpc(w3, "anvil_mine", 2)  # the same signed transaction lands two blocks later this time
    assert send_signed(w3, key, tx) == tx_hash
    receipt = w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["blockNumber"] == first_block + 2
    assert w3.eth.get_transaction(tx_hash)["blockNumber"] == first_block + 2


def test_concurrent_clients_are_serialised(node: DevNode, w3: Web3) -> None:
    senders = node.chain.accounts[:5]
    receiver = node.chain.accounts[9].address
    before = w3.eth.get_balance(receiver)
    errors: list[BaseException] = []

    def client(key: LocalAccount) -> None:
        own = Web3(HTTPProvider(node.url))
        try:
            for _ in range(5):
                tx_hash = own.eth.send_transaction({"from": key.address, "to": receiver, "value": 1})
                assert own.eth.get_transaction_receipt(tx_hash)["status"] == 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(key,)) for key in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert w3.eth.get_balance(receiver) == before + 25


def test_json_rpc_protocol_errors(node: DevNode) -> None:
    with httpx.Client(base_url=node.url) as http:

        def post(body: str | bytes) -> httpx.Response:
            return http.post("/", content=body, headers={"Content-Type": "application/json"})

        assert post(b"{not json").json()["error"]["code"] == -32700
        assert post(b"[]").json()["error"]["code"] == -32600
        assert post(b"42").json()["error"]["code"] == -32600
        unknown = post(b'{"jsonrpc":"2.0","id":7,"method":"eth_mineGold","params":[]}').json()
        assert (unknown["id"], unknown["error"]["code"]) == (7, -32601)
        bad = post(b'{"jsonrpc":"2.0","id":"a","method":"evm_increaseTime","params":["soon"]}').json()
        assert (bad["id"], bad["error"]["code"]) == ("a", -32602)
        assert "seconds" in bad["error"]["message"]
        assert post(b'{"jsonrpc":"2.0","method":"eth_blockNumber","params":[]}').status_code == 204

        batch = post(
            b'[{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]},'
            b'{"jsonrpc":"2.0","id":2,"method":"no_such","params":[]},'
            b'{"jsonrpc":"2.0","method":"eth_blockNumber"},'
            b'{"jsonrpc":"2.0","id":3,"method":"eth_getBalance","params":["0x0000000000000000000000000000000000000000","latest"]}]'
        ).json()
        assert [r["id"] for r in batch] == [1, 2, 3]
        assert batch[0]["result"] == hex(node.chain_id)
        assert batch[1]["error"]["code"] == -32601
        assert batch[2]["result"].startswith("0x")
        assert http.get("/").status_code == 405


def test_binds_only_to_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        DevNode(host="0.0.0.0")


# ---------------------------------------------------------------- group commit (cardless.devchain.mining)


def _transfer(key: LocalAccount, to: str, nonce: int, value: int = 1) -> bytes:
    tx = {
        "to": to,
        "value": value,
        "gas": 21_000,
        "nonce": nonce,
        "chainId": 31337,
        "maxFeePerGas": 10 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    return bytes(key.sign_transaction(tx).raw_transaction)


def test_transactions_queued_together_are_mined_in_one_block_each_admitted_on_its_own(
    node: DevNode, w3: Web3, dev_keys: list[LocalAccount]
) -> None:
    a, b, sink = dev_keys[2], dev_keys[3], dev_keys[4].address
    nonce_a = w3.eth.get_transaction_count(a.address)
    nonce_b = w3.eth.get_transaction_count(b.address)
    head = w3.eth.block_number
    raws = [
        _transfer(a, sink, nonce_a),
        _transfer(a, sink, nonce_a + 1),  # the next nonce of the same sender: admitted after the first
        _transfer(b, sink, nonce_b + 5),  # a gap: refused as it would be alone
        _transfer(b, sink, nonce_b),
        _transfer(a, sink, nonce_a),  # replayed: its nonce is now used
    ]
    with node.lock:
        results = node.rpc.mine([node.rpc.decode_raw(raw) for raw in raws])
    mined = [r for r in results if isinstance(r, bytes)]
    errors = [str(r) for r in results if not isinstance(r, bytes)]
    assert len(mined) == 3
    assert errors == [
        f"nonce too high: next nonce {nonce_b}, tx nonce {nonce_b + 5}",
        f"nonce too low: next nonce {nonce_a + 2}, tx nonce {nonce_a}",
    ]
    assert w3.eth.block_number == head + 1  # one block for the three
    receipts = [w3.eth.get_transaction_receipt(tx_hash) for tx_hash in mined]
    assert [r["transactionIndex"] for r in receipts] == [0, 1, 2]
    assert {r["blockNumber"] for r in receipts} == {head + 1} and all(r["status"] == 1 for r in receipts)
    assert [r["cumulativeGasUsed"] for r in receipts] == [21_000, 42_000, 63_000]
    assert w3.eth.get_transaction_count(a.address) == nonce_a + 2


def test_concurrent_senders_over_http_each_get_their_transaction_mined_before_the_answer(
    node: DevNode, w3: Web3, dev_keys: list[LocalAccount]
) -> None:
    senders, per_sender = dev_keys[2:6], 5
    sink = dev_keys[6].address
    head = w3.eth.block_number
    answers: dict[str, list[Any]] = {}

    def send(key: LocalAccount) -> None:
        nonce = w3.eth.get_transaction_count(key.address)
        client = Web3(HTTPProvider(node.url))
        answers[key.address] = [
            client.provider.make_request("eth_sendRawTransaction", ["0x" + _transfer(key, sink, n).hex()])  # type: ignore[arg-type]
            for n in range(nonce, nonce + per_sender)
        ]

    threads = [threading.Thread(target=send, args=(key,)) for key in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hashes = [reply["result"] for replies in answers.values() for reply in replies]
    assert len(hashes) == len(senders) * per_sender
    receipts = [w3.eth.get_transaction_receipt(h) for h in hashes]  # mined before each answer
    assert all(r["status"] == 1 for r in receipts)
    blocks = {r["blockNumber"] for r in receipts}
    assert max(blocks) - head == len(blocks) <= len(hashes)  # consecutive blocks, none empty
