"""Starting the oracle imports no web framework and no simulator (DESIGN.md: "Starting the oracle imports
no web framework").

Real components: a dev chain node (``DevNode``, py-evm over HTTP JSON-RPC) with the dev system deployed
for freshly made keystores, and a Python subprocess that imports the wiring ``cardless oracle`` uses
(``cardless.cli.main.start_system``), starts the oracle against that node exactly as the command does,
waits until the worker runs, and only then reports which modules are loaded.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from web3 import HTTPProvider, Web3

from cardless.devchain.deploy import deploy_dev_system
from cardless.devchain.node import DevNode
from oracles.keys import load_or_create_keystore

# a child process that starts a node and the oracle (seconds); make test-fast leaves it out
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "oracle-imports-keystore-password"
FORBIDDEN = ("fastapi", "starlette", "uvicorn", "adapters.simulator", "cardless.devchain", "eth_tester")

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from cardless.cli.main import start_system

    system = start_system(embedded=False, gateway=False, oracle=True)  # what `cardless oracle` runs
    try:
        deadline = time.monotonic() + 30
        while system.worker is None and time.monotonic() < deadline:
            time.sleep(0.05)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"fastapi", "starlette", "uvicorn"}
                        or m.startswith(("adapters.simulator", "cardless.devchain", "eth_tester")))
        print(json.dumps({"worker": system.worker is not None, "loaded": loaded,
                          "adapters": sorted(system.worker.adapters) if system.worker else []}))
    finally:
        system.stop()
    """
)


def test_the_running_oracle_has_not_imported_a_web_framework_or_the_simulator(tmp_path: Path) -> None:
    var = tmp_path / "var"
    keys = var / "keys"
    quote = load_or_create_keystore(keys / "quote-signer.json", PASSWORD, scrypt_n=2**10)
    oracle = load_or_create_keystore(keys / "oracle-signer.json", PASSWORD, scrypt_n=2**10)
    load_or_create_keystore(keys / "gas-payer.json", PASSWORD, scrypt_n=2**10)
    node = DevNode(port=0).start()
    try:
        w3 = Web3(HTTPProvider(node.url, request_kwargs={"timeout": 30}))
        deployment = deploy_dev_system(
            w3, quote_signer=quote.address, oracle_signer=oracle.address, rpc_url=node.url
        )
        deployment.save(var / "deployment.json")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CARDLESS_")}
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            cwd=ROOT,
            env={
                **clean,
                "PYTHONPATH": str(ROOT),
                "CARDLESS_ENVIRONMENT": "test",  # nothing generated: keys and secrets as in production
                "CARDLESS_VAR_DIR": str(var),
                "CARDLESS_CHAIN_RPC_URL": node.url,
                "CARDLESS_KEYSTORE_PASSWORD": PASSWORD,
                "CARDLESS_ACCOUNT_KEY": base64.b64encode(bytes(32)).decode(),
                "CARDLESS_SIM_SECRET": "s",
                "CARDLESS_SIM_CALLBACK_SECRET": "s",
                "CARDLESS_SIM_MD5_SECRET": "s",
                "CARDLESS_SIM_MD5_CALLBACK_SECRET": "s",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        node.stop()
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["worker"] is True
    assert report["adapters"] == ["simulator", "simulator-md5"]  # the bundled providers, via the registry
    assert report["loaded"] == [], f"the oracle process imported {report['loaded']} (forbidden: {FORBIDDEN})"
