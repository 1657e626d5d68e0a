"""How the dev node mines the transactions sent to it over JSON-RPC: each one is mined before its
``eth_sendRawTransaction`` is answered (automine, as anvil and Hardhat by default), and every transaction
that arrives while a block is being mined goes into the next block together (group commit).

eth-tester mines one block per transaction, in two passes: ``MiningChain.apply_transaction`` executes it
and persists the state to compute an intermediate state root, then ``mine_block`` builds the block again,
persists again, and eth-tester re-reads and serialises the mined block to feed its filters. Here one VM
applies a whole batch (a state root per block, not per transaction), the block is sealed and persisted
once, and eth-tester's own filters are fed only when the in-process provider created one. Blocks are
built exactly as eth-tester builds them (no pre- or post-processing of the block, a random
``mix_hash``), so a block of one transaction is the same block as before, and the chain stays eth-tester's
(snapshots, the in-process ``w3`` and its own mining keep working on it).

A batch never changes what a sender sees: its transaction is mined, or refused with the error a lone
transaction would get, before the answer; transactions are admitted in arrival order against the state
left by the ones before them (a second transaction of one sender with the next nonce is admitted, as it
would be one block later).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Final

from eth.constants import ZERO_ADDRESS
from eth_utils import ValidationError as EVMValidationError

__all__ = ["Admit", "RefusedByVMError", "feed_tester_filters", "mine_transactions"]

Admit = Callable[[Any, Any, Any], None]
"""``admit(state, header, transaction)`` raises to refuse ``transaction`` on the state the block reached."""

_MIX_HASH_BYTES: Final = 32


class RefusedByVMError(Exception):
    """The VM refused a transaction the node's own checks admitted (a check the node does not repeat)."""


def mine_transactions(
    backend: Any, transactions: Sequence[Any], admit: Admit
) -> tuple[list[bytes | Exception], list[Any]]:
    """Mine ``transactions`` (decoded, signed) in as few blocks as the gas limit allows.

    Returns, per transaction, its hash or the exception that refused it (``admit``'s, or
    :class:`RefusedByVMError`), and the blocks mined (none when every transaction was refused).
    """
    chain = backend.chain
    results: list[bytes | Exception] = []
    blocks: list[Any] = []
    start = 0
    while start < len(transactions):
        vm = chain.get_vm(chain.header)
        base = vm.get_block()
        if base.transactions:
            # eth-tester mines every transaction it applies at once, so the pending block is always empty
            raise RuntimeError("the pending block already holds transactions")
        state = vm.state
        header = base.header
        applied: list[Any] = []
        receipts: list[Any] = []
        index = start
        for tx in transactions[start:]:
            if applied and tx.gas > header.gas_limit - header.gas_used:
                break  # full: this one opens the next block
            index += 1
            try:
                admit(state, header, tx)
            except Exception as exc:
                results.append(exc)
                continue
            snapshot = state.snapshot()
            try:
                receipt, _ = vm.apply_transaction(header, tx)
            except EVMValidationError as exc:
                state.revert(snapshot)
                results.append(RefusedByVMError(str(exc)))
                continue
            header = vm.increment_blob_gas_used(vm.add_receipt_to_header(header, receipt), tx)
            applied.append(tx)
            receipts.append(receipt)
            results.append(bytes(tx.hash))
        start = index
        if applied:
            block = vm.set_block_transactions_and_withdrawals(base, header, applied, receipts)
            # As eth-tester's mine_blocks: the zero coinbase, a random mix_hash for PREVRANDAO.
            mined = vm.mine_block(block, coinbase=ZERO_ADDRESS, mix_hash=os.urandom(_MIX_HASH_BYTES)).block
            chain.validate_block(mined)
            chain.chaindb.persist_block(mined)
            chain.header = chain.create_header_from_parent(mined.header)
            blocks.append(mined)
    return results, blocks


def feed_tester_filters(tester: Any, block: Any) -> None:
    """What eth-tester does after mining, for the filters made through the in-process provider
    (``node.chain.w3``): pending-transaction, block and log filters. Nothing when there are none."""
    if not (tester._pending_transaction_filters or tester._block_filters or tester._log_filters):
        return
    normalizer = tester.normalizer
    for tx in block.transactions:
        for filter_ in tester._pending_transaction_filters.values():
            filter_.add(bytes(tx.hash))
    for filter_ in tester._block_filters.values():
        filter_.add(bytes(block.hash))
    if tester._log_filters:
        tester._process_block_logs(
            tester.get_block_by_hash(normalizer.normalize_outbound_block_hash(block.hash))
        )
