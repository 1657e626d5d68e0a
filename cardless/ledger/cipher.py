"""Game accounts are stored encrypted at rest (AES-256-GCM); only their commitment goes on chain.

The associated data binds a ciphertext to its order id, so a ciphertext copied onto another order
row does not decrypt.

The salt of an order's account commitment is *derived*, never stored::

    salt_key = HKDF-SHA256(account_key, salt=None, info="cardless/account-salt-key/v1", length=32)
    salt     = HMAC-SHA256(salt_key, "cardless/account-salt/v1" || order_id)   # order_id: its 32 bytes

A stored salt would sit next to the commitment ``keccak256(account || salt)`` and let anyone holding
a copy of the database recover a short account by brute force without the key (an 8-digit account
in about a minute). Derived, it is known only to the buyer (who gets it with the quote) and to
whoever holds the account key. The HKDF subkey keeps the AES key and the HMAC key separate; both
come from the one secret the operator already keeps, so rotating that key loses the old salts
exactly as it loses the old ciphertexts.
"""

from __future__ import annotations

import base64
import secrets
import unicodedata
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cardless.ledger._exceptions import LedgerError
from cardless.ledger.private_files import private_dir, write_private

__all__ = ["AccountCipher", "CipherError", "load_or_create_key", "normalise_account"]

_NONCE = 12
_SALT_KEY_INFO = b"cardless/account-salt-key/v1"
_SALT_LABEL = b"cardless/account-salt/v1"
_RISK_KEY_INFO = b"cardless/risk-keyed-hash/v1"
_SEAL_KEY_INFO = b"cardless/sealed-at-rest/v1"


class CipherError(LedgerError):
    pass


def normalise_account(account: str) -> str:
    return unicodedata.normalize("NFKC", account).strip().casefold()


class AccountCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise CipherError(f"account encryption key must be 32 bytes, got {len(key)}")
        self._aead = AESGCM(key)
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SALT_KEY_INFO)
        self._salt_key = hkdf.derive(key)
        risk = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_RISK_KEY_INFO)
        self._risk_key = risk.derive(key)
        seal = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_KEY_INFO)
        self._seal = AESGCM(seal.derive(key))

    def keyed_hash(self, label: str, value: str) -> str:
        """HMAC-SHA256 (hex) of ``value`` under a subkey of the account key, separated by ``label``:
        what the risk engine counts and compares (game accounts, client networks, user agents) without
        keeping the value itself. A copy of the database cannot test guesses without the key."""
        mac = hmac.HMAC(self._risk_key, hashes.SHA256())
        mac.update(label.encode() + b"\x00" + value.encode("utf-8"))
        return mac.finalize().hex()

    def account_hash(self, account: str) -> str:
        """The keyed hash of the normalised game account (NFKC, trimmed, case-folded): velocity per
        account counts orders by it, whatever case or width the buyer typed."""
        return self.keyed_hash("account", normalise_account(account))

    def salt(self, order_id: str) -> bytes:
        """The 32-byte salt of ``order_id``'s account commitment (``0x`` + 64 hex, any case)."""
        try:
            raw = bytes.fromhex(order_id.removeprefix("0x"))
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise CipherError(f"order id must be 0x and 32 bytes of hex, got {order_id!r}")
        mac = hmac.HMAC(self._salt_key, hashes.SHA256())
        mac.update(_SALT_LABEL + raw)
        return mac.finalize()

    def encrypt(self, account: str, order_id: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, account.encode("utf-8"), order_id.encode())

    def seal(self, data: bytes, label: str) -> bytes:
        """Other bytes kept at rest that may carry an account or a secret (a stored API answer),
        AES-256-GCM under their own subkey, bound to ``label`` (the row they belong to)."""
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._seal.encrypt(nonce, data, label.encode())

    def unseal(self, blob: bytes, label: str) -> bytes:
        try:
            return self._seal.decrypt(blob[:_NONCE], blob[_NONCE:], label.encode())
        except (InvalidTag, ValueError) as exc:
            raise CipherError(f"{label}: does not decrypt with this key") from exc

    def decrypt(self, blob: bytes, order_id: str) -> str:
        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], order_id.encode()).decode("utf-8")
        except (InvalidTag, ValueError) as exc:
            raise CipherError(f"order {order_id}: account ciphertext does not decrypt with this key") from exc


def load_or_create_key(
    path: Path, *, value: str | None = None, name: str = "CARDLESS_ACCOUNT_KEY", create: bool = True
) -> bytes:
    """The key from ``value`` (base64, named ``name`` in errors), else from ``path``; with ``create``,
    a fresh key is written to ``path`` when it does not exist, otherwise a missing key is an error.

    The caller (the CLI's settings) decides where the value comes from; nothing here reads the
    environment.
    """
    if value:
        try:
            key = base64.b64decode(value, validate=True)
        except ValueError as exc:
            raise CipherError(f"{name}: not valid base64") from exc
        if len(key) != 32:
            raise CipherError(f"{name}: must decode to 32 bytes, got {len(key)}")
        return key
    if path.exists():
        try:
            key = base64.b64decode(path.read_text().strip(), validate=True)
        except ValueError:  # binascii.Error: a bare "Incorrect padding" that names no file
            key = b""
        if len(key) != 32:
            raise CipherError(f"{path}: must hold a base64 32-byte key")
        return key
    if not create:
        raise CipherError(
            f"no account encryption key: set {name} (base64 of 32 bytes) or provide {path}; "
            "it is only generated in development"
        )
    private_dir(path.parent)
    key = secrets.token_bytes(32)
    write_private(path, base64.b64encode(key).decode() + "\n")
    return key
