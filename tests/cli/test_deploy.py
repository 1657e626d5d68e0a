"""``cardless deploy`` against a real JSON-RPC node (the session's embedded dev node, and anvil from npm),
as an operator runs it: the owner's key in an encrypted keystore that the node knows nothing about
(transactions signed locally), signer addresses defaulting to this machine's keystores, a token whose
symbol and decimals are read from the chain. The written deployment file is then what ``cardless gateway``
starts from."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner
from web3 import HTTPProvider, Web3

from cardless.cli.keys import load_keys
from cardless.cli.main import app
from cardless.cli.system import System
from cardless.devchain.anvil import AnvilNode, dev_accounts
from cardless.devchain.chain import deploy_contract
from cardless.protocol import NATIVE_TOKEN
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import load_deployment
from oracles.keys import load_or_create_keystore
from tests.support.shop import gateway_settings

PASSWORD = "deploy-test-keystore-password"
FEE_RECIPIENT = "0x" + "fe" * 20


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CARDLESS_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def _anvil_token(anvil: AnvilNode) -> str:
    """A tUSDC on the module's anvil, deployed from dev account 1 (unlocked there as on the dev node)."""
    w3 = Web3(HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
    token = deploy_contract(
        w3, "test-helpers/MockERC20", "Test USD Coin", "tUSDC", 6, sender=dev_accounts()[0].address
    )
    return str(token.address)


@pytest.fixture
def chain(request: pytest.FixtureRequest) -> Iterator[tuple[Web3, str, str]]:
    """(w3, node URL, tUSDC address): the session's embedded dev node, or anvil (``indirect`` "anvil")."""
    if getattr(request, "param", "embedded") == "anvil":
        node: AnvilNode = request.getfixturevalue("anvil")
        w3 = Web3(HTTPProvider(node.url, request_kwargs={"timeout": 30}))
        yield w3, node.url, request.getfixturevalue("_anvil_token")
        return
    system: System = request.getfixturevalue("system")
    assert system.node is not None and system.deployment is not None
    w3 = Web3(HTTPProvider(system.node.url, request_kwargs={"timeout": 30}))
    yield w3, system.node.url, system.deployment.token("tUSDC").address


def owner_keystore(tmp_path: Path, w3: Web3, *, fund: bool = True) -> tuple[Path, LocalAccount]:
    path = tmp_path / "owner.json"
    owner = load_or_create_keystore(path, PASSWORD, scrypt_n=2**10)
    assert owner.address not in w3.eth.accounts  # not unlocked on the node: deploy must sign locally
    if fund:
        tx = w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": owner.address, "value": 10**18})
        assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    return path, owner


def deploy(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, ["deploy", *args], env=env, catch_exceptions=False)


@pytest.mark.parametrize("chain", ["embedded", "anvil"], indirect=True)
def test_deploy_signs_locally_writes_the_file_and_the_gateway_starts_from_it(
    tmp_path: Path, chain: tuple[Web3, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    w3, node_url, usdc = chain
    var = tmp_path / "var"
    settings = gateway_settings(var, chain_rpc_url=node_url, keystore_password=PASSWORD)
    keys = load_keys(settings)  # this machine's keystores; deploy authorises them by default
    keystore, owner = owner_keystore(tmp_path, w3)
    env = {
        "CARDLESS_VAR_DIR": str(var),
        "CARDLESS_CHAIN_RPC_URL": node_url,
        "CARDLESS_KEYSTORE_PASSWORD": PASSWORD,
    }

    result = deploy(
        env,
        "--owner-keystore", str(keystore),
        "--fee-recipient", FEE_RECIPIENT,
        "--fee-cap-bps", "750",
        "--token", usdc,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    path = var / "deployment.json"  # the one deployment file every command reads by default
    deployment = load_deployment(path, w3)
    assert deployment.owner == owner.address
    assert deployment.fee_recipient == Web3.to_checksum_address(FEE_RECIPIENT)
    assert deployment.quote_signers == [keys.quote.address]  # type: ignore[union-attr]
    assert deployment.oracle_signers == [keys.oracle.address]  # type: ignore[union-attr]
    assert [(t.symbol, t.address, t.decimals) for t in deployment.tokens] == [
        ("ETH", NATIVE_TOKEN, 18),
        ("tUSDC", usdc, 6),  # read from the token
    ]
    escrow = w3.eth.contract(address=deployment.escrow, abi=load_artifact("CardlessEscrow").abi)
    assert escrow.functions.owner().call() == owner.address
    assert escrow.functions.feeCapBps().call() == 750
    assert (
        escrow.functions.isTokenAllowed(usdc).call() and escrow.functions.isTokenAllowed(NATIVE_TOKEN).call()
    )
    # the oracle's gas key may trigger merchants' withdrawals (its sweep job)
    assert escrow.functions.isSweeper(keys.gas.address).call()  # type: ignore[union-attr]
    # v2: the signers and the threshold are constructor arguments; the admin delay defaults to 2 days
    assert escrow.functions.oracleThreshold().call() == 1
    assert escrow.functions.ADMIN_DELAY().call() == 2 * 24 * 3600
    assert w3.eth.get_transaction_count(owner.address) == 1 + 2 + 1  # deploy (with signers), tokens, sweeper

    # `cardless gateway`: the API alone, against the node, the written file and the database. The
    # provider files name their secrets by environment variable, as an operator would set them.
    for name in ("SECRET", "CALLBACK_SECRET", "MD5_SECRET", "MD5_CALLBACK_SECRET"):
        monkeypatch.setenv(f"CARDLESS_SIM_{name}", "operator-set")
    gateway = System(settings, embedded=False, gateway=True, oracle=False).start()
    try:
        assert gateway.node is None and gateway.simulator is None and gateway.worker is None
        health = httpx.get(f"{gateway.gateway_url}/v1/health", timeout=10).raise_for_status().json()
        assert health["chain"]["ok"] and health["deployment"]["escrow"] == deployment.escrow
        assert gateway.settings.effective_database_url == f"sqlite:///{var / 'cardless.db'}"
    finally:
        gateway.stop()

    again = deploy(env, "--owner-keystore", str(keystore), "--fee-recipient", FEE_RECIPIENT, "--token", usdc)
    assert again.exit_code == 1
    assert "deploy refused" in again.output and "pass --force" in again.output
    assert json.loads(path.read_text())["escrow"] == deployment.escrow  # untouched


@pytest.mark.parametrize(
    ("args", "fund", "message"),
    [
        pytest.param(
            ["--token", "0x" + "12" * 20], True, "no contract code at this address", id="token-without-code"
        ),
        pytest.param(["--no-native"], True, "allow at least one ERC-20 token", id="nothing-to-accept"),
        pytest.param([], False, "has no ETH on chain", id="owner-without-gas"),
        pytest.param(["--quote-signer", "0x1234"], True, "'0x1234' is not an address", id="bad-address"),
    ],
)
def test_deploy_refuses_before_spending_gas(
    tmp_path: Path, chain: tuple[Web3, str, str], args: list[str], fund: bool, message: str
) -> None:
    w3, node_url, _ = chain
    var = tmp_path / "var"
    load_keys(gateway_settings(var, keystore_password=PASSWORD), ["quote", "oracle"])
    keystore, owner = owner_keystore(tmp_path, w3, fund=fund)
    env = {
        "CARDLESS_VAR_DIR": str(var),
        "CARDLESS_CHAIN_RPC_URL": node_url,
        "CARDLESS_KEYSTORE_PASSWORD": PASSWORD,
    }
    result = deploy(env, "--owner-keystore", str(keystore), "--fee-recipient", FEE_RECIPIENT, *args)
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert w3.eth.get_transaction_count(owner.address) == 0
    assert not (var / "deployment.json").exists()


def test_deploy_needs_a_password_it_was_given(tmp_path: Path, chain: tuple[Web3, str, str]) -> None:
    w3, node_url, _ = chain
    keystore, _ = owner_keystore(tmp_path, w3, fund=False)
    signer = "0x" + "ab" * 20
    env = {"CARDLESS_VAR_DIR": str(tmp_path / "var"), "CARDLESS_CHAIN_RPC_URL": node_url}
    result = deploy(
        env,
        "--owner-keystore", str(keystore),
        "--fee-recipient", FEE_RECIPIENT,
        "--quote-signer", signer,
        "--oracle-signer", signer,
    )  # fmt: skip
    assert result.exit_code == 1
    assert (
        "no password for the owner keystore: "
        "pass --owner-password-file or set CARDLESS_KEYSTORE_PASSWORD_FILE"
        in (" ".join(result.output.split()))
    )
    assert not (tmp_path / "var" / "keys").exists()  # nothing generated for it
