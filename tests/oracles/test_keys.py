"""Encrypted keystores for the oracle's keys (where their password comes from: tests/cli/test_keys.py).

Keystores here use scrypt n=2**4 so the tests stay fast; the default cost is the library's.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account import Account

from oracles.keys import KeystoreError, load_keystore, load_or_create_keystore

FAST = 2**4


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
