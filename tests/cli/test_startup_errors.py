"""Start-up refuses bad configuration with a message that names what is wrong, before serving anything.

``System(settings, embedded=False)`` is how ``cardless oracle`` (and a gateway against a real node)
starts: it reads the deployment file and checks it against the chain at ``CARDLESS_CHAIN_RPC_URL``,
here the session's embedded dev node, so "wrong chain" is checked against a real chain. The CLI is
run as a subprocess, as an operator would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cardless.cli.settings import Settings
from cardless.cli.system import System, load_keys
from cardless.ledger.cipher import CipherError
from cardless.protocol.deployment import DeploymentError
from gateway.catalogue import CatalogueError
from oracles.keys import KeystoreError
from tests.support.shop import gateway_settings

ENV_PREFIX = "CARDLESS_"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CARDLESS_* variable from the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture
def deployment_doc(system: System) -> dict[str, Any]:
    """The session chain's deployment file, as JSON, to corrupt."""
    assert system.deployment is not None
    doc: dict[str, Any] = json.loads(system.deployment.to_json())
    return doc


@pytest.fixture
def node_url(system: System) -> str:
    assert system.node is not None
    return system.node.url


def external(tmp_path: Path, node_url: str, **overrides: Any) -> Settings:
    """Settings for a system against the session's chain, with its deployment file at tmp_path."""
    return gateway_settings(
        tmp_path / "var",
        chain_rpc_url=node_url,
        deployment_file=tmp_path / "deployment.json",
        **overrides,
    )


def start(settings: Settings, **options: Any) -> System:
    system = System(settings, embedded=False, **{"gateway": False, "oracle": False, **options})
    try:
        return system.start()
    finally:
        system.stop()


# ---------------------------------------------------------------------------------------- deployment


def write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2))


def test_a_correct_deployment_file_starts(
    tmp_path: Path, node_url: str, deployment_doc: dict[str, Any]
) -> None:
    """The control for the tests below: the file as written at deployment is accepted."""
    settings = external(tmp_path, node_url)
    write(tmp_path / "deployment.json", deployment_doc)
    assert start(settings).deployment is not None


@pytest.mark.parametrize(
    ("corrupt", "field", "reason"),
    [
        pytest.param(lambda d: d.pop("escrow"), "escrow", "missing", id="missing-field"),
        pytest.param(
            lambda d: d.update(chain_id=d["chain_id"] + 1),
            "chain_id",
            "the node is chain",
            id="wrong-chain-id",
        ),
        pytest.param(
            lambda d: d.update(chain_id="mainnet"), "chain_id", "valid integer", id="chain-id-not-a-number"
        ),
        pytest.param(
            lambda d: d.update(escrow="0x" + "12" * 20),
            "escrow",
            "no contract code",
            id="escrow-without-code",
        ),
        pytest.param(
            lambda d: d.update(escrow=d["escrow"][:-1]), "escrow", "not an address", id="short-escrow"
        ),
        pytest.param(
            lambda d: d.update(escrow_source_hash="sha256:" + "0" * 64),
            "escrow_source_hash",
            "differs from contracts/build",
            id="other-build",
        ),
        pytest.param(
            lambda d: d.update(deployed_block=10**9),
            "deployed_block",
            "after the chain head",
            id="block-after-head",
        ),
        pytest.param(
            lambda d: d["tokens"][1].update(decimals=18),
            "tokens[1].decimals",
            "the token says 6",
            id="wrong-decimals",
        ),
        pytest.param(lambda d: d.update(rpc_url="localhost:8545"), "rpc_url", "http", id="rpc-url-not-a-url"),
        pytest.param(lambda d: d.update(escorw="0x"), "escorw", "unknown field", id="typo-in-a-key"),
    ],
)
def test_corrupted_deployment_file_names_the_field(
    tmp_path: Path, node_url: str, deployment_doc: dict[str, Any], corrupt: Any, field: str, reason: str
) -> None:
    corrupt(deployment_doc)
    path = tmp_path / "deployment.json"
    write(path, deployment_doc)
    with pytest.raises(DeploymentError) as raised:
        start(external(tmp_path, node_url))
    assert raised.value.field == field
    assert reason in raised.value.reason
    assert str(raised.value).startswith(f"{path}: {field}: ")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param('{"version": 1, "chain_id": ', "not valid JSON (line 1", id="truncated"),
        pytest.param("", "not valid JSON", id="empty"),
        pytest.param("[1, 2]", "expected a JSON object, got list", id="not-an-object"),
    ],
)
def test_deployment_file_that_is_not_json_is_refused(
    tmp_path: Path, node_url: str, text: str, reason: str
) -> None:
    (tmp_path / "deployment.json").write_text(text)
    with pytest.raises(DeploymentError) as raised:
        start(external(tmp_path, node_url))
    assert raised.value.field == "file"
    assert reason in str(raised.value)


