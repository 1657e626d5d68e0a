"""Shared fixtures. The chain is deployed once per session and every test runs inside a snapshot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contracts.harness import EscrowEnv, build_env


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
