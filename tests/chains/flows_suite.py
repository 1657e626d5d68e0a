"""Escrow flows through a real oracle worker on a real node: payment -> top-up -> settlement, at a
confirmation depth, through reorganisations, stuck and lost transactions, nonce gaps and races.

One suite, run on every backend (``tests/chains/test_embedded.py``, ``tests/chains/test_anvil.py``). A
reorganisation is made with ``evm_snapshot``/``evm_revert`` (both nodes; anvil's own ``anvil_reorg`` is
in ``test_anvil.py``): the blocks after the snapshot are replaced by new ones. The worker is the real
``OracleWorker`` (watcher, risk, outcomes, proofs, settlement, transaction manager) with a scripted
provider that counts every top-up, so "never topped up" and "topped up once" are counted, not assumed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from cardless import protocol
from cardless.ledger import ChainReorg, ChainTx, ChainTxState, Order, OrderState, SignerNonce
from cardless.ledger.store import new_order_row
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.reverts import RevertDecoder
from oracles.rawabi import RawCall
from oracles.txmanager import TxManager
from oracles.worker import OracleWorker, WorkerConfig
from tests.chains.backends import ChainBackend, ChainEscrowEnv, wait
from tests.oracles._ledger import CIPHER, FakeAdapter
from tests.support.node import rolled_back, rpc

S = OrderState
GAS = Account.from_key(keccak(b"cardless-chain-flows-gas-payer"))
PROVIDER = "sim"
SKU = "genshin-60"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def quote(env: ChainEscrowEnv, sessions: sessionmaker[Session], buyer: int = 0) -> protocol.Order:
    """A native-ETH order quoted into the ledger (as the gateway stores it), not paid yet."""
    order = env.make_order(token=None, buyer=env.buyers[buyer].address, amount=10**15)
    order_id = Web3.to_hex(order.order_id)
    with sessions.begin() as session:
        session.add(
            new_order_row(
                order,
                domain=env.domain,
                sku=SKU,
                providers=[PROVIDER],
                account_ciphertext=CIPHER.encrypt("player-1", order_id),
                quote_signer=env.quote_key.address,
                quote_signature=env.quote(order),
                reason="quoted",
            )
        )
    return order


def pay(env: ChainEscrowEnv, order: protocol.Order) -> str:
    receipt = env.pay(order)
    return Web3.to_hex(receipt["transactionHash"])


def row(sessions: sessionmaker[Session], order: protocol.Order) -> Order:
    with sessions() as session:
        found = session.get(Order, Web3.to_hex(order.order_id))
        assert found is not None
        return found


def reorgs(sessions: sessionmaker[Session]) -> list[ChainReorg]:
    with sessions() as session:
        return list(session.execute(select(ChainReorg).order_by(ChainReorg.id)).scalars())


def txs(sessions: sessionmaker[Session]) -> list[ChainTx]:
    with sessions() as session:
        return list(session.execute(select(ChainTx).order_by(ChainTx.id)).scalars())


class FlowFixtures:
    """The fixtures of the flow tests: a harness escrow with a funded gas key, a fresh ledger per test,
    a counting provider and a worker factory. The subclass's module provides a ``backend`` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def env(cls, backend: ChainBackend) -> ChainEscrowEnv:
        env = backend.escrow_env()
        backend.send({"from": backend.accounts[0].address, "to": GAS.address, "value": 10 * 10**18})
        return env

    @pytest.fixture(autouse=True)
    def _rolled_back(self, backend: ChainBackend, env: ChainEscrowEnv) -> Iterator[None]:
        backend.automine(True)
        with rolled_back(backend.w3):
            yield
        backend.automine(True)

    @pytest.fixture
    def sessions(self, migrated_db: sessionmaker[Session]) -> sessionmaker[Session]:
        return migrated_db

    @pytest.fixture
    def provider(self) -> FakeAdapter:
        return FakeAdapter(PROVIDER)

    @pytest.fixture
    def make_worker(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        provider: FakeAdapter,
    ) -> Callable[..., OracleWorker]:
        start = int(backend.w3.eth.block_number) + 1

        def make(confirmations: int = 0, **tx: Any) -> OracleWorker:
            decoder = RevertDecoder([load_artifact("CardlessEscrow").abi])
            options: dict[str, Any] = {
                "confirmations": confirmations,
                "resend_after": timedelta(0),
                "reconcile_every": timedelta(0),
            }
            options.update(tx)
            manager = TxManager(backend.w3, sessions, GAS, decoder, **options)
            return OracleWorker(
                w3=backend.w3,
                escrow=backend.w3.eth.contract(address=env.escrow.address, abi=env.escrow.abi),
                domain=env.domain,
                sessions=sessions,
                adapters={PROVIDER: provider},
                proof_key=env.oracle_key,
                tx=manager,
                cipher=CIPHER,
                start_block=start,
                config=WorkerConfig(confirmations=confirmations, worker_id="chain-suite-worker"),
            )

        return make

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def ticks(worker: OracleWorker, count: int = 1) -> None:
        """Run ``count`` ticks of the worker, waiting for the provider calls they start."""

        async def run() -> None:
            for _ in range(count):
                await worker.tick()
                await worker.drain()

        asyncio.run(run())

    @staticmethod
    def drive(
        worker: OracleWorker,
        backend: ChainBackend,
        until: Callable[[], bool],
        *,
        mine: bool = False,
        timeout: float = 20,
    ) -> None:
        """Tick the worker (mining a block per tick when ``mine``: a dev chain has no blocks of its own)
        until ``until()`` holds."""

        async def run() -> None:
            deadline = time.monotonic() + timeout
            while not until():
                assert time.monotonic() < deadline, "the worker did not get there in time"
                await worker.tick()
                await worker.drain()
                if mine:
                    backend.mine()
                await asyncio.sleep(0.005)

        asyncio.run(run())


