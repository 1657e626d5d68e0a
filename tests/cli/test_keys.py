"""Where the keystores' password comes from: the settings (a variable or a file), or in development only
a generated one. (Moved from tests/oracles/test_keys.py with ``oracles.keys.read_password``: the oracle
package no longer reads the environment.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cardless.cli.keys import keystore_password
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
