"""Shared fixtures. The chain is deployed once per session and every test runs inside a snapshot."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.contracts.harness import EscrowEnv, build_env

# Shared fixtures: a dev node per module (support/node.py), one embedded system per session (support/shop.py).
pytest_plugins = ["tests.support.node", "tests.support.shop"]

# Property-test budgets: `ci` (default, also `make test`) and `long` (`make test-long`).
# The escrow state machine uses these example counts; see tests/contracts/test_invariants.py.
settings.register_profile(
    "ci", max_examples=200, stateful_step_count=20, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "long", max_examples=2_000, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def _session_env() -> EscrowEnv:
    return build_env()


@pytest.fixture
def env(_session_env: EscrowEnv) -> Iterator[EscrowEnv]:
    """A deployed escrow; every change a test makes is rolled back afterwards."""
    snapshot = _session_env.chain.snapshot()
    try:
        yield _session_env
    finally:
        _session_env.chain.revert(snapshot)
