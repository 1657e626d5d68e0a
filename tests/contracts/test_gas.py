"""Gas snapshot: a fresh measurement must match bench/results/gas.json and meet every target.

Gas is deterministic up to a few units (random order ids change how many calldata bytes are zero),
so the comparison allows 0.5%. A change that moves gas more than that must re-run `make bench-gas`
and commit the new figures, which makes every gas change visible in review.
"""

from __future__ import annotations

import json

import pytest

from bench.gas import KEYS, RESULTS, TARGETS, measure


# `long` (CI runs it in `make test-long`; `make bench-gas` prints the table): deploys and runs every
# escrow operation through eth-tester, ~20 s, and only a contract change can move it.
@pytest.mark.long
def test_gas_matches_snapshot_and_targets() -> None:
    committed = json.loads(RESULTS.read_text())
    assert sorted(committed) == sorted(KEYS)
    fresh = measure()
    for key in KEYS:
        assert abs(fresh[key] - committed[key]) <= committed[key] * 0.005, (
            f"{key}: {fresh[key]:,} gas vs committed {committed[key]:,}; run `make bench-gas` and commit"
        )
    for key, target in TARGETS.items():
        assert fresh[key] <= target, f"{key}: {fresh[key]:,} > target {target:,}"
