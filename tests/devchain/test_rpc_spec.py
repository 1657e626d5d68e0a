"""The DevNode's JSON-RPC answers, checked raw over HTTP against the Ethereum execution-apis shapes.

A client library would hide most of these (web3.py fills in missing keys), so the tests post JSON and
read JSON, one behaviour each: the keys and types of blocks, transactions, receipts and logs, the
block parameters, state overrides, and the error codes and texts clients classify.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import rlp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from cardless.devchain.chain import deploy_contract
from cardless.devchain.node import DevNode

DEV_CHAIN_ID = 31337
ZERO_HASH = "0x" + "00" * 32
# Runtime code for state-override tests: return SELFBALANCE / SLOAD(0) / CREATE(0, 0, 0) as one word.
SELF_BALANCE = "0x4760005260206000f3"
SLOT_ZERO = "0x60005460005260206000f3"
CREATE_EMPTY = "0x600060006000f060005260206000f3"
TARGET = "0x" + "ab" * 20

RECEIPT_KEYS = {
    "type",
    "transactionHash",
    "transactionIndex",
    "blockHash",
    "blockNumber",
    "from",
    "to",
    "cumulativeGasUsed",
    "gasUsed",
    "contractAddress",
    "logs",
    "logsBloom",
    "status",
    "effectiveGasPrice",
}
LOG_KEYS = {
    "removed",
    "logIndex",
    "transactionIndex",
    "transactionHash",
    "blockHash",
    "blockNumber",
    "address",
    "data",
    "topics",
}
BLOCK_KEYS = {
    "hash",
    "parentHash",
    "sha3Uncles",
    "miner",
    "stateRoot",
    "transactionsRoot",
    "receiptsRoot",
    "logsBloom",
    "difficulty",
    "number",
    "gasLimit",
    "gasUsed",
    "timestamp",
    "extraData",
    "mixHash",
    "nonce",
    "baseFeePerGas",
    "withdrawalsRoot",
    "withdrawals",
    "blobGasUsed",
    "excessBlobGas",
    "parentBeaconBlockRoot",
    "size",
    "transactions",
    "uncles",
}
TX_KEYS = {"type", "nonce", "to", "gas", "value", "input", "v", "r", "s", "hash", "from"}
TX_KEYS |= {"blockHash", "blockNumber", "transactionIndex"}


class Rpc:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)

    def raw(self, method: str, *params: Any) -> dict[str, Any]:
        body: dict[str, Any] = self.http.post(
            "/", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        ).json()
        return body

    def __call__(self, method: str, *params: Any) -> Any:
        body = self.raw(method, *params)
        assert "error" not in body, body
        return body["result"]

    def error(self, method: str, *params: Any) -> dict[str, Any]:
        body = self.raw(method, *params)
        assert "error" in body, body
        error: dict[str, Any] = body["error"]
        return error


@pytest.fixture(scope="module")
def rpc(node: DevNode) -> Iterator[Rpc]:
    client = Rpc(node.url)
    yield client
    client.http.close()


@pytest.fixture(scope="module")
def token(node: DevNode) -> str:
    owner = node.chain.accounts[0].address
    usdc = deploy_contract(node.chain.w3, "test-helpers/MockERC20", "Test", "TST", 6, sender=owner)
    for key in node.chain.accounts:
        usdc.functions.mint(key.address, 10**12).transact({"from": owner})
    return str(usdc.address)


@pytest.fixture(autouse=True)
def _rolled_back(rpc: Rpc, token: str) -> Iterator[None]:
    snapshot = rpc("evm_snapshot")
    yield
    assert rpc("evm_revert", snapshot) is True


def transfer_data(to: str, amount: int) -> str:
    return (
        "0x"
        + (keccak(text="transfer(address,uint256)")[:4] + bytes(12) + bytes.fromhex(to[2:])).hex()
        + (amount.to_bytes(32, "big").hex())
    )


def balance_of_data(owner: str) -> str:
    return "0x" + (keccak(text="balanceOf(address)")[:4] + bytes(12) + bytes.fromhex(owner[2:])).hex()


def signed(key: LocalAccount, rpc: Rpc, **fields: Any) -> str:
    tx = {
        "nonce": int(rpc("eth_getTransactionCount", key.address, "pending"), 16),
        "gas": 100_000,
        "chainId": DEV_CHAIN_ID,
        "value": 0,
        **fields,
    }
    if "to" in tx:
        tx["to"] = to_checksum_address(tx["to"])
    if "gasPrice" not in tx and "maxFeePerGas" not in tx:
        tx.update(maxFeePerGas=10**10, maxPriorityFeePerGas=10**9)
    return str(key.sign_transaction(tx).raw_transaction.to_0x_hex())


def keys(node: DevNode) -> list[LocalAccount]:
    return node.chain.accounts


# ---------------------------------------------------------------------- identity


def test_chain_id_is_the_conventional_dev_chain_id(rpc: Rpc) -> None:
    assert rpc("eth_chainId") == "0x7a69"
    assert rpc("net_version") == "31337"


def test_client_identity_and_sync_state(rpc: Rpc, node: DevNode) -> None:
    assert rpc("web3_clientVersion").startswith("cardless-devnode/")
    assert rpc("net_listening") is True
    assert rpc("eth_syncing") is False
    assert rpc("eth_accounts") == [k.address for k in keys(node)]


# ---------------------------------------------------------------------- shapes


def test_receipt_has_every_specified_field(rpc: Rpc, node: DevNode, token: str) -> None:
    sender, receiver = keys(node)[2], keys(node)[3]
    tx_hash = rpc(
        "eth_sendRawTransaction", signed(sender, rpc, to=token, data=transfer_data(receiver.address, 5))
    )
    receipt = rpc("eth_getTransactionReceipt", tx_hash)
    assert set(receipt) >= RECEIPT_KEYS, RECEIPT_KEYS - set(receipt)
    assert "root" not in receipt and "stateRoot" not in receipt
    assert (receipt["type"], receipt["status"], receipt["contractAddress"]) == ("0x2", "0x1", None)
    assert receipt["from"] == sender.address.lower() and receipt["to"] == token.lower()
    assert len(bytes.fromhex(receipt["logsBloom"][2:])) == 256 and int(receipt["logsBloom"], 16) != 0
    block = rpc("eth_getBlockByHash", receipt["blockHash"], False)
    assert receipt["effectiveGasPrice"] == hex(int(block["baseFeePerGas"], 16) + 10**9)
    assert receipt["cumulativeGasUsed"] == receipt["gasUsed"] == block["gasUsed"]


def test_contract_creation_receipt_names_the_new_contract(rpc: Rpc, node: DevNode) -> None:
    deployer = keys(node)[4]
    nonce = int(rpc("eth_getTransactionCount", deployer.address, "latest"), 16)
    tx_hash = rpc(
        "eth_sendRawTransaction", signed(deployer, rpc, data="0x600a600c600039600a6000f3" + "00" * 10)
    )
    receipt = rpc("eth_getTransactionReceipt", tx_hash)
    expected = keccak(rlp.encode([bytes.fromhex(deployer.address[2:]), nonce]))[12:]
    assert receipt["to"] is None
    assert receipt["contractAddress"] == "0x" + expected.hex()
    assert rpc("eth_getTransactionByHash", tx_hash)["to"] is None


def test_logs_carry_removed_false_and_their_block_position(rpc: Rpc, node: DevNode, token: str) -> None:
    sender = keys(node)[2]
    tx_hash = rpc("eth_sendRawTransaction", signed(sender, rpc, to=token, data=transfer_data(TARGET, 7)))
    (log,) = rpc("eth_getTransactionReceipt", tx_hash)["logs"]
    assert set(log) >= LOG_KEYS, LOG_KEYS - set(log)
    assert "type" not in log
    assert log["removed"] is False
    assert (log["logIndex"], log["transactionIndex"], log["transactionHash"]) == ("0x0", "0x0", tx_hash)
    assert log["topics"][0] == "0x" + keccak(text="Transfer(address,address,uint256)").hex()
    assert rpc("eth_getLogs", {"blockHash": log["blockHash"]}) == [log]


def test_block_has_the_specified_fields(rpc: Rpc, node: DevNode, token: str) -> None:
    sender = keys(node)[2]
    rpc("eth_sendRawTransaction", signed(sender, rpc, to=token, data=transfer_data(TARGET, 1)))
    block = rpc("eth_getBlockByNumber", "latest", True)
    assert set(block) >= BLOCK_KEYS, BLOCK_KEYS - set(block)
    assert "totalDifficulty" not in block
    assert len(bytes.fromhex(block["logsBloom"][2:])) == 256
    assert len(bytes.fromhex(block["nonce"][2:])) == 8 and len(bytes.fromhex(block["mixHash"][2:])) == 32
    assert block["withdrawals"] == [] and block["uncles"] == []
    (tx,) = block["transactions"]
    assert tx["blockHash"] == block["hash"] and tx["from"] == sender.address.lower()
    hashes = rpc("eth_getBlockByNumber", "latest", False)["transactions"]
    assert hashes == [tx["hash"]]


@pytest.mark.parametrize(
    ("fields", "type_", "extra"),
    [
        pytest.param({"gasPrice": 10**10}, "0x0", {"gasPrice", "chainId"}, id="legacy-eip155"),
        pytest.param(
            {"gasPrice": 10**10, "accessList": [{"address": TARGET, "storageKeys": [ZERO_HASH]}]},
            "0x1",
            {"gasPrice", "chainId", "accessList", "yParity"},
            id="access-list",
        ),
        pytest.param(
            {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9},
            "0x2",
            {"gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "chainId", "accessList", "yParity"},
            id="eip1559",
        ),
    ],
)
def test_raw_transaction_of_each_type_is_mined_and_served_in_its_shape(
    rpc: Rpc, node: DevNode, fields: dict[str, Any], type_: str, extra: set[str]
) -> None:
    sender = keys(node)[5]
    tx_hash = rpc("eth_sendRawTransaction", signed(sender, rpc, to=TARGET, value=3, gas=30_000, **fields))
    assert rpc("eth_getTransactionReceipt", tx_hash)["status"] == "0x1"
    tx = rpc("eth_getTransactionByHash", tx_hash)
    assert TX_KEYS | extra <= set(tx), (TX_KEYS | extra) - set(tx)
    assert (tx["type"], tx["chainId"], tx["value"], tx["to"]) == (type_, "0x7a69", "0x3", TARGET)
    if type_ == "0x0":
        assert int(tx["v"], 16) in (DEV_CHAIN_ID * 2 + 35, DEV_CHAIN_ID * 2 + 36)
        assert "yParity" not in tx
    else:
        assert tx["yParity"] == tx["v"] in ("0x0", "0x1")


def test_block_receipts_are_the_receipts_of_the_block(rpc: Rpc, node: DevNode, token: str) -> None:
    sender = keys(node)[2]
    tx_hash = rpc("eth_sendRawTransaction", signed(sender, rpc, to=token, data=transfer_data(TARGET, 1)))
    receipt = rpc("eth_getTransactionReceipt", tx_hash)
    assert rpc("eth_getBlockReceipts", receipt["blockNumber"]) == [receipt]
    assert rpc("eth_getBlockReceipts", {"blockHash": receipt["blockHash"]}) == [receipt]
    assert rpc("eth_getBlockReceipts", "0xffffff") is None


# ---------------------------------------------------------------------- block parameters


def test_block_tags(rpc: Rpc) -> None:
    latest = rpc("eth_getBlockByNumber", "latest", False)
    assert rpc("eth_blockNumber") == latest["number"]
    for tag in ("safe", "finalized"):
        assert rpc("eth_getBlockByNumber", tag, False)["hash"] == latest["hash"]
    assert rpc("eth_getBlockByNumber", "earliest", False)["number"] == "0x0"
    pending = rpc("eth_getBlockByNumber", "pending", False)
    assert int(pending["number"], 16) == int(latest["number"], 16) + 1
    assert pending["transactions"] == []
    assert rpc("eth_getBlockByNumber", hex(int(latest["number"], 16) + 5), False) is None


def test_pending_nonce_and_balance_are_the_next_blocks(rpc: Rpc, node: DevNode) -> None:
    sender = keys(node)[6]
    before = rpc("eth_getTransactionCount", sender.address, "pending")
    assert before == rpc("eth_getTransactionCount", sender.address, "latest")
    rpc("eth_sendRawTransaction", signed(sender, rpc, to=TARGET, value=1, gas=21_000))
    assert int(rpc("eth_getTransactionCount", sender.address, "pending"), 16) == int(before, 16) + 1
    assert rpc("eth_getBalance", TARGET, "pending") == rpc("eth_getBalance", TARGET, "latest") == "0x1"


def test_eip1898_block_objects(rpc: Rpc, node: DevNode) -> None:
    sender = keys(node)[6]
    old = rpc("eth_getBlockByNumber", "latest", False)
    rpc("eth_sendRawTransaction", signed(sender, rpc, to=TARGET, value=9, gas=21_000))
    assert rpc("eth_getBalance", TARGET, {"blockHash": old["hash"]}) == "0x0"
    assert rpc("eth_getBalance", TARGET, {"blockHash": old["hash"], "requireCanonical": True}) == "0x0"
    assert rpc("eth_getBalance", TARGET, {"blockNumber": old["number"]}) == "0x0"
    assert rpc("eth_getBalance", TARGET, {"blockNumber": "latest"}) == "0x9"
    assert rpc("eth_call", {"to": TARGET}, {"blockHash": old["hash"]}) == "0x"
    assert rpc.error("eth_getBalance", TARGET, {"blockHash": "0x" + "11" * 32})["code"] == -32001


def test_get_logs_by_block_hash_excludes_a_block_range(rpc: Rpc, node: DevNode, token: str) -> None:
    sender = keys(node)[2]
    tx_hash = rpc("eth_sendRawTransaction", signed(sender, rpc, to=token, data=transfer_data(TARGET, 1)))
    block_hash = rpc("eth_getTransactionReceipt", tx_hash)["blockHash"]
    assert [
        log["transactionHash"] for log in rpc("eth_getLogs", {"blockHash": block_hash, "address": token})
    ] == [tx_hash]
    error = rpc.error("eth_getLogs", {"blockHash": block_hash, "fromBlock": "0x1"})
    assert error["code"] == -32602 and "blockHash" in error["message"]


def test_log_filters_return_only_new_matches(rpc: Rpc, node: DevNode, token: str) -> None:
    sender = keys(node)[2]
    topic = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
    logs_filter = rpc("eth_newFilter", {"address": token, "topics": [topic]})
    blocks_filter = rpc("eth_newBlockFilter")
    assert rpc("eth_getFilterChanges", logs_filter) == []
    tx_hash = rpc("eth_sendRawTransaction", signed(sender, rpc, to=token, data=transfer_data(TARGET, 1)))
    receipt = rpc("eth_getTransactionReceipt", tx_hash)
    assert rpc("eth_getFilterChanges", logs_filter) == receipt["logs"]
    assert rpc("eth_getFilterChanges", logs_filter) == []
    assert rpc("eth_getFilterChanges", blocks_filter) == [receipt["blockHash"]]
    assert rpc("eth_uninstallFilter", logs_filter) is True
    assert rpc.error("eth_getFilterChanges", logs_filter)["code"] == -32000


# ---------------------------------------------------------------------- calls and estimates


def test_input_and_data_are_both_accepted(rpc: Rpc, node: DevNode, token: str) -> None:
    owner = keys(node)[1].address
    data = balance_of_data(owner)
    as_input = rpc("eth_call", {"to": token, "input": data})
    assert (
        as_input
        == rpc("eth_call", {"to": token, "data": data})
        == rpc("eth_call", {"to": token, "input": data, "data": data})
    )
    assert int(as_input, 16) == 10**12
    assert int(rpc("eth_estimateGas", {"from": owner, "to": token, "input": data}), 16) > 21_000


def test_input_and_data_that_differ_are_invalid_params(rpc: Rpc, token: str) -> None:
    for method in ("eth_call", "eth_estimateGas", "eth_sendTransaction"):
        error = rpc.error(method, {"from": TARGET, "to": token, "input": "0x01", "data": "0x02"})
        assert error["code"] == -32602 and "input" in error["message"], (method, error)


def test_estimate_of_a_plain_transfer_is_21000(rpc: Rpc, node: DevNode) -> None:
    assert rpc("eth_estimateGas", {"from": keys(node)[0].address, "to": TARGET, "value": "0x1"}) == hex(
        21_000
    )


def test_estimate_treats_a_gas_below_a_transfers_as_no_cap(rpc: Rpc, node: DevNode, token: str) -> None:
    # web3's build_transaction({"gas": 0}) and other clients fill the field; geth's estimator ignores
    # a gas below 21,000 rather than answering "intrinsic gas too low".
    call = {"from": keys(node)[7].address, "to": token, "input": transfer_data(TARGET, 5)}
    assert rpc("eth_estimateGas", {**call, "gas": "0x0"}) == rpc("eth_estimateGas", call)


def test_estimated_gas_is_enough_and_close(rpc: Rpc, node: DevNode, token: str) -> None:
    sender = keys(node)[7]
    call = {"from": sender.address, "to": token, "input": transfer_data(TARGET, 5)}
    estimate = int(rpc("eth_estimateGas", call), 16)
    tx_hash = rpc("eth_sendRawTransaction", signed(sender, rpc, to=token, data=call["input"], gas=estimate))
    used = int(rpc("eth_getTransactionReceipt", tx_hash)["gasUsed"], 16)
    assert rpc("eth_getTransactionReceipt", tx_hash)["status"] == "0x1"
    assert used <= estimate <= used * 1.1


def test_state_override_of_balance_and_code(rpc: Rpc) -> None:
    override = {TARGET: {"code": SELF_BALANCE, "balance": hex(12345)}}
    assert int(rpc("eth_call", {"to": TARGET}, "latest", override), 16) == 12345
    assert rpc("eth_getCode", TARGET, "latest") == "0x"  # thrown away after the call
    assert rpc("eth_getBalance", TARGET, "latest") == "0x0"


def test_state_override_of_nonce(rpc: Rpc) -> None:
    created = rpc("eth_call", {"to": TARGET}, "latest", {TARGET: {"code": CREATE_EMPTY, "nonce": "0x7"}})
    expected = keccak(rlp.encode([bytes.fromhex(TARGET[2:]), 7]))[12:]
    assert created[-40:] == expected.hex()


def test_state_override_of_storage(rpc: Rpc) -> None:
    slot0 = "0x" + "00" * 32
    word = "0x" + (42).to_bytes(32, "big").hex()
    for key in ("stateDiff", "state"):
        answer = rpc("eth_call", {"to": TARGET}, "latest", {TARGET: {"code": SLOT_ZERO, key: {slot0: word}}})
        assert int(answer, 16) == 42, key


def test_state_override_with_an_unknown_key_is_invalid_params(rpc: Rpc) -> None:
    error = rpc.error("eth_call", {"to": TARGET}, "latest", {TARGET: {"movePrecompileToAddress": TARGET}})
    assert error["code"] == -32602 and "movePrecompileToAddress" in error["message"]


def test_create_access_list_names_the_token_slots(rpc: Rpc, node: DevNode, token: str) -> None:
    sender = keys(node)[2].address
    result = rpc("eth_createAccessList", {"from": sender, "to": token, "input": transfer_data(TARGET, 1)})
    (entry,) = result["accessList"]
    assert to_checksum_address(entry["address"]) == token
    assert len(entry["storageKeys"]) == 2  # the sender's and the receiver's balance slots
    assert int(result["gasUsed"], 16) > 21_000


def test_revert_answers_code_3_with_the_revert_data(rpc: Rpc, node: DevNode, token: str) -> None:
    poor = Account.create().address
    call = {"from": poor, "to": token, "input": transfer_data(TARGET, 1)}
    for method in ("eth_call", "eth_estimateGas"):
        error = rpc.error(method, call)
        assert (error["code"], error["message"]) == (3, "execution reverted"), method
        # ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed)
        assert error["data"].startswith(
            "0x" + keccak(text="ERC20InsufficientBalance(address,uint256,uint256)")[:4].hex()
        )


# ---------------------------------------------------------------------- fees


def test_fee_methods(rpc: Rpc) -> None:
    pending = rpc("eth_getBlockByNumber", "pending", False)
    assert rpc("eth_maxPriorityFeePerGas") == hex(10**9)
    assert rpc("eth_gasPrice") == hex(int(pending["baseFeePerGas"], 16) + 10**9)
    history = rpc("eth_feeHistory", "0x2", "pending", [10, 90])
    assert history["baseFeePerGas"][-1] == pending["baseFeePerGas"]
    assert len(history["baseFeePerGas"]) == len(history["gasUsedRatio"]) + 1 == len(history["reward"]) + 1


# ---------------------------------------------------------------------- refusals


def test_transaction_signed_for_another_chain_is_refused(rpc: Rpc, node: DevNode) -> None:
    sender = keys(node)[8]
    raw = sender.sign_transaction(
        {
            "to": to_checksum_address(TARGET),
            "value": 1,
            "gas": 21_000,
            "gasPrice": 10**10,
            "nonce": 0,
            "chainId": 1,
        }
    ).raw_transaction
    error = rpc.error("eth_sendRawTransaction", raw.to_0x_hex())
    assert error["code"] == -32000 and "chain id" in error["message"]


def test_transaction_signed_without_a_chain_id_is_refused(rpc: Rpc, node: DevNode) -> None:
    """A pre-EIP-155 signature is valid on every chain, so it could be replayed here from elsewhere."""
    sender = keys(node)[8]
    unprotected = {
        "to": to_checksum_address(TARGET),
        "value": 1,
        "gas": 21_000,
        "gasPrice": 10**10,
        "nonce": 0,
    }
    raw = sender.sign_transaction(unprotected).raw_transaction
    assert raw[0] >= 0xC0  # a legacy RLP list, with v = 27 or 28: no chain id
    error = rpc.error("eth_sendRawTransaction", raw.to_0x_hex())
    assert error["code"] == -32000 and "replay-protected (EIP-155)" in error["message"]


@pytest.mark.parametrize(
    "origin",
    ["http://127.0.0.1:5173", "http://localhost:3000", "https://localhost", "http://[::1]:8080"],
)
def test_cors_answers_pages_served_from_this_machine(rpc: Rpc, origin: str) -> None:
    # The module's client (a new httpx client per request read the CA bundle again: ~50 ms each).
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    for response in (
        rpc.http.options("/", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}),
        rpc.http.post("/", json=body, headers={"Origin": origin}),
    ):
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert "Origin" in response.headers["Vary"]


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://127.0.0.1.evil.example", "http://localhost.evil.example:80", "null", ""],
)
def test_cors_refuses_any_other_origin(rpc: Rpc, origin: str) -> None:
    """The node signs for unlocked dev accounts: a page from elsewhere must not read its answers."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_accounts", "params": []}
    headers = {"Origin": origin} if origin else {}
    for response in (
        rpc.http.options("/", headers=headers),
        rpc.http.post("/", json=body, headers=headers),
    ):
        assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    ("change", "text"),
    [
        pytest.param({"nonce": -1}, "nonce too low", id="nonce-too-low"),
        pytest.param({"nonce": +1}, "nonce too high", id="nonce-too-high"),
        pytest.param({"gas": 20_000}, "intrinsic gas too low", id="intrinsic-gas"),
        pytest.param(
            {"value": 10**30}, "insufficient funds for gas * price + value", id="insufficient-funds"
        ),
        pytest.param(
            {"maxFeePerGas": 1, "maxPriorityFeePerGas": 1},
            "max fee per gas less than block base fee",
            id="fee-cap",
        ),
    ],
)
def test_refused_transactions_use_the_texts_clients_classify(
    rpc: Rpc, node: DevNode, change: dict[str, int], text: str
) -> None:
    sender = keys(node)[9]
    rpc("eth_sendRawTransaction", signed(sender, rpc, to=TARGET, gas=21_000))  # so nonce - 1 exists
    nonce = int(rpc("eth_getTransactionCount", sender.address, "pending"), 16)
    fields: dict[str, Any] = {"to": TARGET, "gas": 21_000, **change}
    fields["nonce"] = nonce + change.get("nonce", 0)
    error = rpc.error("eth_sendRawTransaction", signed(sender, rpc, **fields))
    assert error["code"] == -32000 and error["message"].startswith(text), error


