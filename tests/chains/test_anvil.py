"""The shared chain suite on anvil (npm ``@foundry-rs/anvil``), plus what only a real node can show:
``anvil_reorg`` reorganisations, a base fee that leaves our transaction behind, the ``safe`` tag and
legacy fees."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from cardless import protocol
from cardless.devchain.anvil import AnvilNode
from cardless.ledger import ChainTxState, OrderState
from oracles.watcher import Watcher
from oracles.worker import OracleWorker
from tests.chains.backends import AnvilBackend, ChainBackend, ChainEscrowEnv
from tests.chains.flows_suite import EscrowFlowSuite, FlowFixtures, metric, pay, quote, reorgs, row, txs
from tests.chains.txmanager_suite import TxManagerSuite
from tests.chains.watcher_suite import WatcherSuite
from tests.oracles._ledger import FakeAdapter
from tests.support.anvil import running_anvil
from tests.support.node import rpc

S = OrderState


@pytest.fixture(scope="module")
def backend(anvil: AnvilNode) -> AnvilBackend:
    return AnvilBackend(anvil)


class TestWatcherAnvil(WatcherSuite):
    def test_the_watcher_never_reads_past_the_safe_block(
        self, backend: ChainBackend, env: ChainEscrowEnv, start: int
    ) -> None:
        """anvil answers ``safe`` as the head minus one epoch (32 blocks)."""
        applied: list[str] = []
        watcher = Watcher(
            backend.w3,
            env.escrow,
            _sessions_for_watcher(),
            lambda _s, name, _a, _m: applied.append(name),
            start_block=start,
            finality="safe",
        )
        receipt = env.pay(env.make_order(token=None, amount=10**15))
        backend.mine(5)
        assert watcher.confirmed_head() == int(backend.w3.eth.get_block("safe")["number"])
        assert watcher.poll() == 0 and applied == []
        backend.mine(40)
        assert int(backend.w3.eth.get_block("safe")["number"]) >= receipt["blockNumber"]
        assert watcher.poll() == 1 and applied == ["OrderPaid"]


def _sessions_for_watcher() -> sessionmaker[Session]:
    from cardless.ledger import create_engine_for, migrate, session_factory

    engine = create_engine_for("sqlite://")
    migrate(engine)
    return session_factory(engine)


class TestTxManagerAnvil(TxManagerSuite):
    pass


class TestEscrowFlowsAnvil(EscrowFlowSuite):
    def test_a_transaction_left_behind_by_a_rising_base_fee_is_replaced_with_higher_fees(
        self, backend: ChainBackend, env: ChainEscrowEnv, make_worker: Callable[..., OracleWorker]
    ) -> None:
        tm = make_worker(bump_after=timedelta(hours=1)).tx
        backend.automine(False)
        stuck = tm.send("withdraw", [], env.usdc.functions.approve(env.bystander, 8))
        high = 10 * stuck.max_fee_per_gas
        rpc(backend.w3, "anvil_setNextBlockBaseFeePerGas", hex(high))
        backend.mine(2)  # the base fee jumps to 10x the most our transaction would pay
        tm.confirm()
        assert not _mined(backend, stuck.tx_hash)  # blocks go by without it
        replaced = metric("cardless_tx_replaced_total")

        tm.bump_after = timedelta(0)
        tm.confirm()  # bumped from today's base fee, not only +25 %
        versions = [t for t in txs(tm.sessions) if t.nonce == stuck.nonce]
        base_now = int(backend.w3.eth.get_block("latest")["baseFeePerGas"])
        assert len(versions) == 2 and versions[1].max_fee_per_gas > 2 * base_now > high
        assert metric("cardless_tx_replaced_total") == replaced + 1
        backend.mine()
        tm.bump_after = timedelta(hours=1)
        (done,) = [t for t in tm.confirm() if t.nonce == stuck.nonce]
        assert done.id == versions[1].id and done.state == ChainTxState.CONFIRMED
        (old,) = [t for t in txs(tm.sessions) if t.id == stuck.id]
        assert (old.state, old.error) == (ChainTxState.REVERTED, f"replaced by {done.tx_hash}")
        assert env.usdc.functions.allowance(tm.account.address, env.bystander).call() == 8

    def test_legacy_fees_are_sent_and_bumped_as_gas_price(
        self, backend: ChainBackend, env: ChainEscrowEnv, make_worker: Callable[..., OracleWorker]
    ) -> None:
        tm = make_worker(fee_mode="legacy", bump_after=timedelta(0)).tx
        backend.automine(False)
        record = tm.send("withdraw", [], env.usdc.functions.approve(env.bystander, 9))
        assert HexBytes(record.raw_tx)[0] >= 0xC0  # an RLP list: a type-0 transaction
        tm.confirm()
        versions = [t for t in txs(tm.sessions) if t.nonce == record.nonce]
        assert len(versions) == 2 and versions[1].max_fee_per_gas >= record.max_fee_per_gas * 5 // 4
        backend.mine()
        backend.automine(True)
        tm.bump_after = timedelta(hours=1)
        (done,) = tm.confirm()
        assert done.id == versions[1].id and done.state == ChainTxState.CONFIRMED
        tx = backend.w3.eth.get_transaction(done.tx_hash)
        assert tx["type"] == 0 and tx["gasPrice"] == versions[1].max_fee_per_gas


class TestAnvilReorgs(FlowFixtures):
    """``anvil_reorg`` replaces the last blocks with new ones. On a node of its own: a snapshot taken
    before an ``anvil_reorg`` cannot be reverted to, so these tests do not roll back."""

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Iterator[AnvilBackend]:
        with running_anvil() as node:
            yield AnvilBackend(node)

    @pytest.fixture(autouse=True)
    def _rolled_back(self) -> None:
        return None

    def test_anvil_reorg_shallower_than_the_depth_never_reaches_the_ledger(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        provider: FakeAdapter,
        make_worker: Callable[..., OracleWorker],
    ) -> None:
        worker = make_worker(confirmations=3)
        order = quote(env, sessions)
        paid = pay(env, order)
        backend.mine()
        asyncio.run(worker.tick())
        rpc(backend.w3, "anvil_reorg", 2, [])  # the payment's block and the one after: new, empty
        for _ in range(6):
            self.ticks(worker)
            backend.mine()
        assert env.status(order) == protocol.OrderStatus.NONE
        assert not _mined(backend, paid)
        assert row(sessions, order).state == S.QUOTED and provider.submits == {}
        assert reorgs(sessions) == []

    def test_anvil_reorg_deeper_than_the_depth_undoes_an_unfulfilled_payment(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        provider: FakeAdapter,
        make_worker: Callable[..., OracleWorker],
    ) -> None:
        worker = make_worker(confirmations=1)
        order = quote(env, sessions)
        paid = pay(env, order)
        backend.mine()
        assert worker.watcher.poll() == 1 and row(sessions, order).state == S.PAID
        alarms = metric("cardless_chain_reorgs_total")

        rpc(backend.w3, "anvil_reorg", 3, [])
        self.ticks(worker)
        assert row(sessions, order).state == S.QUOTED and provider.submits == {}
        (reorg,) = reorgs(sessions)
        assert reorg.confirmations == 1 and reorg.dropped_logs[0]["tx_hash"] == paid
        assert metric("cardless_chain_reorgs_total") == alarms + 1


def _mined(backend: ChainBackend, tx_hash: str) -> bool:
    try:
        backend.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    except Exception:
        return False
    return True


__all__ = ["TypedTransaction", "Web3"]
