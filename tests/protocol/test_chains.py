"""Chain profiles (``cardless.protocol.chains``) and their overrides from ``Settings``."""

from __future__ import annotations

import pytest

from cardless.cli.settings import Settings
from cardless.protocol.chains import PROFILES, ChainProfile, ChainProfileError, chain_profile


def test_known_chains_have_a_depth_a_tag_a_log_range_and_a_fee_mode() -> None:
    ethereum = chain_profile(1)
    assert (ethereum.confirmations, ethereum.finality, ethereum.fee_mode) == (12, "safe", "eip1559")
    assert chain_profile(56).fee_mode == "legacy" and chain_profile(56).finality == "finalized"
    assert chain_profile(8453).finality == "latest" and chain_profile(8453).confirmations > 0
    dev = chain_profile(31337)
    assert (dev.confirmations, dev.finality) == (0, "latest")
    for profile in PROFILES.values():
        assert profile.max_log_range >= 1 and profile.bump_after_seconds >= 1
        assert profile.chain_id == 31337 or profile.confirmations > 0  # only dev chains trust the head


def test_an_unknown_chain_needs_an_explicit_confirmation_depth() -> None:
    with pytest.raises(ChainProfileError, match="CARDLESS_CONFIRMATIONS"):
        chain_profile(424242)
    profile = chain_profile(424242, confirmations=20)
    assert (profile.chain_id, profile.name, profile.confirmations) == (424242, "chain-424242", 20)
    assert profile.finality == "finalized" and profile.max_log_range == 1_000  # conservative defaults


def test_overrides_replace_only_what_they_name() -> None:
    profile = chain_profile(1, confirmations=0, max_log_range=500, fee_mode="legacy", low_balance_wei=0)
    assert (profile.confirmations, profile.max_log_range, profile.fee_mode, profile.low_balance_wei) == (
        0,
        500,
        "legacy",
        0,
    )
    assert profile.finality == "safe" and profile.bump_after_seconds == chain_profile(1).bump_after_seconds


@pytest.mark.parametrize(
    "fields",
    [{"confirmations": -1}, {"max_log_range": 0}, {"bump_after_seconds": 0}, {"low_balance_wei": -1}],
)
def test_a_profile_out_of_range_is_refused(fields: dict[str, int]) -> None:
    values = {"chain_id": 9, "name": "x", "confirmations": 1} | fields
    with pytest.raises(ChainProfileError):
        ChainProfile(**values)  # type: ignore[arg-type]


def test_settings_override_the_profile_from_cardless_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARDLESS_CONFIRMATIONS", "3")
    monkeypatch.setenv("CARDLESS_CHAIN_FINALITY", "finalized")
    monkeypatch.setenv("CARDLESS_CHAIN_LOG_RANGE", "250")
    monkeypatch.setenv("CARDLESS_CHAIN_FEE_MODE", "legacy")
    monkeypatch.setenv("CARDLESS_GAS_LOW_BALANCE_WEI", "5")
    profile = Settings().chain_profile(8453)
    assert (profile.name, profile.confirmations, profile.finality, profile.max_log_range) == (
        "base",
        3,
        "finalized",
        250,
    )
    assert (profile.fee_mode, profile.low_balance_wei) == ("legacy", 5)
    monkeypatch.delenv("CARDLESS_CONFIRMATIONS")
    with pytest.raises(ChainProfileError):
        Settings().chain_profile(777)