class EscrowFlowSuite(FlowFixtures):
    """Subclassed once per backend."""

    # ------------------------------------------------------------------ confirmations

    def test_an_order_is_settled_once_its_payment_is_confirmations_deep(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        provider: FakeAdapter,
        make_worker: Callable[..., OracleWorker],
    ) -> None:
        worker = make_worker(confirmations=2)
        order = quote(env, sessions)
        paid = pay(env, order)
        self.ticks(worker)
        backend.mine()  # one block on top: not deep enough
        asyncio.run(worker.tick())
        assert row(sessions, order).state == S.QUOTED and provider.submits == {}

        self.drive(worker, backend, lambda: row(sessions, order).state == S.SETTLED, mine=True)
        settled = row(sessions, order)
        assert settled.paid_tx == paid and provider.submits == {Web3.to_hex(order.order_id): 1}
        assert env.status(order) == protocol.OrderStatus.SETTLED
        (settle_tx,) = txs(sessions)
        head = int(backend.w3.eth.block_number)
        assert settle_tx.state == ChainTxState.CONFIRMED and settle_tx.confirmed_block is not None
        assert settle_tx.confirmed_block + 2 <= head  # final only at the depth
        assert settled.review_reason is None and reorgs(sessions) == []

    # ------------------------------------------------------------------ reorgs

    def test_a_payment_reorganised_out_before_its_confirmations_is_never_topped_up(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        provider: FakeAdapter,
        make_worker: Callable[..., OracleWorker],
    ) -> None:
        worker = make_worker(confirmations=3)
        order = quote(env, sessions)
        fork = rpc(backend.w3, "evm_snapshot")
        paid = pay(env, order)
        backend.mine(2)  # 2 blocks on top of the payment: one short of the depth
        asyncio.run(worker.tick())
        assert row(sessions, order).state == S.QUOTED

        assert rpc(backend.w3, "evm_revert", fork) is True  # the payment's block is replaced
        backend.mine(6)
        self.ticks(worker)
        for _ in range(3):
            self.ticks(worker)
            backend.mine()
        assert row(sessions, order).state == S.QUOTED and row(sessions, order).paid_tx is None
        assert provider.submits == {}  # never topped up
        assert reorgs(sessions) == []  # nothing applied was dropped: no alarm
        assert env.status(order) == protocol.OrderStatus.NONE
        with pytest.raises(Exception, match="not found"):
            backend.w3.eth.get_transaction_receipt(paid)

    def test_a_deep_reorg_before_the_top_up_undoes_the_payment_and_the_re_read_applies_it_again(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        provider: FakeAdapter,
        make_worker: Callable[..., OracleWorker],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        worker = make_worker()
        order = quote(env, sessions)
        backend.mine()
        fork = rpc(backend.w3, "evm_snapshot")
        first = pay(env, order)
        assert worker.watcher.poll() == 1  # applied at depth 0, before any provider call
        assert row(sessions, order).state == S.PAID
        alarms = metric("cardless_chain_reorgs_total")

        assert rpc(backend.w3, "evm_revert", fork) is True
        backend.mine(2)  # the new branch is longer, and has no payment
        with caplog.at_level(logging.WARNING):
            worker.watcher.poll()
        undone = row(sessions, order)
        assert (undone.state, undone.paid_tx, undone.review_reason) == (S.QUOTED, None, None)
        (reorg,) = reorgs(sessions)
        assert reorg.order_ids == [undone.id] and reorg.dropped_logs[0]["tx_hash"] == first
        assert reorg.dropped_logs[0]["canonical_hash"] != reorg.dropped_logs[0]["block_hash"]
        assert metric("cardless_chain_reorgs_total") == alarms + 1
        assert "ALARM: reorg deeper than the confirmation depth" in caplog.text

        again = pay(env, order)  # the buyer pays again on the new branch
        self.drive(worker, backend, lambda: row(sessions, order).state == S.SETTLED)
        # The same payment re-sent on the new branch may be byte-identical (same nonce, fee and data) and so
        # have the first one's hash: what matters is that it was read again from the new branch.
        settled = row(sessions, order)
        assert settled.paid_tx == again
        assert settled.paid_block is not None and settled.paid_block > reorg.ancestor_block
        assert provider.submits == {undone.id: 1}

    def test_a_deep_reorg_after_the_top_up_marks_the_order_for_an_operator_with_the_evidence(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        provider: FakeAdapter,
        make_worker: Callable[..., OracleWorker],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        worker = make_worker()
        order = quote(env, sessions)
        fork = rpc(backend.w3, "evm_snapshot")
        paid = pay(env, order)
        self.drive(worker, backend, lambda: row(sessions, order).state == S.SETTLED)
        topped_up = dict(provider.submits)
        marked = metric("cardless_reorg_orders_total", reason="payment_reorged_out")

        assert rpc(backend.w3, "evm_revert", fork) is True  # payment and settlement gone
        backend.mine(4)
        with caplog.at_level(logging.ERROR):
            self.drive(worker, backend, lambda: row(sessions, order).review_reason is not None)
            for _ in range(3):
                self.ticks(worker)
        flagged = row(sessions, order)
        assert flagged.review_reason == "payment_reorged_out" and flagged.review_at is not None
        evidence = flagged.review_detail
        assert evidence is not None
        assert evidence["dropped_log"]["event"] == "OrderPaid" and evidence["dropped_log"]["tx_hash"] == paid
        assert evidence["dropped_log"]["canonical_hash"] != evidence["dropped_log"]["block_hash"]
        assert evidence["state"] == S.SETTLED and evidence["confirmations"] == 0
        assert "settlement_reorged_out" in [more["reason"] for more in evidence["more"]]
        assert metric("cardless_reorg_orders_total", reason="payment_reorged_out") == marked + 1
        assert f"ALARM: order {flagged.id} marked for an operator" in caplog.text
        assert provider.submits == topped_up == {flagged.id: 1}  # never topped up again
        assert env.status(order) == protocol.OrderStatus.NONE

    def test_a_settlement_dropped_by_a_deep_reorg_is_re_sent_with_the_same_bytes(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        provider: FakeAdapter,
        make_worker: Callable[..., OracleWorker],
    ) -> None:
        worker = make_worker()
        order = quote(env, sessions)
        pay(env, order)
        backend.mine()
        fork = rpc(backend.w3, "evm_snapshot")  # after the payment: only the settlement is dropped
        self.drive(worker, backend, lambda: row(sessions, order).state == S.SETTLED)
        (settle,) = txs(sessions)
        assert env.status(order) == protocol.OrderStatus.SETTLED

        assert rpc(backend.w3, "evm_revert", fork) is True
        backend.mine(3)
        assert env.status(order) == protocol.OrderStatus.PAID
        self.drive(worker, backend, lambda: env.status(order) == protocol.OrderStatus.SETTLED)
        self.drive(worker, backend, lambda: txs(sessions)[0].state == ChainTxState.CONFIRMED)
        (resent,) = txs(sessions)
        assert (resent.tx_hash, resent.nonce, resent.raw_tx) == (settle.tx_hash, settle.nonce, settle.raw_tx)
        assert wait(backend.w3, resent.tx_hash)["status"] == 1
        flagged = row(sessions, order)
        assert flagged.state == S.SETTLED and flagged.review_reason == "settlement_reorged_out"
        assert flagged.review_detail is not None and flagged.review_detail["resent_tx"] == settle.tx_hash
        assert provider.submits == {flagged.id: 1}

    def test_a_settlement_dropped_by_a_shallow_reorg_is_re_sent_without_an_alarm(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        provider: FakeAdapter,
        make_worker: Callable[..., OracleWorker],
    ) -> None:
        worker = make_worker(confirmations=2)
        order = quote(env, sessions)
        pay(env, order)
        backend.mine(2)
        fork = rpc(backend.w3, "evm_snapshot")
        self.drive(worker, backend, lambda: len(txs(sessions)) == 1)  # the settlement is sent and mined
        (settle,) = txs(sessions)
        wait(backend.w3, settle.tx_hash)
        asyncio.run(worker.tick())
        assert txs(sessions)[0].state == ChainTxState.SENT  # mined, not final: 0 deep

        assert rpc(backend.w3, "evm_revert", fork) is True  # gone before it was final
        self.drive(worker, backend, lambda: row(sessions, order).state == S.SETTLED, mine=True)
        (resent,) = txs(sessions)
        assert resent.tx_hash == settle.tx_hash and resent.state == ChainTxState.CONFIRMED
        assert row(sessions, order).review_reason is None and reorgs(sessions) == []
        assert provider.submits == {row(sessions, order).id: 1}

    # ------------------------------------------------------------------ transactions

    def test_a_revert_that_only_says_already_settled_is_success(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        make_worker: Callable[..., OracleWorker],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Someone settles the order between our estimate and our broadcast (another worker, a racing
        relayer): our transaction reverts OrderNotPaid(Settled) on chain, which is what we wanted."""
        tm = make_worker().tx
        order = env.make_order(token=None, amount=10**15)
        env.pay(order)
        fulfilment = env.fulfilment(order)
        signature = env.oracle_sign(protocol.fulfilment_typed_data(env.domain, fulfilment))
        call = env.escrow.functions.settle(
            order.as_ref_tuple(), fulfilment.as_tuple(), [env.oracle_key.address], [signature]
        )
        fees = tm._fees

        def someone_settles_first() -> tuple[int, int]:
            env.settle(order, fulfilment=fulfilment)
            return fees()

        monkeypatch.setattr(tm, "_fees", someone_settles_first)
        before = metric("cardless_tx_already_done_total")
        record = tm.send("settle", [Web3.to_hex(order.order_id)], call)
        assert wait(backend.w3, record.tx_hash)["status"] == 0
        (done,) = tm.confirm()
        assert done.state == ChainTxState.CONFIRMED and done.error is not None and "success" in done.error
        assert metric("cardless_tx_already_done_total") == before + 1

    def test_a_revert_for_another_reason_stays_reverted(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        make_worker: Callable[..., OracleWorker],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        tm = make_worker().tx
        order = env.make_order(token=None, amount=10**15)
        env.pay(order)
        call = env.escrow.functions.refund(
            order.as_tuple(),
            1,
            [env.oracle_key.address],
            [env.oracle_sign(protocol.refund_typed_data(env.domain, order.order_id, 1))],
        )
        fees = tm._fees

        def buyer_is_paid_by_a_settlement() -> tuple[int, int]:
            env.settle(order)  # settled, not refunded: the refund did not happen
            return fees()

        monkeypatch.setattr(tm, "_fees", buyer_is_paid_by_a_settlement)
        record = tm.send("refund", [Web3.to_hex(order.order_id)], call)
        assert wait(backend.w3, record.tx_hash)["status"] == 0
        (done,) = tm.confirm()
        assert done.state == ChainTxState.REVERTED

    def test_a_nonce_left_unused_by_a_crash_is_filled_and_the_queue_behind_it_mined(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        make_worker: Callable[..., OracleWorker],
    ) -> None:
        """A process reserved nonce n and died before its transaction was stored: nonce n+1 can never be
        mined (the embedded node refuses it, anvil queues it) until n is used."""
        tm = make_worker().tx
        chain_next = int(backend.w3.eth.get_transaction_count(GAS.address))
        with sessions.begin() as session:
            session.add(SignerNonce(address=GAS.address, next_nonce=chain_next + 1))
        gaps = metric("cardless_tx_nonce_gaps_filled_total")
        record = tm.send("withdraw", [], env.usdc.functions.approve(env.bystander, 5))
        assert record.nonce == chain_next + 1

        deadline = time.monotonic() + 20
        while {t.state for t in txs(sessions)} != {ChainTxState.CONFIRMED}:
            assert time.monotonic() < deadline
            tm.confirm()
            time.sleep(0.01)
        filler, sent = sorted(txs(sessions), key=lambda t: t.nonce)
        assert (filler.purpose, filler.nonce, filler.order_ids) == ("nonce_fill", chain_next, [])
        assert sent.id == record.id
        assert int(backend.w3.eth.get_transaction_count(GAS.address)) == chain_next + 2
        assert env.usdc.functions.allowance(GAS.address, env.bystander).call() == 5
        assert metric("cardless_tx_nonce_gaps_filled_total") == gaps + 1

    def test_a_nonce_the_chain_used_for_a_transaction_we_never_sent_ends_ours(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        sessions: sessionmaker[Session],
        make_worker: Callable[..., OracleWorker],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The gas key was used elsewhere (a second deployment, an operator's wallet): our transaction at
        that nonce can never be mined, so it ends ``reverted`` and its orders are posted again."""
        tm = make_worker().tx
        monkeypatch.setattr(backend.w3.eth, "send_raw_transaction", lambda raw: keccak(bytes(raw)))  # lost
        ours = tm.send("settle", ["0x" + "0c" * 32], env.usdc.functions.approve(env.bystander, 3))
        monkeypatch.undo()
        elsewhere = env.usdc.functions.approve(env.bystander, 4).build_transaction(
            {"from": GAS.address, "nonce": ours.nonce, "gas": 100_000}
        )
        wait(backend.w3, backend.w3.eth.send_raw_transaction(GAS.sign_transaction(elsewhere).raw_transaction))
        assert tm.confirm() == []
        (row_,) = txs(sessions)
        assert row_.state == ChainTxState.REVERTED
        assert row_.error == "nonce used by a transaction this database does not know"
        assert tm.pending_order_ids() == set()  # the order is free to be posted again

    def test_the_gas_key_balance_is_watched_with_a_low_balance_alarm(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        make_worker: Callable[..., OracleWorker],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        tm = make_worker(low_balance_wei=11 * 10**18).tx
        with caplog.at_level(logging.ERROR, logger="oracles.txmanager"):
            balance = tm.check_balance()
        assert balance == backend.w3.eth.get_balance(GAS.address) < 11 * 10**18
        assert metric("cardless_gas_balance_wei", address=GAS.address) == balance
        assert metric("cardless_gas_balance_low", address=GAS.address) == 1
        assert f"ALARM: gas key {GAS.address} holds {balance} wei" in caplog.text

        backend.send({"from": backend.accounts[0].address, "to": GAS.address, "value": 5 * 10**18})
        assert tm.check_balance() >= 11 * 10**18
        assert metric("cardless_gas_balance_low", address=GAS.address) == 0

    # ------------------------------------------------------------------ gas table

    def test_settlements_take_their_gas_from_the_table_and_always_have_enough_to_finish(
        self,
        backend: ChainBackend,
        env: ChainEscrowEnv,
        make_worker: Callable[..., OracleWorker],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The first settlement of a size is estimated; later ones take the table's limit without asking
        the node, and finish even where they write storage the estimated one found set (a merchant's
        first balance). One that runs out of gas anyway drops the entry, and its order is estimated when
        it is posted again."""
        tm = make_worker().tx
        estimates: list[object] = []
        estimate_gas = backend.w3.eth.estimate_gas

        def counted(*args: Any, **kwargs: Any) -> Any:
            estimates.append(args)
            return estimate_gas(*args, **kwargs)

        monkeypatch.setattr(backend.w3.eth, "estimate_gas", counted)

        def paid(merchant: int) -> protocol.Order:
            order = env.make_order(token=None, merchant=env.merchants[merchant].address, amount=10**15)
            env.pay(order)
            return order

        def settle(order: protocol.Order) -> tuple[ChainTx, Any]:
            fulfilment = env.fulfilment(order)
            signature = env.oracle_sign(protocol.fulfilment_typed_data(env.domain, fulfilment))
            data = env.escrow.functions.settle(
                order.as_ref_tuple(), fulfilment.as_tuple(), [env.oracle_key.address], [signature]
            )._encode_transaction_data()
            record = tm.send("settle", [Web3.to_hex(order.order_id)], RawCall(env.escrow.address, data))
            receipt = wait(backend.w3, record.tx_hash)
            tm.confirm()
            return record, receipt

        env.settle(paid(0))  # merchant 0's balance is set: the estimated settlement below costs less
        _, receipt = settle(paid(0))
        assert receipt["status"] == 1 and len(estimates) == 1
        limit = tm._gas_limits[("settle", 1)]
        record, receipt = settle(paid(2))  # merchant 2's first balance: a slot set from zero
        assert receipt["status"] == 1 and len(estimates) == 1  # from the table
        assert backend.w3.eth.get_transaction(record.tx_hash)["gas"] == limit
        paid_order = paid(1)

        tm._gas_limits[("settle", 1)] = int(receipt["gasUsed"]) * 3 // 4  # an entry that is too low
        record, receipt = settle(paid_order)
        assert receipt["status"] == 0 and len(estimates) == 1
        assert [t.state for t in txs_of(tm, record.tx_hash)] == [ChainTxState.REVERTED.value]
        assert ("settle", 1) not in tm._gas_limits  # dropped: the next one of the size is estimated
        tm._gas_limits[("settle", 1)] = limit
        _, receipt = settle(paid_order)  # reverted before: estimated, whatever the table says
        assert receipt["status"] == 1 and len(estimates) == 2
        assert env.status(paid_order) == protocol.OrderStatus.SETTLED
        # A batch takes its own size's limit, else the nearest larger size's up to twice its orders.
        tm._gas_limits.update({("settle_batch", 6): 600_000, ("settle_batch", 9): 900_000})
        assert [tm._table_limit("settle_batch", n) for n in (2, 3, 5, 6, 7, 10)] == [
            None,
            600_000,
            600_000,
            600_000,
            900_000,
            None,
        ]


def txs_of(tm: TxManager, tx_hash: str) -> list[ChainTx]:
    with tm.sessions() as session:
        return list(session.execute(select(ChainTx).where(ChainTx.tx_hash == tx_hash)).scalars())
