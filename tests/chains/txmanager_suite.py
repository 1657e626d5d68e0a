"""The transaction manager against a real node over HTTP JSON-RPC and a migrated SQLite file: one suite,
run on every backend (``tests/chains/test_embedded.py``, ``tests/chains/test_anvil.py``).

Nonces come from the database and stay gapless across restarts and concurrent senders; the signed
transaction is persisted before it is broadcast and a crash either side of the broadcast is recovered
with the same bytes; reverts are decoded at estimate time and cost no nonce; a stuck transaction is
replaced with the same nonce and higher fees, and whichever version is mined wins.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils import keccak
from hexbytes import HexBytes
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import TransactionNotFound, Web3RPCError

import oracles.txmanager as txmanager_module
from cardless.devchain.anvil import dev_accounts
from cardless.devchain.deploy import deploy_dev_system
from cardless.ledger import ChainTx, ChainTxState, SignerNonce, create_engine_for, migrate, session_factory
from cardless.protocol import ContractRevert
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment
from cardless.protocol.reverts import RevertDecoder
from oracles.txmanager import TxManager
from tests.chains.backends import ChainBackend, wait
from tests.support.node import rolled_back, rpc

GAS_KEY = Account.from_key(keccak(b"cardless-txmanager-test-gas-payer"))
SPENDER = Account.from_key(keccak(b"cardless-txmanager-test-spender")).address
ESCROW_ABI = load_artifact("CardlessEscrow").abi
TOKEN_ABI = load_artifact("test-helpers/MockERC20").abi
SIGNED, SENT, CONFIRMED, REVERTED = (s.value for s in ChainTxState)


# ---------------------------------------------------------------------- helpers


class Crash(BaseException):
    """The process dying mid-call: a BaseException, so the manager's ``except Exception`` cannot catch it."""


class PollingTxManager(TxManager):
    """The manager as the tests drive it: ``confirm`` first lets the node mine what it was sent (anvil
    mines asynchronously; the embedded node already has), as a running oracle's next tick would."""

    def confirm(self) -> list[ChainTx]:
        settle_pool(self.w3)
        return super().confirm()


