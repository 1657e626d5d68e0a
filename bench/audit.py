"""Audit benchmark (issue 10): N orders on the embedded dev chain node, then one `cardless audit` scan
of the whole history over HTTP JSON-RPC, timed, with its RPC calls counted.

    PYTHONPATH=. python -m bench.audit [ORDERS]        (default 10,000; writes bench/results/audit.json)

``audit_seconds`` is the wall time of the ``cardless audit`` process (interpreter start included);
``scan_seconds`` the audit's own measure of its scan.

The history is built fast, not the audit: signed raw transactions go straight to the node's chain (one
block each, as the dev node mines), each of ``BUYERS`` buyers mints and approves once, and the oracle
settles in batches of 100. One order in 100 is refunded and one in
100 settled on its own, so every proof kind is checked. The audit then checks everything it checks on
any chain: every quote signature, every proof and refund authorisation, the books, the balances.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from eth_utils import keccak

from cardless.devchain.node import DevNode
from cardless.protocol import (
    Fulfilment,
    Order,
    batch_typed_data,
    fulfilment_typed_data,
    quote_typed_data,
    refund_typed_data,
    sign,
)
from tests.contracts.harness import EscrowEnv, build_env

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "audit.json"
BUYERS = 10
BATCH = 100
GAS = 8_000_000


class _Sender:
    """Signed raw transactions straight into the node's chain (one block each, as the dev node mines):
    several times faster than web3's in-process ``transact`` with its middlewares."""

    def __init__(self, env: EscrowEnv) -> None:
        self.env = env
        self.nonces: dict[str, int] = {}

    def send(self, key: Any, to: str, data: str, gas: int = 400_000) -> None:
        address = key.address
        if address not in self.nonces:
            self.nonces[address] = int(self.env.w3.eth.get_transaction_count(address))
        tx = {
            "to": to,
            "data": data,
            "value": 0,
            "gas": gas,
            "nonce": self.nonces[address],
            "chainId": self.env.w3.eth.chain_id,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 1,
        }
        self.nonces[address] += 1
        raw = key.sign_transaction(tx).raw_transaction
        self.env.chain.tester.send_raw_transaction("0x" + bytes(raw).hex())


def build_history(env: EscrowEnv, orders: int) -> list[Order]:
    from eth_account import Account

    now = env.chain.next_timestamp()
    usdc, escrow = env.usdc, env.escrow
    buyers = [Account.from_key(keccak(b"bench-buyer-%d" % i)) for i in range(BUYERS)]
    for buyer in buyers:
        env.w3.eth.send_transaction({"from": env.owner, "to": buyer.address, "value": 10 * 10**18})
        env.send(usdc.functions.mint(buyer.address, 10**30), env.owner)
    sender = _Sender(env)
    for buyer in buyers:
        sender.send(buyer, usdc.address, usdc.encode_abi("approve", args=[escrow.address, 2**256 - 1]))
    made: list[Order] = []
    for i in range(orders):
        made.append(
            Order(
                order_id=keccak(b"bench-order-%d" % i),
                buyer=buyers[i % len(buyers)].address,
                merchant=env.merchants[i % 3].address,
                token=usdc.address,
                amount=1_000_000 + i,
                fee_bps=250,
                quote_expiry=now + 30 * 86_400,
                fulfilment_deadline=now + 60 * 86_400,
                sku_hash=keccak(b"sku:genshin-60"),
                account_commitment=keccak(b"account-%d" % i),
            )
        )
    quote = env.quote_key
    for i, o in enumerate(made):
        signature = sign(quote.key, quote_typed_data(env.domain, o))
        sender.send(
            buyers[i % len(buyers)],
            escrow.address,
            escrow.encode_abi("pay", args=[o.as_tuple(), quote.address, signature]),
        )
    oracle = env.oracle_key
    relayer = env.chain.accounts[8]
    fulfilled_at = env.chain.now()
    batch: list[Order] = []
    for i, o in enumerate(made):
        if i % 100 == 0:
            sig = sign(oracle.key, refund_typed_data(env.domain, o.order_id, 1))
            sender.send(
                relayer,
                escrow.address,
                escrow.encode_abi("refund", args=[o.as_tuple(), 1, [oracle.address], [sig]]),
            )
        elif i % 100 == 1:
            f = Fulfilment(o.order_id, keccak(b"receipt" + o.order_id), fulfilled_at)
            sig = sign(oracle.key, fulfilment_typed_data(env.domain, f))
            sender.send(
                relayer,
                escrow.address,
                escrow.encode_abi("settle", args=[o.as_ref_tuple(), f.as_tuple(), [oracle.address], [sig]]),
            )
        else:
            batch.append(o)
        if len(batch) == BATCH or (i == len(made) - 1 and batch):
            fs = [Fulfilment(b.order_id, keccak(b"receipt" + b.order_id), fulfilled_at) for b in batch]
            sig = sign(oracle.key, batch_typed_data(env.domain, fs))
            data = escrow.encode_abi(
                "settleBatch",
                args=[[b.as_ref_tuple() for b in batch], [f.as_tuple() for f in fs], [oracle.address], [sig]],
            )
            sender.send(relayer, escrow.address, data, gas=15_000_000)
            batch = []
    return made


def main(orders: int = 10_000) -> dict[str, Any]:
    """Build the history, then run ``cardless audit --json`` in its own process (as an auditor would:
    the node's Python and the auditor's do not share an interpreter) and time it end to end."""
    with DevNode(port=0) as node:
        env = build_env(node.chain)
        started = time.perf_counter()
        build_history(env, orders)
        built = time.perf_counter() - started
        latest = int(env.w3.eth.block_number)
        command = [sys.executable, "-m", "cardless.cli.main", "audit", "--rpc", node.url]
        command += ["--escrow", env.escrow.address, "--to-block", str(latest), "--json"]
        started = time.perf_counter()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_before = os.getloadavg()[0]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT)
        seconds = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_after = os.getloadavg()[0]
    if not proc.stdout.strip():
        raise RuntimeError(f"the audit printed nothing: {proc.stderr[-2000:]}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "orders": doc["orders"],
        "settled": doc["settled"],
        "refunded": doc["refunded"],
        "violations": len(doc["violations"]),
        "exit_code": proc.returncode,
        "blocks": latest + 1,
        "audit_seconds": round(seconds, 2),
        "scan_seconds": doc["seconds"],
        # The auditor process's own CPU (the node answers in this process): a figure that the other
        # load on a shared machine changes far less than the wall time.
        "audit_cpu_seconds": round(
            (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime), 2
        ),
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "rpc_calls": doc["rpc"]["calls"],
        "http_requests": doc["rpc"]["http_requests"],
        "rpc_by_method": doc["rpc"]["by_method"],
        "history_build_seconds": round(built, 1),
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    out = main(count)
    if count == 10_000:
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
