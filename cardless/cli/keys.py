"""The process's secrets: the three keystores, their password and the account-encryption key.

Where they come from is ``Settings``: ``CARDLESS_KEYSTORE_DIR`` (default ``var/keys``),
``CARDLESS_KEYSTORE_PASSWORD_FILE`` or ``CARDLESS_KEYSTORE_PASSWORD``, ``CARDLESS_ACCOUNT_KEY`` (else
``var/account-key``). In development a missing one is created (a random password kept next to the
keystores, fresh random keys); in any other environment it is a start-up error naming the setting,
because a key generated on a server is one nobody authorised on the escrow or backed up. Outside
development a password file inside the keystore directory is refused too: whoever copies that
directory would hold both the keystores and what opens them.

What is created is owner-only: files 0600, directories 0700 (``cardless.ledger.private_files``).

A process loads only the keys its roles sign with: the gateway the quote signer, the oracle the
proof signer and the gas payer.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Collection
from pathlib import Path
from typing import Final, Literal

from eth_account.signers.local import LocalAccount

from cardless.cli.settings import OPERATOR_KEY, PLACEHOLDERS, Settings
from cardless.ledger.cipher import AccountCipher, load_or_create_key
from cardless.ledger.private_files import private_dir, write_private
from oracles.keys import KeystoreError, load_keystore, load_or_create_keystore

__all__ = [
    "KEYSTORE_FILES",
    "Keys",
    "Role",
    "account_cipher",
    "cosigner_key",
    "cosigner_secret",
    "keystore_password",
    "load_keys",
    "operator_key",
]

Role = Literal["quote", "oracle", "gas"]

KEYSTORE_FILES: Final[dict[Role, str]] = {
    "quote": "quote-signer.json",
    "oracle": "oracle-signer.json",
    "gas": "gas-payer.json",
}
ALL_ROLES: Final[tuple[Role, ...]] = ("quote", "oracle", "gas")


@dataclasses.dataclass(frozen=True)
class Keys:
    """The keys this process holds; a role it does not play is None."""

    quote: LocalAccount | None = None
    oracle: LocalAccount | None = None
    gas: LocalAccount | None = None

    def require(self, role: Role) -> LocalAccount:
        key: LocalAccount | None = getattr(self, role)
        if key is None:
            raise KeystoreError(f"the {role} key was not loaded for this process")
        return key


def keystore_password(settings: Settings) -> str:
    """The keystores' password from the settings; in development only, a generated one."""
    if settings.keystore_password is not None and settings.keystore_password.get_secret_value():
        return settings.keystore_password.get_secret_value()
    if (path := settings.keystore_password_file) is not None:
        try:
            password = path.read_text().strip()
        except OSError as exc:
            raise KeystoreError(
                f"CARDLESS_KEYSTORE_PASSWORD_FILE={path}: cannot read the password file ({exc.strerror})"
            ) from exc
        if not settings.is_development and _inside(path, settings.effective_keystore_dir):
            raise KeystoreError(
                f"CARDLESS_KEYSTORE_PASSWORD_FILE={path}: is inside the keystore directory "
                f"{settings.effective_keystore_dir}; keep the password apart from the keystores it opens"
            )
        if not password:
            raise KeystoreError(f"CARDLESS_KEYSTORE_PASSWORD_FILE={path}: the password file is empty")
        if not settings.is_development and password.lower() in PLACEHOLDERS:
            raise KeystoreError(
                f"CARDLESS_KEYSTORE_PASSWORD_FILE={path}: holds a placeholder, not a password"
            )
        return password
    if not settings.is_development:
        raise KeystoreError(
            "no keystore password: set CARDLESS_KEYSTORE_PASSWORD_FILE (or CARDLESS_KEYSTORE_PASSWORD); "
            f"keystores are only generated with CARDLESS_ENVIRONMENT=development (now {settings.environment})"
        )
    # Development: a random password kept next to the keystores (var/ is not in the repository).
    password_file = settings.effective_keystore_dir / "password"
    if not password_file.exists():
        private_dir(password_file.parent)
        write_private(password_file, secrets.token_urlsafe(24) + "\n")
    return password_file.read_text().strip()


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def load_keys(settings: Settings, roles: Collection[Role] = ALL_ROLES) -> Keys:
    """Load the keystores of ``roles`` (creating them in development only)."""
    if not roles:
        return Keys()
    directory = settings.effective_keystore_dir
    password = keystore_password(settings)
    loaded: dict[str, LocalAccount] = {}
    for role in ALL_ROLES:
        if role not in roles:
            continue
        path = directory / KEYSTORE_FILES[role]
        if settings.is_development:
            loaded[role] = load_or_create_keystore(path, password, scrypt_n=settings.keystore_scrypt_n)
        elif not path.exists():
            raise KeystoreError(
                f"keystore {path}: missing (CARDLESS_KEYSTORE_DIR={directory}); keystores are only "
                f"generated with CARDLESS_ENVIRONMENT=development"
            )
        else:
            loaded[role] = load_keystore(path, password)
    return Keys(**loaded)