def settle_pool(w3: Web3, timeout: float = 10) -> None:
    """Wait until the node's pool has nothing it would mine now (``txpool_status``; the embedded node has
    no pool to wait for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = w3.provider.make_request("txpool_status", [])  # type: ignore[arg-type]
        if "error" in reply or int(reply["result"]["pending"], 16) == 0:
            return
        if not rpc(w3, "anvil_getAutomine"):
            return  # mining is paused on purpose: what is pending stays pending
        time.sleep(0.005)


def manager(
    w3: Web3, sessions: sessionmaker[Session], key: LocalAccount = GAS_KEY, **kwargs: Any
) -> TxManager:
    return PollingTxManager(w3, sessions, key, RevertDecoder([ESCROW_ABI, TOKEN_ABI]), **kwargs)


def approve(token: Contract, amount: int = 1) -> Any:
    """A call that always succeeds from any sender; ``amount`` makes each one distinct."""
    return token.functions.approve(SPENDER, amount)


def rows(sessions: sessionmaker[Session]) -> list[ChainTx]:
    with sessions() as session:
        return list(session.execute(select(ChainTx).order_by(ChainTx.id)).scalars())


def next_nonce(sessions: sessionmaker[Session]) -> int | None:
    with sessions() as session:
        row = session.get(SignerNonce, GAS_KEY.address)
        return None if row is None else row.next_nonce


def decoded(raw: bytes) -> dict[str, Any]:
    return dict(TypedTransaction.from_bytes(HexBytes(raw)).as_dict())


def chain_nonce(w3: Web3) -> int:
    return int(w3.eth.get_transaction_count(GAS_KEY.address))


def mine(w3: Web3) -> None:
    rpc(w3, "evm_mine")


def approve_data(token: Contract, spender: str, amount: int) -> str:
    return token.encode_abi("approve", args=[spender, amount])


class TxManagerSuite:
    """Subclassed once per backend; the subclass's module provides a ``backend`` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def w3(cls, backend: ChainBackend) -> Web3:
        return backend.w3

    @pytest.fixture(scope="class")
    @classmethod
    def system(cls, backend: ChainBackend) -> Deployment:
        owner, fee_recipient = backend.accounts[0].address, backend.accounts[1].address
        deployment = deploy_dev_system(
            backend.w3,
            quote_signer=Account.from_key(keccak(b"txmanager-test-quote")).address,
            oracle_signer=Account.from_key(keccak(b"txmanager-test-oracle")).address,
            owner=owner,
            fee_recipient=fee_recipient,
            funded_accounts=[owner],
        )
        receipt = backend.send({"from": owner, "to": GAS_KEY.address, "value": 10 * 10**18})
        assert receipt["status"] == 1
        return deployment

    @pytest.fixture(autouse=True)
    def _rolled_back(self, w3: Web3, system: Deployment) -> Iterator[None]:
        """Each test starts with the gas key at nonce 0 on chain and an empty database."""
        with rolled_back(w3):
            yield

    @pytest.fixture
    def engines(self, db_url: str) -> Iterator[Callable[[], sessionmaker[Session]]]:
        """Opens the database as a new process would: its own engine (and connections) each call."""
        opened: list[Engine] = []

        def open_db() -> sessionmaker[Session]:
            engine = create_engine_for(db_url)
            if not opened:
                migrate(engine)
            opened.append(engine)
            return session_factory(engine)

        yield open_db
        for engine in opened:
            engine.dispose()

    @pytest.fixture
    def sessions(self, engines: Callable[[], sessionmaker[Session]]) -> sessionmaker[Session]:
        return engines()

    @pytest.fixture
    def token(self, w3: Web3, system: Deployment) -> Contract:
        return w3.eth.contract(address=system.token("tUSDC").address, abi=TOKEN_ABI)

    @pytest.fixture
    def escrow(self, w3: Web3, system: Deployment) -> Contract:
        return w3.eth.contract(address=system.escrow, abi=ESCROW_ABI)

    @pytest.fixture
    def no_automine(self, backend: ChainBackend) -> Iterator[None]:
        """The node keeps transactions pending until a block is mined. A new transaction with a pending
        nonce replaces the old one."""
        backend.automine(False)
        yield
        backend.automine(True)

    def test_the_signed_transaction_is_stored_before_it_is_broadcast(
        self, w3: Web3, sessions: sessionmaker[Session], token: Contract, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tm = manager(w3, sessions)
        real_send = w3.eth.send_raw_transaction
        seen_at_broadcast: list[tuple[str, bytes]] = []

        def send_raw(raw: Any) -> Any:
            (row,) = rows(sessions)  # read through another session: it is committed
            seen_at_broadcast.append((row.state, row.raw_tx))
            assert bytes(raw) == row.raw_tx
            return real_send(raw)

        monkeypatch.setattr(w3.eth, "send_raw_transaction", send_raw)
        record = tm.send("withdraw", ["0x" + "ab" * 32], approve(token, 7))

        assert seen_at_broadcast == [(SIGNED, record.raw_tx)]
        (row,) = rows(sessions)
        assert (row.state, row.nonce, row.purpose, row.order_ids) == (SENT, 0, "withdraw", ["0x" + "ab" * 32])
        assert row.sent_at is not None and row.error is None
        fields = decoded(row.raw_tx)
        assert fields["nonce"] == 0 and fields["chainId"] == w3.eth.chain_id
        assert (fields["maxFeePerGas"], fields["maxPriorityFeePerGas"]) == (
            row.max_fee_per_gas,
            row.priority_fee_per_gas,
        )
        assert Web3.to_hex(keccak(row.raw_tx)) == row.tx_hash

        (done,) = tm.confirm()
        receipt = w3.eth.get_transaction_receipt(HexBytes(row.tx_hash))
        assert (done.id, done.state, done.confirmed_block, done.gas_used) == (
            row.id,
            CONFIRMED,
            receipt["blockNumber"],
            receipt["gasUsed"],
        )
        assert tm.pending() == [] and tm.confirm() == []
        assert token.functions.allowance(GAS_KEY.address, SPENDER).call() == 7

    def test_nonces_come_from_the_database_and_stay_gapless_across_restarts(
        self,
        w3: Web3,
        engines: Callable[[], sessionmaker[Session]],
        token: Contract,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # The key already sent two transactions without the manager: the first reserved nonce is 2.
        for nonce in range(2):
            tx = approve(token, 100 + nonce).build_transaction({"from": GAS_KEY.address, "nonce": nonce})
            w3.eth.send_raw_transaction(GAS_KEY.sign_transaction(tx).raw_transaction)
        first = manager(w3, engines())
        nonces = [first.send("withdraw", [], approve(token, n)).nonce for n in (1, 2)]

        # A restart: a new process, engine and manager. The database, not the node, is asked for nonces.
        sessions = engines()
        restarted = manager(w3, sessions)

        def no_chain_nonce(*_args: Any) -> Any:
            raise AssertionError("the nonce must come from the database")

        monkeypatch.setattr(w3.eth, "get_transaction_count", no_chain_nonce)
        nonces += [restarted.send("withdraw", [], approve(token, n)).nonce for n in (3, 4)]
        monkeypatch.undo()

        assert nonces == [2, 3, 4, 5]
        assert next_nonce(sessions) == 6
        assert [r.state for r in restarted.confirm()] == [CONFIRMED] * 4
        assert chain_nonce(w3) == 6

    def test_concurrent_senders_in_separate_processes_get_distinct_gapless_nonces(
        self,
        w3: Web3,
        engines: Callable[[], sessionmaker[Session]],
        token: Contract,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Two managers, each with its own engine (as two processes have), send from eight threads.

        Broadcasts are held back (a node may refuse a nonce gap) and replayed in nonce order afterwards.
        """
        managers = [manager(w3, engines()), manager(w3, engines())]
        held: list[bytes] = []
        lock = threading.Lock()

        def hold(raw: Any) -> Any:
            with lock:
                held.append(bytes(raw))
            return keccak(bytes(raw))

        real_send = w3.eth.send_raw_transaction
        monkeypatch.setattr(w3.eth, "send_raw_transaction", hold)
        calls = [approve(token, n) for n in range(1, 17)]
        for call in calls:  # estimate once, so the threads contend on the database rather than the node
            call.estimate_gas({"from": GAS_KEY.address})
        start = threading.Barrier(8)

        def send(index: int) -> int:
            if index < 8:
                start.wait()
            return managers[index % 2].send("withdraw", [], calls[index]).nonce

        with ThreadPoolExecutor(max_workers=8) as pool:
            nonces = list(pool.map(send, range(len(calls))))

        assert sorted(nonces) == list(range(len(calls)))
        assert next_nonce(managers[0].sessions) == len(calls)
        monkeypatch.setattr(w3.eth, "send_raw_transaction", real_send)
        for raw in sorted(held, key=lambda r: decoded(r)["nonce"]):
            real_send(raw)
        assert [r.state for r in managers[1].confirm()] == [CONFIRMED] * len(calls)
        assert chain_nonce(w3) == len(calls)

    def test_concurrent_sends_in_one_process_reach_the_node_in_nonce_order(
        self, w3: Web3, sessions: sessionmaker[Session], token: Contract
    ) -> None:
        """eth-tester refuses nonce n+1 before n: every broadcast must arrive in order to be accepted."""
        tm = manager(w3, sessions)
        with ThreadPoolExecutor(max_workers=8) as pool:
            records = list(pool.map(lambda n: tm.send("withdraw", [], approve(token, n)), range(1, 13)))

        assert sorted(r.nonce for r in records) == list(range(12))
        assert [r.error for r in rows(sessions)] == [None] * 12
        assert [r.state for r in tm.confirm()] == [CONFIRMED] * 12
        assert chain_nonce(w3) == 12

    def test_a_crash_before_the_broadcast_is_recovered_with_the_same_bytes(
        self,
        w3: Web3,
        engines: Callable[[], sessionmaker[Session]],
        token: Contract,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        sessions = engines()
        tm = manager(w3, sessions)

        def die(_raw: Any) -> Any:
            raise Crash("killed while broadcasting")

        monkeypatch.setattr(w3.eth, "send_raw_transaction", die)
        with pytest.raises(Crash):
            tm.send("settle", ["0x01"], approve(token, 5))
        monkeypatch.undo()
        (stored,) = rows(sessions)
        assert (stored.state, stored.nonce) == (SIGNED, 0)
        with pytest.raises(TransactionNotFound):
            w3.eth.get_transaction(HexBytes(stored.tx_hash))
        assert tm.pending_order_ids() == {"0x01"}

        restarted = manager(w3, engines())
        restarted.recover()
        on_chain = w3.eth.get_transaction(HexBytes(stored.tx_hash))  # the hash commits to the signed bytes
        assert on_chain["nonce"] == 0
        (row,) = rows(sessions)
        assert (row.state, row.raw_tx, row.error) == (SENT, stored.raw_tx, None)
        (done,) = restarted.confirm()
        assert (done.tx_hash, done.state) == (stored.tx_hash, CONFIRMED)
        assert restarted.send("withdraw", [], approve(token, 6)).nonce == 1  # no gap, no reuse
        assert chain_nonce(w3) == 2

    @pytest.mark.parametrize("failpoint", ["tx.before_broadcast", "tx.after_broadcast"])
    def test_a_crash_at_a_broadcast_failpoint_sends_one_transaction(
        self,
        w3: Web3,
        engines: Callable[[], sessionmaker[Session]],
        token: Contract,
        monkeypatch: pytest.MonkeyPatch,
        failpoint: str,
    ) -> None:
        """After the broadcast, the re-broadcast meets the node's own copy: that is success, not an error."""
        sessions = engines()

        def die(name: str) -> None:
            if name == failpoint:
                raise Crash(name)

        monkeypatch.setattr(txmanager_module, "failpoint", die)
        with pytest.raises(Crash):
            manager(w3, sessions).send("refund", ["0x02"], approve(token, 9))
        monkeypatch.undo()
        (stored,) = rows(sessions)
        assert stored.state == SIGNED
        assert chain_nonce(w3) == (1 if failpoint == "tx.after_broadcast" else 0)

        restarted = manager(w3, engines())
        restarted.recover()
        restarted.recover()  # idempotent: nothing is left signed
        (row,) = rows(sessions)
        assert (row.state, row.error) == (SENT, None)
        assert [r.tx_hash for r in restarted.confirm()] == [stored.tx_hash]
        assert chain_nonce(w3) == 1

    @pytest.mark.parametrize(
        ("message", "is_error"),
        [
            ("already known", False),
            ("Known transaction: 0x1234", False),
            ("nonce too low: next nonce 3, tx nonce 2", False),
            ("insufficient funds for gas * price + value", True),
        ],
    )
    def test_node_replies_to_a_broadcast(
        self,
        w3: Web3,
        sessions: sessionmaker[Session],
        token: Contract,
        monkeypatch: pytest.MonkeyPatch,
        message: str,
        is_error: bool,
    ) -> None:
        """'Already known' and 'nonce too low' mean the node has (or mined) these bytes: no error. Any other
        refusal is recorded; the transaction stays pending and the receipt (or a bump) decides."""

        def refuse(_raw: Any) -> Any:
            raise Web3RPCError(str({"code": -32000, "message": message}))

        monkeypatch.setattr(w3.eth, "send_raw_transaction", refuse)
        tm = manager(w3, sessions)
        record = tm.send("withdraw", [], approve(token, 3))
        (row,) = rows(sessions)
        assert row.state == SENT
        assert (row.error is not None and message in row.error) if is_error else row.error is None
        assert [r.id for r in tm.pending()] == [record.id]

    def test_a_reverting_call_raises_the_decoded_error_and_reserves_no_nonce(
        self, w3: Web3, sessions: sessionmaker[Session], token: Contract, escrow: Contract
    ) -> None:
        tm = manager(w3, sessions)
        nothing = escrow.functions.withdraw(GAS_KEY.address, token.address)
        with pytest.raises(ContractRevert) as caught:
            tm.send("withdraw", [], nothing)
        assert caught.value.name == "NothingToWithdraw"
        assert caught.value.args_ == (GAS_KEY.address, token.address)
        assert rows(sessions) == [] and next_nonce(sessions) is None

        assert tm.send("withdraw", [], approve(token)).nonce == 0
        with pytest.raises(ContractRevert):
            tm.send("withdraw", [], nothing)
        assert next_nonce(sessions) == 1
        assert tm.send("withdraw", [], approve(token, 2)).nonce == 1

    def test_a_transaction_that_reverts_when_mined_is_marked_reverted(
        self, w3: Web3, sessions: sessionmaker[Session], token: Contract, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The estimate passed, then the state changed before the transaction was mined."""
        owner = dev_accounts()[0].address  # holds the tUSDC
        wait(
            w3,
            w3.eth.send_transaction(
                {"from": owner, "to": token.address, "data": approve_data(token, GAS_KEY.address, 50)}
            ),
        )
        tm = manager(w3, sessions)
        fees = tm._fees

        def revoke_then_fees() -> tuple[int, int]:  # runs between the estimate and the broadcast
            wait(
                w3,
                w3.eth.send_transaction(
                    {"from": owner, "to": token.address, "data": approve_data(token, GAS_KEY.address, 0)}
                ),
            )
            return fees()

        monkeypatch.setattr(tm, "_fees", revoke_then_fees)
        record = tm.send("withdraw", [], token.functions.transferFrom(owner, SPENDER, 50))
        (done,) = tm.confirm()
        assert (done.id, done.state) == (record.id, REVERTED)
        assert done.gas_used and done.confirmed_block
        assert w3.eth.get_transaction_receipt(HexBytes(record.tx_hash))["status"] == 0

    def test_fees_are_read_in_one_batch_and_one_by_one_from_a_node_that_refuses_it(
        self, w3: Web3, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The latest block's base fee and the node's priority fee in one round trip (round 8); a node that
        refuses the batch (or ``eth_maxPriorityFeePerGas``) gives the same fees read one by one."""
        tm = manager(w3, sessions)
        latest = w3.eth.get_block("latest")
        base = int(latest.get("baseFeePerGas", 0) or 0)
        try:
            priority = int(w3.eth.max_priority_fee)
        except Exception:
            priority = 10**9
        batches: list[list[str]] = []
        rpc_batch = txmanager_module.rpc_batch

        def counted(w3_: Web3, requests: Any) -> Any:
            if w3_ is w3:  # not another test's thread left polling in this process
                batches.append([method for method, _ in requests])
            return rpc_batch(w3_, requests)

        monkeypatch.setattr(txmanager_module, "rpc_batch", counted)
        assert tm._fees() == (2 * base + priority, priority)
        assert batches == [["eth_getBlockByNumber", "eth_maxPriorityFeePerGas"]]

        def refused(w3_: Web3, requests: Any) -> Any:
            raise Web3RPCError("batch requests are not supported")

        monkeypatch.setattr(txmanager_module, "rpc_batch", refused)
        assert tm._fees() == (2 * base + priority, priority)

    @pytest.mark.usefixtures("no_automine")
    def test_a_stuck_transaction_is_replaced_with_the_same_nonce_and_higher_fees(
        self, w3: Web3, sessions: sessionmaker[Session], token: Contract
    ) -> None:
        tm = manager(w3, sessions, bump_after=timedelta(hours=1))
        original = tm.send("settle", ["0x0a"], approve(token, 11))
        assert tm.confirm() == [] and len(rows(sessions)) == 1  # pending, but not stuck for long enough
        assert tm.pending_order_ids() == {"0x0a"}

        tm.bump_after = timedelta(0)
        assert tm.confirm() == []
        first, replacement = rows(sessions)
        assert first.id == original.id and replacement.nonce == original.nonce == 0
        assert replacement.tx_hash != original.tx_hash
        assert (first.state, replacement.state) == (SENT, SENT)
        assert replacement.max_fee_per_gas >= original.max_fee_per_gas * 5 // 4
        assert replacement.priority_fee_per_gas >= original.priority_fee_per_gas * 5 // 4
        before, after = decoded(original.raw_tx), decoded(replacement.raw_tx)
        for field in ("nonce", "to", "data", "value", "gas", "chainId"):
            assert before[field] == after[field], field
        assert (replacement.purpose, replacement.order_ids) == ("settle", ["0x0a"])

        # Still stuck: only the newest version is bumped again (the original is never re-signed).
        assert tm.confirm() == []
        versions = rows(sessions)
        assert [v.nonce for v in versions] == [0, 0, 0]
        assert len({v.tx_hash for v in versions}) == 3
        assert versions[2].max_fee_per_gas >= replacement.max_fee_per_gas * 5 // 4

        mine(w3)  # the node's pool kept the newest version of nonce 0
        (done,) = tm.confirm()
        assert (done.id, done.state) == (versions[2].id, CONFIRMED)
        states = {v.id: (v.state, v.error) for v in rows(sessions)}
        for version in versions[:2]:
            assert states[version.id] == (REVERTED, f"replaced by {done.tx_hash}")
        assert tm.pending() == [] and tm.pending_order_ids() == set()
        assert chain_nonce(w3) == 1

    @pytest.mark.usefixtures("no_automine")
    def test_when_the_original_is_mined_the_replacement_is_marked_replaced(
        self, w3: Web3, sessions: sessionmaker[Session], token: Contract, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tm = manager(w3, sessions, bump_after=timedelta(0))
        original = tm.send("refund", ["0x0b"], approve(token, 12))
        real_send = w3.eth.send_raw_transaction
        monkeypatch.setattr(w3.eth, "send_raw_transaction", lambda raw: keccak(bytes(raw)))  # lost on the way
        assert tm.confirm() == []
        monkeypatch.setattr(w3.eth, "send_raw_transaction", real_send)
        _, replacement = rows(sessions)
        assert replacement.nonce == original.nonce

        mine(w3)  # the node only ever had the original
        (done,) = tm.confirm()
        assert (done.id, done.state) == (original.id, CONFIRMED)
        (row,) = (r for r in rows(sessions) if r.id == replacement.id)
        assert (row.state, row.error) == (REVERTED, f"replaced by {original.tx_hash}")
        assert tm.confirm() == [] and len(rows(sessions)) == 2  # nothing left to bump
        assert token.functions.allowance(GAS_KEY.address, SPENDER).call() == 12