def test_invalid_params_name_the_param(rpc: Rpc) -> None:
    for method, params, name in [
        ("eth_getBalance", ["0x12", "latest"], "address"),
        ("eth_getBlockByNumber", ["soon", False], "block"),
        ("eth_call", [{"to": TARGET, "value": "lots"}], "value"),
        ("eth_getTransactionReceipt", ["0x1234"], "transactionHash"),
        ("eth_feeHistory", ["0x0", "latest"], "blockCount"),
    ]:
        error = rpc.error(method, *params)
        assert error["code"] == -32602 and name in error["message"], (method, error)


def test_unknown_method(rpc: Rpc) -> None:
    assert rpc.error("eth_mineGold")["code"] == -32601


def test_internal_errors_answer_a_generic_message(
    rpc: Rpc, node: DevNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: list[Any]) -> Any:
        raise RuntimeError("secret detail of a bug")

    monkeypatch.setitem(node.rpc.methods, "eth_blockNumber", broken)
    error = rpc.error("eth_blockNumber")
    assert error == {"code": -32603, "message": "internal error"}


def test_call_with_less_than_intrinsic_gas_says_so(rpc: Rpc) -> None:
    error = rpc.error("eth_call", {"to": TARGET, "gas": hex(20_000)})
    assert error["code"] == -32000, error
    assert error["message"].startswith("intrinsic gas too low"), error
    # An estimate takes a gas below 21,000 as no cap at all (geth's estimator): it answers the need.
    assert rpc("eth_estimateGas", {"to": TARGET, "gas": hex(20_000)}) == hex(21_000)
