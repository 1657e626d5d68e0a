"""Chain profiles: how the oracle treats each EVM chain it may run on (pure data, no I/O).

A top-up cannot be undone, so a payment counts only once it is unlikely to be reorganised out. What
that means differs per chain, so every chain the oracle runs on has a profile:

- ``confirmations``: how many blocks must be on top of a log before it is applied (and before the
  transaction manager calls one of our transactions final);
- ``finality``: a block tag the node answers (``safe``/``finalized``, execution-apis) that the
  watcher also never reads past: the confirmed head is ``min(head - confirmations, <tag> block)``.
  ``latest`` means no tag (dev chains, or L2s whose tags follow L1 batches by many minutes);
- ``max_log_range``: blocks per ``eth_getLogs`` (hosted nodes cap it; the watcher also halves the
  range when a node refuses one as too large);
- ``fee_mode``: EIP-1559 (``maxFeePerGas``/``maxPriorityFeePerGas``) or legacy ``gasPrice``;
- ``bump_after_seconds``: how long a sent transaction may stay unmined before it is replaced with
  higher fees (a few block times);
- ``low_balance_wei``: the gas key's balance under which the oracle raises its low-balance alarm.

An unknown chain id has no profile: the operator must state the confirmation depth
(``CARDLESS_CONFIRMATIONS``), and gets the conservative :data:`UNKNOWN_CHAIN_DEFAULTS` for the rest.
Every field can be overridden from the settings (:func:`chain_profile`).
"""

from __future__ import annotations

import dataclasses
from typing import Final, Literal

from cardless.protocol._exceptions import ProtocolBaseError

__all__ = [
    "PROFILES",
    "UNKNOWN_CHAIN_DEFAULTS",
    "ChainProfile",
    "ChainProfileError",
    "FeeMode",
    "Finality",
    "chain_profile",
]

Finality = Literal["latest", "safe", "finalized"]
FeeMode = Literal["eip1559", "legacy"]

_ETH: Final = 10**18


class ChainProfileError(ProtocolBaseError):
    """No profile for the chain and no confirmation depth given, or an override out of range."""


@dataclasses.dataclass(frozen=True)
class ChainProfile:
    chain_id: int
    name: str
    confirmations: int
    finality: Finality = "latest"
    max_log_range: int = 2_000
    fee_mode: FeeMode = "eip1559"
    bump_after_seconds: int = 60
    low_balance_wei: int = _ETH // 10

    def __post_init__(self) -> None:
        if not 0 <= self.confirmations <= 10_000:
            raise ChainProfileError(f"confirmations: {self.confirmations} is outside 0..10000")
        if not 1 <= self.max_log_range <= 1_000_000:
            raise ChainProfileError(f"max_log_range: {self.max_log_range} is outside 1..1000000")
        if self.bump_after_seconds < 1:
            raise ChainProfileError("bump_after_seconds must be at least 1")
        if self.low_balance_wei < 0:
            raise ChainProfileError("low_balance_wei must not be negative")


PROFILES: Final[dict[int, ChainProfile]] = {
    p.chain_id: p
    for p in (
        # PoS Ethereum: 12 blocks (~2.4 min) and never past the justified ("safe") checkpoint.
        ChainProfile(1, "ethereum", 12, "safe", 2_000, "eip1559", 60, _ETH // 10),
        ChainProfile(11155111, "sepolia", 12, "safe", 2_000, "eip1559", 60, _ETH // 100),
        ChainProfile(17000, "holesky", 12, "safe", 2_000, "eip1559", 60, _ETH // 100),
        # OP Stack and Arbitrum: sequencer-ordered 2 s / 0.25 s blocks; their safe/finalized tags follow
        # L1 batches by minutes, so a depth in blocks instead.
        ChainProfile(10, "optimism", 30, "latest", 5_000, "eip1559", 20, _ETH // 100),
        ChainProfile(8453, "base", 30, "latest", 5_000, "eip1559", 20, _ETH // 100),
        ChainProfile(84532, "base-sepolia", 10, "latest", 5_000, "eip1559", 20, _ETH // 1000),
        ChainProfile(42161, "arbitrum-one", 40, "latest", 5_000, "eip1559", 20, _ETH // 100),
        # Polygon PoS: milestones make `finalized` fast (seconds); the depth covers a slow milestone.
        ChainProfile(137, "polygon", 32, "finalized", 2_000, "eip1559", 30, 5 * _ETH),
        # BNB Smart Chain: fast finality answers `finalized`; most nodes price by legacy gasPrice.
        ChainProfile(56, "bsc", 15, "finalized", 1_000, "legacy", 30, _ETH // 10),
        # Dev chains (anvil, Hardhat, the embedded py-evm node): instant, nothing to wait for.
        ChainProfile(31337, "dev", 0, "latest", 10_000, "eip1559", 30, _ETH),
    )
}
"""Built-in profiles by chain id (docs/operations/chains.md explains the numbers)."""

UNKNOWN_CHAIN_DEFAULTS: Final = ChainProfile(0, "unknown", 64, "finalized", 1_000, "eip1559", 60, _ETH // 10)
"""What an unknown chain gets besides the confirmation depth the operator must give."""


def chain_profile(
    chain_id: int,
    *,
    confirmations: int | None = None,
    finality: Finality | None = None,
    max_log_range: int | None = None,
    fee_mode: FeeMode | None = None,
    bump_after_seconds: int | None = None,
    low_balance_wei: int | None = None,
) -> ChainProfile:
    """The profile for ``chain_id`` with the given overrides (None keeps the profile's value).

    Raises :class:`ChainProfileError` for a chain without a profile unless ``confirmations`` is given."""
    base = PROFILES.get(chain_id)
    if base is None:
        if confirmations is None:
            raise ChainProfileError(
                f"chain {chain_id} has no built-in profile: set the confirmation depth "
                "(CARDLESS_CONFIRMATIONS) for it explicitly"
            )
        base = dataclasses.replace(UNKNOWN_CHAIN_DEFAULTS, chain_id=chain_id, name=f"chain-{chain_id}")
    return ChainProfile(
        chain_id=base.chain_id,
        name=base.name,
        confirmations=base.confirmations if confirmations is None else confirmations,
        finality=finality or base.finality,
        max_log_range=max_log_range or base.max_log_range,
        fee_mode=fee_mode or base.fee_mode,
        bump_after_seconds=bump_after_seconds or base.bump_after_seconds,
        low_balance_wei=base.low_balance_wei if low_balance_wei is None else low_balance_wei,
    )
