"""The benchmarks' load generator: a process of its own, so it never shares a GIL with what it measures.

    python -m bench.loadgen api --url URL --kind status|quote --seconds S [--concurrency 16] --out F
    python -m bench.loadgen api --url URL --kind status|quote --seconds S --rate R [--connections 256] --out F
    python -m bench.loadgen buyers --gateway URL --rpc URL --orders N [--rate R] --out F [--pay-only]

``api``: ``concurrency`` asyncio clients (one keep-alive HTTP/1.1 connection each, a minimal hand-written
client on uvloop, so the generator's own CPU per request stays far below the server's) send requests
back to back for ``seconds`` after a one-second warm-up; the JSON gives rps, p50/p99 (ms), the error
count and the generator's own CPU seconds. That is a closed loop: at saturation its latency is mostly
the clients' own queue (Little's law: 16 clients / rate). With ``--rate R`` the load is an open loop
instead: request ``i`` is due at ``start + i / R`` whatever the earlier ones are doing, is sent then on an
idle keep-alive connection (a new one when none is idle, at most ``--connections``; past that it waits
for one), and its latency counts from when it was due, not from when it could be sent, so a server
that falls behind shows it in the percentiles instead of slowing the generator down ("coordinated
omission"). ``rps`` is then the achieved rate of good answers.

``buyers``: ``--buyers`` wallets (deterministic keys, funded from dev account 1 with ETH, each minting the
test stablecoin to itself and approving the escrow once, all before the clock starts) take ``N`` quotes
from the gateway (16 at a time; the quote rate is reported too), sign every ``pay`` transaction, then
send them at ``rate`` per second (0: as fast as the node takes them), each wallet's in nonce order, all
wallets in parallel. The JSON lists every order with the wall-clock time (``time.time()``) its ``pay``
was accepted by the node, which the caller compares with the ledger's settlement times.
Payment is one transaction per order (approval given once per wallet), so the node's raw rate of ``pay``
transactions is the ceiling the oracle is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

__all__ = ["buyer_keys", "load_info", "percentiles", "summarise"]

SKUS = ("genshin-60", "pubg-60uc")
"""Cheap SKUs with deep stock at the simulated provider (tUSDC)."""
FUNDER_KEY = 1
"""Dev account 1 (the deployer): 1,000,000 ETH on every dev chain."""
PAY_GAS = 250_000
STALE_KEEP_ALIVE = 4.0
"""Seconds after which the open loop reconnects an idle connection rather than reuse it: uvicorn closes
a keep-alive connection after 5 idle seconds, and a request written as it does so is lost (a client
would retry it; the generator would count it as an error)."""
PAY_WINDOW = 16
"""A wallet's pays sent and not yet mined, at most (see ``sender``)."""


