"""Audit benchmark (issue 10): N orders on the embedded dev chain node, then one `cardless audit` scan
of the whole history over HTTP JSON-RPC, timed, with its RPC calls counted.

    PYTHONPATH=. python -m bench.audit [ORDERS]        (default 10,000; writes bench/results/audit.json)

The history is built fast, not the audit: payments go in blocks of ``PER_BLOCK`` (the node's automine
is paused while a block fills, as on a real chain where many payments share a block), each buyer mints
and approves once, and the oracle settles in batches of 100. One order in 100 is refunded and one in
100 settled on its own, so every proof kind is checked. The audit then checks everything it checks on
any chain: every quote signature, every proof and refund authorisation, the books, the balances.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from eth_utils import keccak
from web3 import HTTPProvider, Web3

from cardless.audit import Auditor, ChainReader
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

RESULTS = Path(__file__).resolve().parent / "results" / "audit.json"
PER_BLOCK = 100
BATCH = 100
GAS = 8_000_000


def _mine_together(env: EscrowEnv, sends: list[Any], nonces: dict[str, int], fund: str | None = None) -> None:
    """Send the calls into one pending block per distinct sender round, and mine; a sender with several
    calls (the owner minting) sends them one block each. ``fund``: send 1 ETH from it to each sender."""
    tester = env.chain.tester
    if fund is not None:
        for _, to in sends:
            env.w3.eth.send_transaction({"from": fund, "to": to, "value": 10**18})
        return
    rounds: list[list[Any]] = []
    seen: dict[str, int] = {}
    for call, sender in sends:
        index = seen.get(sender, 0)
        seen[sender] = index + 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append((call, sender))
    for chunk in rounds:
        tester.disable_auto_mine_transactions()
        try:
            for call, sender in chunk:
                call.transact({"from": sender, "gas": 300_000})
        finally:
            tester.enable_auto_mine_transactions()


def build_history(env: EscrowEnv, orders: int) -> list[Order]:
    now = env.chain.next_timestamp()
    usdc = env.usdc
    # One pending block takes one transaction per sender (eth-tester checks nonces against the last
    # mined state), so a block of PER_BLOCK payments needs PER_BLOCK buyers.
    buyers = []
    for i in range(PER_BLOCK):
        key = keccak(b"bench-buyer-%d" % i)
        buyers.append(env.w3.to_checksum_address(env.chain.tester.add_account("0x" + key.hex())))
    _mine_together(env, [(None, b) for b in buyers], {}, fund=env.owner)
    _mine_together(env, [(usdc.functions.mint(b, 10**30), env.owner) for b in buyers], {})
    _mine_together(env, [(usdc.functions.approve(env.escrow.address, 2**256 - 1), b) for b in buyers], {})
    made: list[Order] = []
    for i in range(orders):
        made.append(
            Order(
                order_id=keccak(b"bench-order-%d" % i),
                buyer=buyers[i % len(buyers)],
                merchant=env.merchants[i % 3].address,
                token=usdc.address,
                amount=1_000_000 + i,
                fee_bps=250,
                quote_expiry=now + 86_400,
                fulfilment_deadline=now + 2 * 86_400,
                sku_hash=keccak(b"sku:genshin-60"),
                account_commitment=keccak(b"account-%d" % i),
            )
        )
    quote = env.quote_key
    nonces: dict[str, int] = {}
    for start in range(0, orders, PER_BLOCK):
        chunk = made[start : start + PER_BLOCK]
        _mine_together(
            env,
            [
                (
                    env.escrow.functions.pay(o.as_tuple(), quote.address, sign(quote.key, quote_typed_data(env.domain, o))),
                    o.buyer,
                )
                for o in chunk
            ],
            nonces,
        )
    oracle = env.oracle_key
    fulfilled_at = env.chain.now()
    batch: list[Order] = []
    for i, o in enumerate(made):
        if i % 100 == 0:
            sig = sign(oracle.key, refund_typed_data(env.domain, o.order_id, 1))
            env.escrow.functions.refund(o.as_tuple(), 1, oracle.address, sig).transact({"from": env.bystander, "gas": GAS})
        elif i % 100 == 1:
            f = Fulfilment(o.order_id, keccak(b"receipt" + o.order_id), fulfilled_at)
            sig = sign(oracle.key, fulfilment_typed_data(env.domain, f))
            env.escrow.functions.settle(o.as_ref_tuple(), f.as_tuple(), oracle.address, sig).transact(
                {"from": env.bystander, "gas": GAS}
            )
        else:
            batch.append(o)
        if len(batch) == BATCH or (i == len(made) - 1 and batch):
            fs = [Fulfilment(b.order_id, keccak(b"receipt" + b.order_id), fulfilled_at) for b in batch]
            sig = sign(oracle.key, batch_typed_data(env.domain, fs))
            env.escrow.functions.settleBatch(
                [b.as_ref_tuple() for b in batch], [f.as_tuple() for f in fs], oracle.address, sig
            ).transact({"from": env.bystander, "gas": 30_000_000})
            batch = []
    return made


def main(orders: int = 10_000) -> dict[str, Any]:
    with DevNode(port=0) as node:
        env = build_env(node.chain)
        started = time.perf_counter()
        build_history(env, orders)
        built = time.perf_counter() - started
        w3 = Web3(HTTPProvider(node.url, request_kwargs={"timeout": 120}))
        latest = w3.eth.block_number
        reader = ChainReader(w3)
        started = time.perf_counter()
        report = Auditor(reader, env.escrow.address).run(0, latest)
        seconds = time.perf_counter() - started
    doc = report.as_json()
    result = {
        "orders": doc["orders"],
        "settled": doc["settled"],
        "refunded": doc["refunded"],
        "violations": len(doc["violations"]),
        "blocks": latest + 1,
        "audit_seconds": round(seconds, 2),
        "rpc_calls": doc["rpc"]["calls"],
        "http_requests": doc["rpc"]["http_requests"],
        "rpc_by_method": doc["rpc"]["by_method"],
        "history_build_seconds": round(built, 1),
    }
    return result


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    out = main(count)
    if count == 10_000:
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
