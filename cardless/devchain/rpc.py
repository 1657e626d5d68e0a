"""The Ethereum JSON-RPC methods of the dev node, answered from py-evm as the execution-apis specify them.

eth-tester's own RPC layer (through web3's ``EthereumTesterProvider`` formatters) speaks a dialect: it
refuses unknown transaction keys (``input``), sends logs with ``"type": "mined"`` and no ``removed``,
receipts without ``logsBloom`` and a chain id no wallet knows. Standard clients (viem, ethers, Foundry)
fail on it, so :class:`EthRpc` answers the methods wallets and libraries use itself, reading blocks,
receipts and state from py-evm and mining through eth-tester (which keeps its snapshots and the
node's transaction-hash index up to date).

Where a real node has a choice, the answers follow geth: its error texts (``nonce too low``,
``insufficient funds for gas * price + value``, ...), which clients match to classify errors; fee
defaults (tip 1 gwei, fee cap twice the base fee plus the tip); gas estimation by binary search to
within 1.5 %. Calls that name no fee run at gas price zero, so a sender needs no ETH to call.

Every request is served under the node's lock (see :mod:`cardless.devchain.node`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from eth.constants import CREATE_CONTRACT_ADDRESS
from eth.exceptions import HeaderNotFound
from eth.exceptions import Revert as EVMRevert
from eth.vm.spoof import SpoofTransaction
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_tester import EthereumTester
from eth_tester.backends.pyevm.serializers import (
    serialize_block,
    serialize_transaction,
    serialize_transaction_receipt,
)
from eth_utils import ValidationError as EVMValidationError
from eth_utils import encode_hex, keccak, to_checksum_address

from cardless.devchain.chain import DEV_CHAIN_ID
from cardless.devchain.mining import RefusedByVMError, feed_tester_filters, mine_transactions

__all__ = [
    "EXECUTION_REVERTED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "SERVER_ERROR",
    "EthRpc",
    "RpcError",
    "quantity",
    "raw_transaction_param",
    "revert_message",
]

_log = logging.getLogger(__name__)

# JSON-RPC 2.0 error codes, plus the codes nodes use: -32000 for a request the chain refuses, 3 for a
# revert (with the revert bytes in ``data``), -32001 for a block named by hash that does not exist
# (EIP-1898).
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
SERVER_ERROR: Final = -32000
RESOURCE_NOT_FOUND: Final = -32001
EXECUTION_REVERTED: Final = 3

CLIENT_VERSION: Final = "cardless-devnode/v1/py-evm"
PRIORITY_FEE: Final = 10**9  # the tip suggested and used by default, as geth's dev mode
_ESTIMATE_ERROR_RATIO: Final = 0.015  # geth stops its binary search within 1.5 % of the optimum
_TX_GAS: Final = 21_000  # the intrinsic gas of a plain transfer (geth's params.TxGas)
_CALL_STIPEND: Final = 2_300
_ERROR_STRING_SELECTOR: Final = bytes.fromhex("08c379a0")
_PRECOMPILES: Final = frozenset(i.to_bytes(20, "big") for i in range(1, 0x12))
_BLOCK_TAGS: Final = frozenset({"latest", "safe", "finalized", "earliest", "pending"})
_TX_KEYS: Final = frozenset(
    {
        "from",
        "to",
        "gas",
        "gasPrice",
        "maxFeePerGas",
        "maxPriorityFeePerGas",
        "value",
        "input",
        "data",
        "nonce",
        "type",
        "accessList",
        "chainId",
    }
)
_OVERRIDE_KEYS: Final = frozenset({"balance", "nonce", "code", "state", "stateDiff"})

# py-evm's VM errors, as geth words them (a call's -32000 message; never the Python text).
_VM_ERRORS: Final = {
    "OutOfGas": "out of gas",
    "InsufficientStack": "stack underflow",
    "FullStack": "stack limit reached",
    "InvalidJumpDestination": "invalid jump destination",
    "InvalidInstruction": "invalid opcode",
    "StackDepthLimit": "max call depth exceeded",
    "ContractCreationCollision": "contract address collision",
    "WriteProtection": "write protection",
    "ReservedBytesInCode": "invalid code: must not begin with 0xef",
    "InsufficientFunds": "insufficient balance for transfer",
}


class RpcError(Exception):
    """A JSON-RPC error answer: ``code``, a message for the client and optional hex ``data``."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def as_error(self) -> dict[str, Any]:
        # A message may quote the argument at fault: never echo more than a line of it.
        message = self.message if len(self.message) <= 240 else self.message[:240] + "…"
        error: dict[str, Any] = {"code": self.code, "message": message}
        if self.data is not None:
            error["data"] = self.data
        return error


def _invalid(name: str, problem: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"invalid argument {name}: {problem}")


# ---------------------------------------------------------------------- parameters


