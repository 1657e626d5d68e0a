"""The chain watcher against a real node over HTTP JSON-RPC and a migrated SQLite file: one suite, run on
every backend (``tests/chains/test_embedded.py``, ``tests/chains/test_anvil.py``).

Every escrow log is applied exactly once: re-polls, re-scans after a lost cursor and crashes between
applying and committing apply nothing twice; logs younger than ``confirmations`` wait; ``max_range``
splits the scan; a reorg (snapshot, revert, different blocks) rolls the cursor back to the newest
still-canonical applied block, forgets the orphaned logs and applies the new canonical ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from eth_utils import event_abi_to_log_topic
from hexbytes import HexBytes
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import BlockNotFound, Web3RPCError
from web3.types import TxReceipt

import oracles.watcher as watcher_module
from cardless.ledger import ChainCursor, SeenLog, SignerNonce
from cardless.protocol.artifacts import load_artifact
from oracles.watcher import Watcher
from tests.chains.backends import ChainBackend, wait
from tests.contracts.harness import EscrowEnv
from tests.support.node import rolled_back, rpc

LogKey = tuple[str, int, str]  # (tx hash, log index, event name)


@dataclasses.dataclass(frozen=True)
class History:
    start: int
    expected: list[LogKey]


# ---------------------------------------------------------------------- helpers

ESCROW_ABI = load_artifact("CardlessEscrow").abi
EVENT_NAMES = {
    HexBytes(event_abi_to_log_topic(item)): item["name"]  # type: ignore[arg-type]
    for item in ESCROW_ABI
    if item["type"] == "event"
}


def mine(w3: Web3, blocks: int = 1) -> None:
    rpc(w3, "anvil_mine", blocks)


class Crash(Exception):  # noqa: N818 - a simulated process death, not an error
    """The process dying in the middle of a poll."""


@dataclasses.dataclass
class Recorder:
    """The event handler: records every call and writes one row per log in the range's transaction.

    ``fail_on=n`` raises :class:`Crash` on the n-th call (after its row was added), as a crash would.
    """

    calls: list[LogKey] = dataclasses.field(default_factory=list)
    fail_on: int | None = None

    def __call__(self, session: Session, name: str, args: dict[str, Any], meta: dict[str, Any]) -> None:
        assert set(meta) == {"tx_hash", "log_index", "block_number", "block_hash"}
        self.calls.append((meta["tx_hash"], meta["log_index"], name))
        # A side effect in the handler's session: must commit together with the cursor, or not at all.
        session.add(SignerNonce(address=effect_key(meta["tx_hash"], meta["log_index"]), next_nonce=0))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise Crash(f"crash while applying log #{self.fail_on}")


def effect_key(tx_hash: str, log_index: int) -> str:
    return f"{tx_hash[2:38]}:{log_index}"


def escrow_logs(env: EscrowEnv, *receipts: TxReceipt) -> list[LogKey]:
    """The escrow's logs in ``receipts``, in chain order: what the handler must see, once each."""
    found = []
    for receipt in receipts:
        for entry in receipt["logs"]:
            if entry["address"] == env.escrow.address:
                name = EVENT_NAMES[HexBytes(entry["topics"][0])]
                found.append((Web3.to_hex(receipt["transactionHash"]), int(entry["logIndex"]), name))
    return found


def make_watcher(
    w3: Web3, env: EscrowEnv, sessions: sessionmaker[Session], handler: Any, **kwargs: Any
) -> Watcher:
    escrow: Contract = w3.eth.contract(address=env.escrow.address, abi=ESCROW_ABI)
    return Watcher(w3, escrow, sessions, handler, **kwargs)


def cursor(sessions: sessionmaker[Session]) -> tuple[int, str] | None:
    with sessions() as session:
        row = session.get(ChainCursor, "escrow")
        return None if row is None else (row.block_number, row.block_hash)


def seen(sessions: sessionmaker[Session]) -> list[LogKey]:
    with sessions() as session:
        rows = session.execute(
            select(SeenLog).order_by(SeenLog.block_number, SeenLog.tx_hash, SeenLog.log_index)
        ).scalars()
        return [(r.tx_hash, r.log_index, r.event) for r in rows]