def test_missing_deployment_file_is_refused(tmp_path: Path, node_url: str) -> None:
    with pytest.raises(DeploymentError, match=r"deployment.json: file: missing"):
        start(external(tmp_path, node_url))


def test_keys_the_escrow_does_not_authorise_are_refused_at_start(
    tmp_path: Path, node_url: str, deployment_doc: dict[str, Any]
) -> None:
    """A deployment file that is fine, but this machine's keystores hold other keys (a wrong keystore
    directory, say): quotes would revert UnauthorisedQuoteSigner and proofs UnauthorisedOracleSigner, so
    the gateway and the oracle refuse to start rather than take orders they cannot settle."""
    write(tmp_path / "deployment.json", deployment_doc)
    settings = external(tmp_path, node_url)
    with pytest.raises(DeploymentError) as raised:
        start(settings, gateway=True)
    assert raised.value.field == "quote_signers"
    assert "quote-signer.json" in str(raised.value)
    with pytest.raises(DeploymentError) as raised:
        start(settings, oracle=True)
    assert raised.value.field == "oracle_signers"
    assert "oracle-signer.json" in str(raised.value)


# ---------------------------------------------------------------------------------------- keystores


def test_wrong_keystore_password_is_a_keystore_error(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path / "var", keystore_password="the right one")
    keys = load_keys(settings)
    assert load_keys(settings) == keys  # the same password reads them back

    wrong = gateway_settings(tmp_path / "var", keystore_password="a wrong one")
    with pytest.raises(KeystoreError) as raised:
        System(wrong, embedded=False).start()
    message = str(raised.value)
    assert "wrong password or corrupted keystore" in message
    assert str(settings.effective_keystore_dir / "quote-signer.json") in message
    assert "a wrong one" not in message and "the right one" not in message
    assert not (settings.var_dir / "embedded").exists()  # refused before anything started


def test_corrupted_keystore_file_is_a_keystore_error(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path / "var", keystore_password="pw")
    load_keys(settings)
    path = settings.effective_keystore_dir / "oracle-signer.json"
    path.write_text(path.read_text()[:40])
    with pytest.raises(KeystoreError, match=f"keystore {path}: not a readable JSON keystore"):
        load_keys(settings)


@pytest.mark.parametrize("environment", ["production", "test"])
def test_outside_development_a_keystore_password_is_required(tmp_path: Path, environment: str) -> None:
    settings = gateway_settings(tmp_path / "var", environment=environment)
    with pytest.raises(
        KeystoreError,
        match=r"no keystore password: set CARDLESS_KEYSTORE_PASSWORD_FILE \(or CARDLESS_KEYSTORE_PASSWORD\)",
    ):
        System(settings, embedded=False).start()
    assert not settings.effective_keystore_dir.exists()  # no password file generated


def test_outside_development_missing_keystores_are_not_created(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path / "var", environment="production", keystore_password="s3cret-pw")
    directory = settings.effective_keystore_dir
    with pytest.raises(KeystoreError) as raised:
        System(settings, embedded=False, gateway=True, oracle=False).start()
    assert str(raised.value).startswith(f"keystore {directory / 'quote-signer.json'}: missing")
    assert f"CARDLESS_KEYSTORE_DIR={directory}" in str(raised.value)
    assert not directory.exists()


def test_outside_development_the_account_key_is_required(tmp_path: Path) -> None:
    dev = gateway_settings(tmp_path / "var", keystore_password="s3cret-pw")
    load_keys(dev, ["quote"])  # the keystore exists; only the account key is missing
    settings = gateway_settings(tmp_path / "var", environment="production", keystore_password="s3cret-pw")
    with pytest.raises(CipherError, match="no account encryption key: set CARDLESS_ACCOUNT_KEY"):
        System(settings, embedded=False, gateway=True, oracle=False).start()
    assert not settings.account_key_file.exists()


def test_a_process_loads_only_the_keys_of_its_roles(tmp_path: Path) -> None:
    """A gateway host needs the quote signer only: the oracle's keystores need not exist there."""
    dev = gateway_settings(tmp_path / "var", keystore_password="s3cret-pw")
    quote_only = load_keys(dev, ["quote"])
    assert quote_only.quote is not None and quote_only.oracle is None and quote_only.gas is None
    assert sorted(p.name for p in dev.effective_keystore_dir.glob("*.json")) == ["quote-signer.json"]
    with pytest.raises(KeystoreError, match="the gas key was not loaded"):
        quote_only.require("gas")


