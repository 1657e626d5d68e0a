"""The ``[account]`` table of a provider file: the game-account format the gateway checks before it
asks the provider (adapters.provider_file). Key-naming errors for the http kind are in
test_http_adapter.py (test_provider_file_errors_name_the_key)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters import ProviderFileError
from adapters.provider_file import (
    AccountFormat,
    bundled_provider_file,
    load_provider_file,
    read_account_format,
)
from adapters.simulator.config import default_config


def test_a_sku_override_replaces_only_what_it_sets() -> None:
    declared = AccountFormat(
        pattern="[0-9]+",
        min_length=5,
        max_length=12,
        description="5 to 12 digits",
        skus={"pubg-60uc": {"min_length": 8, "description": "8 to 12 digits"}},
    )
    assert declared.for_sku("pubg-60uc").model_dump() == {
        "pattern": "[0-9]+",
        "min_length": 8,
        "max_length": 12,
        "description": "8 to 12 digits",
    }
    assert declared.for_sku("genshin-60").min_length == 5
    assert declared.for_sku("pubg-60uc").problem("1234567") == "is shorter than 8 characters"
    assert declared.for_sku("genshin-60").problem("1234567") is None
    assert declared.for_sku("genshin-60").problem("1234567890123") == "is longer than 12 characters"


def test_an_override_that_empties_the_length_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"skus\.x: min_length 13 is more than max_length 12"):
        AccountFormat(min_length=5, max_length=12, skus={"x": {"min_length": 13}})


def test_bundled_files_declare_the_simulators_own_account_rule() -> None:
    """The files and the simulator agree, so the gateway refuses nothing the simulator would take
    and nothing it lets through is refused for its shape."""
    simulator = re.compile(default_config().account_pattern)
    samples = ["1234", "12345", "123456789012", "1234567890123", "12a45", "\uff11\uff12\uff13\uff14\uff15"]
    for name in ("simulator", "simulator-md5"):
        declared = load_provider_file(bundled_provider_file(name)).account
        assert declared is not None, name
        for account in samples:
            ascii_simulator = simulator.fullmatch(account) is not None and account.isascii()
            assert (declared.for_sku("genshin-60").problem(account) is None) == ascii_simulator, account


def test_account_format_is_read_from_a_file_of_any_adapter_kind(tmp_path: Path) -> None:
    path = tmp_path / "grpc-shop.toml"
    path.write_text('adapter = "grpc"\nname = "grpc-shop"\nendpoint = "x"\n[account]\npattern = "[A-Z]{3}"\n')
    name, declared = read_account_format(path)
    assert name == "grpc-shop" and declared is not None and declared.pattern == "[A-Z]{3}"

    path.write_text('name = "no-format"\n')
    assert read_account_format(path) == ("no-format", None)


@pytest.mark.parametrize(
    ("table", "key", "fragment"),
    [
        ('pattern = "([0-9]"', "account.pattern", "not a valid regular expression"),
        ("min_length = 0", "account.min_length", "greater than or equal to 1"),
        ('pattern = "[0-9]+"\nlength = 5', "account.length", "Extra inputs"),
        (
            '[account.skus.gem-1]\npattern = "*"',
            "account.skus.gem-1.pattern",
            "not a valid regular expression",
        ),
    ],
)
def test_a_bad_account_table_names_the_key(tmp_path: Path, table: str, key: str, fragment: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(f'name = "p"\n[account]\n{table}\n')
    with pytest.raises(ProviderFileError) as caught:
        read_account_format(path)
    assert caught.value.key == key
    assert fragment in str(caught.value) and str(path) in str(caught.value)