def effects(sessions: sessionmaker[Session]) -> set[str]:
    with sessions() as session:
        return set(session.execute(select(SignerNonce.address)).scalars())


def head_cursor(w3: Web3, number: int | None = None) -> tuple[int, str]:
    block = w3.eth.get_block("latest" if number is None else number)
    return int(block["number"]), Web3.to_hex(block["hash"])


def pay_native(env: EscrowEnv, buyer: int = 0) -> TxReceipt:
    """One OrderPaid in one block (a native-ETH order needs no mint or approve).

    The gas is given, as py-evm's gas estimation (a binary search of EVM runs) is most of the cost.
    """
    order = env.make_order(token=None, buyer=env.buyers[buyer].address, amount=10**15)
    call = env.escrow.functions.pay(order.as_tuple(), env.quote_key.address, env.quote(order))
    tx_hash = call.transact({"from": order.buyer, "value": order.amount, "gas": 300_000})
    receipt = wait(env.w3, tx_hash)
    assert receipt["status"] == 1
    return receipt


def activity(env: EscrowEnv) -> list[TxReceipt]:
    """Every order-level event: three payments, a settlement, a refund and a reclaim."""
    settled, refunded, reclaimed = (
        env.make_order(),
        env.make_order(buyer=env.buyers[1].address),
        env.make_order(token=None, amount=10**15, quote_ttl=60, deadline_ttl=120),
    )
    receipts = [env.pay(settled), env.pay(refunded), env.pay(reclaimed)]
    receipts.append(env.settle(settled))
    receipts.append(env.refund(refunded, 3))
    env.chain.warp(env.reclaim_opens(reclaimed))
    receipts.append(env.reclaim(reclaimed))
    return receipts


