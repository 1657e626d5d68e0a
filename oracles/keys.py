"""Encrypted keystores (eth-account / Web3 Secret Storage) for the oracle's two keys.

The proof-signing key (authorised as an oracle signer on the escrow) and the gas-paying key (sends
transactions) are separate, so a leaked hot gas key cannot forge fulfilment proofs. The password is
the caller's to supply (the CLI reads it from its settings: a variable or a file, never the
repository); nothing here reads the environment.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from cardless.ledger.private_files import private_dir, write_private
from oracles._exceptions import OracleError

__all__ = ["KeystoreError", "load_keystore", "load_or_create_keystore"]


class KeystoreError(OracleError):
    pass


def load_keystore(path: Path, password: str) -> LocalAccount:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeystoreError(f"keystore {path}: missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise KeystoreError(f"keystore {path}: not a readable JSON keystore ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(
        document.get("crypto") or document.get("Crypto"), dict
    ):
        raise KeystoreError(f"keystore {path}: not a Web3 Secret Storage keystore (no 'crypto' section)")
    try:
        key = Account.decrypt(document, password)
    except (ValueError, KeyError, TypeError) as exc:
        raise KeystoreError(f"keystore {path}: wrong password or corrupted keystore ({exc})") from exc
    account: LocalAccount = Account.from_key(key)
    return account


def load_or_create_keystore(path: Path, password: str, *, scrypt_n: int | None = None) -> LocalAccount:
    """Load ``path``; create it with a fresh random key if it does not exist (dev set-up)."""
    if path.exists():
        return load_keystore(path, password)
    private_dir(path.parent)
    account: LocalAccount = Account.from_key(secrets.token_bytes(32))
    document = Account.encrypt(account.key, password, kdf="scrypt", iterations=scrypt_n)
    write_private(path, json.dumps(document))
    return account
