"""CPU of each part of the API path that a fix of issue 12 replaced, old way against new, in one process.

    PYTHONPATH=. python -m bench.api_parts
    PYTHONPATH=. python -m bench.api_parts --framework-ab [--rounds 3] [--seconds 5] [--concurrency 4]

Starts the ``make run`` system (as ``bench.api`` does), then calls each part a few hundred times and
prints the CPU per call of the calling thread (the gateway's share; insensitive to the machine's load,
unlike rates) and of the whole process (with the in-process dev node's answer, and whatever the idle
oracle does meanwhile). The old ways are still in the code base, so both sides are measured today.

``--framework-ab`` measures the requests answered in front of FastAPI (``gateway.api.quote_creation``,
``gateway.api.order_status``) against the same requests sent to the route (a query string sends them
there), on the production setup of ``bench.api`` (anvil, the simulated provider, two gateway
processes): rounds of a closed loop of ``--concurrency`` clients, one way then the other, in the same
minutes, and the gateway processes' CPU per request of each round.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.api import Production, _proc_cpu, loadgen, quoted_orders, start_system
from bench.loadgen import load_info


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def timed(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    """(process CPU ms, this thread's CPU ms) per call, after 20 warm-up calls."""
    for _ in range(20):
        fn()
    process, thread = _cpu(), time.thread_time()
    for _ in range(n):
        fn()
    return 1000 * (_cpu() - process) / n, 1000 * (time.thread_time() - thread) / n


def framework_ab(rounds: int, seconds: float, concurrency: int) -> int:
    import json

    with tempfile.TemporaryDirectory(prefix="cardless-bench-ab-") as tmp:
        work = Path(tmp)
        stack = Production(work, 2)
        try:
            stack.start()
            ids = work / "ids.json"
            ids.write_text(json.dumps(quoted_orders(stack.gateway_url, 64)))
            print(f"load {load_info()['loadavg_1m']}; gateway CPU ms per request, {concurrency} clients")
            print(f"{'round':<7}{'route':<14}{'in front':>10}{'framework':>11}")
            for n in range(rounds):
                for kind in ("quote", "status"):
                    row = []
                    for query in ("", "via=framework"):
                        extra = ["--order-ids", str(ids)] if kind == "status" else []
                        cpu0 = _proc_cpu(stack.pids)
                        result = loadgen(
                            [
                                *(
                                    "api",
                                    "--url",
                                    stack.gateway_url,
                                    "--kind",
                                    kind,
                                    "--seconds",
                                    str(seconds),
                                ),
                                *("--concurrency", str(concurrency), "--query", query, *extra),
                            ],
                            work / "ab.json",
                        )
                        total = max(1, int(result["requests_total"]))
                        row.append(1000 * (_proc_cpu(stack.pids) - cpu0) / total)
                    print(f"{n + 1:<7}{kind:<14}{row[0]:>10.3f}{row[1]:>11.3f}")
            print(f"load {load_info()['loadavg_1m']}")
        finally:
            stack.stop()
    return 0


def main() -> int:
    if "--framework-ab" in sys.argv:
        import argparse

        parser = argparse.ArgumentParser(prog="python -m bench.api_parts")
        parser.add_argument("--framework-ab", action="store_true")
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--seconds", type=float, default=5)
        parser.add_argument("--concurrency", type=int, default=4)
        args = parser.parse_args()
        return framework_ab(args.rounds, args.seconds, args.concurrency)
    from eth_utils import to_checksum_address

    from cardless import protocol
    from cardless.ledger.models import Order
    from gateway.services.orders import find_public_order_status
    from gateway.services.quotes import _chain_now
    from gateway.services.skus import QuotableCache, quotable

    with tempfile.TemporaryDirectory(prefix="cardless-bench-parts-") as tmp:
        system = start_system(Path(tmp) / "var", "embedded")
        try:
            context = system.gateway_context
            assert context is not None
            w3, sessions, key = context.w3, context.sessions, context.quotes.quote_key.key
            engine = sessions.kw["bind"]
            domain = context.deployment.domain
            order_id = quoted_orders(system.gateway_url, 1)[0]
            order = protocol.Order(
                order_id=secrets.token_bytes(32),
                buyer=to_checksum_address("0x" + "11" * 20),
                merchant=to_checksum_address("0x" + "22" * 20),
                token=to_checksum_address("0x" + "33" * 20),
                amount=10**6,
                fee_bps=250,
                quote_expiry=2_000_000_000,
                fulfilment_deadline=2_000_003_600,
                sku_hash=secrets.token_bytes(32),
                account_commitment=secrets.token_bytes(32),
            )
            cache = QuotableCache()

            def sku_queries() -> None:
                with sessions() as session:
                    quotable(session, "genshin-60")

            def full_row() -> None:
                with sessions() as session:
                    row = session.get(Order, order_id)
                    assert row is not None

            def public_columns() -> None:
                with engine.connect() as connection:
                    found = find_public_order_status(connection, order_id)
                    assert found is not None
                    found.model_dump_json()

            import asyncio

            from eth_utils import is_address
            from eth_utils import to_checksum_address as eth_utils_checksum

            from cardless.cli.provider_http import AiohttpTransport
            from gateway.services.ratelimits import QuoteLimits

            def validations(inner: Callable[[], Any] | None) -> Callable[[], Any]:
                """50 account checks on one event loop, through httpx's transport or aiohttp's."""
                clients: list[Any] = []
                adapter = system._adapters(clients, inner)["simulator"]
                loop = asyncio.new_event_loop()  # one loop for every call: the pools stay warm

                async def run() -> None:
                    for i in range(50):
                        await adapter.validate("genshin-60", str(20_000_000 + i))

                return lambda: loop.run_until_complete(run())

            buyer = "0x" + secrets.token_hex(20)
            limits = QuoteLimits(per_client="1000000/minute", per_buyer="1000000/minute", sessions=sessions)
            parts: list[tuple[str, Callable[[], Any], int]] = [
                ("50 account checks: httpx transport", validations(None), 10),
                ("50 account checks: aiohttp transport", validations(AiohttpTransport), 10),
                (
                    "EIP-55: eth_utils is_address + checksum",
                    lambda: eth_utils_checksum(buyer) if is_address(buyer) else None,
                    2000,
                ),
                ("EIP-55: protocol.checksum_address", lambda: protocol.checksum_address(buyer), 2000),
                ("quote limits: database counter", lambda: limits.hit(client="10.1.1.1", buyer=buyer), 400),
                ("SKU terms: 3 queries", sku_queries, 400),
                ("SKU terms: QuotableCache hit", lambda: cache.get(sessions, "genshin-60"), 4000),
                ("chain time: w3.eth.get_block", lambda: w3.eth.get_block("latest")["timestamp"], 300),
                ("chain time: one raw eth_getBlockByNumber", lambda: _chain_now(w3), 300),
                (
                    "quote signature: typed data + eth_account",
                    lambda: protocol.sign(key, protocol.quote_typed_data(domain, order)),
                    400,
                ),
                (
                    "quote signature: quote_digest + coincurve",
                    lambda: protocol.sign_digest(key, protocol.quote_digest(domain, order)),
                    4000,
                ),
                ("order read: ORM session.get (full row)", full_row, 1000),
                ("order read: public columns + JSON", public_columns, 1000),
            ]
            print(f"load {load_info()['loadavg_1m']}; CPU ms per call")
            print(f"{'part':<45}{'thread':>10}{'process':>10}")
            for name, fn, n in parts:
                process, thread = timed(fn, n)
                print(f"{name:<45}{thread:>10.3f}{process:>10.3f}")
        finally:
            system.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