class WatcherSuite:
    """Subclassed once per backend; the subclass's module provides a ``backend`` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def w3(cls, backend: ChainBackend) -> Web3:
        return backend.w3

    @pytest.fixture(scope="class")
    @classmethod
    def env(cls, backend: ChainBackend) -> EscrowEnv:
        """The contract-test harness (make/pay/settle/refund/reclaim) on the backend's chain."""
        return backend.escrow_env()

    @pytest.fixture(autouse=True)
    def _rolled_back(self, w3: Web3, env: EscrowEnv) -> Iterator[None]:
        with rolled_back(w3):
            yield

    @pytest.fixture
    def sessions(self, migrated_db: sessionmaker[Session]) -> sessionmaker[Session]:
        return migrated_db

    @pytest.fixture(scope="class")
    @classmethod
    def history(cls, w3: Web3, env: EscrowEnv) -> History:
        """Every order-level event, made once for the module (the per-test snapshots are taken after it)."""
        start = int(w3.eth.block_number) + 1
        return History(start, escrow_logs(env, *activity(env)))

    @pytest.fixture
    def start(self, w3: Web3, env: EscrowEnv) -> int:
        """The first block of the test: the watcher ignores the deployment's configuration events."""
        return int(w3.eth.block_number) + 1

    def test_every_escrow_event_is_applied_once_and_a_re_poll_applies_nothing(
        self, w3: Web3, env: EscrowEnv, sessions: sessionmaker[Session], history: History
    ) -> None:
        expected = history.expected
        names = [name for _, _, name in expected]
        for name in ("OrderPaid", "OrderSettled", "OrderRefunded", "OrderReclaimed"):
            assert name in names
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=history.start)

        assert watcher.poll() == len(expected)
        assert recorder.calls == expected  # chain order, no token (mint/approve) logs, nothing twice
        assert seen(sessions) == expected
        assert effects(sessions) == {effect_key(h, i) for h, i, _ in expected}
        assert cursor(sessions) == head_cursor(w3)

        assert watcher.poll() == 0
        mine(w3, 3)
        assert watcher.poll() == 0
        assert recorder.calls == expected
        assert cursor(sessions) == head_cursor(w3)

    def test_handler_gets_decoded_arguments_and_chain_position(
        self, w3: Web3, env: EscrowEnv, sessions: sessionmaker[Session], start: int
    ) -> None:
        order = env.make_order(token=None, amount=10**15)
        receipt = env.pay(order)
        got: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        watcher = make_watcher(
            w3, env, sessions, lambda _s, name, args, meta: got.append((name, args, meta)), start_block=start
        )
        watcher.poll()

        ((name, args, meta),) = got
        assert name == "OrderPaid"
        assert (
            args["orderId"] == order.order_id
            and args["buyer"] == order.buyer
            and args["amount"] == order.amount
        )
        assert meta == {
            "tx_hash": Web3.to_hex(receipt["transactionHash"]),
            "log_index": 0,
            "block_number": receipt["blockNumber"],
            "block_hash": Web3.to_hex(receipt["blockHash"]),
        }
        with sessions() as session:
            (row,) = session.execute(select(SeenLog)).scalars()
            assert row.order_id == Web3.to_hex(order.order_id) and row.event == "OrderPaid"

    def test_a_re_scan_after_a_lost_cursor_applies_nothing_twice(
        self, w3: Web3, env: EscrowEnv, sessions: sessionmaker[Session], history: History
    ) -> None:
        expected = history.expected
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=history.start)
        watcher.poll()
        with sessions.begin() as session:  # the cursor goes back to before the first event
            session.delete(session.get(ChainCursor, "escrow"))

        assert watcher.poll() == 0
        assert recorder.calls == expected
        assert cursor(sessions) == head_cursor(w3)

    def test_two_watchers_on_one_database_apply_each_log_once(
        self, w3: Web3, env: EscrowEnv, sessions: sessionmaker[Session], start: int
    ) -> None:
        """A restarted process (a new Watcher) resumes from the persisted cursor."""
        first_receipts = [pay_native(env), pay_native(env, 1)]
        first, second = Recorder(), Recorder()
        make_watcher(w3, env, sessions, first, start_block=start).poll()
        later = [pay_native(env, 2)]
        assert make_watcher(w3, env, sessions, second, start_block=start).poll() == 1

        assert first.calls == escrow_logs(env, *first_receipts)
        assert second.calls == escrow_logs(env, *later)

    @pytest.mark.parametrize("fail_on", [1, 3, 6])
    def test_a_crash_while_applying_leaves_cursor_and_seen_logs_unchanged(
        self, w3: Web3, env: EscrowEnv, sessions: sessionmaker[Session], history: History, fail_on: int
    ) -> None:
        expected, start = history.expected, history.start
        assert len(expected) >= 6
        crashing = Recorder(fail_on=fail_on)
        with pytest.raises(Crash):
            make_watcher(w3, env, sessions, crashing, start_block=start).poll()
        assert crashing.calls == expected[:fail_on]
        assert cursor(sessions) is None
        assert seen(sessions) == []
        assert effects(sessions) == set()  # the handler's own writes rolled back with the range

        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start)
        assert watcher.poll() == len(expected)
        assert recorder.calls == expected
        assert effects(sessions) == {effect_key(h, i) for h, i, _ in expected}
        assert watcher.poll() == 0

    def test_a_crash_at_the_commit_failpoint_is_recovered(
        self,
        w3: Web3,
        env: EscrowEnv,
        sessions: sessionmaker[Session],
        start: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """``watcher.after_logs_before_commit``: every log applied in the session, nothing committed yet."""
        expected = escrow_logs(env, pay_native(env), pay_native(env, 1))

        def die(name: str) -> None:
            if name == "watcher.after_logs_before_commit":
                raise Crash(name)

        monkeypatch.setattr(watcher_module, "failpoint", die)
        crashing = Recorder()
        with pytest.raises(Crash):
            make_watcher(w3, env, sessions, crashing, start_block=start).poll()
        assert crashing.calls == expected
        assert (cursor(sessions), seen(sessions), effects(sessions)) == (None, [], set())

        monkeypatch.undo()
        recorder = Recorder()
        assert make_watcher(w3, env, sessions, recorder, start_block=start).poll() == len(expected)
        assert recorder.calls == expected

    def test_a_crash_in_a_later_range_keeps_the_committed_ranges(
        self, w3: Web3, env: EscrowEnv, sessions: sessionmaker[Session], start: int
    ) -> None:
        first = pay_native(env)
        mine(w3, 3)
        second = pay_native(env, 1)
        expected = escrow_logs(env, first, second)
        crashing = Recorder(fail_on=2)  # the second log is in a later range than the first
        with pytest.raises(Crash):
            make_watcher(w3, env, sessions, crashing, start_block=start, max_range=2).poll()

        position = cursor(sessions)
        assert position is not None
        assert first["blockNumber"] <= position[0] < second["blockNumber"]
        assert position == head_cursor(w3, position[0])
        assert seen(sessions) == expected[:1]

        recorder = Recorder()
        assert make_watcher(w3, env, sessions, recorder, start_block=start, max_range=2).poll() == 1
        assert recorder.calls == expected[1:]

    def test_logs_wait_for_the_confirmation_depth(
        self, w3: Web3, env: EscrowEnv, sessions: sessionmaker[Session], start: int
    ) -> None:
        receipt = pay_native(env)
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start, confirmations=3)

        for _ in range(3):  # the payment is 0, 1, 2 blocks deep: not final yet
            assert watcher.poll() == 0
            head = int(w3.eth.block_number)
            position = cursor(sessions)
            assert position is None or position[0] == head - 3
            assert recorder.calls == []
            mine(w3)
        assert int(w3.eth.block_number) == receipt["blockNumber"] + 3
        assert watcher.poll() == 1
        assert recorder.calls == escrow_logs(env, receipt)
        assert cursor(sessions) == head_cursor(w3, receipt["blockNumber"])
        mine(w3, 5)
        assert watcher.poll() == 0
        assert cursor(sessions) == head_cursor(w3, int(w3.eth.block_number) - 3)

    def test_the_watchers_raw_logs_are_what_web3_gives(self, w3: Web3, env: EscrowEnv, start: int) -> None:
        """``oracles.rawabi.get_logs`` (raw JSON-RPC) formats every field as web3's ``eth.get_logs``."""
        pay_native(env)
        pay_native(env, 1)
        head = int(w3.eth.block_number)
        raw = watcher_module.get_logs(w3, env.escrow.address, start, head)
        web3s = w3.eth.get_logs({"address": env.escrow.address, "fromBlock": start, "toBlock": head})
        assert len(raw) == len(web3s) >= 2
        for ours, theirs in zip(raw, web3s, strict=True):
            assert ours == {key: theirs[key] for key in ours}

    def test_max_range_splits_the_scan_into_contiguous_ranges(
        self,
        w3: Web3,
        env: EscrowEnv,
        sessions: sessionmaker[Session],
        start: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        receipts = [pay_native(env, i % 3) for i in range(4)]
        mine(w3, 2)
        receipts += [pay_native(env), pay_native(env, 1)]
        expected = escrow_logs(env, *receipts)
        ranges: list[tuple[int, int]] = []
        get_logs = watcher_module.get_logs  # the watcher's raw eth_getLogs

        def spy(w3_: Web3, address: str, from_block: int, to_block: int) -> Any:
            ranges.append((from_block, to_block))
            return get_logs(w3_, address, from_block, to_block)

        monkeypatch.setattr(watcher_module, "get_logs", spy)
        recorder = Recorder()
        head = int(w3.eth.block_number)
        assert make_watcher(w3, env, sessions, recorder, start_block=start, max_range=3).poll() == len(
            expected
        )

        assert ranges[0][0] == start and ranges[-1][1] == head
        assert all(0 <= to - frm <= 2 for frm, to in ranges)
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
        assert len(ranges) == -(-(head - start + 1) // 3)
        assert recorder.calls == expected

    def test_reorg_rolls_back_to_the_common_ancestor_and_applies_the_new_chain(
        self,
        w3: Web3,
        env: EscrowEnv,
        sessions: sessionmaker[Session],
        start: int,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        kept = pay_native(env)  # below the fork: stays applied
        mine(w3)
        fork = rpc(w3, "evm_snapshot")
        orphaned = pay_native(env, 1)
        mine(w3, 2)
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start)
        assert watcher.poll() == 2
        old_cursor = cursor(sessions)
        assert old_cursor == head_cursor(w3)

        assert rpc(w3, "evm_revert", fork) is True
        mine(w3)  # the new branch: an empty block where the orphaned payment was, then another payment
        replacement = pay_native(env, 2)
        mine(w3, 2)
        assert int(w3.eth.block_number) >= old_cursor[0]
        assert head_cursor(w3, old_cursor[0]) != old_cursor

        with caplog.at_level(logging.WARNING, logger="oracles.watcher"):
            assert watcher.poll() == 1
        assert f"rolling back to {kept['blockNumber']}" in caplog.text
        assert recorder.calls == escrow_logs(env, kept, orphaned, replacement)
        assert seen(sessions) == escrow_logs(env, kept, replacement)  # the orphaned log is forgotten
        assert cursor(sessions) == head_cursor(w3)
        assert watcher.poll() == 0

    def test_reorg_to_a_shorter_chain(
        self,
        w3: Web3,
        env: EscrowEnv,
        sessions: sessionmaker[Session],
        start: int,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The block at the cursor does not exist on the new chain at all (the new head is lower)."""
        kept = pay_native(env)
        fork = rpc(w3, "evm_snapshot")
        orphaned = pay_native(env, 1)
        mine(w3, 4)
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start)
        assert watcher.poll() == 2
        old_cursor = cursor(sessions)
        assert old_cursor is not None

        assert rpc(w3, "evm_revert", fork) is True
        mine(w3)
        assert int(w3.eth.block_number) < old_cursor[0]
        with caplog.at_level(logging.WARNING, logger="oracles.watcher"):
            assert watcher.poll() == 0
        assert f"rolling back to {kept['blockNumber']}" in caplog.text
        assert seen(sessions) == escrow_logs(env, kept)
        assert cursor(sessions) == head_cursor(w3)

        replacement = pay_native(env, 2)
        assert watcher.poll() == 1
        assert recorder.calls == escrow_logs(env, kept, orphaned, replacement)
        assert seen(sessions) == escrow_logs(env, kept, replacement)

    def test_reorg_with_no_applied_log_left_rescans_from_the_start_block(
        self, w3: Web3, env: EscrowEnv, sessions: sessionmaker[Session], start: int
    ) -> None:
        fork = rpc(w3, "evm_snapshot")
        orphaned = pay_native(env)
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start)
        assert watcher.poll() == 1

        assert rpc(w3, "evm_revert", fork) is True
        mine(w3, 2)
        replacement = pay_native(env, 1)
        assert watcher.poll() == 1
        assert recorder.calls == escrow_logs(env, orphaned, replacement)
        assert seen(sessions) == escrow_logs(env, replacement)
        assert cursor(sessions) == head_cursor(w3)

    def test_a_reorg_shallower_than_the_confirmation_depth_never_reaches_the_database(
        self,
        w3: Web3,
        env: EscrowEnv,
        sessions: sessionmaker[Session],
        start: int,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        mine(w3, 3)
        fork = rpc(w3, "evm_snapshot")
        orphaned = pay_native(env)
        mine(w3)
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start, confirmations=3)
        assert watcher.poll() == 0
        assert orphaned["blockNumber"] > cursor(sessions)[0]  # type: ignore[index]

        assert rpc(w3, "evm_revert", fork) is True
        mine(w3)
        replacement = pay_native(env, 1)
        mine(w3, 3)
        with caplog.at_level(logging.WARNING, logger="oracles.watcher"):
            assert watcher.poll() == 1
        assert "reorg" not in caplog.text
        assert recorder.calls == escrow_logs(env, replacement)

    def test_seen_log_count_matches_handler_calls(
        self, w3: Web3, env: EscrowEnv, sessions: sessionmaker[Session], start: int
    ) -> None:
        """The de-duplication table is the record of what was applied: one row per handler call."""
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start, max_range=1)
        for _ in range(3):
            pay_native(env)
            watcher.poll()
        with sessions() as session:
            assert (
                session.execute(select(func.count()).select_from(SeenLog)).scalar_one()
                == len(recorder.calls)
                == 3
            )

    def test_reorg_whose_orphaned_blocks_are_all_above_the_new_head_is_caught_once_the_chain_regrows(
        self, w3: Web3, env: EscrowEnv, sessions: sessionmaker[Session], start: int
    ) -> None:
        """Nothing the node has differs yet, so the watcher waits; at the cursor's height the fork shows."""
        kept = pay_native(env)
        mine(w3, 2)
        fork = rpc(w3, "evm_snapshot")
        mine(w3, 2)
        orphaned = pay_native(env, 1)
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start)
        assert watcher.poll() == 2
        old_cursor = cursor(sessions)

        assert rpc(w3, "evm_revert", fork) is True
        replacement = pay_native(env, 2)
        assert int(w3.eth.block_number) < orphaned["blockNumber"]
        assert watcher.poll() == 0
        assert cursor(sessions) == old_cursor and seen(sessions) == escrow_logs(env, kept, orphaned)

        mine(w3, 3)
        assert watcher.poll() == 1
        assert recorder.calls == escrow_logs(env, kept, orphaned, replacement)
        assert seen(sessions) == escrow_logs(env, kept, replacement)
        assert cursor(sessions) == head_cursor(w3)

    def test_a_node_behind_the_cursor_is_waited_for_not_treated_as_a_reorg(
        self,
        w3: Web3,
        env: EscrowEnv,
        sessions: sessionmaker[Session],
        start: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A load-balanced RPC may answer from a node a few blocks behind: same blocks, lower head."""
        first = pay_native(env)
        second = pay_native(env, 1)
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start)
        assert watcher.poll() == 2
        old_cursor, old_seen = cursor(sessions), seen(sessions)

        lagging_head = first["blockNumber"]
        get_block = w3.eth.get_block

        def behind(number: Any, *args: Any) -> Any:
            if isinstance(number, int) and number > lagging_head:
                raise BlockNotFound(f"block {number} not found")
            return get_block(lagging_head if number == "latest" else number, *args)

        monkeypatch.setattr(type(w3.eth), "block_number", property(lambda _self: lagging_head))
        monkeypatch.setattr(w3.eth, "get_block", behind)
        assert watcher.poll() == 0
        assert (cursor(sessions), seen(sessions)) == (old_cursor, old_seen)

        monkeypatch.undo()
        assert watcher.poll() == 0
        assert recorder.calls == escrow_logs(env, first, second)

    def test_logs_read_while_the_chain_reorganises_are_not_committed(
        self,
        w3: Web3,
        env: EscrowEnv,
        sessions: sessionmaker[Session],
        start: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A reorg between ``eth_getLogs`` and reading the range's end block: the logs are of the old
        branch, the end block of the new one. Committing both would hide the fork from every later poll."""
        fork = rpc(w3, "evm_snapshot")
        orphaned = pay_native(env)
        mine(w3)
        get_logs = watcher_module.get_logs
        replacement: list[TxReceipt] = []

        def reorg_during_the_call(w3_: Web3, address: str, from_block: int, to_block: int) -> Any:
            logs = get_logs(w3_, address, from_block, to_block)
            if not replacement:
                assert rpc(w3, "evm_revert", fork) is True
                mine(w3)
                replacement.append(pay_native(env, 1))
            return logs

        monkeypatch.setattr(watcher_module, "get_logs", reorg_during_the_call)
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start)
        assert watcher.poll() == 0
        assert recorder.calls == [] and cursor(sessions) is None
        assert orphaned["blockNumber"] == replacement[0]["blockNumber"] - 1

        assert watcher.poll() == 1
        assert recorder.calls == escrow_logs(env, *replacement)
        assert cursor(sessions) == head_cursor(w3)

    def test_a_busy_poll_at_depth_zero_reads_the_node_three_times(
        self,
        w3: Web3,
        env: EscrowEnv,
        sessions: sessionmaker[Session],
        start: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """At depth 0 the head is read as the latest block, whose hash is the range's end hash read before
        ``eth_getLogs`` (round 8): the head with the cursor's hash, the logs, the end hash after them. At a
        depth the end hash is read on its own before the logs, as before: four."""
        reads: list[str] = []
        rpc_batch, get_logs = watcher_module.rpc_batch, watcher_module.get_logs

        # Only this test's node connection is counted: a thread another test left polling in this process
        # goes through the same module functions (seen as extra reads in full runs).
        def counted_batch(w3_: Web3, requests: Any) -> Any:
            if w3_ is w3:
                reads.append("+".join(method for method, _ in requests))
            return rpc_batch(w3_, requests)

        def counted_logs(w3_: Web3, address: str, from_block: int, to_block: int) -> Any:
            if w3_ is w3:
                reads.append("eth_getLogs")
            return get_logs(w3_, address, from_block, to_block)

        monkeypatch.setattr(watcher_module, "rpc_batch", counted_batch)
        monkeypatch.setattr(watcher_module, "get_logs", counted_logs)
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start)
        paid = pay_native(env)
        assert watcher.poll() == 1
        assert reads == ["eth_getBlockByNumber", "eth_getLogs", "eth_getBlockByNumber"], reads
        reads.clear()
        second = pay_native(env, 1)
        assert watcher.poll() == 1
        batched = "eth_getBlockByNumber+eth_getBlockByNumber"
        assert reads == [batched, "eth_getLogs", "eth_getBlockByNumber"], reads
        assert recorder.calls == escrow_logs(env, paid, second)
        assert cursor(sessions) == head_cursor(w3)

        reads.clear()
        deep = make_watcher(
            w3, env, sessions, Recorder(), start_block=start, confirmations=1, cursor_name="deep"
        )
        mine(w3)
        assert deep.poll() == 0  # the same logs: seen (by tx hash and index) whatever the cursor
        expected = ["eth_blockNumber", "eth_getBlockByNumber", "eth_getLogs", "eth_getBlockByNumber"]
        assert reads == expected, reads

    def test_a_reorg_between_the_head_read_and_the_logs_is_not_committed(
        self,
        w3: Web3,
        env: EscrowEnv,
        sessions: sessionmaker[Session],
        start: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The range's end hash now comes with the head, before ``eth_getLogs`` as before, but earlier: a
        reorg between the two gives logs of the new branch under the old branch's hash, which the hash read
        after the logs refuses; the next poll applies the new branch only."""
        fork = rpc(w3, "evm_snapshot")
        orphaned = pay_native(env)
        get_logs = watcher_module.get_logs
        replacement: list[TxReceipt] = []

        def reorg_before_the_call(w3_: Web3, address: str, from_block: int, to_block: int) -> Any:
            if not replacement:
                assert rpc(w3, "evm_revert", fork) is True
                replacement.append(pay_native(env, 1))
            return get_logs(w3_, address, from_block, to_block)

        monkeypatch.setattr(watcher_module, "get_logs", reorg_before_the_call)
        recorder = Recorder()
        watcher = make_watcher(w3, env, sessions, recorder, start_block=start)
        assert watcher.poll() == 0
        assert recorder.calls == [] and cursor(sessions) is None
        assert orphaned["blockNumber"] == replacement[0]["blockNumber"]  # same height, another block

        assert watcher.poll() == 1
        assert recorder.calls == escrow_logs(env, *replacement)
        assert cursor(sessions) == head_cursor(w3)

    def test_a_range_the_node_refuses_as_too_large_is_halved_until_accepted(
        self,
        w3: Web3,
        env: EscrowEnv,
        sessions: sessionmaker[Session],
        start: int,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Hosted nodes cap eth_getLogs (Alchemy, Infura, public RPCs) with errors of their own wording."""
        receipts = [pay_native(env, i % 3) for i in range(3)]
        mine(w3, 6)
        get_logs = watcher_module.get_logs
        ranges: list[int] = []

        def capped(w3_: Web3, address: str, from_block: int, to_block: int) -> Any:
            ranges.append(to_block - from_block + 1)
            if ranges[-1] > 2:
                raise Web3RPCError(str({"code": -32005, "message": "query exceeds max block range 2"}))
            return get_logs(w3_, address, from_block, to_block)

        monkeypatch.setattr(watcher_module, "get_logs", capped)
        recorder = Recorder()
        with caplog.at_level(logging.WARNING, logger="oracles.watcher"):
            assert make_watcher(w3, env, sessions, recorder, start_block=start, max_range=16).poll() == 3
        assert recorder.calls == escrow_logs(env, *receipts)
        assert ranges[0] > 2 and ranges == sorted(ranges, reverse=True)  # halved, never grown back
        assert [r for r in ranges if r <= 2] and ranges[-1] <= 2
        assert "refused eth_getLogs" in caplog.text
        assert cursor(sessions) == head_cursor(w3)