@pytest.mark.parametrize("placeholder", ["changethis", "changeme", "password"])
def test_placeholder_passwords_are_refused_outside_development(tmp_path: Path, placeholder: str) -> None:
    with pytest.raises(ValidationError, match="a placeholder value is not a password"):
        gateway_settings(tmp_path / "var", environment="production", keystore_password=placeholder)
    assert gateway_settings(tmp_path / "var", keystore_password=placeholder)  # development: fine
    password_file = tmp_path / "password"
    password_file.write_text(placeholder.upper() + "\n")
    settings = gateway_settings(
        tmp_path / "var", environment="production", keystore_password_file=password_file
    )
    with pytest.raises(
        KeystoreError, match=f"CARDLESS_KEYSTORE_PASSWORD_FILE={password_file}: holds a placeholder"
    ):
        load_keys(settings)


def test_the_embedded_system_refuses_production(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path / "var", environment="production", keystore_password="s3cret-pw")
    with pytest.raises(RuntimeError, match="CARDLESS_ENVIRONMENT=production: the embedded dev chain"):
        System(settings).start()
    assert not (settings.var_dir / "embedded").exists()


def test_one_database_and_one_deployment_file_per_mode(tmp_path: Path) -> None:
    """Every command reads var/cardless.db and var/deployment.json unless told otherwise; the embedded
    system keeps its throw-away chain's in var/embedded/, so it can never overwrite a real one."""
    var = tmp_path / "var"
    settings = gateway_settings(var)
    external_system = System(settings, embedded=False)
    assert external_system.settings.effective_database_url == f"sqlite:///{var / 'cardless.db'}"
    assert external_system.settings.effective_deployment_file == var / "deployment.json"
    embedded = System(settings)
    assert embedded.settings.effective_database_url == f"sqlite:///{var / 'embedded' / 'cardless.db'}"
    assert embedded.settings.effective_deployment_file == var / "embedded" / "deployment.json"
    explicit = gateway_settings(var, database_url="sqlite:////tmp/x.db", deployment_file=tmp_path / "d.json")
    assert System(explicit).settings.effective_database_url == "sqlite:////tmp/x.db"
    assert System(explicit).settings.effective_deployment_file == tmp_path / "d.json"


def test_unreadable_password_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-password"
    monkeypatch.setenv("CARDLESS_KEYSTORE_PASSWORD_FILE", str(missing))
    settings = gateway_settings(tmp_path / "var", environment="production")
    with pytest.raises(KeystoreError, match=f"CARDLESS_KEYSTORE_PASSWORD_FILE={missing}: cannot read"):
        load_keys(settings)


def test_development_keystores_are_created_once_with_a_private_password_file(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path / "var")
    keys = load_keys(settings)
    directory = settings.effective_keystore_dir
    assert len({keys.quote.address, keys.oracle.address, keys.gas.address}) == 3
    for name in ("password", "quote-signer.json", "oracle-signer.json", "gas-payer.json"):
        assert (directory / name).stat().st_mode & 0o077 == 0, name
    assert load_keys(settings) == keys


# ---------------------------------------------------------------------------------------- catalogue


def test_corrupted_catalogue_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "gateway" / "catalogue.toml"
    bad = tmp_path / "catalogue.toml"
    bad.write_text(shipped.read_text().replace("fee_bps = 250", "fee_bps = 2.5", 1))
    settings = gateway_settings(tmp_path / "var", catalogue_file=bad)
    with pytest.raises(CatalogueError) as raised:
        System(settings).start()
    assert str(raised.value).startswith(f"{bad}: merchants.0.fee_bps: ")
    assert not (settings.var_dir / "embedded").exists()  # no chain was started