def account_cipher(settings: Settings) -> AccountCipher:
    """The cipher for buyers' game accounts at rest (gateway encrypts, oracle decrypts: same key)."""
    value = settings.account_key.get_secret_value() if settings.account_key is not None else None
    database = settings.effective_database_url
    if not settings.is_development and value is None and database.startswith("sqlite:///"):
        # Whoever copies the database's directory must not also get the key that opens its accounts.
        directory = Path(database.removeprefix("sqlite:///")).parent
        if settings.account_key_file.exists() and _inside(settings.account_key_file, directory):
            raise KeystoreError(
                f"{settings.account_key_file} is in the database's directory {directory}: outside "
                "development set CARDLESS_ACCOUNT_KEY (e.g. from a secrets manager) instead"
            )
    return AccountCipher(
        load_or_create_key(
            settings.account_key_file,
            value=value,
            name="CARDLESS_ACCOUNT_KEY",
            create=settings.is_development,
        )
    )


def operator_key(settings: Settings) -> str | None:
    """The operator's bearer token: ``CARDLESS_OPERATOR_KEY``, else the file ``var/operator-key``;
    in development a missing one is created. Elsewhere, with neither, None: operator reads are off."""
    if settings.operator_key is not None:
        return settings.operator_key.get_secret_value()
    path = settings.operator_key_file
    if path.exists():
        token = path.read_text().strip()
        if not OPERATOR_KEY.fullmatch(token):
            raise KeystoreError(f"{path}: must hold 32 to 256 characters of base64 or base64url")
        return token
    if not settings.is_development:
        return None
    private_dir(path.parent)
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    return token


def cosigner_key(settings: Settings) -> LocalAccount:
    """The co-signer's own proof key (``CARDLESS_COSIGNER_KEYSTORE``), opened with the keystore password;
    created in development only. It must not be the oracle's key: one process would then hold both."""
    path = settings.effective_cosigner_keystore
    password = keystore_password(settings)
    if settings.is_development:
        key = load_or_create_keystore(path, password, scrypt_n=settings.keystore_scrypt_n)
    elif not path.exists():
        raise KeystoreError(
            f"keystore {path}: missing (CARDLESS_COSIGNER_KEYSTORE); keystores are only generated with "
            "CARDLESS_ENVIRONMENT=development"
        )
    else:
        key = load_keystore(path, password)
    oracle_path = settings.effective_keystore_dir / KEYSTORE_FILES["oracle"]
    if oracle_path.exists() and oracle_path.resolve() == path.resolve():
        raise KeystoreError(f"CARDLESS_COSIGNER_KEYSTORE={path} is the oracle's own proof keystore")
    return key


def cosigner_secret(settings: Settings) -> bytes:
    """The secret oracle and co-signers share (``CARDLESS_COSIGNER_SECRET`` or ``..._SECRET_FILE``); in
    development only, a generated file var/cosigner-secret both read."""
    value: str | None = None
    if settings.cosigner_secret is not None and settings.cosigner_secret.get_secret_value():
        value = settings.cosigner_secret.get_secret_value()
        where = "CARDLESS_COSIGNER_SECRET"
    elif (path := settings.cosigner_secret_file) is not None:
        where = f"CARDLESS_COSIGNER_SECRET_FILE={path}"
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise KeystoreError(f"{where}: cannot read the secret file ({exc.strerror})") from exc
    elif settings.is_development:
        path = settings.var_dir / "cosigner-secret"
        where = str(path)
        if not path.exists():
            private_dir(path.parent)
            write_private(path, secrets.token_urlsafe(32) + "\n")
        value = path.read_text().strip()
    else:
        raise KeystoreError(
            "no co-signer secret: set CARDLESS_COSIGNER_SECRET_FILE (or CARDLESS_COSIGNER_SECRET), the same "
            "for the oracle and its co-signers"
        )
    if len(value) < 32:  # also rules out every placeholder word
        raise KeystoreError(f"{where}: the co-signer secret must be at least 32 characters")
    return value.encode()
