"""The oracle's entry point schedules the periodic jobs, and the merchant sweep pays every merchant with
a balance, one failing payout never stopping the others."""

from __future__ import annotations

from typing import Any, cast

import pytest
from sqlalchemy.orm import Session, sessionmaker

from oracles.service import JobIntervals, OracleService
from oracles.settlement import MerchantSweep
from oracles.txmanager import TxManager
from tests.oracles._ledger import FakeAdapter, worker


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_service_schedules_requery_expiry_and_sweep(
    ledger: sessionmaker[Session], anyio_backend: str
) -> None:
    w = worker(ledger, FakeAdapter("alpha"), "worker-a")
    intervals = JobIntervals(
        requery_unknown=2, expire_and_refund=7, purge_unpaid=600, sweep=90, gas_balance=45
    )
    scheduler = OracleService(w, sweep=lambda: None, gas_balance=lambda: 0, intervals=intervals).scheduler()
    jobs = {job.id: job.trigger.interval.total_seconds() for job in scheduler.get_jobs()}
    assert jobs == {
        "requery-unknown": 2,
        "expire-and-refund": 7,
        "purge-unpaid": 600,
        "purge-request-signals": 600,  # risk signals past their retention (same cadence)
        "sweep": 90,
        "gas-balance": 45,
    }
    assert "sweep" not in {job.id for job in OracleService(w).scheduler().get_jobs()}


class _Call:
    def __init__(self, value: Any) -> None:
        self.value = value

    def call(self) -> Any:
        return self.value


class _Escrow:
    """Just enough of the escrow contract: balances to read, withdraw calls to build."""

    def __init__(self, balances: dict[tuple[str, str], int]) -> None:
        self.functions = self
        self.balances = balances

    def balanceOf(self, merchant: str, token: str) -> _Call:  # noqa: N802 - the contract's name
        return _Call(self.balances.get((merchant, token), 0))

    def withdraw(self, merchant: str, token: str) -> tuple[str, str]:
        return (merchant, token)


class _Tx:
    def __init__(self, failing: set[tuple[str, str]]) -> None:
        self.failing = failing
        self.sent: list[tuple[str, Any]] = []

    def send(self, purpose: str, order_ids: list[str], call: Any) -> None:
        if call in self.failing:
            raise RuntimeError("receiver reverts")
        self.sent.append((purpose, call))


def test_the_sweep_withdraws_every_balance_and_survives_a_failing_one() -> None:
    escrow = _Escrow({("m1", "usdc"): 5, ("m1", "eth"): 0, ("m2", "usdc"): 7, ("m2", "eth"): 3})
    tx = _Tx(failing={("m2", "usdc")})
    sweep = MerchantSweep(
        cast(Any, escrow), cast(TxManager, tx), merchants=["m1", "m2"], tokens=["usdc", "eth"]
    )
    assert sweep() == 2
    assert tx.sent == [("withdraw", ("m1", "usdc")), ("withdraw", ("m2", "eth"))]
