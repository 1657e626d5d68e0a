"""The deployment file: written by deploy_dev_system, read back and checked against the live chain."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak
from web3 import EthereumTesterProvider, Web3

from cardless.devchain.chain import deploy_contract
from cardless.devchain.deploy import DEV_MINT_AMOUNT, deploy_dev_system
from cardless.protocol import NATIVE_TOKEN, EscrowDomain
from cardless.protocol import CardlessError as OracleError
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment, DeploymentError, load_deployment

QUOTE_KEY = Account.from_key(keccak(b"cardless-deployment-test-quote-signer"))
ORACLE_KEY = Account.from_key(keccak(b"cardless-deployment-test-oracle-signer"))

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def deployment(w3: Web3) -> Deployment:
    return deploy_dev_system(w3, quote_signer=QUOTE_KEY.address, oracle_signer=ORACLE_KEY.address)


@pytest.fixture(scope="module")
def stray_token(w3: Web3, deployment: Deployment) -> str:
    """A second MockERC20 that the escrow does not allow."""
    contract = deploy_contract(w3, "test-helpers/MockERC20", "Stray", "STRAY", 6, sender=deployment.owner)
    return str(contract.address)


@pytest.fixture
def doc(deployment: Deployment) -> Doc:
    loaded: Doc = json.loads(deployment.to_json())
    return loaded


def write(path: Path, doc: Doc | str) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


# ---------------------------------------------------------------------- the dev deployment


def test_dev_deployment_describes_what_is_on_chain(w3: Web3, deployment: Deployment) -> None:
    assert deployment.chain_id == w3.eth.chain_id
    assert deployment.rpc_url == w3.provider.endpoint_uri  # type: ignore[attr-defined]
    assert deployment.escrow_source_hash == load_artifact("CardlessEscrow").source_hash
    assert (deployment.owner, deployment.fee_recipient) == tuple(w3.eth.accounts[:2])
    assert deployment.quote_signers == [QUOTE_KEY.address]
    assert deployment.oracle_signers == [ORACLE_KEY.address]
    assert deployment.domain == EscrowDomain(chain_id=w3.eth.chain_id, verifying_contract=deployment.escrow)
    assert [(t.symbol, t.decimals, t.is_native) for t in deployment.tokens] == [
        ("ETH", 18, True),
        ("tUSDC", 6, False),
    ]
    assert deployment.token("ETH").address == NATIVE_TOKEN

    escrow = w3.eth.contract(address=deployment.escrow, abi=load_artifact("CardlessEscrow").abi)
    assert escrow.functions.owner().call() == deployment.owner
    assert escrow.functions.feeRecipient().call() == deployment.fee_recipient
    assert escrow.functions.isQuoteSigner(QUOTE_KEY.address).call()
    assert escrow.functions.isOracleSigner(ORACLE_KEY.address).call()
    assert all(escrow.functions.isTokenAllowed(t.address).call() for t in deployment.tokens)
    # no escrow event can be older than deployed_block
    assert not escrow.events.OwnershipTransferred().get_logs(
        from_block=0, to_block=deployment.deployed_block - 1
    )
    assert escrow.events.OwnershipTransferred().get_logs(from_block=deployment.deployed_block)

    usdc = w3.eth.contract(
        address=deployment.token("tUSDC").address, abi=load_artifact("test-helpers/MockERC20").abi
    )
    assert usdc.functions.name().call() == "Test USD Coin"
    for account in w3.eth.accounts:
        assert usdc.functions.balanceOf(account).call() == DEV_MINT_AMOUNT


def test_token_lookup_names_the_known_symbols(deployment: Deployment) -> None:
    with pytest.raises(KeyError, match="tUSDC"):
        deployment.token("DAI")


def test_deploying_needs_a_url_to_record() -> None:
    w3 = Web3(EthereumTesterProvider())
    with pytest.raises(DeploymentError) as raised:
        deploy_dev_system(w3, quote_signer=QUOTE_KEY.address, oracle_signer=ORACLE_KEY.address)
    assert raised.value.field == "rpc_url"


# ---------------------------------------------------------------------- the file


def test_file_round_trip(tmp_path: Path, w3: Web3, deployment: Deployment) -> None:
    path = tmp_path / "nested" / "deployment.json"
    deployment.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["deployment.json"]  # no temporary file left
    on_disk = json.loads(path.read_text())
    assert on_disk["escrow"] == deployment.escrow
    assert on_disk["tokens"][1] == {"symbol": "tUSDC", "address": deployment.tokens[1].address, "decimals": 6}
    assert Deployment.read(path) == deployment
    assert load_deployment(path, w3) == deployment


def test_lower_case_addresses_are_accepted_and_checksummed(tmp_path: Path, w3: Web3, doc: Doc) -> None:
    doc["escrow"] = doc["escrow"].lower()
    doc["tokens"][1]["address"] = doc["tokens"][1]["address"].lower()
    loaded = load_deployment(write(tmp_path / "d.json", doc), w3)
    assert loaded.escrow == Web3.to_checksum_address(doc["escrow"])
    assert loaded.tokens[1].address == Web3.to_checksum_address(doc["tokens"][1]["address"])


def _flip_case(address: str) -> str:
    """The same address with one letter's case flipped: a wrong EIP-55 checksum."""
    index = next(i for i, c in enumerate(address) if i > 1 and c.isalpha())
    return address[:index] + address[index].swapcase() + address[index + 1 :]


def _drop(key: str) -> Callable[[Doc], object]:
    return lambda d: d.pop(key)


def _set(key: str, value: Any) -> Callable[[Doc], object]:
    return lambda d: d.update({key: value})


def _set_token(index: int, key: str, value: Any) -> Callable[[Doc], object]:
    return lambda d: d["tokens"][index].update({key: value})


