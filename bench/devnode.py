"""The embedded dev node's own cost per ``pay``: no gateway, no oracle, no load generator to share it with.

    PYTHONPATH=. python -m bench.devnode [--pays N] [--wallets W] [--block-time S] [--out F]
        -> bench/results/devnode.json

A :class:`~cardless.devchain.node.DevNode` is started with the dev deployment; ``W`` wallets are funded,
mint the test stablecoin and approve the escrow; ``N`` orders are quoted and signed here (the quote key
is the bench's own) and every ``pay`` is signed before the clock starts. Then two measurements:

- ``inprocess``: the pays go to :meth:`DevNode.handle_bytes` one after the other, the JSON-RPC layer
  without HTTP: the node's CPU per pay (``thread_time``, the only thread working) and its pays/s;
- ``http``: the same number of new pays sent over HTTP by ``W`` threads of a client process of its own
  (each wallet in nonce order, as ``bench/loadgen.py`` does), then every wallet's last receipt awaited:
  pays/s as a wallet sees them, and the node process's CPU per pay (``/proc``, every thread).

The node mines every transaction before it answers, and transactions that arrive while a block is being
mined share the next one (:mod:`cardless.devchain.mining`): ``blocks`` says how many the pays took. The
JSON records the machine's load average beside every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from eth_abi import encode
from eth_account import Account
from eth_utils import function_signature_to_4byte_selector, keccak

from bench.loadgen import load_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PAY_GAS = 250_000
FEE = {"maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 10**9}
_ORDER_TUPLE = "(bytes32,address,address,address,uint256,uint16,uint48,uint48,bytes32,bytes32)"
_MERCHANT_KEY = 6  # a dev account (the dev catalogue's first merchant)


def _key(label: str) -> bytes:
    return keccak(text=f"cardless bench devnode {label}")


def _rpc(node: Any, method: str, *params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    reply = json.loads(node.handle_bytes(body))
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def _raw(account: Any, tx: dict[str, Any]) -> str:
    return "0x" + bytes(account.sign_transaction(tx).raw_transaction).hex()


def _wait_receipt(node: Any, tx_hash: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        receipt = _rpc(node, "eth_getTransactionReceipt", tx_hash)
        if receipt is not None:
            return dict(receipt)
        time.sleep(0.01)
    raise TimeoutError(tx_hash)


class Shop:
    """The dev deployment on a node, funded wallets, and signed pays for them."""

    def __init__(self, node: Any, wallets: int) -> None:
        from web3 import HTTPProvider, Web3

        from cardless.devchain.deploy import deploy_dev_system
        from cardless.protocol import EscrowDomain

        self.node = node
        self.quote = Account.from_key(_key("quote"))
        oracle = Account.from_key(_key("oracle"))
        self.w3 = Web3(HTTPProvider(node.url, request_kwargs={"timeout": 60}))
        deployment = deploy_dev_system(
            self.w3, quote_signer=self.quote.address, oracle_signer=oracle.address, funded_accounts=[]
        )
        self.escrow = deployment.escrow
        self.token = deployment.token("tUSDC").address
        self.domain = EscrowDomain(chain_id=deployment.chain_id, verifying_contract=deployment.escrow)
        self.merchant = Account.from_key(_MERCHANT_KEY.to_bytes(32, "big")).address
        self.wallets = [Account.from_key(_key(f"wallet {i}")) for i in range(wallets)]
        self.nonces = {w.address: 0 for w in self.wallets}
        self._orders = 0
        self._fund()

    def _fund(self) -> None:
        funder = Account.from_key((1).to_bytes(32, "big"))
        nonce = int(_rpc(self.node, "eth_getTransactionCount", funder.address, "pending"), 16)
        last = ""
        for wallet in self.wallets:
            tx = {"to": wallet.address, "value": 100 * 10**18, "gas": 21_000, "nonce": nonce, **FEE}
            last = _rpc(self.node, "eth_sendRawTransaction", _raw(funder, {**tx, "chainId": 31337}))
            nonce += 1
        _wait_receipt(self.node, last)
        mint = function_signature_to_4byte_selector("mint(address,uint256)")
        approve = function_signature_to_4byte_selector("approve(address,uint256)")
        hashes = []
        for wallet in self.wallets:
            for data in (
                mint + encode(["address", "uint256"], [wallet.address, 10**15]),
                approve + encode(["address", "uint256"], [self.escrow, 2**256 - 1]),
            ):
                tx = {"to": self.token, "data": "0x" + data.hex(), "gas": 120_000, "chainId": 31337, **FEE}
                raw = _raw(wallet, {**tx, "nonce": self._nonce(wallet)})
                hashes.append(_rpc(self.node, "eth_sendRawTransaction", raw))
        for tx_hash in hashes:
            if int(_wait_receipt(self.node, tx_hash)["status"], 16) != 1:
                raise RuntimeError(f"funding transaction {tx_hash} reverted")

    def _nonce(self, wallet: Any) -> int:
        nonce = self.nonces[wallet.address]
        self.nonces[wallet.address] = nonce + 1
        return nonce

    def pays(self, count: int) -> list[tuple[int, str]]:
        """``count`` signed pays as (wallet index, raw transaction), each wallet's in nonce order."""
        from cardless import protocol

        now = int(_rpc(self.node, "eth_getBlockByNumber", "latest", False)["timestamp"], 16)
        selector = function_signature_to_4byte_selector(f"pay({_ORDER_TUPLE},address,bytes)")
        out = []
        for _ in range(count):
            self._orders += 1
            index = self._orders % len(self.wallets)
            wallet = self.wallets[index]
            order = protocol.Order(
                order_id=keccak(text=f"bench order {self._orders}"),
                buyer=wallet.address,
                merchant=self.merchant,
                token=self.token,
                amount=1_000_000,
                fee_bps=250,
                quote_expiry=now + 3_600,
                fulfilment_deadline=now + 7_200,
                sku_hash=keccak(text="genshin-60"),
                account_commitment=keccak(text=f"account {self._orders}"),
            )
            signature = protocol.sign_digest(self.quote.key, protocol.quote_digest(self.domain, order))
            data = selector + encode(
                [_ORDER_TUPLE, "address", "bytes"],
                [order.as_tuple(), self.quote.address, signature],
            )
            tx = {
                "to": self.escrow,
                "data": "0x" + data.hex(),
                "gas": PAY_GAS,
                "nonce": self._nonce(wallet),
                "chainId": 31337,
                **FEE,
            }
            out.append((index, _raw(wallet, tx)))
        return out


