"""One escrow history per test module, built on the dev chain node and read back over HTTP JSON-RPC.

The history (``history`` fixture) has every path an auditor meets: single and batch settlements, a
refund, an ETH order, an order reclaimed after its deadline, an order still open past its deadline, an
oracle key rotated mid-history through the v2 timelock (the old key settled before, the new one after),
the threshold raised to 2 (a settlement, a batch and a refund on two signatures), withdrawals by the
sweeper and by a payout address, fee withdrawals, and tokens sent to the escrow outside ``pay`` (one lot
skimmed, one left as surplus). Tests only read it; those
that tamper wrap the reader (``tests/audit/tampering.py``), never the chain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import HTTPProvider, Web3

from cardless.devchain.node import DevNode
from cardless.protocol import NATIVE_TOKEN, Order
from tests.contracts.harness import TOKEN_UNIT, EscrowEnv, build_env


@dataclasses.dataclass
class History:
    node: DevNode
    env: EscrowEnv
    w3: Web3  # an HTTP client of the node, as an auditor connects
    settled_single: Order
    settled_batch: list[Order]
    settled_by_new_key: Order
    settled_by_two: Order  # threshold 2: a single settlement on two signatures
    batch_by_two: list[Order]
    refunded_by_two: Order
    refunded: Order
    native: Order
    reclaimed: Order
    open_past_deadline: Order
    open_in_time: Order
    old_oracle: LocalAccount
    new_oracle: LocalAccount
    second_oracle: LocalAccount
    rotation_block: int
    threshold_block: int  # the threshold became 2
    surplus: int
    skimmed: int
    payout: str  # merchant 1's payout address, which withdrew itself
    receipts: dict[str, dict[str, object]]
    accounts: dict[str, tuple[str, bytes]]

    @property
    def escrow(self) -> str:
        return str(self.env.escrow.address)


@pytest.fixture(scope="session")
def audit_node() -> Iterator[DevNode]:
    with DevNode(port=0) as node:
        yield node


def _receipt(order: Order, account: str) -> dict[str, object]:
    return {
        "version": 1,
        "order_id": "0x" + order.order_id.hex(),
        "provider": "sim",
        "provider_ref": "SIM-" + order.order_id.hex()[:8],
        "sku": "genshin-60",
        "credited": 60,
        "account_commitment": "0x" + order.account_commitment.hex(),
        "completed_at": 1_767_225_600,
    }


@pytest.fixture(scope="session")
def history(audit_node: DevNode) -> History:
    """Built once per test session (per xdist worker; the modules share the group ``audit``)."""
    node = audit_node
    from cardless.protocol import Fulfilment, account_commitment, receipt_hash

    env = build_env(node.chain)
    receipts: dict[str, dict[str, object]] = {}
    accounts: dict[str, tuple[str, bytes]] = {}
    counter = 0

    def order(**kwargs: object) -> Order:
        nonlocal counter
        counter += 1
        base = env.make_order(**kwargs)  # type: ignore[arg-type]
        account, salt = f"8123456{counter:02d}@os_asia", keccak(b"salt-%d" % counter)
        o = Order(**{**_fields(base), "account_commitment": account_commitment(account, salt)})
        accounts["0x" + o.order_id.hex()] = (account, salt)
        return o

    def fulfilment(o: Order) -> Fulfilment:
        r = _receipt(o, accounts["0x" + o.order_id.hex()][0])
        receipts["0x" + o.order_id.hex()] = r
        return Fulfilment(o.order_id, receipt_hash(r), env.chain.now())

    old_oracle = env.oracle_key
    new_oracle = Account.from_key(keccak(b"cardless-audit-new-oracle"))

    single = order()
    env.pay(single)
    env.settle(single, fulfilment=fulfilment(single))

    batch = [order(merchant=env.merchants[i % 2].address) for i in range(3)]
    for o in batch:
        env.pay(o)
    env.settle_batch(batch, fulfilments=[fulfilment(o) for o in batch])

    refunded = order()
    env.pay(refunded)
    env.refund(refunded, reason=2)

    native = order(token=None, amount=10**16)
    env.pay(native)
    env.settle(native, fulfilment=fulfilment(native))

    # The oracle key is rotated: the new one is granted (announced, then executed: the timelock), the
    # old one revoked (immediate).
    env.add_oracle_signer(new_oracle.address)
    receipt = env.send(env.escrow.functions.revokeOracleSigner(old_oracle.address), env.owner)
    rotation_block = int(receipt["blockNumber"])
    by_new = order(amount=7 * TOKEN_UNIT)
    env.pay(by_new)
    env.settle(by_new, fulfilment=fulfilment(by_new), signer=new_oracle.address, key=new_oracle)

    # k-of-n: a second proof key, and the threshold raised to 2 (both through the timelock); a single
    # settlement, a batch and a refund each carry two signatures.
    second_oracle = Account.from_key(keccak(b"cardless-audit-second-oracle"))
    env.add_oracle_signer(second_oracle.address)
    receipt = env.set_oracle_threshold(2)
    threshold_block = int(receipt["blockNumber"])
    two = [new_oracle, second_oracle]
    by_two = order()
    env.pay(by_two)
    env.settle(by_two, fulfilment=fulfilment(by_two), keys=two)
    batch_by_two = [order(), order()]
    for o in batch_by_two:
        env.pay(o)
    env.settle_batch(batch_by_two, fulfilments=[fulfilment(o) for o in batch_by_two], keys=two)
    refunded_by_two = order()
    env.pay(refunded_by_two)
    env.refund(refunded_by_two, reason=3, keys=two)

    reclaimed = order(deadline_ttl=700)
    env.pay(reclaimed)
    open_past = order(deadline_ttl=800)
    env.pay(open_past)
    # protocol v2: a reclaim waits for the settlement window (deadline + SETTLEMENT_GRACE) to close
    grace = int(env.escrow.functions.SETTLEMENT_GRACE().call()) if _has(env, "SETTLEMENT_GRACE") else 0
    env.chain.warp(open_past.fulfilment_deadline + grace + 1)
    env.reclaim(reclaimed)
    open_in_time = order()
    env.pay(open_in_time)

    env.withdraw(env.merchants[0].address, env.usdc.address)  # by the sweeper
    # merchant 1 pays out to the bystander's wallet, and the payout address itself withdraws
    payout = env.bystander
    env.set_payout(env.merchants[1].address, payout)
    env.withdraw(env.merchants[1].address, env.usdc.address, sender=payout)
    env.withdraw_fees(env.usdc.address)

    # Tokens sent outside pay: the first lot is skimmed to the fee recipient (protocol v2), the second stays.
    skimmed, surplus = 55_555, 123_456
    env.send(env.usdc.functions.mint(env.bystander, skimmed + surplus), env.owner)
    env.send(env.usdc.functions.transfer(env.escrow.address, skimmed), env.bystander)
    # refunded and reclaimed orders stay in owed() until reconciled; whoever skims reconciles first
    closed = [refunded, refunded_by_two, reclaimed]
    env.send(env.escrow.functions.reconcile([o.as_tuple() for o in closed]), env.bystander)
    env.send(env.escrow.functions.skimSurplus(env.usdc.address), env.bystander)
    env.send(env.usdc.functions.transfer(env.escrow.address, surplus), env.bystander)

    return History(
        node=node,
        env=env,
        w3=Web3(HTTPProvider(node.url, request_kwargs={"timeout": 30})),
        settled_single=single,
        settled_batch=batch,
        settled_by_new_key=by_new,
        settled_by_two=by_two,
        batch_by_two=batch_by_two,
        refunded_by_two=refunded_by_two,
        refunded=refunded,
        native=native,
        reclaimed=reclaimed,
        open_past_deadline=open_past,
        open_in_time=open_in_time,
        old_oracle=old_oracle,
        new_oracle=new_oracle,
        second_oracle=second_oracle,
        rotation_block=rotation_block,
        threshold_block=threshold_block,
        surplus=surplus,
        skimmed=skimmed,
        payout=payout,
        receipts=receipts,
        accounts=accounts,
    )


def _has(env: EscrowEnv, function: str) -> bool:
    return any(item.get("name") == function for item in env.escrow.abi)


def _fields(order: Order) -> dict[str, object]:
    return {f.name: getattr(order, f.name) for f in dataclasses.fields(order)}


__all__ = ["NATIVE_TOKEN", "History"]