# Corruptions caught by reading the file alone: (id, change, field named, words in the reason)
FILE_CASES: list[tuple[str, Callable[[Doc], object], str, str]] = [
    ("missing-escrow", _drop("escrow"), "escrow", "missing"),
    ("missing-chain-id", _drop("chain_id"), "chain_id", "missing"),
    ("short-address", _set("escrow", "0x1234"), "escrow", "not an address"),
    ("not-hex-address", _set("owner", "0x" + "zz" * 20), "owner", "not an address"),
    ("address-not-string", _set("fee_recipient", 42), "fee_recipient", "string"),
    ("bad-checksum", lambda d: d.update(escrow=_flip_case(d["escrow"])), "escrow", "checksum"),
    ("bad-token-address", _set_token(1, "address", "0xabc"), "tokens[1].address", "not an address"),
    ("bad-signer", lambda d: d["oracle_signers"].append("nobody"), "oracle_signers[1]", "not an address"),
    ("no-signers", _set("quote_signers", []), "quote_signers", "at least 1"),
    ("chain-id-text", _set("chain_id", "mainnet"), "chain_id", "integer"),
    ("chain-id-zero", _set("chain_id", 0), "chain_id", "greater than 0"),
    ("negative-block", _set("deployed_block", -1), "deployed_block", "greater than or equal to 0"),
    ("bad-url", _set("rpc_url", "localhost:8545"), "rpc_url", "URL"),
    ("bad-source-hash", _set("escrow_source_hash", "abc"), "escrow_source_hash", "pattern"),
    ("unknown-field", _set("escrow_address", "0x" + "11" * 20), "escrow_address", "unknown field"),
    ("future-version", _set("version", 2), "version", "1"),
    ("token-decimals-text", _set_token(1, "decimals", "six"), "tokens[1].decimals", "integer"),
    ("duplicate-token", lambda d: d["tokens"].append(dict(d["tokens"][1])), "tokens[2].symbol", "twice"),
]


@pytest.mark.parametrize(
    ("change", "field", "reason"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_malformed_file_names_the_field(
    tmp_path: Path, w3: Web3, doc: Doc, change: Callable[[Doc], object], field: str, reason: str
) -> None:
    change(doc)
    path = write(tmp_path / "deployment.json", doc)
    with pytest.raises(DeploymentError) as raised:
        load_deployment(path, w3)
    error = raised.value
    assert error.field == field
    assert reason in error.reason
    assert str(error).startswith(f"{path}: {field}: ")
    assert isinstance(error, OracleError)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"chain_id": 1,', "not valid JSON (line 1"),
        ("[1, 2]", "expected a JSON object, got list"),
        ("", "not valid JSON"),
    ],
    ids=["truncated", "array", "empty"],
)
def test_unparseable_file(tmp_path: Path, w3: Web3, content: str, reason: str) -> None:
    with pytest.raises(DeploymentError) as raised:
        load_deployment(write(tmp_path / "deployment.json", content), w3)
    assert (raised.value.field, reason in raised.value.reason) == ("file", True)


def test_missing_file(tmp_path: Path, w3: Web3) -> None:
    with pytest.raises(DeploymentError) as raised:
        load_deployment(tmp_path / "absent.json", w3)
    assert (raised.value.field, raised.value.reason) == ("file", "missing")


# Corruptions only the live chain reveals: (id, change, field named, words in the reason)
def _chain_cases(stray_token: str) -> list[tuple[str, Callable[[Doc], object], str, str]]:
    return [
        ("other-chain", _set("chain_id", 1), "chain_id", "the node is chain"),
        ("block-after-head", _set("deployed_block", 10**9), "deployed_block", "after the chain head"),
        ("no-code-at-escrow", _set("escrow", "0x" + "11" * 20), "escrow", "no contract code"),
        (
            "escrow-is-a-token",
            lambda d: d.update(escrow=d["tokens"][1]["address"]),
            "escrow",
            "not a CardlessEscrow",
        ),
        ("other-build", _set("escrow_source_hash", "sha256:" + "0" * 64), "escrow_source_hash", "differs"),
        (
            "unknown-oracle-signer",
            lambda d: d["oracle_signers"].append(QUOTE_KEY.address),
            "oracle_signers[1]",
            "not authorised",
        ),
        (
            "quote-signer-is-oracle",
            _set("quote_signers", [ORACLE_KEY.address]),
            "quote_signers[0]",
            "not authorised",
        ),
        ("wrong-decimals", _set_token(1, "decimals", 18), "tokens[1].decimals", "the token says 6"),
        ("wrong-symbol", _set_token(1, "symbol", "USDC"), "tokens[1].symbol", "'tUSDC'"),
        ("token-not-allowed", _set_token(1, "address", stray_token), "tokens[1].address", "not allowed"),
        (
            "token-without-code",
            lambda d: d["tokens"].append({"symbol": "GHOST", "address": "0x" + "22" * 20, "decimals": 6}),
            "tokens[2].address",
            "no contract code",
        ),
    ]


CHAIN_CASE_IDS = [c[0] for c in _chain_cases("0x" + "00" * 20)]


@pytest.mark.parametrize("case", CHAIN_CASE_IDS)
def test_file_not_matching_the_chain_names_the_field(
    tmp_path: Path, w3: Web3, doc: Doc, stray_token: str, case: str
) -> None:
    _, change, field, reason = next(c for c in _chain_cases(stray_token) if c[0] == case)
    change(doc)
    path = write(tmp_path / "deployment.json", doc)
    Deployment.read(path)  # the file alone is well-formed
    with pytest.raises(DeploymentError) as raised:
        load_deployment(path, w3)
    assert raised.value.field == field
    assert reason in raised.value.reason, raised.value.reason