def _check_mined(node: Any, hashes: list[str]) -> int:
    """Every pay mined and succeeded (a bench of reverted pays would measure nothing); returns the blocks."""
    blocks = set()
    for tx_hash in hashes:
        receipt = _wait_receipt(node, tx_hash)
        if int(receipt["status"], 16) != 1:
            raise RuntimeError(f"pay {tx_hash} reverted")
        blocks.add(receipt["blockNumber"])
    return len(blocks)


def in_process(shop: Shop, count: int) -> dict[str, Any]:
    pays = shop.pays(count)
    bodies = [
        json.dumps({"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": [raw]}).encode()
        for i, (_, raw) in enumerate(pays)
    ]
    hashes = []
    cpu0, t0 = time.thread_time(), time.perf_counter()
    for body in bodies:
        reply = json.loads(shop.node.handle_bytes(body))
        if "error" in reply:
            raise RuntimeError(reply["error"])
        hashes.append(reply["result"])
    cpu, seconds = time.thread_time() - cpu0, time.perf_counter() - t0
    blocks = _check_mined(shop.node, hashes)
    return {
        "pays": count,
        "blocks": blocks,
        "seconds": round(seconds, 3),
        "pays_per_second": round(count / seconds, 1),
        "cpu_ms_per_pay": round(1000 * cpu / count, 2),
        "load": load_info(),
    }


def _process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def over_http(shop: Shop, count: int) -> dict[str, Any]:
    pays = shop.pays(count)
    jobs: dict[int, list[str]] = {}
    for index, raw in pays:
        jobs.setdefault(index, []).append(raw)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"cardless-bench-devnode-{os.getpid()}.json"
    work.write_text(json.dumps({"url": shop.node.url, "jobs": list(jobs.values())}))
    try:
        cpu0 = _process_cpu()
        done = subprocess.run(
            [sys.executable, "-m", "bench.devnode", "--client", str(work)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
            capture_output=True,
            text=True,
        )
        cpu = _process_cpu() - cpu0  # the node's threads; the client is another process
    finally:
        work.unlink(missing_ok=True)
    client = json.loads(done.stdout)
    blocks = _check_mined(shop.node, client["hashes"])
    return {
        "pays": count,
        "senders": len(jobs),
        "blocks": blocks,
        "seconds": client["seconds"],
        "pays_per_second": round(count / client["seconds"], 1),
        "node_cpu_ms_per_pay": round(1000 * cpu / count, 2),
        "load": load_info(),
    }


def _client(path: Path) -> int:
    """The HTTP senders (a process of their own): each wallet's pays in order, then its last receipt."""
    import httpx

    spec = json.loads(path.read_text())
    hashes: list[str] = []
    lock = threading.Lock()
    errors: list[str] = []

    def send(raws: list[str]) -> None:
        with httpx.Client(base_url=spec["url"], timeout=60) as http:
            mine = []
            for raw in raws:
                body = {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw]}
                reply = http.post("", json=body).json()
                if "error" in reply:
                    errors.append(str(reply["error"]))
                    return
                mine.append(reply["result"])
            while True:
                ask = {"jsonrpc": "2.0", "id": 2, "method": "eth_getTransactionReceipt", "params": [mine[-1]]}
                if http.post("", json=ask).json().get("result") is not None:
                    break
                time.sleep(0.01)
            with lock:
                hashes.extend(mine)

    threads = [threading.Thread(target=send, args=(raws,)) for raws in spec["jobs"]]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t0
    if errors:
        print(json.dumps({"errors": errors[:5]}), file=sys.stderr)
        return 1
    print(json.dumps({"hashes": hashes, "seconds": round(seconds, 3)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.devnode")
    parser.add_argument("--pays", type=int, default=200)
    parser.add_argument("--wallets", type=int, default=16)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return _client(args.client)
    from cardless.devchain.node import DevNode

    with DevNode(port=0) as node:
        shop = Shop(node, args.wallets)
        report = {
            "inprocess": in_process(shop, args.pays),
            "http": over_http(shop, args.pays),
        }
    print(json.dumps(report, indent=1))
    out = args.out or RESULTS / "devnode.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
