"""The co-signer's settings and secrets (``cardless.cli.keys.cosigner_secret``/``cosigner_key``) and the
oracle's list of co-signers (``OracleRunner._cosigners``): nothing generated outside development, no short
or placeholder secret, never the oracle's own keystore."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from cardless.cli.keys import KEYSTORE_FILES, Keys, cosigner_key, cosigner_secret, load_keys
from cardless.cli.oracle_runner import OracleRunner
from cardless.protocol import EscrowDomain
from oracles.keys import KeystoreError
from oracles.proofs import HttpCoSigner
from tests.support.shop import gateway_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CARDLESS_"):
            monkeypatch.delenv(name)


def test_development_generates_one_shared_secret_and_production_requires_it(tmp_path: Path) -> None:
    dev = gateway_settings(tmp_path)
    secret = cosigner_secret(dev)
    assert len(secret) >= 32 and cosigner_secret(dev) == secret  # the oracle and the co-signer read one file
    assert (tmp_path / "cosigner-secret").stat().st_mode & 0o777 == 0o600
    with pytest.raises(KeystoreError, match="CARDLESS_COSIGNER_SECRET_FILE"):
        cosigner_secret(gateway_settings(tmp_path / "prod", environment="production"))


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("short\n")
    settings = gateway_settings(tmp_path, environment="production", cosigner_secret_file=path)
    with pytest.raises(KeystoreError, match="at least 32 characters"):
        cosigner_secret(settings)


def test_the_cosigner_key_is_its_own_and_never_the_oracles(tmp_path: Path) -> None:
    dev = gateway_settings(tmp_path)
    oracle = load_keys(dev, roles=("oracle",)).require("oracle")
    key = cosigner_key(dev)
    assert key.address != oracle.address and dev.effective_cosigner_keystore.exists()
    assert cosigner_key(dev).address == key.address  # loaded, not made anew
    same = gateway_settings(tmp_path, cosigner_keystore=dev.effective_keystore_dir / KEYSTORE_FILES["oracle"])
    with pytest.raises(KeystoreError, match="the oracle's own proof keystore"):
        cosigner_key(same)
    with pytest.raises(KeystoreError, match="missing"):
        cosigner_key(
            gateway_settings(tmp_path / "prod", environment="production", keystore_password="pw-0123")
        )


def test_cosigner_urls_are_validated(tmp_path: Path) -> None:
    for urls in (["ftp://x"], ["http://a:8700", "http://a:8700"], ["not a url"]):
        with pytest.raises(ValidationError, match="cosigner_urls"):
            gateway_settings(tmp_path, cosigner_urls=urls)


def test_the_oracle_builds_one_http_cosigner_per_url(tmp_path: Path) -> None:
    urls = ["http://10.0.0.5:8700", "http://10.0.0.6:8700/"]
    settings = gateway_settings(tmp_path, cosigner_urls=urls, cosigner_timeout_seconds=4)
    domain = EscrowDomain(31337, "0x" + "11" * 20)
    fields: dict[str, Any] = dict(
        w3=None, sessions=None, keys=Keys(), cipher=None, catalogue=None, adapters=dict, callback_base=None
    )
    runner = OracleRunner(settings, deployment=SimpleNamespace(domain=domain), **fields)  # type: ignore[arg-type]
    cosigners = runner._cosigners()
    assert [type(c) for c in cosigners] == [HttpCoSigner, HttpCoSigner]
    assert [c.url for c in cosigners] == ["http://10.0.0.5:8700", "http://10.0.0.6:8700"]
    assert cosigners[0].client.timeout.read == 4 and cosigners[0].secret == cosigner_secret(settings)
    for cosigner in cosigners:
        cosigner.close()
    assert OracleRunner(gateway_settings(tmp_path), deployment=None, **fields)._cosigners() == []  # type: ignore[arg-type]
