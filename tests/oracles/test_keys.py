"""Encrypted keystores for the oracle's keys, and where their password comes from.

Keystores here use scrypt n=2**4 so the tests stay fast; the default cost is the library's.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account import Account

from oracles.keys import KeystoreError, load_keystore, load_or_create_keystore, read_password

FAST = 2**4
ENV, FILE_ENV = "CARDLESS_KEYSTORE_PASSWORD", "CARDLESS_KEYSTORE_PASSWORD_FILE"


@pytest.fixture(autouse=True)
def _no_password_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv(FILE_ENV, raising=False)


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "gas-payer.json"
    load_or_create_keystore(path, "correct horse", scrypt_n=FAST)
    return path


# ---------------------------------------------------------------------- keystores


def test_create_then_load_gives_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "oracle-signer.json"
    created = load_or_create_keystore(path, "pw", scrypt_n=FAST)
    loaded = load_keystore(path, "pw")
    assert (loaded.address, loaded.key) == (created.address, created.key)
    again = load_or_create_keystore(path, "pw", scrypt_n=FAST)  # exists: loaded, never replaced
    assert again.key == created.key
    other = load_or_create_keystore(tmp_path / "gas-payer.json", "pw", scrypt_n=FAST)
    assert other.key != created.key  # fresh random keys


def test_the_keystore_is_an_encrypted_eth_account_document_readable_only_by_its_owner(keystore: Path) -> None:
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    assert [p.name for p in keystore.parent.iterdir()] == [keystore.name]  # no temporary file left
    document = json.loads(keystore.read_text())
    account = load_keystore(keystore, "correct horse")
    assert document["crypto"]["kdf"] == "scrypt" and document["crypto"]["kdfparams"]["n"] == FAST
    assert account.key.hex() not in keystore.read_text()
    assert Account.decrypt(document, "correct horse") == account.key  # standard tools read it


def test_a_wrong_password_names_the_file(keystore: Path) -> None:
    with pytest.raises(KeystoreError, match="wrong password") as caught:
        load_keystore(keystore, "incorrect horse")
    assert str(keystore) in str(caught.value)
    with pytest.raises(KeystoreError, match="wrong password"):
        load_or_create_keystore(keystore, "incorrect horse", scrypt_n=FAST)
    assert load_keystore(keystore, "correct horse")  # the file was not replaced


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated write
        lambda text: "",
        lambda text: text.replace('"ciphertext": "', '"ciphertext": "zz'),
    ],
    ids=["truncated", "empty", "bad-ciphertext"],
)
def test_a_corrupted_keystore_is_a_keystore_error_naming_the_file(
    keystore: Path, damage: Callable[[str], str]
) -> None:
    keystore.write_text(damage(keystore.read_text()))
    with pytest.raises(KeystoreError) as caught:
        load_keystore(keystore, "correct horse")
    assert str(keystore) in str(caught.value)


@pytest.mark.parametrize("document", ["{}", "[]", '{"crypto": {}}'])
def test_json_that_is_not_a_keystore_is_a_keystore_error(keystore: Path, document: str) -> None:
    keystore.write_text(document)
    with pytest.raises(KeystoreError):
        load_keystore(keystore, "correct horse")


def test_a_missing_keystore_is_a_keystore_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(KeystoreError, match="missing") as caught:
        load_keystore(path, "pw")
    assert str(path) in str(caught.value)


# ---------------------------------------------------------------------- passwords


def test_the_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "from-env")
    assert read_password() == "from-env"


def test_the_password_comes_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file\n")  # as `echo secret > file` writes it
    monkeypatch.setenv(FILE_ENV, str(secret))
    assert read_password() == "from-file"
    monkeypatch.setenv(ENV, "from-env")  # the variable wins over the file
    assert read_password() == "from-env"
    monkeypatch.setenv(ENV, "")  # an empty variable is no password: the file is used
    assert read_password() == "from-file"


def test_the_password_variables_can_be_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROOF_KEY_PASSWORD", "proof")
    assert read_password("PROOF_KEY_PASSWORD", "PROOF_KEY_PASSWORD_FILE") == "proof"


def test_no_password_is_a_clear_error() -> None:
    with pytest.raises(KeystoreError) as caught:
        read_password()
    assert ENV in str(caught.value) and FILE_ENV in str(caught.value)


def test_an_unreadable_password_file_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-password"
    monkeypatch.setenv(FILE_ENV, str(missing))
    with pytest.raises(KeystoreError, match="cannot read the password file") as caught:
        read_password()
    assert str(missing) in str(caught.value)


def test_an_empty_password_file_is_no_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "password"
    empty.write_text("\n")
    monkeypatch.setenv(FILE_ENV, str(empty))
    with pytest.raises(KeystoreError):
        read_password()