def load_info() -> dict[str, Any]:
    """Where the figures were taken: cores and the load average of the whole machine at the time."""
    one, five, fifteen = (float(x) for x in Path("/proc/loadavg").read_text().split()[:3])
    return {"cores": os.cpu_count(), "loadavg_1m": one, "loadavg_5m": five, "loadavg_15m": fifteen}


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 (inclusive method) of ``values`` in their own unit, None when empty."""
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    if len(values) == 1:
        v = round(values[0], 1)
        return {"p50": v, "p95": v, "p99": v}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1)}


def summarise(latencies_s: Sequence[float], seconds: float, errors: int) -> dict[str, Any]:
    """Requests per second and latency percentiles (ms) of one measured window."""
    ms = [x * 1000 for x in latencies_s]
    p = percentiles(ms)
    return {
        "requests": len(ms),
        "errors": errors,
        "seconds": round(seconds, 3),
        "rps": round(len(ms) / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": p["p50"],
        "p99_ms": p["p99"],
    }


def buyer_keys(count: int) -> list[bytes]:
    """Deterministic bench wallets (never dev accounts 1..10, which the system uses)."""
    from eth_utils import keccak

    return [keccak(b"cardless-bench-buyer-%d" % i) for i in range(count)]


# ----------------------------------------------------------------------------- api


def _quote_body(rng: random.Random, buyer: str) -> dict[str, str]:
    return {
        "sku": SKUS[rng.randrange(len(SKUS))],
        "account": str(rng.randrange(10_000_000, 99_999_999)),
        "token": "tUSDC",
        "buyer": buyer,
    }


class _Connection:
    """One keep-alive HTTP/1.1 connection, written by hand: httpx costs the generator about 1 ms of CPU
    per request, which on a 2-core machine caps what it can offer well below the server's rate. Every
    answer is read whole (status line, headers, ``Content-Length`` or chunked body)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        head += "User-Agent: cardless-loadgen\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
            status = int(raw[9:12])
            length, chunked, close = 0, False, False
            for line in raw.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    close = b"close" in value.lower()
            if chunked:
                parts = []
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    parts.append(await self.reader.readexactly(size + 2))
                    if size == 0:
                        break
                payload = b"".join(p[:-2] for p in parts)
            else:
                payload = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            self.close()
            raise
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _hammer(
    request: Callable[[_Connection, int], Awaitable[tuple[int, bytes]]],
    *,
    url: str,
    concurrency: int,
    seconds: float,
    warmup: float,
    ok: tuple[int, ...],
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    sent = 0
    where = httpx.URL(url)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def client(index: int) -> None:
        nonlocal errors, sent
        connection = _Connection(where.host, where.port or 80)
        n = 0
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    status, _ = await asyncio.wait_for(request(connection, index * 1_000_000 + n), 30)
                    good = status in ok
                except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
                    connection.close()
                    good = False
                t1 = time.perf_counter()
                n += 1
                sent += 1
                if t0 >= measure_from:
                    if good:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1
        finally:
            connection.close()

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    # All requests answered, warm-up included: the server's CPU over the whole run is divided by it.
    return {**summarise(latencies, time.perf_counter() - measure_from, errors), "requests_total": sent}


async def _offer(
    request: Callable[[_Connection, int], Awaitable[tuple[int, bytes]]],
    *,
    url: str,
    rate: float,
    connections: int,
    seconds: float,
    warmup: float,
    ok: tuple[int, ...],
) -> dict[str, Any]:
    """The open loop (see the module's docstring): request ``n`` is due at ``start + n / rate``."""
    latencies: list[float] = []
    errors = 0
    answered = 0
    in_flight = most_in_flight = 0
    where = httpx.URL(url)
    idle: list[_Connection] = []
    opened: list[_Connection] = []
    used: dict[int, float] = {}
    slots = asyncio.Semaphore(connections)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def one(n: int, due: float) -> None:
        nonlocal errors, answered, in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        async with slots:
            if idle:
                connection = idle.pop()  # the most recently used one
                if time.perf_counter() - used.get(id(connection), 0.0) > STALE_KEEP_ALIVE:
                    connection.close()  # the server may have closed it: connect again (counted)
            else:
                connection = _Connection(where.host, where.port or 80)
                opened.append(connection)
            try:
                status, _ = await asyncio.wait_for(request(connection, n), 30)
                good = status in ok
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
                connection.close()  # reconnects on its next request
                good = False
            idle.append(connection)
        done = used[id(connection)] = time.perf_counter()
        in_flight -= 1
        answered += 1
        if due >= measure_from:
            if good:
                latencies.append(done - due)  # from when it was due: waiting to be sent counts
            else:
                errors += 1

    tasks: set[asyncio.Task[None]] = set()
    n = 0
    while (due := start + n / rate) < stop_at:
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        # Everything due by now goes out, even after a late wake-up: the schedule, not the loop, decides.
        task = asyncio.create_task(one(n, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    offered_until = time.perf_counter()
    while tasks:
        await asyncio.gather(*tasks)
    for connection in opened:
        connection.close()
    result = summarise(latencies, seconds, errors)
    return {
        **result,
        "requests_total": answered,
        "offered_rps": rate,
        "schedule_lag_ms": round(1000 * max(0.0, offered_until - stop_at), 1),
        "connections_opened": len(opened),
        "most_in_flight": most_in_flight,
    }


def run_api(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    query = f"?{args.query}" if args.query else ""
    if args.kind == "healthz":

        async def healthz(http: _Connection, n: int) -> tuple[int, bytes]:
            return await http.request("GET", "/healthz")

        request, ok = healthz, (200,)
    elif args.kind == "status":
        ids: list[str] = json.loads(Path(args.order_ids).read_text())

        async def status(http: _Connection, n: int) -> tuple[int, bytes]:
            return await http.request("GET", f"/v1/orders/{ids[n % len(ids)]}{query}")

        request, ok = status, (200,)
    else:
        from eth_account import Account

        buyers = [Account.from_key(k).address for k in buyer_keys(64)]

        async def quote(http: _Connection, n: int) -> tuple[int, bytes]:
            body = json.dumps(_quote_body(rng, buyers[n % len(buyers)])).encode()
            return await http.request("POST", "/v1/quotes" + query, body)

        request, ok = quote, (201,)
    started = os.times()
    if args.rate:
        load = _offer(
            request,
            url=args.url,
            rate=args.rate,
            connections=args.connections,
            seconds=args.seconds,
            warmup=args.warmup,
            ok=ok,
        )
        shape = {"loop": "open", "connections": args.connections}
    else:
        load = _hammer(
            request,
            url=args.url,
            concurrency=args.concurrency,
            seconds=args.seconds,
            warmup=args.warmup,
            ok=ok,
        )
        shape = {"loop": "closed", "concurrency": args.concurrency}
    result = _run(load)
    used = os.times()
    cpu = used.user + used.system - started.user - started.system
    return {**result, **shape, "kind": args.kind, "loadgen_cpu_s": round(cpu, 2)}


def _run(coroutine: Any) -> Any:
    """uvloop when installed (it is, with uvicorn[standard]): the generator's own cost per request."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# ----------------------------------------------------------------------------- buyers


class _Rpc:
    """JSON-RPC to the node over hand-written keep-alive connections (``_Connection``), one per call in
    flight, reused: httpx cost the buyers' side about 1 ms of CPU per call, and in bench-e2e's saturated
    phases that came out of the two cores the node and the oracle need (the wallets it stands for run on
    the buyers' machines)."""

    def __init__(self, url: str, timeout: float = 120) -> None:
        where = httpx.URL(url)
        self.host, self.port = where.host, where.port or (443 if where.scheme == "https" else 80)
        self.path = where.raw_path.decode() or "/"
        self.timeout = timeout
        self.idle: list[_Connection] = []
        self.ids = 0

    async def call(self, method: str, *params: Any) -> Any:
        self.ids += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params}).encode()
        connection = self.idle.pop() if self.idle else _Connection(self.host, self.port)
        try:
            answer = connection.request("POST", self.path, body)
            status, payload = await asyncio.wait_for(answer, self.timeout)
        except BaseException:
            connection.close()  # a half-read answer would be the next call's
            raise
        self.idle.append(connection)
        if status != 200:
            raise ConnectionError(f"{method}: HTTP {status}")
        reply = json.loads(payload)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()

    async def receipt(self, tx_hash: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await self.call("eth_getTransactionReceipt", tx_hash)
            if found is not None:
                return dict(found)
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no receipt for {tx_hash}")


async def _fund(rpc: _Rpc, wallets: list[Any], chain_id: int, token: str, escrow: str) -> None:
    """ETH from dev account 1, then each wallet mints itself tUSDC (open minting) and approves the escrow."""
    from eth_abi import encode
    from eth_account import Account
    from eth_utils import function_signature_to_4byte_selector as selector

    funder = Account.from_key(FUNDER_KEY.to_bytes(32, "big"))
    nonce = int(await rpc.call("eth_getTransactionCount", funder.address, "pending"), 16)
    fee = {"maxFeePerGas": 200 * 10**9, "maxPriorityFeePerGas": 10**9, "chainId": chain_id}
    last = ""
    for wallet in wallets:
        tx = {"to": wallet.address, "value": 100 * 10**18, "gas": 21_000, "nonce": nonce, **fee}
        nonce += 1
        last = await rpc.call("eth_sendRawTransaction", _raw(funder, tx))
    await rpc.receipt(last)
    mint = selector("mint(address,uint256)")
    approve = selector("approve(address,uint256)")
    hashes = []
    for wallet in wallets:
        calls = [
            mint + encode(["address", "uint256"], [wallet.address, 10**15]),
            approve + encode(["address", "uint256"], [escrow, 2**256 - 1]),
        ]
        for n, data in enumerate(calls):
            tx = {"to": token, "value": 0, "data": "0x" + data.hex(), "gas": 120_000, "nonce": n, **fee}
            hashes.append(await rpc.call("eth_sendRawTransaction", _raw(wallet, tx)))
    for tx_hash in hashes:
        if int((await rpc.receipt(tx_hash))["status"], 16) != 1:
            raise RuntimeError(f"funding transaction {tx_hash} reverted")


def _raw(account: Any, tx: dict[str, Any]) -> str:
    return "0x" + bytes(account.sign_transaction(tx).raw_transaction).hex()


async def _buyers(args: argparse.Namespace) -> dict[str, Any]:
    from eth_account import Account
    from eth_utils import keccak

    rng = random.Random(args.seed)
    wallets = [Account.from_key(k) for k in buyer_keys(args.buyers)]
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    rpc = _Rpc(args.rpc)
    async with httpx.AsyncClient(base_url=args.gateway, timeout=60, limits=limits) as http:
        health = (await http.get("/v1/health")).raise_for_status().json()
        deployment = health["deployment"]
        chain_id = int(deployment["chain_id"])
        token = next(t["address"] for t in deployment["tokens"] if t["symbol"] == "tUSDC")
        await _fund(rpc, wallets, chain_id, token, deployment["escrow"])

        # Quotes, 16 at a time (timed on their own: the quote rate is the gateway's, not the oracle's).
        quotes: list[dict[str, Any] | None] = [None] * args.orders
        queue = list(range(args.orders))
        quote_errors = 0

        async def quoter() -> None:
            nonlocal quote_errors
            while queue:
                i = queue.pop()
                body = _quote_body(rng, wallets[i % len(wallets)].address)
                for _ in range(5):
                    reply = await http.post("/v1/quotes", json=body)
                    if reply.status_code == 201:
                        quotes[i] = reply.json()
                        break
                    quote_errors += 1
                    await asyncio.sleep(0.2)

        t0 = time.perf_counter()
        await asyncio.gather(*(quoter() for _ in range(args.concurrency)))
        quote_seconds = time.perf_counter() - t0

        # Every pay transaction signed before the clock starts (signing is the buyers' wallets' work).
        base = int((await rpc.call("eth_getBlockByNumber", "latest", False)).get("baseFeePerGas", "0x0"), 16)
        fee = {"maxFeePerGas": max(4 * base, 50 * 10**9), "maxPriorityFeePerGas": 10**9, "chainId": chain_id}
        per_wallet: dict[int, list[tuple[int, str]]] = {}
        nonces = {w.address: 2 for w in wallets}  # mint and approve took nonces 0 and 1
        for i, quote in enumerate(quotes):
            if quote is None:
                continue
            wallet = wallets[i % len(wallets)]
            pay = next(s for s in quote["transactions"] if s["step"] == "pay")
            tx = {
                "to": pay["to"],
                "value": int(pay["value"]),
                "data": pay["data"],
                "gas": PAY_GAS,
                "nonce": nonces[wallet.address],
                **fee,
            }
            nonces[wallet.address] += 1
            per_wallet.setdefault(i % len(wallets), []).append((i, _raw(wallet, tx)))

        sent_at: dict[int, float] = {}
        hashes: dict[int, str] = {}
        send_errors: list[str] = []
        start = time.time() + 0.2
        interval = 1.0 / args.rate if args.rate > 0 else 0.0

        async def sender(address: str, jobs: list[tuple[int, str]]) -> None:
            mined = 2  # the wallet's nonce count on chain: mint and approve
            for k, (i, raw) in enumerate(jobs):
                # At most PAY_WINDOW of a wallet's pays sent and not yet mined: anvil answers a send
                # before it mines, and with thousands pending (N=10,000 at full speed) its mining
                # stalled; the window still lets 32 x PAY_WINDOW pays wait, far more than it mines
                # between two polls, so the rate is the node's own.
                while 2 + k - mined >= PAY_WINDOW:
                    mined = int(await rpc.call("eth_getTransactionCount", address, "latest"), 16)
                    if 2 + k - mined >= PAY_WINDOW:
                        await asyncio.sleep(0.01)
                if interval:
                    delay = start + i * interval - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                # A pay that never reaches the node leaves a nonce gap: every later pay of its wallet
                # would wait in the pool forever. So a transport error is retried (the same signed
                # bytes: the node takes them once, and says "known" to a repeat).
                for attempt in range(6):
                    try:
                        hashes[i] = await rpc.call("eth_sendRawTransaction", raw)
                        sent_at[i] = time.time()
                    except RuntimeError as exc:
                        if "known" in str(exc) or "nonce too low" in str(exc):  # a retry the node took
                            hashes[i] = "0x" + keccak(hexstr=raw).hex()
                            sent_at[i] = time.time()
                        else:
                            send_errors.append(repr(exc)[:200])
                    except Exception as exc:  # reported; retried, then the run goes on
                        send_errors.append(repr(exc)[:200])
                        await asyncio.sleep(0.1 * 2**attempt)
                        continue
                    break

        await asyncio.sleep(max(0.0, start - time.time()))
        pay_start = time.time()
        await asyncio.gather(*(sender(wallets[key].address, jobs) for key, jobs in per_wallet.items()))
        sent_done = time.time()
        # Mined: every wallet's last pay has a receipt (nonces are in order, so all before it are in too).
        reverted = 0
        for jobs in per_wallet.values():
            last = max((i for i, _ in jobs if i in hashes), default=None)
            if last is not None:
                # anvil answers a send before it mines: under load 10,000 pays queue for minutes
                receipt = await rpc.receipt(hashes[last], timeout=max(120.0, args.orders / 10))
                reverted += int(receipt["status"], 16) != 1
        mined_done = time.time()
    rpc.close()
    paid = len(sent_at)
    return {
        "orders": args.orders,
        "quoted": sum(q is not None for q in quotes),
        "quote_errors": quote_errors,
        "quote_rps": round(sum(q is not None for q in quotes) / quote_seconds, 1) if quote_seconds else None,
        "offered_rate": args.rate,
        "paid": paid,
        "send_errors": send_errors[:5],
        "send_error_count": len(send_errors),
        "last_pays_reverted": reverted,
        "pay_start": pay_start,
        "pay_sent_seconds": round(sent_done - pay_start, 3),
        "pay_mined_seconds": round(mined_done - pay_start, 3),
        "raw_pay_tps": round(paid / (mined_done - pay_start), 2) if paid else 0.0,
        "pays": [
            {"order_id": quotes[i]["order_id"], "sent_at": sent_at[i], "tx": hashes[i]}  # type: ignore[index]
            for i in sorted(sent_at)
        ],
    }


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    sub = parser.add_subparsers(dest="mode", required=True)
    api = sub.add_parser("api")
    api.add_argument("--url", required=True)
    api.add_argument("--kind", choices=("healthz", "status", "quote"), required=True)
    api.add_argument("--order-ids", help="JSON file: a list of order ids (kind status)")
    api.add_argument("--seconds", type=float, default=10)
    api.add_argument("--warmup", type=float, default=1)
    api.add_argument("--concurrency", type=int, default=16, help="closed loop: clients, back to back")
    api.add_argument("--rate", type=float, default=0, help="open loop: requests per second on a schedule")
    api.add_argument("--connections", type=int, default=256, help="open loop: connections at most")
    api.add_argument(
        "--query", default="", help="a query string for every request (via=framework: the route)"
    )
    buyers = sub.add_parser("buyers")
    buyers.add_argument("--gateway", required=True)
    buyers.add_argument("--rpc", required=True)
    buyers.add_argument("--orders", type=int, required=True)
    buyers.add_argument("--rate", type=float, default=0, help="pays per second offered (0: as fast as taken)")
    buyers.add_argument("--buyers", type=int, default=32)
    buyers.add_argument("--concurrency", type=int, default=16, help="quote requests in flight")
    for p in (api, buyers):
        p.add_argument("--seed", type=int, default=12)
        p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = run_api(args) if args.mode == "api" else asyncio.run(_buyers(args))
    result["load"] = load_info()
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
