"""Where the keystores' password comes from: the settings (a variable or a file), or in development only
a generated one. (Moved from tests/oracles/test_keys.py with ``oracles.keys.read_password``: the oracle
package no longer reads the environment.)"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from cardless.cli.keys import KEYSTORE_FILES, account_cipher, keystore_password, load_keys, operator_key
from oracles.keys import KeystoreError
from tests.support.shop import gateway_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CARDLESS_"):
            monkeypatch.delenv(name)


def test_the_password_comes_from_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARDLESS_KEYSTORE_PASSWORD", "from-env")
    assert keystore_password(gateway_settings(tmp_path, environment="production")) == "from-env"


def test_the_password_comes_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file\n")  # as `echo secret > file` writes it
    monkeypatch.setenv("CARDLESS_KEYSTORE_PASSWORD_FILE", str(secret))
    assert keystore_password(gateway_settings(tmp_path, environment="production")) == "from-file"
    monkeypatch.setenv("CARDLESS_KEYSTORE_PASSWORD", "from-env")  # the variable wins over the file
    assert keystore_password(gateway_settings(tmp_path, environment="production")) == "from-env"
    monkeypatch.setenv("CARDLESS_KEYSTORE_PASSWORD", "")  # an empty variable is no password: the file
    assert keystore_password(gateway_settings(tmp_path, environment="production")) == "from-file"


def test_an_empty_password_file_is_no_password(tmp_path: Path) -> None:
    empty = tmp_path / "password"
    empty.write_text("\n")
    with pytest.raises(
        KeystoreError, match=f"CARDLESS_KEYSTORE_PASSWORD_FILE={empty}: the password file is empty"
    ):
        keystore_password(gateway_settings(tmp_path, environment="production", keystore_password_file=empty))


def test_development_generates_a_private_password_once(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path)
    first = keystore_password(settings)
    path = settings.effective_keystore_dir / "password"
    assert path.read_text().strip() == first and path.stat().st_mode & 0o077 == 0
    assert keystore_password(settings) == first


@pytest.mark.parametrize("environment", ["test", "production"])
def test_outside_development_a_password_file_beside_the_keystores_is_refused(
    tmp_path: Path, environment: str
) -> None:
    """Whoever copies the keystore directory must not also get what opens the keystores."""
    keys = tmp_path / "keys"
    keys.mkdir()
    for beside in (keys / "password", keys / "sub" / "password"):
        beside.parent.mkdir(exist_ok=True)
        beside.write_text("a-real-password\n")
        settings = gateway_settings(tmp_path, environment=environment, keystore_password_file=beside)
        with pytest.raises(KeystoreError, match="is inside the keystore directory"):
            keystore_password(settings)
    apart = tmp_path / "secrets" / "password"
    apart.parent.mkdir()
    apart.write_text("a-real-password\n")
    settings = gateway_settings(tmp_path, environment=environment, keystore_password_file=apart)
    assert keystore_password(settings) == "a-real-password"


def test_development_creates_keystores_0600_in_a_0700_directory(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path)
    keys = load_keys(settings, ["quote"])
    assert keys.quote is not None
    directory = settings.effective_keystore_dir
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("password", KEYSTORE_FILES["quote"]):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert sorted(p.name for p in directory.iterdir()) == ["password", KEYSTORE_FILES["quote"]]


def test_development_creates_a_private_operator_key_once(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path)
    key = operator_key(settings)
    assert key is not None and len(key) >= 32
    assert stat.S_IMODE(settings.operator_key_file.stat().st_mode) == 0o600
    assert operator_key(settings) == key  # read back, not regenerated


def test_outside_development_no_operator_key_turns_operator_reads_off(tmp_path: Path) -> None:
    assert operator_key(gateway_settings(tmp_path, environment="production")) is None
    assert not (tmp_path / "operator-key").exists()


@pytest.mark.parametrize("value", ["changethis", "x" * 31, "a" * 40 + " ", "é" * 40])
def test_an_operator_key_that_is_short_or_not_base64_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CARDLESS_OPERATOR_KEY", value)
    with pytest.raises(ValueError, match="operator_key"):
        gateway_settings(tmp_path, environment="production")


def test_a_corrupt_operator_key_file_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, environment="production")
    settings.operator_key_file.write_text("short\n")
    with pytest.raises(KeystoreError, match="operator-key"):
        operator_key(settings)


def test_outside_development_an_account_key_file_beside_the_database_is_refused(tmp_path: Path) -> None:
    """A copy of var/ must not hold both the buyers' encrypted accounts and the key to them."""
    settings = gateway_settings(tmp_path, environment="production")
    settings.account_key_file.write_text(base64.b64encode(bytes(32)).decode() + "\n")
    with pytest.raises(KeystoreError, match="database's directory"):
        account_cipher(settings)
    elsewhere = gateway_settings(
        tmp_path, environment="production", database_url=f"sqlite:///{tmp_path / 'db' / 'cardless.db'}"
    )
    order_id = "0x" + "ab" * 32
    assert len(account_cipher(elsewhere).salt(order_id)) == 32
    assert len(account_cipher(gateway_settings(tmp_path)).salt(order_id)) == 32  # development: fine
