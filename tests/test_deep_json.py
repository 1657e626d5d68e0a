"""Regression: one deeply nested JSON body must not kill a server.

py_ecc raises the recursion limit to 100,000 at import, so before the fix a 200 KB body nested
100,000 levels deep overflowed the C stack in ``json.loads`` and the process died with SIGSEGV. Each
case runs the real server in a child process (with py_ecc imported, as in ``make run``) so that a
regression fails this test instead of killing pytest, sends the body, then checks the same server
still answers a normal request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_PRELUDE = """
import json, threading, time
import httpx, py_ecc, sys
assert sys.getrecursionlimit() >= 100_000, sys.getrecursionlimit()
DEEP = b"[" * 100_000 + b"]" * 100_000
JSON = {"content-type": "application/json"}
T = 60  # httpx's 5 s default is too short on a loaded 2-core machine; a dead server still fails at once
def report(name, deep, normal):
    print(json.dumps({"server": name, "deep": deep, "normal": normal}))
"""

_SERVERS = {
    "gateway": """
import uvicorn
from gateway.app import create_app
from types import SimpleNamespace
# No route is reached: the body is refused in the middleware. The app needs only what it reads at build.
context = SimpleNamespace(sessions=None, w3=None, adapters=None, metrics_collectors=(), quote_limits=None)
server = uvicorn.Server(uvicorn.Config(create_app(context), host="127.0.0.1", port=0, log_level="error"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.02)
url = "http://127.0.0.1:%d" % server.servers[0].sockets[0].getsockname()[1]
deep = httpx.post(url + "/v1/quotes", content=DEEP, headers=JSON, timeout=T)
normal = httpx.get(url + "/openapi.json", timeout=T)  # built on first request
report("gateway", [deep.status_code, deep.headers["content-type"]], normal.status_code)
""",
    "simulator": """
from adapters.simulator.server import SimulatorServer
sim = SimulatorServer(port=0)
sim.start()
deep = httpx.post(sim.url + "/api/topup", content=DEEP, headers=JSON, timeout=T)
normal = httpx.get(sim.url + "/_sim/ledger", timeout=T)
report("simulator", [deep.status_code, deep.headers["content-type"]], normal.status_code)
sim.stop()
""",
    "dev chain": """
from cardless.devchain.node import DevNode
node = DevNode(port=0).start()
deep = httpx.post(node.url, content=DEEP, headers=JSON, timeout=T)
chain_id = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
normal = httpx.post(node.url, json=chain_id, timeout=T)
report("dev chain", [deep.status_code, deep.json()["error"]["code"]], normal.status_code)
node.stop()
""",
}


@pytest.mark.slow  # a child Python process per server (imports web3, FastAPI, py_ecc): ~2 s each
@pytest.mark.parametrize("server", list(_SERVERS))
def test_deeply_nested_body_is_refused_and_the_server_lives(server: str) -> None:
    script = textwrap.dedent(_PRELUDE) + textwrap.dedent(_SERVERS[server])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{server} died (exit {done.returncode}): {done.stderr[-2000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["normal"] == 200
    if server == "dev chain":
        assert result["deep"] == [200, -32600]  # JSON-RPC: an invalid request, answered
    else:
        assert result["deep"] == [400, "application/problem+json"]


def test_the_cli_restores_the_recursion_limit_after_py_ecc_raised_it() -> None:
    """Once `cardless` has imported what it runs (py_ecc set 100,000), the limit is what py-evm needs,
    and importing the dev chain later does not raise it again."""
    script = (
        "import sys, py_ecc; assert sys.getrecursionlimit() == 100_000\n"
        "import cardless.cli.main, cardless.devchain.node, eth\n"
        "print(sys.getrecursionlimit(), eth.EVM_RECURSION_LIMIT)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["12288", "12288"]
