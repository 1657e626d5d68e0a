"""Game accounts are stored encrypted at rest (AES-256-GCM); only their commitment goes on chain.

The associated data binds a ciphertext to its order id, so a ciphertext copied onto another order
row does not decrypt.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cardless.ledger._exceptions import LedgerError

__all__ = ["AccountCipher", "CipherError", "load_or_create_key"]

_NONCE = 12


class CipherError(LedgerError):
    pass


class AccountCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise CipherError(f"account encryption key must be 32 bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def encrypt(self, account: str, order_id: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, account.encode("utf-8"), order_id.encode())

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
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(base64.b64encode(key).decode() + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return key