def quantity(value: Any, name: str) -> int:
    """A hex quantity (``0x1f``); JSON numbers and decimal strings are accepted as anvil does."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        try:
            number = int(value, 16) if value.startswith(("0x", "0X")) else int(value, 10)
        except ValueError:
            pass
        else:
            if number >= 0:
                return number
    raise _invalid(name, f"expected a hex quantity, got {value!r}")


def _data(value: Any, name: str, size: int | None = None) -> bytes:
    if isinstance(value, str) and value.startswith(("0x", "0X")):
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            pass
        else:
            if size is None or len(raw) == size:
                return raw
    what = f"{size}-byte hex data" if size else "hex data"
    raise _invalid(name, f"expected {what}, got {value!r}")


def _address(value: Any, name: str) -> bytes:
    return _data(value, name, 20)


def _hash(value: Any, name: str) -> bytes:
    return _data(value, name, 32)


def _param(params: Sequence[Any], index: int, name: str, default: Any = ...) -> Any:
    if index < len(params) and params[index] is not None:
        return params[index]
    if default is ...:
        raise _invalid(name, "required")
    return default


def raw_transaction_param(params: Sequence[Any]) -> bytes:
    """``eth_sendRawTransaction``'s one parameter, the signed transaction's bytes."""
    return _data(_param(params, 0, "transaction"), "transaction")


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(name, f"expected an object, got {value!r}")
    return value


_Overrides = dict[bytes, dict[str, Any]]  # per address: balance, nonce, code, state, stateDiff


@dataclasses.dataclass(frozen=True)
class _TxArgs:
    """A transaction object of eth_call, eth_estimateGas, eth_createAccessList or eth_sendTransaction."""

    sender: bytes | None
    to: bytes | None
    gas: int | None
    gas_price: int | None
    max_fee: int | None
    max_priority_fee: int | None
    value: int
    data: bytes
    nonce: int | None
    access_list: tuple[tuple[bytes, tuple[int, ...]], ...] | None
    type_: int | None

    @property
    def names_fees(self) -> bool:
        return any(f is not None for f in (self.gas_price, self.max_fee, self.max_priority_fee))

    @classmethod
    def parse(cls, value: Any, name: str = "transaction") -> _TxArgs:
        obj = _object(value, name)
        # Unknown keys are ignored, as geth does, so newer clients' fields do not break older nodes.

        def get(key: str, parse: Callable[[Any, str], Any]) -> Any:
            return None if obj.get(key) is None else parse(obj[key], f"{name}.{key}")

        data, input_ = get("data", _data), get("input", _data)
        if data is not None and input_ is not None and data != input_:
            raise _invalid(f"{name}.input", 'both "data" and "input" are set and not equal')
        gas_price, max_fee, tip = (
            get("gasPrice", quantity),
            get("maxFeePerGas", quantity),
            get("maxPriorityFeePerGas", quantity),
        )
        if gas_price is not None and (max_fee is not None or tip is not None):
            raise _invalid(
                f"{name}.gasPrice", "both gasPrice and (maxFeePerGas or maxPriorityFeePerGas) specified"
            )
        if max_fee is not None and tip is not None and tip > max_fee:
            raise _invalid(
                f"{name}.maxPriorityFeePerGas", "max priority fee per gas higher than max fee per gas"
            )
        chain_id = get("chainId", quantity)
        if chain_id is not None and chain_id != DEV_CHAIN_ID:
            raise _invalid(f"{name}.chainId", f"chainId {chain_id} does not match the node's {DEV_CHAIN_ID}")
        type_ = get("type", quantity)
        if type_ is not None and type_ not in (0, 1, 2):
            raise _invalid(f"{name}.type", f"transaction type {type_} is not supported")
        return cls(
            sender=get("from", _address),
            to=get("to", _address),
            gas=get("gas", quantity),
            gas_price=gas_price,
            max_fee=max_fee,
            max_priority_fee=tip,
            value=get("value", quantity) or 0,
            data=input_ if input_ is not None else data if data is not None else b"",
            nonce=get("nonce", quantity),
            access_list=get("accessList", _access_list),
            type_=type_,
        )


def _access_list(value: Any, name: str) -> tuple[tuple[bytes, tuple[int, ...]], ...]:
    if not isinstance(value, list):
        raise _invalid(name, "expected an array")
    entries = []
    for i, item in enumerate(value):
        entry = _object(item, f"{name}[{i}]")
        keys = entry.get("storageKeys") or []
        if not isinstance(keys, list):
            raise _invalid(f"{name}[{i}].storageKeys", "expected an array")
        slots = tuple(int.from_bytes(_hash(k, f"{name}[{i}].storageKeys"), "big") for k in keys)
        entries.append((_address(entry.get("address"), f"{name}[{i}].address"), slots))
    return tuple(entries)


# ---------------------------------------------------------------------- JSON shapes


def _hex(value: Any) -> Any:
    """Python values as JSON-RPC values: integers as hex quantities, bytes as hex data."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + value.hex()
    if isinstance(value, dict):
        return {key: _hex(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_hex(item) for item in value]
    raise TypeError(f"cannot encode {type(value).__name__} as JSON-RPC")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _bloom(value: int) -> bytes:
    return value.to_bytes(256, "big")


def _access_list_json(access_list: Any) -> list[dict[str, Any]]:
    return [
        {
            "address": encode_hex(address),
            "storageKeys": [encode_hex(slot.to_bytes(32, "big")) for slot in slots],
        }
        for address, slots in access_list or ()
    ]


def _transaction_json(block: Any, tx: Any, index: int, pending: bool) -> dict[str, Any]:
    fields = serialize_transaction(block, tx, index, pending)
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "data":
            out["input"] = value
        elif key == "access_list":
            out["accessList"] = _access_list_json(value)
        elif key == "to":
            out["to"] = value or None  # b"" creates a contract
        elif key != "authorization_list":
            out[_camel(key)] = value
    if fields["type"] == 0 and tx.chain_id is not None:  # EIP-155: the chain id is in v
        out["chainId"] = tx.chain_id
    return _hex(out)  # type: ignore[no-any-return]


def _block_json(block: Any, full: bool, pending: bool = False) -> dict[str, Any]:
    fields = serialize_block(block, False, pending)
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "coinbase":
            out["miner"] = value
        elif key == "logs_bloom":
            out["logsBloom"] = _bloom(value)
        elif key == "extra_data":
            out["extraData"] = block.header.extra_data  # eth-tester pads it to 32 bytes
        elif key == "withdrawals":
            out["withdrawals"] = [{_camel(k): v for k, v in w.items()} for w in value]
        elif key != "total_difficulty":  # removed from the specification after the merge
            out[_camel(key)] = value
    result: dict[str, Any] = _hex(out)
    if full:
        result["transactions"] = [
            _transaction_json(block, tx, i, pending) for i, tx in enumerate(block.transactions)
        ]
    return result


def _log_json(block: Any, tx: Any, tx_index: int, log: Any, log_index: int) -> dict[str, Any]:
    return {
        "removed": False,  # the dev chain never reorganises; a snapshot revert drops blocks silently
        "logIndex": hex(log_index),
        "transactionIndex": hex(tx_index),
        "transactionHash": encode_hex(tx.hash),
        "blockHash": encode_hex(block.hash),
        "blockNumber": hex(block.number),
        "blockTimestamp": hex(block.header.timestamp),
        "address": to_checksum_address(log.address).lower(),
        "data": encode_hex(log.data),
        "topics": [encode_hex(topic.to_bytes(32, "big")) for topic in log.topics],
    }


# ---------------------------------------------------------------------- filters


def _in_bloom(bloom: int, value: bytes) -> bool:
    """Whether ``value`` may be in a logs bloom: its three bits (of keccak's first six bytes) are set."""
    digest = keccak(value)
    bits = (1 << (int.from_bytes(digest[i : i + 2], "big") & 2047) for i in (0, 2, 4))
    return all(bloom & bit for bit in bits)


@dataclasses.dataclass
class _LogQuery:
    addresses: frozenset[bytes] | None
    topics: list[frozenset[bytes] | None]

    @classmethod
    def parse(cls, obj: dict[str, Any], name: str) -> _LogQuery:
        raw = obj.get("address")
        addresses = None
        if isinstance(raw, list):
            addresses = frozenset(_address(a, f"{name}.address") for a in raw) or None
        elif raw is not None:
            addresses = frozenset({_address(raw, f"{name}.address")})
        raw_topics = obj.get("topics") or []
        if not isinstance(raw_topics, list) or len(raw_topics) > 4:
            raise _invalid(f"{name}.topics", "expected an array of at most 4 positions")
        topics: list[frozenset[bytes] | None] = []
        for position, topic in enumerate(raw_topics):
            if topic is None or topic == []:
                topics.append(None)
            elif isinstance(topic, list):
                topics.append(
                    frozenset(_hash(t, f"{name}.topics[{position}]") for t in topic if t is not None)
                )
            else:
                topics.append(frozenset({_hash(topic, f"{name}.topics[{position}]")}))
        return cls(addresses, topics)

    def may_match(self, bloom: int) -> bool:
        """False when the block's bloom rules every matching log out (most blocks, cheaply)."""
        if self.addresses is not None and not any(_in_bloom(bloom, a) for a in self.addresses):
            return False
        return all(t is None or any(_in_bloom(bloom, x) for x in t) for t in self.topics)

    def matches(self, log: Any) -> bool:
        if self.addresses is not None and log.address not in self.addresses:
            return False
        if len(self.topics) > len(log.topics):
            return False
        return all(
            want is None or topic.to_bytes(32, "big") in want
            for want, topic in zip(self.topics, log.topics, strict=False)
        )


@dataclasses.dataclass
class _Filter:
    kind: str  # "logs", "blocks" or "transactions"
    next_block: int  # the first block whose changes eth_getFilterChanges has not returned yet
    query: _LogQuery | None = None
    from_block: int | None = None
    to_block: int | None = None  # None: follows the head


# ---------------------------------------------------------------------- the methods


class EthRpc:
    """The ``eth_``, ``net_`` and ``web3_`` methods over an eth-tester chain with a py-evm backend.

    ``keys`` are the unlocked accounts (``eth_accounts``, ``eth_sendTransaction``).
    """

    def __init__(self, tester: EthereumTester, keys: Sequence[Any]) -> None:
        self.tester = tester
        self.backend = tester.backend
        self._keys = {bytes(key.public_key.to_canonical_address()): key for key in keys}
        self._accounts = [to_checksum_address(a) for a in self._keys]
        self._filters: dict[int, _Filter] = {}
        # One fork from genesis on the dev chain, so one builder decodes every transaction.
        self._transaction_builder = self._chain.get_vm().get_transaction_builder()
        self._filter_ids = itertools.count(1)
        self.methods: dict[str, Callable[[list[Any]], Any]] = {
            "web3_clientVersion": lambda _: CLIENT_VERSION,
            "web3_sha3": lambda p: encode_hex(keccak(_data(_param(p, 0, "data"), "data"))),
            "net_version": lambda _: str(DEV_CHAIN_ID),
            "net_listening": lambda _: True,
            "net_peerCount": lambda _: "0x0",
            "eth_chainId": lambda _: hex(DEV_CHAIN_ID),
            "eth_syncing": lambda _: False,
            "eth_accounts": lambda _: list(self._accounts),
            "eth_blockNumber": lambda _: hex(self._latest_number()),
            "eth_gasPrice": lambda _: hex(self._pending_header().base_fee_per_gas + PRIORITY_FEE),
            "eth_maxPriorityFeePerGas": lambda _: hex(PRIORITY_FEE),
            "eth_feeHistory": self._fee_history,
            "eth_getBalance": lambda p: hex(
                self._state(p, 1).get_balance(_address(_param(p, 0, "address"), "address"))
            ),
            "eth_getTransactionCount": lambda p: hex(
                self._state(p, 1).get_nonce(_address(_param(p, 0, "address"), "address"))
            ),
            "eth_getCode": lambda p: encode_hex(
                self._state(p, 1).get_code(_address(_param(p, 0, "address"), "address"))
            ),
            "eth_getStorageAt": self._get_storage_at,
            "eth_getBlockByNumber": self._get_block_by_number,
            "eth_getBlockByHash": self._get_block_by_hash,
            "eth_getBlockTransactionCountByNumber": lambda p: self._count(self._block_by_number_param(p)),
            "eth_getBlockTransactionCountByHash": lambda p: self._count(self._block_by_hash_param(p)),
            "eth_getUncleCountByBlockNumber": lambda p: (
                None if self._block_by_number_param(p) is None else "0x0"
            ),
            "eth_getUncleCountByBlockHash": lambda p: None if self._block_by_hash_param(p) is None else "0x0",
            "eth_getTransactionByBlockNumberAndIndex": lambda p: self._tx_in(
                self._block_by_number_param(p), p
            ),
            "eth_getTransactionByBlockHashAndIndex": lambda p: self._tx_in(self._block_by_hash_param(p), p),
            "eth_getTransactionByHash": self._get_transaction_by_hash,
            "eth_getTransactionReceipt": self._get_transaction_receipt,
            "eth_getBlockReceipts": self._get_block_receipts,
            "eth_call": self._call,
            "eth_estimateGas": self._estimate_gas,
            "eth_createAccessList": self._create_access_list,
            "eth_sendTransaction": self._send_transaction,
            "eth_sendRawTransaction": lambda p: encode_hex(self._send_raw(raw_transaction_param(p))),
            "eth_getLogs": self._get_logs,
            "eth_newFilter": self._new_filter,
            "eth_newBlockFilter": lambda _: self._install(_Filter("blocks", self._latest_number() + 1)),
            "eth_newPendingTransactionFilter": lambda _: self._install(
                _Filter("transactions", self._latest_number() + 1)
            ),
            "eth_getFilterChanges": self._get_filter_changes,
            "eth_getFilterLogs": self._get_filter_logs,
            "eth_uninstallFilter": lambda p: (
                self._filters.pop(quantity(_param(p, 0, "filterId"), "filterId"), None) is not None
            ),
        }

    # ------------------------------------------------------------------ blocks and headers

    @property
    def _chain(self) -> Any:
        return self.backend.chain

    def _pending_header(self) -> Any:
        return self._chain.get_block().header

    def _latest_number(self) -> int:
        return int(self._pending_header().block_number) - 1

    def _header_by_hash(self, block_hash: bytes) -> Any | None:
        try:
            header = self._chain.chaindb.get_block_header_by_hash(block_hash)
        except HeaderNotFound:
            return None
        if header.block_number > self._latest_number():
            return None
        try:
            canonical = self._chain.get_canonical_block_hash(header.block_number)
        except HeaderNotFound:
            return None
        return header if canonical == block_hash else None  # blocks dropped by a snapshot revert

    def _resolve(self, ref: Any, name: str = "block") -> tuple[int | None, bytes | None, bool]:
        """A block parameter as ``(number, hash, require_canonical)``; number None means pending.

        Accepts a tag, a hex number, or an EIP-1898 object ``{"blockNumber"}`` / ``{"blockHash",
        "requireCanonical"}``.
        """
        if ref is None:
            ref = "latest"
        if isinstance(ref, dict):
            if "blockHash" in ref:
                if "blockNumber" in ref:
                    raise _invalid(name, "blockHash and blockNumber are mutually exclusive")
                return None, _hash(ref["blockHash"], f"{name}.blockHash"), bool(ref.get("requireCanonical"))
            if "blockNumber" in ref:
                return self._resolve(ref["blockNumber"], f"{name}.blockNumber")
            raise _invalid(name, "expected blockHash or blockNumber")
        if isinstance(ref, str) and ref in _BLOCK_TAGS:
            # every transaction is mined at once: safe and finalized are the latest block
            return {"pending": None, "earliest": 0}.get(ref, self._latest_number()), None, False
        return quantity(ref, name), None, False

    def _header(self, ref: Any, name: str = "block") -> Any:
        """The header a state query runs on; the pending header for ``pending`` (the latest state)."""
        number, block_hash, _ = self._resolve(ref, name)
        if block_hash is not None:
            header = self._header_by_hash(block_hash)
            if header is None:
                raise RpcError(RESOURCE_NOT_FOUND, f"block {encode_hex(block_hash)} not found")
            return header
        if number is None:
            return self._pending_header()
        if number > self._latest_number():
            raise RpcError(SERVER_ERROR, "header not found")
        return self._chain.get_canonical_block_header_by_number(number)

    def _state(self, params: list[Any], index: int) -> Any:
        return self._chain.get_vm(at_header=self._header(_param(params, index, "block", "latest"))).state

    def _block_by_number_param(self, params: list[Any]) -> tuple[Any, bool] | None:
        number, _, _ = self._resolve(_param(params, 0, "block"), "block")
        if number is None:
            return self._chain.get_block(), True
        if number > self._latest_number():
            return None
        return self._chain.get_canonical_block_by_number(number), False

    def _block_by_hash_param(self, params: list[Any]) -> tuple[Any, bool] | None:
        header = self._header_by_hash(_hash(_param(params, 0, "blockHash"), "blockHash"))
        return None if header is None else (self._chain.get_block_by_header(header), False)

    def _get_block_by_number(self, params: list[Any]) -> Any:
        found = self._block_by_number_param(params)
        return (
            None
            if found is None
            else _block_json(found[0], bool(_param(params, 1, "full", False)), pending=found[1])
        )

    def _get_block_by_hash(self, params: list[Any]) -> Any:
        found = self._block_by_hash_param(params)
        return None if found is None else _block_json(found[0], bool(_param(params, 1, "full", False)), False)

    @staticmethod
    def _count(found: tuple[Any, bool] | None) -> str | None:
        return None if found is None else hex(len(found[0].transactions))

    @staticmethod
    def _tx_in(found: tuple[Any, bool] | None, params: list[Any]) -> Any:
        index = quantity(_param(params, 1, "index"), "index")
        if found is None or index >= len(found[0].transactions):
            return None
        return _transaction_json(found[0], found[0].transactions[index], index, found[1])

    def _get_storage_at(self, params: list[Any]) -> str:
        address = _address(_param(params, 0, "address"), "address")
        slot = _param(params, 1, "slot")
        position = (
            quantity(slot, "slot") if not (isinstance(slot, str) and len(slot) == 66) else int(slot, 16)
        )
        value = self._state(params, 2).get_storage(address, position)
        return encode_hex(int(value).to_bytes(32, "big"))

    # ------------------------------------------------------------------ transactions and receipts

    def _locate(self, tx_hash: bytes) -> tuple[Any, Any, int] | None:
        try:
            block, tx, index = self.backend._find_transaction(tx_hash)
        except Exception as exc:  # eth-tester's TransactionNotFound
            if type(exc).__name__ == "TransactionNotFound":
                return None
            raise
        return block, tx, index

    def _get_transaction_by_hash(self, params: list[Any]) -> Any:
        found = self._locate(_hash(_param(params, 0, "transactionHash"), "transactionHash"))
        if found is None:
            return None
        block, tx, index = found
        return _transaction_json(block, tx, index, block.number > self._latest_number())

    def _receipts_json(self, block: Any) -> list[dict[str, Any]]:
        receipts = block.get_receipts(self._chain.chaindb)
        vm = self._chain.get_vm(at_header=block.header)
        out, log_index = [], 0
        for index, tx in enumerate(block.transactions):
            fields = serialize_transaction_receipt(block, receipts, tx, index, False, vm)
            receipt: dict[str, Any] = {}
            for key, value in fields.items():
                if key == "logs":
                    receipt["logs"] = [
                        _log_json(block, tx, index, log, log_index + i)
                        for i, log in enumerate(receipts[index].logs)
                    ]
                    log_index += len(receipts[index].logs)
                elif key != "state_root":  # post-Byzantium receipts carry status, not a state root
                    receipt[_camel(key)] = _hex(value or None) if key == "to" else _hex(value)
            receipt["logsBloom"] = encode_hex(_bloom(receipts[index].bloom))
            out.append(receipt)
        return out

    def _get_transaction_receipt(self, params: list[Any]) -> Any:
        found = self._locate(_hash(_param(params, 0, "transactionHash"), "transactionHash"))
        if found is None or found[0].number > self._latest_number():
            return None
        return self._receipts_json(found[0])[found[2]]

    def _get_block_receipts(self, params: list[Any]) -> Any:
        ref = _param(params, 0, "block")
        number, block_hash, _ = self._resolve(ref)
        if number is None and block_hash is None:
            return []  # the pending block is always empty
        if block_hash is not None:
            header = self._header_by_hash(block_hash)
        elif number is not None and number <= self._latest_number():
            header = self._chain.get_canonical_block_header_by_number(number)
        else:
            header = None
        return None if header is None else self._receipts_json(self._chain.get_block_by_header(header))

    # ------------------------------------------------------------------ fees

    def _fee_history(self, params: list[Any]) -> dict[str, Any]:
        count = quantity(_param(params, 0, "blockCount"), "blockCount")
        if not 1 <= count <= 1024:
            raise _invalid("blockCount", "must be between 1 and 1024")
        newest_ref = _param(params, 1, "newestBlock")
        number, block_hash, _ = self._resolve(
            "latest" if newest_ref == "pending" else newest_ref, "newestBlock"
        )
        newest = self._header(newest_ref if block_hash is not None else number, "newestBlock").block_number
        percentiles = _param(params, 2, "rewardPercentiles", [])
        if not isinstance(percentiles, list) or any(not isinstance(p, int | float) for p in percentiles):
            raise _invalid("rewardPercentiles", "expected an array of numbers")
        if percentiles != sorted(percentiles) or any(not 0 <= p <= 100 for p in percentiles):
            raise _invalid("rewardPercentiles", "must be ascending numbers between 0 and 100")
        oldest = max(0, newest - count + 1)
        headers = [self._chain.get_canonical_block_header_by_number(n) for n in range(oldest, newest + 1)]
        following = (
            self._pending_header()
            if newest == self._latest_number()
            else self._chain.get_canonical_block_header_by_number(newest + 1)
        )
        history: dict[str, Any] = {
            "oldestBlock": hex(oldest),
            "baseFeePerGas": [hex(h.base_fee_per_gas) for h in [*headers, following]],
            "gasUsedRatio": [h.gas_used / h.gas_limit for h in headers],
            "baseFeePerBlobGas": ["0x0"] * (len(headers) + 1),
            "blobGasUsedRatio": [0.0] * len(headers),
        }
        if percentiles:
            history["reward"] = [[hex(PRIORITY_FEE)] * len(percentiles) for _ in headers]
        return history

    # ------------------------------------------------------------------ execution

    def _execute(
        self,
        args: _TxArgs,
        header: Any,
        gas: int,
        overrides: _Overrides | None = None,
        inspect: Callable[[Any, Any], Any] | None = None,
    ) -> tuple[Any, Any]:
        """Run ``args`` on a throw-away copy of the state at ``header``; returns the computation and
        what ``inspect(state, computation)`` read from the state before it was thrown away."""
        sender = args.sender or bytes(20)
        if not args.names_fees:  # as geth: no fee named, no fee charged and no base fee enforced
            header = header.copy(base_fee_per_gas=0)
        vm = self._chain.get_vm(at_header=header)
        state = vm.state
        snapshot = state.snapshot()
        try:
            if overrides:
                _apply_overrides(state, overrides)
            self._check_affordable(state, args, sender, gas, header)
            nonce = state.get_nonce(sender)
            to = args.to if args.to is not None else CREATE_CONTRACT_ADDRESS
            if args.max_fee is not None or (args.max_priority_fee is not None and args.gas_price is None):
                max_fee = (
                    args.max_fee
                    if args.max_fee is not None
                    else header.base_fee_per_gas + (args.max_priority_fee or 0)
                )
                unsigned = vm.get_transaction_builder().new_unsigned_dynamic_fee_transaction(
                    DEV_CHAIN_ID,
                    nonce,
                    args.max_priority_fee or 0,
                    max_fee,
                    gas,
                    to,
                    args.value,
                    args.data,
                    args.access_list or (),
                )
            elif args.access_list:
                unsigned = vm.get_transaction_builder().new_unsigned_access_list_transaction(
                    DEV_CHAIN_ID, nonce, args.gas_price or 0, gas, to, args.value, args.data, args.access_list
                )
            else:
                unsigned = vm.create_unsigned_transaction(
                    nonce=nonce,
                    gas_price=args.gas_price or 0,
                    gas=gas,
                    to=to,
                    value=args.value,
                    data=args.data,
                )
            if gas < unsigned.intrinsic_gas:
                raise RpcError(
                    SERVER_ERROR, f"intrinsic gas too low: gas {gas}, minimum needed {unsigned.intrinsic_gas}"
                )
            try:
                computation = state.apply_transaction(SpoofTransaction(unsigned, from_=sender))
            except EVMValidationError as exc:
                _log.info("dev node: transaction refused by the VM: %s", exc)
                raise RpcError(SERVER_ERROR, "invalid transaction") from None
            inspected = inspect(state, computation) if inspect is not None else None
            return computation, inspected
        finally:
            state.revert(snapshot)

    def _check_affordable(self, state: Any, args: _TxArgs, sender: bytes, gas: int, header: Any) -> None:
        fee_cap = args.gas_price if args.gas_price is not None else args.max_fee
        if fee_cap is None and args.max_priority_fee is not None:
            fee_cap = header.base_fee_per_gas + args.max_priority_fee
        if args.names_fees and fee_cap is not None:
            _check_fee_cap(fee_cap, header.base_fee_per_gas)
        _check_funds(state.get_balance(sender), gas * (fee_cap or 0) + args.value)

    def _call_params(self, params: list[Any]) -> tuple[_TxArgs, Any, _Overrides | None]:
        args = _TxArgs.parse(_param(params, 0, "transaction"))
        header = self._header(_param(params, 1, "block", "latest"))
        overrides = _param(params, 2, "stateOverride", None)
        if overrides is not None:
            overrides = _parse_overrides(overrides)
        return args, header, overrides

    def _gas_cap(self, args: _TxArgs, header: Any) -> int:
        return args.gas if args.gas is not None else int(header.gas_limit)

    def _call(self, params: list[Any]) -> str:
        args, header, overrides = self._call_params(params)
        computation, _ = self._execute(args, header, self._gas_cap(args, header), overrides)
        _raise_if_failed(computation)
        return encode_hex(computation.output)

    def _estimate_gas(self, params: list[Any]) -> str:
        args, header, overrides = self._call_params(params)
        return hex(self._estimate(args, header, overrides))

    def _estimate(self, args: _TxArgs, header: Any, overrides: _Overrides | None = None) -> int:
        """Binary search for the least gas that succeeds, as geth (within 1.5 %, tried optimistically
        first at the gas used plus the 63/64 rule's reserve). A given gas below 21,000 (``"gas": 0``
        from a client that fills the field) is no cap, as geth's estimator treats it."""
        cap = args.gas if args.gas is not None and args.gas >= _TX_GAS else int(header.gas_limit)
        computation, _ = self._execute(args, header, cap, overrides)
        if computation.is_error:
            if (
                not isinstance(computation.error, EVMRevert)
                and type(computation.error).__name__ == "OutOfGas"
            ):
                raise RpcError(SERVER_ERROR, f"gas required exceeds allowance ({cap})")
            _raise_if_failed(computation)
        used = cap - computation.get_gas_remaining()
        if args.to is not None and not self._chain.get_vm(at_header=header).state.get_code(args.to):
            return int(used)  # no code runs: the gas used is exactly the gas needed, as geth answers

        def succeeds(gas: int) -> bool:
            try:
                attempt, _ = self._execute(args, header, gas, overrides)
            except RpcError:
                return False
            return not attempt.is_error

        low, high = used - 1, cap
        optimistic = min(cap, (used + _CALL_STIPEND) * 64 // 63)
        if optimistic < cap and succeeds(optimistic):
            high = optimistic
        else:
            low = max(low, optimistic - 1) if optimistic < cap else low
        while high - low > 1 and (high - low) / high > _ESTIMATE_ERROR_RATIO:
            middle = (low + high) // 2
            if succeeds(middle):
                high = middle
            else:
                low = middle
        return high

    def _create_access_list(self, params: list[Any]) -> dict[str, Any]:
        args, header, overrides = self._call_params(params)
        sender = args.sender or bytes(20)

        def accessed(state: Any, computation: Any) -> dict[bytes, set[int]]:
            # py-evm records warm accounts and slots (EIP-2929) in one journal: address keys, and
            # address+slot keys.
            journal = state._account_db._journal_accessed_state
            touched: dict[bytes, set[int]] = {}
            for key in list(journal._journal._current_values):
                address = bytes(key[:20])
                slots = touched.setdefault(address, set())
                if len(key) > 20:
                    slots.add(int.from_bytes(key[20:], "big"))
            return touched

        gas = self._gas_cap(args, header)
        computation, touched = self._execute(args, header, gas, overrides, accessed)
        coinbase = header.coinbase
        entries = [
            {
                "address": encode_hex(address),
                "storageKeys": [encode_hex(s.to_bytes(32, "big")) for s in sorted(slots)],
            }
            for address, slots in sorted(touched.items())
            if address not in _PRECOMPILES
            and address not in (sender, coinbase)
            and (address != args.to or slots)
        ]
        result: dict[str, Any] = {
            "accessList": entries,
            "gasUsed": hex(gas - computation.get_gas_remaining()),
        }
        if computation.is_error:
            result["error"] = _failure(computation.error).message
        return result

    # ------------------------------------------------------------------ sending

    def _send_transaction(self, params: list[Any]) -> str:
        """Sign with an unlocked dev account and send; fills nonce, fees and gas as geth does."""
        args = _TxArgs.parse(_param(params, 0, "transaction"))
        if args.sender is None:
            raise _invalid("transaction.from", "required")
        key = self._keys.get(args.sender)
        if key is None:
            raise RpcError(SERVER_ERROR, f"unknown account {to_checksum_address(args.sender)}")
        pending = self._pending_header()
        state = self._chain.get_vm(at_header=pending).state
        tx: dict[str, Any] = {
            "chainId": DEV_CHAIN_ID,
            "nonce": args.nonce if args.nonce is not None else state.get_nonce(args.sender),
            "value": args.value,
            "data": args.data,
        }
        if args.to is not None:
            tx["to"] = to_checksum_address(args.to)
        if args.gas_price is not None or args.type_ in (0, 1):
            tx["gasPrice"] = (
                args.gas_price if args.gas_price is not None else pending.base_fee_per_gas + PRIORITY_FEE
            )
        else:
            tip = args.max_priority_fee if args.max_priority_fee is not None else PRIORITY_FEE
            tx["maxFeePerGas"] = (
                args.max_fee if args.max_fee is not None else 2 * pending.base_fee_per_gas + tip
            )
            tx["maxPriorityFeePerGas"] = min(tip, tx["maxFeePerGas"])
        if args.access_list is not None:
            tx["accessList"] = _access_list_json(args.access_list)
        fees = {k: tx.get(k) for k in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas")}
        tx["gas"] = (
            args.gas
            if args.gas is not None
            else self._estimate(
                dataclasses.replace(
                    args,
                    gas_price=fees["gasPrice"],
                    max_fee=fees["maxFeePerGas"],
                    max_priority_fee=fees["maxPriorityFeePerGas"],
                ),
                pending,
            )
        )
        signed = Account.sign_transaction(tx, key.to_bytes())
        return encode_hex(self._send_raw(bytes(signed.raw_transaction)))

    def _send_raw(self, raw: bytes) -> bytes:
        """Decode, admit and mine one transaction (the node batches concurrent ones: ``mine``)."""
        (result,) = self.mine([self.decode_raw(raw)])
        if isinstance(result, Exception):
            raise result
        return result

    def decode_raw(self, raw: bytes) -> Any:
        """A signed transaction from its bytes, with the checks that need no state (signature, chain id).

        Reads nothing of the chain but the fork's transaction builder, so the node runs it outside its lock.
        """
        if not raw or raw[0] == 3:
            raise _invalid("transaction", "blob transactions are not supported by the dev node")
        try:
            tx = self._transaction_builder.decode(raw)
            tx.validate()
            tx.sender  # noqa: B018  # recovered here, once (py-evm caches it on the transaction)
        except Exception:  # any decoding or signature failure is the client's
            raise _invalid("transaction", "not a valid signed transaction") from None
        chain_id = tx.chain_id
        if chain_id is None:  # a pre-EIP-155 signature is valid on every chain: it could be replayed here
            raise RpcError(SERVER_ERROR, "only replay-protected (EIP-155) transactions allowed over RPC")
        if chain_id != DEV_CHAIN_ID:
            raise RpcError(SERVER_ERROR, f"invalid chain id for signer: have {chain_id} want {DEV_CHAIN_ID}")
        return tx

    def mine(self, transactions: Sequence[Any]) -> list[bytes | RpcError]:
        """Mine decoded ``transactions`` in arrival order (:mod:`cardless.devchain.mining`); per
        transaction its hash, or the error a transaction sent alone would have got.

        With eth-tester's automine switched off (tests hold transactions pending that way), each goes to
        eth-tester's pool instead, as before, and is mined by ``evm_mine``."""
        if not self.tester.auto_mine_transactions:
            return [self._to_tester_pool(tx) for tx in transactions]
        results, blocks = mine_transactions(self.backend, transactions, _admit)
        for block in blocks:
            self.backend.index_block(block)
            feed_tester_filters(self.tester, block)
        out: list[bytes | RpcError] = []
        for result in results:
            if isinstance(result, RefusedByVMError):
                _log.info("dev node: transaction refused by the VM: %s", result)
                result = RpcError(SERVER_ERROR, "invalid transaction")
            elif isinstance(result, Exception) and not isinstance(result, RpcError):
                raise result
            out.append(result)
        return out

    def _to_tester_pool(self, tx: Any) -> bytes | RpcError:
        pending = self._pending_header()
        try:
            _admit(self._chain.get_vm(at_header=pending).state, pending, tx)
            self.tester.send_raw_transaction(encode_hex(tx.encode()))
        except RpcError as exc:
            return exc
        except EVMValidationError as exc:
            _log.info("dev node: transaction refused by the VM: %s", exc)
            return RpcError(SERVER_ERROR, "invalid transaction")
        return bytes(tx.hash)

    # ------------------------------------------------------------------ logs and filters

    def _log_range(self, obj: dict[str, Any], name: str) -> tuple[int, int]:
        latest = self._latest_number()

        def bound(key: str) -> int:
            number, _, _ = self._resolve(obj.get(key, "latest"), f"{name}.{key}")
            return latest if number is None else number

        return bound("fromBlock"), bound("toBlock")

    def _logs(self, query: _LogQuery, first: int, last: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for number in range(first, min(last, self._latest_number()) + 1):
            header = self._chain.get_canonical_block_header_by_number(number)
            out.extend(self._block_logs(query, header))
        return out

    def _block_logs(self, query: _LogQuery, header: Any) -> Iterator[dict[str, Any]]:
        if not query.may_match(header.bloom):
            return
        block = self._chain.get_block_by_header(header)
        log_index = 0
        for index, receipt in enumerate(block.get_receipts(self._chain.chaindb)):
            for log in receipt.logs:
                if query.matches(log):
                    yield _log_json(block, block.transactions[index], index, log, log_index)
                log_index += 1

    def _get_logs(self, params: list[Any]) -> list[dict[str, Any]]:
        obj = _object(_param(params, 0, "filter"), "filter")
        query = _LogQuery.parse(obj, "filter")
        if "blockHash" in obj:
            if "fromBlock" in obj or "toBlock" in obj:
                raise _invalid("filter.blockHash", "cannot be combined with fromBlock/toBlock")
            header = self._header_by_hash(_hash(obj["blockHash"], "filter.blockHash"))
            if header is None:
                raise RpcError(RESOURCE_NOT_FOUND, "unknown block")
            return list(self._block_logs(query, header))
        first, last = self._log_range(obj, "filter")
        if first > last:
            raise _invalid("filter.fromBlock", "invalid block range params")
        return self._logs(query, first, last)

    def _install(self, filter_: _Filter) -> str:
        filter_id = next(self._filter_ids)
        self._filters[filter_id] = filter_
        return hex(filter_id)

    def _new_filter(self, params: list[Any]) -> str:
        obj = _object(_param(params, 0, "filter"), "filter")
        query = _LogQuery.parse(obj, "filter")
        from_block = to_block = None
        if "fromBlock" in obj and obj["fromBlock"] not in ("latest", "pending"):
            from_block = self._log_range({"fromBlock": obj["fromBlock"]}, "filter")[0]
        if "toBlock" in obj and obj["toBlock"] not in ("latest", "pending"):
            to_block = self._log_range({"toBlock": obj["toBlock"]}, "filter")[1]
        start = from_block if from_block is not None else self._latest_number() + 1
        return self._install(_Filter("logs", start, query, from_block, to_block))

    def _filter(self, params: list[Any]) -> _Filter:
        filter_ = self._filters.get(quantity(_param(params, 0, "filterId"), "filterId"))
        if filter_ is None:
            raise RpcError(SERVER_ERROR, "filter not found")
        return filter_

    def _get_filter_changes(self, params: list[Any]) -> list[Any]:
        filter_ = self._filter(params)
        latest = self._latest_number()
        last = latest if filter_.to_block is None else min(latest, filter_.to_block)
        first, filter_.next_block = filter_.next_block, max(filter_.next_block, last + 1)
        if filter_.kind == "transactions":
            return []  # transactions are mined as they arrive: none is ever pending
        if filter_.kind == "blocks":
            return [
                encode_hex(self._chain.get_canonical_block_header_by_number(n).hash)
                for n in range(first, last + 1)
            ]
        assert filter_.query is not None
        return self._logs(filter_.query, first, last)

    def _get_filter_logs(self, params: list[Any]) -> list[Any]:
        filter_ = self._filter(params)
        if filter_.query is None:
            raise RpcError(SERVER_ERROR, "filter not found")
        first = filter_.from_block if filter_.from_block is not None else self._latest_number()
        last = filter_.to_block if filter_.to_block is not None else self._latest_number()
        return self._logs(filter_.query, first, last)


# ---------------------------------------------------------------------- helpers


def _parse_overrides(value: Any) -> _Overrides:
    """``eth_call``'s state override set: per address ``balance``, ``nonce``, ``code`` and either
    ``state`` (replaces all storage) or ``stateDiff`` (changes the named slots)."""
    obj = _object(value, "stateOverride")
    parsed: _Overrides = {}
    for raw_address, raw in obj.items():
        name = f"stateOverride.{raw_address}"
        address = _address(raw_address, name)
        entry = _object(raw, name)
        unknown = set(entry) - _OVERRIDE_KEYS
        if unknown:
            raise _invalid(f"{name}.{sorted(unknown)[0]}", "not a supported override")
        if "state" in entry and "stateDiff" in entry:
            raise _invalid(name, "has both state and stateDiff")
        override: dict[str, Any] = {}
        for key in ("balance", "nonce"):
            if entry.get(key) is not None:
                override[key] = quantity(entry[key], f"{name}.{key}")
        if entry.get("code") is not None:
            override["code"] = _data(entry["code"], f"{name}.code")
        for key in ("state", "stateDiff"):
            if entry.get(key) is not None:
                slots = _object(entry[key], f"{name}.{key}")
                override[key] = {
                    int.from_bytes(_hash(slot, f"{name}.{key}"), "big"): int.from_bytes(
                        _hash(v, f"{name}.{key}.{slot}"), "big"
                    )
                    for slot, v in slots.items()
                }
        parsed[address] = override
    return parsed


def _apply_overrides(state: Any, overrides: _Overrides) -> None:
    for address, override in overrides.items():
        if "balance" in override:
            state.set_balance(address, override["balance"])
        if "nonce" in override:
            state.set_nonce(address, override["nonce"])
        if "code" in override:
            state.set_code(address, override["code"])
        if "state" in override:
            state.delete_storage(address)
        for slot, value in {**override.get("state", {}), **override.get("stateDiff", {})}.items():
            state.set_storage(address, slot, value)


def revert_message(data: bytes) -> str:
    """``execution reverted``, with the reason when ``data`` is an ``Error(string)`` (as geth says it)."""
    if data[:4] == _ERROR_STRING_SELECTOR:
        try:
            return f"execution reverted: {abi_decode(['string'], data[4:])[0]}"
        except Exception:  # malformed reason: report the bare revert, the data says the rest
            pass
    return "execution reverted"


def _failure(error: Exception) -> RpcError:
    """What a failed execution answers: a revert with its data, or the VM error in geth's words."""
    if isinstance(error, EVMRevert):
        data = bytes(error.args[0]) if error.args else b""
        return RpcError(EXECUTION_REVERTED, revert_message(data), encode_hex(data))
    return RpcError(SERVER_ERROR, _VM_ERRORS.get(type(error).__name__, "execution failed"))


def _raise_if_failed(computation: Any) -> None:
    if computation.is_error:
        raise _failure(computation.error)


def _check_fee_cap(fee_cap: int, base_fee: int) -> None:
    if fee_cap < base_fee:
        raise RpcError(
            SERVER_ERROR,
            f"max fee per gas less than block base fee: maxFeePerGas: {fee_cap}, baseFee: {base_fee}",
        )


def _check_funds(have: int, want: int) -> None:
    if have < want:
        raise RpcError(SERVER_ERROR, f"insufficient funds for gas * price + value: have {have} want {want}")


def _admit(state: Any, header: Any, tx: Any) -> None:
    """What geth checks before it takes a transaction, against the state the block has reached: the
    dev node mines at once and keeps no queue, so a nonce ahead of the sender's is refused."""
    expected = state.get_nonce(tx.sender)
    if tx.nonce < expected:
        raise RpcError(SERVER_ERROR, f"nonce too low: next nonce {expected}, tx nonce {tx.nonce}")
    if tx.nonce > expected:
        raise RpcError(SERVER_ERROR, f"nonce too high: next nonce {expected}, tx nonce {tx.nonce}")
    intrinsic = tx.intrinsic_gas
    if tx.gas < intrinsic:
        raise RpcError(SERVER_ERROR, f"intrinsic gas too low: gas {tx.gas}, minimum needed {intrinsic}")
    if tx.gas > header.gas_limit:
        raise RpcError(SERVER_ERROR, "exceeds block gas limit")
    _check_fee_cap(tx.max_fee_per_gas, header.base_fee_per_gas)
    _check_funds(state.get_balance(tx.sender), tx.gas * tx.max_fee_per_gas + tx.value)
