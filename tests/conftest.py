"""Shared fixtures, property-test profiles, and the markers and order the test runs rely on.

The chain for the contract tests is deployed once per session (per xdist worker) and every test runs
inside a snapshot. Everything else shared lives in tests/support/ (registered below).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.contracts.harness import EscrowEnv, build_env

# Shared fixtures: a dev node and an anvil per module (support/node.py, support/anvil.py), one embedded
# system per session (support/shop.py), a migrated SQLite database (support/db.py), PostgreSQL databases
# made and dropped per test (support/postgres.py).
pytest_plugins = [
    "tests.support.node",
    "tests.support.anvil",
    "tests.support.shop",
    "tests.support.db",
    "tests.support.postgres",
]

# Property-test budgets: `ci` (default, `make test`), `long` (`make test-long`), `dev` (`make test-fast`).
# The escrow state machine uses these example counts; see tests/contracts/test_invariants.py.
settings.register_profile(
    "ci", max_examples=200, stateful_step_count=15, deadline=None, suppress_health_check=list(HealthCheck)
)
# `dev` is for the edit loop (`make test-fast`): every property still runs, on fewer examples.
settings.register_profile(
    "dev", max_examples=20, stateful_step_count=10, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "long", max_examples=2_000, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TESTS = Path(__file__).resolve().parent

# Marked by directory: every test here starts the whole system (make test-fast leaves them out).
INTEGRATION_DIRS = ("integration",)

# Tests in directories whose owners have not marked them yet, marked slow here (by node id prefix):
# each takes seconds. `make test-fast` leaves them out; `make test` runs them.
SLOW_TESTS: tuple[str, ...] = (
    # `cardless ...` run as a subprocess, as an operator runs it (the in-process tests cover the messages)
    "tests/cli/test_startup_errors.py::test_cardless_",
    # a performance property: fills a chain with 300 blocks and times receipt lookups
    "tests/devchain/test_node.py::test_receipt_lookup_cost_does_not_grow_with_the_chain",
    # a child process each: `cardless deploy`, `cardless audit`, a fresh interpreter's imports
    "tests/cli/test_deploy.py::test_deploy_signs_locally_writes_the_file_and_the_gateway_starts_from_it",
    "tests/test_deep_json.py::test_the_cli_restores_the_recursion_limit",
    # the auditor's tests build whole order histories on a dev node (and run `cardless audit`)
    "tests/audit/",
    # every order flow run against a chain backend (the embedded node here; anvil in test_anvil.py)
    "tests/chains/",
)

# Fixtures that start a whole component: the embedded system (a dev node, the simulated provider, the
# gateway and the oracle), an anvil process, or a PostgreSQL database. A test that uses one is a
# system test: marked slow here, so `make test-fast` (the edit loop) leaves it out and `make test`
# runs it. The unit tests beside them cover the same code in-process.
SYSTEM_FIXTURES = frozenset({"system", "shop", "api", "faults", "anvil", "anvil_w3", "postgres", "pg_url"})

# Longest first, so that the two xdist workers finish together (with --dist loadgroup and
# --no-loadscope-reorder, xdist hands out work in this order). A stable sort: files stay whole, and
# everything not listed keeps its collection order after these.
LONGEST_FIRST = (
    "integration/test_crash_recovery.py",  # two crash-matrix halves + the random SIGKILLs (xdist groups)
    "contracts/test_invariants.py",  # the escrow state machine in shards
    "integration/",
    "contracts/test_build.py",
    "cli/",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's worker sends the collected node ids to the controller
def pytest_collection_finish(session: pytest.Session) -> None:
    if getattr(session.config.option, "loadgroup", False):  # an xdist worker under --dist loadgroup
        _apply_xdist_groups(session.items)


def _apply_xdist_groups(items: list[pytest.Item]) -> None:
    """Append `@group` to the node id of each test marked `xdist_group`, as pytest-xdist does.

    pytest-xdist 3.8 (the newest here) writes the suffix to `item._nodeid`, which pytest 9.2 no longer
    reads (the node id is the structured `item._id`), so without this every group is spread over the
    workers: the browser tests started one Chromium and one system per worker, and the crash matrix's
    halves ran interleaved. The controller schedules by the suffix. A no-op once xdist sets it itself.
    """
    from _pytest.nodeid import coerce_node_id  # pytest 9's node id type; the suffix must survive str()

    for item in items:
        names = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        if not names:
            continue
        suffix = "@" + "_".join(names)
        if not item.nodeid.endswith(suffix):
            item._id = coerce_node_id(item.nodeid + suffix)


def _starts_a_component(item: pytest.Item) -> bool:
    if SYSTEM_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    # `backend_url` and the oracle's `ledger` reach PostgreSQL through a parameter
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "postgresql" in callspec.params.values()


def _relative(item: pytest.Item) -> str:
    return Path(str(item.path)).resolve().relative_to(TESTS).as_posix()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the markers added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = _relative(item)
        if path.split("/", 1)[0] in INTEGRATION_DIRS:
            item.add_marker(pytest.mark.integration)
        if item.nodeid.startswith(SLOW_TESTS) or _starts_a_component(item):
            item.add_marker(pytest.mark.slow)

    def rank(item: pytest.Item) -> int:
        path = _relative(item)
        ranks = (i for i, prefix in enumerate(LONGEST_FIRST) if path.startswith(prefix))
        return next(ranks, len(LONGEST_FIRST))

    items.sort(key=rank)


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
