"""Hostile requests against `cardless run` (gateway, dev chain and simulated provider in one process, as
`make run` starts them), then a normal purchase through the same process.

Each body here once hurt the process or answered out of proportion: 100,000 nested brackets killed it
with SIGSEGV; a 50 MB body was read and parsed; 60,000 unknown keys came back as a 6 MB error after
seconds of work; a batch of 100,000 JSON-RPC calls held the chain's lock for 11 s; a superscript digit
in a callback's timestamp header was a 500 with a traceback; full-width digits were topped up as a
different account. The system runs in a child process so that a crash fails this test rather than
killing pytest; after the barrage it must still be alive, have logged no traceback, and settle a
normal order.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from web3 import HTTPProvider, Web3

from cardless.cli.demo import pay_quote
from tests.support.shop import PROBLEM, dev_wallet

pytestmark = [pytest.mark.long, pytest.mark.integration]

BUYER = dev_wallet(9)
QUOTE = {"sku": "genshin-60", "token": "tUSDC", "account": "12345678", "buyer": BUYER.address}
JSON = {"content-type": "application/json"}

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE = b'{"a":"' + b"x" * (50 * 1024 * 1024) + b'"}'
KEYS_100K = b"{" + b",".join(b'"k%d":1' % i for i in range(100_000)) + b"}"  # 1.3 MB
KEYS_60K = json.dumps(QUOTE).encode()[:-1] + b"," + b",".join(b'"k%d":1' % i for i in range(60_000)) + b"}"
LONG_KEY = json.dumps({**QUOTE, "k" * 900_000: 1}).encode()
BIG_INT = json.dumps(QUOTE).replace('"12345678"', "1" * 100_000).encode()
BAD_UTF8 = json.dumps(QUOTE).replace("12345678", "@@").encode().replace(b"@@", b"\xff\xfe")
NAN = json.dumps(QUOTE).replace('"genshin-60"', "NaN").encode()
FULL_WIDTH = json.dumps({**QUOTE, "account": "１２３４５６７８９"}, ensure_ascii=False).encode()
BATCH = json.dumps(
    [{"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber"} for i in range(100_000)]
).encode()

SMALL = 4096
"""No answer to a hostile request is larger than this."""


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    log: Path
    gateway: str
    chain: str
    simulator: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    var = tmp_path_factory.mktemp("hostile")
    ports = {name: _free_port() for name in ("GATEWAY", "CHAIN", "SIMULATOR")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDLESS_")}
    env.update(
        {
            "CARDLESS_VAR_DIR": str(var),
            "CARDLESS_GATEWAY_PORT": str(ports["GATEWAY"]),
            "CARDLESS_CHAIN_PORT": str(ports["CHAIN"]),
            "CARDLESS_SIMULATOR_PORT": str(ports["SIMULATOR"]),
            "CARDLESS_KEYSTORE_SCRYPT_N": "16",
        }
    )
    log = var / "cardless-run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("cardless")), "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    gateway = f"http://127.0.0.1:{ports['GATEWAY']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"cardless run exited {process.returncode}:\n{log.read_text()}"
            try:
                if httpx.get(f"{gateway}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"cardless run did not answer:\n{log.read_text()}"
            time.sleep(0.25)
        yield Running(
            process,
            log,
            gateway,
            f"http://127.0.0.1:{ports['CHAIN']}",
            f"http://127.0.0.1:{ports['SIMULATOR']}",
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    extra = {name: value.encode("latin-1") for name, value in (headers or {}).items()}
    return httpx.post(url, content=body, headers={**JSON, **extra}, timeout=60)


def _problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith(PROBLEM)
    assert len(response.content) <= SMALL, len(response.content)


def _rpc_error(response: httpx.Response, code: int) -> None:
    assert response.status_code == 200, response.text[:500]
    assert len(response.content) <= SMALL, len(response.content)
    assert response.json()["error"]["code"] == code, response.text[:500]


def test_hostile_bodies_are_refused_in_proportion_and_a_purchase_then_settles(running: Running) -> None:
    quotes = f"{running.gateway}/v1/quotes"
    topup = f"{running.simulator}/api/v1/topup"

    # Nesting, size and width: refused before parsing, with a small answer.
    for url in (quotes, topup):
        _problem(_post(url, DEEP), 400)
        _problem(_post(url, HUGE), 413)
        _problem(_post(url, KEYS_100K), 413)
    _rpc_error(_post(running.chain, DEEP), -32600)
    assert _post(running.chain, HUGE).status_code == 413

    # A body of a declared length that streams more, and one with no declared length at all.
    def chunks() -> Iterator[bytes]:
        yield b'{"a":"'
        for _ in range(50):
            yield b"x" * (1024 * 1024)

    _problem(httpx.post(quotes, content=chunks(), headers=JSON, timeout=60), 413)

    # Within the size limit but absurd: many unknown keys, a key of 900 KB, a 100,000-digit number,
    # bytes that are not UTF-8, NaN. Refused naming what is wrong, without echoing it back.
    many = _post(quotes, KEYS_60K)
    _problem(many, 422)
    assert many.json()["detail"].endswith("and 59980 more errors")
    _problem(_post(quotes, LONG_KEY), 422)
    for body in (BIG_INT, BAD_UTF8):
        _problem(_post(quotes, body), 400)
    _problem(_post(quotes, NAN), 422)
    _rpc_error(_post(running.chain, KEYS_100K), -32600)  # no method: not a request, answered
    _rpc_error(_post(running.chain, BIG_INT), -32700)
    _rpc_error(_post(running.chain, BAD_UTF8), -32700)
    _rpc_error(_post(running.chain, BATCH), -32600)
    huge_hex = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_getBalance",
        "params": ["0x" + "f" * 100_000, "latest"],
    }
    _rpc_error(httpx.post(running.chain, json=huge_hex, timeout=60), -32602)

    # Strict parsing: a superscript digit in a callback's timestamp is a 401, not a 500; full-width
    # digits are not the account `123456789`.
    forged = _post(
        f"{running.gateway}/v1/providers/simulator/callback",
        b'{"order_no": "0x00"}',
        {"X-Sim-Timestamp": "\u00b2" * 10, "X-Sim-Signature": "00" * 32},  # sent as latin-1
    )
    _problem(forged, 401)
    refused = _post(quotes, FULL_WIDTH)
    _problem(refused, 422)
    assert refused.json()["errors"][0]["field"] == "account"

    # Still alive: a normal purchase, paid from a dev wallet, settles.
    assert running.process.poll() is None
    w3 = Web3(HTTPProvider(running.chain, request_kwargs={"timeout": 60}))
    quote = httpx.post(quotes, json=QUOTE, timeout=30)
    assert quote.status_code == 201, quote.text
    pay_quote(w3, BUYER, quote.json(), w3.eth.chain_id)
    order_url = f"{running.gateway}/v1/orders/{quote.json()['order_id']}"
    deadline = time.monotonic() + 90
    while (state := httpx.get(order_url, timeout=10).json()["state"]) != "settled":
        assert state not in ("refunded", "reclaimed", "expired", "failed"), state
        assert time.monotonic() < deadline, f"order still {state}"
        time.sleep(0.25)
    assert running.process.poll() is None
    log = running.log.read_text()
    assert "Traceback" not in log, log[-4000:]
