"""Game accounts at rest: AES-256-GCM bound to the order id, and where the key comes from."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from cardless.ledger.cipher import AccountCipher, CipherError, load_or_create_key

ORDER = "0x" + "11" * 32
OTHER = "0x" + "22" * 32
KEY = bytes(range(32))


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARDLESS_ACCOUNT_KEY", raising=False)


@pytest.mark.parametrize("account", ["12345678", "player#1234", "玩家一号", "a" * 64])
def test_round_trip(account: str) -> None:
    cipher = AccountCipher(KEY)
    blob = cipher.encrypt(account, ORDER)
    assert account.encode() not in blob
    assert cipher.decrypt(blob, ORDER) == account


def test_each_encryption_uses_a_fresh_nonce() -> None:
    cipher = AccountCipher(KEY)
    first, second = cipher.encrypt("12345678", ORDER), cipher.encrypt("12345678", ORDER)
    assert first != second
    assert first[:12] != second[:12]


def test_ciphertext_is_bound_to_its_order_id() -> None:
    """A ciphertext copied onto another order row does not decrypt there."""
    cipher = AccountCipher(KEY)
    blob = cipher.encrypt("12345678", ORDER)
    with pytest.raises(CipherError, match=OTHER):
        cipher.decrypt(blob, OTHER)


def test_wrong_key_does_not_decrypt() -> None:
    blob = AccountCipher(KEY).encrypt("12345678", ORDER)
    with pytest.raises(CipherError, match="does not decrypt with this key"):
        AccountCipher(bytes(32)).decrypt(blob, ORDER)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:-1] + bytes([b[-1] ^ 1]), id="flipped-tag-bit"),
        pytest.param(lambda b: b[:12] + bytes([b[12] ^ 1]) + b[13:], id="flipped-ciphertext-bit"),
        pytest.param(lambda b: b[:20], id="truncated"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_damaged_ciphertext_is_refused(damage: object) -> None:
    cipher = AccountCipher(KEY)
    blob = cipher.encrypt("12345678", ORDER)
    with pytest.raises(CipherError):
        cipher.decrypt(damage(blob), ORDER)  # type: ignore[operator]


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_key_must_be_32_bytes(size: int) -> None:
    with pytest.raises(CipherError, match=f"must be 32 bytes, got {size}"):
        AccountCipher(bytes(size))


# ------------------------------------------------------------------------------- the derived salt


def _salt_as_documented(key: bytes, order_id: str) -> bytes:
    """docs/protocol.md's recipe with the standard library only: HKDF-SHA256 (RFC 5869, no salt)
    for the subkey, then HMAC-SHA256 over the label and the order id's 32 bytes."""
    prk = hmac.new(b"\x00" * 32, key, hashlib.sha256).digest()
    salt_key = hmac.new(prk, b"cardless/account-salt-key/v1" + b"\x01", hashlib.sha256).digest()
    message = b"cardless/account-salt/v1" + bytes.fromhex(order_id[2:])
    return hmac.new(salt_key, message, hashlib.sha256).digest()


def test_the_salt_is_derived_exactly_as_documented() -> None:
    salt = AccountCipher(KEY).salt(ORDER)
    assert len(salt) == 32
    assert salt == _salt_as_documented(KEY, ORDER)


def test_the_salt_is_deterministic_per_key_and_order_and_differs_across_them() -> None:
    cipher, again, other_key = AccountCipher(KEY), AccountCipher(KEY), AccountCipher(bytes(32))
    assert cipher.salt(ORDER) == again.salt(ORDER) == cipher.salt(ORDER.upper().replace("0X", "0x"))
    assert cipher.salt(ORDER) != cipher.salt(OTHER)
    assert cipher.salt(ORDER) != other_key.salt(ORDER)
    assert other_key.salt(ORDER) != other_key.salt(OTHER)


def test_the_salt_key_is_not_the_encryption_key_itself() -> None:
    """HKDF separates the two uses of the one secret: an HMAC under the raw key is not the salt."""
    raw = hmac.new(KEY, b"cardless/account-salt/v1" + bytes.fromhex(ORDER[2:]), hashlib.sha256).digest()
    assert AccountCipher(KEY).salt(ORDER) != raw


@pytest.mark.parametrize("order_id", ["", "0x", "0x" + "11" * 31, "0x" + "11" * 33, "0x" + "zz" * 32])
def test_the_salt_needs_a_32_byte_order_id(order_id: str) -> None:
    with pytest.raises(CipherError, match="order id must be 0x and 32 bytes of hex"):
        AccountCipher(KEY).salt(order_id)


# ---------------------------------------------------------------------------------------- the key


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "var" / "account-key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert base64.b64decode(path.read_text()) == key
    assert load_or_create_key(path) == key  # read back, not replaced
    assert not list(path.parent.glob("*.tmp"))


def test_corrupt_key_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "account-key"
    path.write_text(base64.b64encode(bytes(16)).decode())
    with pytest.raises(CipherError, match=f"{path}: must hold a base64 32-byte key"):
        load_or_create_key(path)


def test_corrupt_key_file_that_is_not_base64_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "account-key"
    path.write_text("not base64 at all!\n")
    with pytest.raises(CipherError, match=f"{path}: must hold a base64 32-byte key"):
        load_or_create_key(path)


def test_a_configured_key_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "account-key"
    assert load_or_create_key(path, value=base64.b64encode(KEY).decode()) == KEY
    assert not path.exists()  # nothing written when the key comes from the settings


def test_the_environment_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Configuration comes from the CLI's Settings, passed down; the ledger reads no variables."""
    monkeypatch.setenv("CARDLESS_ACCOUNT_KEY", base64.b64encode(KEY).decode())
    assert load_or_create_key(tmp_path / "account-key") != KEY


def test_without_create_a_missing_key_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "account-key"
    with pytest.raises(CipherError, match="no account encryption key: set CARDLESS_ACCOUNT_KEY"):
        load_or_create_key(path, create=False)
    assert not path.exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("not base64!", "CARDLESS_ACCOUNT_KEY: not valid base64", id="not-base64"),
        pytest.param(
            base64.b64encode(bytes(16)).decode(),
            "CARDLESS_ACCOUNT_KEY: must decode to 32 bytes, got 16",
            id="too-short",
        ),
        pytest.param(
            base64.b64encode(bytes(33)).decode(),
            "CARDLESS_ACCOUNT_KEY: must decode to 32 bytes, got 33",
            id="too-long",
        ),
    ],
)
def test_a_configured_key_is_validated(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(CipherError) as raised:
        load_or_create_key(tmp_path / "account-key", value=value)
    assert str(raised.value) == message
    assert value not in str(raised.value)  # never echo key material