# ---------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("env", "field", "message"),
    [
        pytest.param(
            {"CARDLESS_DATABASE_URL": "mysql://cardless:hunter2@db/cardless"},
            "database_url",
            "must be a sqlite:// or postgresql:// URL",
            id="mysql",
        ),
        pytest.param(
            {"CARDLESS_ENVIRONMENT": "prod"},
            "environment",
            "Input should be 'development', 'test' or 'production'",
            id="environment",
        ),
        pytest.param(
            {"CARDLESS_CHAIN_RPC_URL": "localhost:8545"},
            "chain_rpc_url",
            "should match pattern",
            id="rpc-url",
        ),
        pytest.param(
            {"CARDLESS_PUBLIC_URL": "ftp://gateway"}, "public_url", "should match pattern", id="public-url"
        ),
        pytest.param(
            {"CARDLESS_GATEWAY_PORT": "70000"},
            "gateway_port",
            "less than or equal to 65535",
            id="port-too-big",
        ),
        pytest.param(
            {"CARDLESS_ACCOUNT_KEY": "c2hvcnQ="},
            "account_key",
            "must decode to 32 bytes, got 5",
            id="account-key",
        ),
        pytest.param(
            {"CARDLESS_ENVIRONMENT": "production", "CARDLESS_KEYSTORE_PASSWORD": "changethis"},
            "keystore_password",
            "a placeholder value is not a password",
            id="placeholder-password",
        ),
        pytest.param(
            {"CARDLESS_QUOTE_TTL_SECONDS": "5"},
            "quote_ttl_seconds",
            "greater than or equal to 30",
            id="quote-ttl-too-short",
        ),
        pytest.param(
            {"CARDLESS_GATEWAY_PORT": "http"}, "gateway_port", "valid integer", id="port-not-a-number"
        ),
        pytest.param(
            {"CARDLESS_CONFIRMATIONS": "-1"},
            "confirmations",
            "greater than or equal to 0",
            id="negative-confirmations",
        ),
        pytest.param(
            {"CARDLESS_QUOTE_TTL_SECONDS": "3600", "CARDLESS_FULFILMENT_WINDOW_SECONDS": "3600"},
            "fulfilment_window_seconds",
            "must be longer than quote_ttl_seconds",
            id="window-not-after-ttl",
        ),
    ],
)
def test_invalid_settings_name_the_field(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert field in str(raised.value)
    assert message in str(raised.value)


# ---------------------------------------------------------------------------------------- the CLI


def cardless(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return subprocess.run(
        [sys.executable, "-m", "cardless.cli.main", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_cardless_oracle_with_a_corrupt_deployment_file_exits_with_the_message(
    tmp_path: Path, node_url: str
) -> None:
    deployment = tmp_path / "deployment.json"
    deployment.write_text('{"version": 1, "chain_id": ')
    result = cardless(
        ["oracle"],
        {
            "CARDLESS_VAR_DIR": str(tmp_path / "var"),
            "CARDLESS_DEPLOYMENT_FILE": str(deployment),
            "CARDLESS_CHAIN_RPC_URL": node_url,
            "CARDLESS_KEYSTORE_SCRYPT_N": "1024",
        },
    )
    assert result.returncode == 1, result
    stderr = one_line(result.stderr)
    assert f"start-up failed: {deployment}: file: not valid JSON (line 1" in stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cardless_oracle_with_invalid_settings_names_the_variable_not_its_value(tmp_path: Path) -> None:
    result = cardless(
        ["oracle"],
        {"CARDLESS_VAR_DIR": str(tmp_path / "var"), "CARDLESS_DATABASE_URL": "mysql://cardless:hunter2@db/x"},
    )
    assert result.returncode == 1, result
    stderr = one_line(result.stderr)
    assert "start-up failed: CARDLESS_DATABASE_URL: must be a sqlite:// or postgresql:// URL" in stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_cardless_oracle_in_production_without_a_password_names_the_setting(tmp_path: Path) -> None:
    result = cardless(
        ["oracle"], {"CARDLESS_VAR_DIR": str(tmp_path / "var"), "CARDLESS_ENVIRONMENT": "production"}
    )
    assert result.returncode == 1, result
    assert "start-up failed: no keystore password: set CARDLESS_KEYSTORE_PASSWORD_FILE" in one_line(
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "keys").exists()


def test_cardless_run_with_a_corrupt_catalogue_exits_with_the_message(tmp_path: Path) -> None:
    catalogue = tmp_path / "catalogue.toml"
    catalogue.write_text('[[merchants]]\nid = "shop"\n')
    result = cardless(
        ["run"],
        {
            "CARDLESS_VAR_DIR": str(tmp_path / "var"),
            "CARDLESS_CATALOGUE_FILE": str(catalogue),
            "CARDLESS_CHAIN_PORT": "0",
            "CARDLESS_GATEWAY_PORT": "0",
            "CARDLESS_SIMULATOR_PORT": "0",
            "CARDLESS_KEYSTORE_SCRYPT_N": "1024",
        },
    )
    assert result.returncode == 1, result
    stderr = one_line(result.stderr)
    assert f"start-up failed: {catalogue}: merchants.0.name: Field required;" in stderr
    assert "skus: Field required" in stderr
    assert "Traceback" not in result.stderr
