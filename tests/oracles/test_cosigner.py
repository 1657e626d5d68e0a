"""The co-signer service (``oracles.cosigner``, served by ``cardless.cli.cosigner_server``) against a real
DevNode over HTTP JSON-RPC, the real simulated provider (``SimulatorServer``) and a migrated SQLite ledger;
the co-signer is a real uvicorn server on a free port, and in the last test a ``cardless cosigner``
process of its own.

The escrow runs with two oracle signers and threshold 2: the oracle's key (this process) and the
co-signer's. Orders are paid on chain by a dev account, topped up at the simulator (this test plays the
oracle's provider stage) and written to the ledger in ``proof_pending`` with the receipt the oracle would
have stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_utils import keccak
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from adapters import TopupRequest, TopupStatus
from adapters.http import HttpAdapter
from adapters.provider_file import bundled_provider_file, load_provider_file
from adapters.simulator import SimulatorServer, default_config
from cardless import protocol
from cardless.cli.cosigner_server import CoSignerServer
from cardless.cli.embedded import simulator_secrets
from cardless.devchain.deploy import deploy_dev_system
from cardless.devchain.node import DevNode
from cardless.ledger import Order as OrderRow
from cardless.ledger import OrderState
from cardless.protocol import EscrowDomain, Fulfilment, Order, OrderStatus, RefundReason
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment
from cardless.protocol.reverts import RevertDecoder
from oracles.cosigner import CoSignerJournal, CoSignerService
from oracles.cosigner_wire import (
    FULFILMENTS_PATH,
    REFUND_PATH,
    CoSignerRefusedError,
    CoSignerUnavailableError,
    RefundRequest,
    RequestAuth,
    sign_headers,
)
from oracles.proofs import HttpCoSigner, Proofs
from oracles.settlement import Settlement
from oracles.txmanager import TxManager
from tests.support.node import rolled_back

pytestmark = pytest.mark.slow  # a dev node, the simulator and a co-signer server per module: a few seconds

S = OrderState
ROOT = Path(__file__).resolve().parents[2]
QUOTE_KEY = Account.from_key(keccak(b"cosigner-test-quote"))
ORACLE_KEY = Account.from_key(keccak(b"cosigner-test-oracle"))
COSIGNER_KEY = Account.from_key(keccak(b"cosigner-test-cosigner"))
GAS_KEY = Account.from_key(keccak(b"cosigner-test-gas"))
SECRET = b"cosigner-test-secret-" + b"x" * 20
ESCROW_ABI = load_artifact("CardlessEscrow").abi
TOKEN_ABI = load_artifact("test-helpers/MockERC20").abi
SKU, ACCOUNT = "genshin-60", "12345678"
SIM_SECRETS = simulator_secrets(default_config())


def _admin(w3: Web3, escrow: Contract, action: int, value: bytes) -> None:
    """Announce and execute an admin change (the dev chain's admin delay is 0)."""
    owner = w3.eth.accounts[0]
    receipt = w3.eth.wait_for_transaction_receipt(
        escrow.functions.scheduleAdminChange(action, value).transact({"from": owner})
    )
    (scheduled,) = escrow.events.AdminChangeScheduled().process_receipt(receipt, errors=DISCARD)
    escrow.functions.executeAdminChange(action, value, scheduled.args.eta).transact({"from": owner})


def _add_oracle_signer(w3: Web3, escrow: Contract, signer: str) -> None:
    _admin(w3, escrow, 0, bytes(12) + bytes.fromhex(signer[2:]))


@pytest.fixture(scope="module")
def system(w3: Web3, node: DevNode) -> Deployment:
    deployment = deploy_dev_system(
        w3, quote_signer=QUOTE_KEY.address, oracle_signer=ORACLE_KEY.address, rpc_url=node.url
    )
    tx = w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": GAS_KEY.address, "value": 10**19})
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    escrow = w3.eth.contract(address=deployment.escrow, abi=ESCROW_ABI)
    _add_oracle_signer(w3, escrow, COSIGNER_KEY.address)
    _admin(w3, escrow, 4, (2).to_bytes(32, "big"))  # SetOracleThreshold
    assert escrow.functions.oracleThreshold().call() == 2
    return deployment


@pytest.fixture(autouse=True)
def _rolled_back(w3: Web3, system: Deployment) -> Iterator[None]:
    with rolled_back(w3):
        yield


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(default_config(), port=0) as server:
        yield server


@pytest.fixture(scope="module")
def cosigner(
    w3: Web3, system: Deployment, simulator: SimulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CoSignerServer]:
    """The co-signer on a real uvicorn server: its own key, journal and provider adapter."""
    escrow = w3.eth.contract(address=system.escrow, abi=ESCROW_ABI)
    journal = CoSignerJournal(tmp_path_factory.mktemp("cosigner") / "journal.db")

    def build(clients: list[httpx.AsyncClient]) -> CoSignerService:
        client = httpx.AsyncClient()
        clients.append(client)
        config = load_provider_file(bundled_provider_file("simulator"))
        adapter = HttpAdapter(config, client, secrets=SIM_SECRETS, base_url=simulator.url)
        return CoSignerService(
            key=COSIGNER_KEY,
            domain=system.domain,
            escrow=escrow,
            adapters={"simulator": adapter},
            journal=journal,
            confirmations=0,
        )

    with CoSignerServer(build, RequestAuth(SECRET)) as server:
        server.journal = journal  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def escrow(w3: Web3, system: Deployment) -> Contract:
    return w3.eth.contract(address=system.escrow, abi=ESCROW_ABI)


def _now(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def _pay(w3: Web3, escrow: Contract, system: Deployment, count: int) -> list[tuple[Order, str]]:
    """``count`` orders for SKU paid on chain: (order, payment transaction hash)."""
    buyer, merchant = w3.eth.accounts[2], w3.eth.accounts[5]
    usdc = w3.eth.contract(address=system.token("tUSDC").address, abi=TOKEN_ABI)
    usdc.functions.approve(escrow.address, 2**256 - 1).transact({"from": buyer})
    now = _now(w3)
    paid = []
    for _ in range(count):
        order = Order(
            order_id=os.urandom(32),
            buyer=buyer,
            merchant=merchant,
            token=usdc.address,
            amount=1_000_000,
            fee_bps=250,
            quote_expiry=now + 600,
            fulfilment_deadline=now + 3_600,
            sku_hash=keccak(text=SKU),
            account_commitment=os.urandom(32),
        )
        quote = protocol.sign(QUOTE_KEY.key, protocol.quote_typed_data(system.domain, order))
        tx = escrow.functions.pay(order.as_tuple(), QUOTE_KEY.address, quote).transact(
            {"from": buyer, "gas": 300_000}
        )
        paid.append((order, Web3.to_hex(tx)))
    return paid


def _topup(simulator: SimulatorServer, order_hex: str) -> dict[str, Any]:
    """Top the order up at the simulator (the oracle's provider stage); returns its receipt fields."""

    async def submit() -> dict[str, Any]:
        config = load_provider_file(bundled_provider_file("simulator"))
        async with httpx.AsyncClient() as client:
            adapter = HttpAdapter(config, client, secrets=SIM_SECRETS, base_url=simulator.url)
            result = await adapter.submit(TopupRequest(order_hex, SKU, ACCOUNT))
        assert result.status is TopupStatus.SUCCEEDED and result.receipt is not None
        return {
            "provider": result.receipt.provider,
            "provider_ref": result.receipt.provider_ref,
            "sku": result.receipt.sku,
            "credited": result.receipt.credited,
            "completed_at": result.receipt.completed_at,
        }

    return asyncio.run(submit())


def _ledger(
    w3: Web3,
    ledger: sessionmaker[Session],
    domain: EscrowDomain,
    paid: list[tuple[Order, str]],
    simulator: SimulatorServer,
    *,
    deliver: bool = True,
    state: OrderState = S.PROOF_PENDING,
) -> list[str]:
    """The orders in the ledger as the oracle leaves them: delivered ones in ``proof_pending`` with the
    receipt and the oracle's own signature; undelivered ones with a receipt hash nobody credited."""
    ids = []
    chain_now = _now(w3)
    with ledger.begin() as session:
        for order, paid_tx in paid:
            order_hex = "0x" + order.order_id.hex()
            if deliver:
                fields = _topup(simulator, order_hex)
                receipt = {
                    "version": 1,
                    "order_id": order_hex,
                    **fields,
                    "account_commitment": "0x" + order.account_commitment.hex(),
                }
                fulfilled_at = min(int(fields["completed_at"]), chain_now)
            else:
                receipt = {"version": 1, "order_id": order_hex, "made": "up"}
                fulfilled_at = chain_now
            fulfilment = Fulfilment(order.order_id, protocol.receipt_hash(receipt), fulfilled_at)
            signature = protocol.sign(ORACLE_KEY.key, protocol.fulfilment_typed_data(domain, fulfilment))
            row = OrderRow(
                id=order_hex,
                state=state.value,
                chain_id=domain.chain_id,
                escrow=domain.verifying_contract,
                sku=SKU,
                providers=["simulator"],
                buyer=order.buyer,
                merchant=order.merchant,
                token=order.token,
                amount=order.amount,
                fee_bps=order.fee_bps,
                quote_expiry=order.quote_expiry,
                fulfilment_deadline=order.fulfilment_deadline,
                sku_hash="0x" + order.sku_hash.hex(),
                account_commitment="0x" + order.account_commitment.hex(),
                account_ciphertext=b"\x00" * 16,
                quote_signer=QUOTE_KEY.address,
                quote_signature="0x" + "88" * 65,
                paid_tx=paid_tx,
                receipt=receipt,
                receipt_hash="0x" + fulfilment.receipt_hash.hex(),
                fulfilled_at=fulfilled_at,
                proof_signature="0x" + signature.hex(),
                refund_reason=int(RefundReason.PROVIDER_REJECTED) if state is S.REFUND_PENDING else None,
            )
            session.add(row)
            ids.append(order_hex)
    return ids


def _settlement(
    escrow: Contract, domain: EscrowDomain, ledger: sessionmaker[Session], tx: TxManager, url: str
) -> tuple[Settlement, HttpCoSigner]:
    cosigner = HttpCoSigner(url, SECRET, ledger, domain, timeout=5, cooldown=0)
    settlement = Settlement(
        ledger,
        escrow,
        tx,
        Proofs(ledger, ORACLE_KEY, domain, [cosigner]),
        owner="worker-a",
        lease_ttl=timedelta(seconds=30),
        max_batch=50,
    )
    return settlement, cosigner


def _signers(w3: Web3, escrow: Contract, tx_hash: str) -> list[str]:
    receipt = w3.eth.get_transaction_receipt(tx_hash)
    attested = escrow.events.FulfilmentsAttested().process_receipt(receipt, errors=DISCARD)
    refunded = escrow.events.OrderRefunded().process_receipt(receipt, errors=DISCARD)
    (event,) = [*attested, *refunded]
    return list(event.args.signers)


BOTH = sorted([ORACLE_KEY.address, COSIGNER_KEY.address], key=lambda a: int(a, 16))


def test_a_delivered_batch_settles_with_both_signatures_and_an_undelivered_order_waits(
    w3: Web3,
    escrow: Contract,
    system: Deployment,
    ledger: sessionmaker[Session],
    simulator: SimulatorServer,
    cosigner: CoSignerServer,
) -> None:
    """Three delivered orders and one the provider never saw, in one batch: the co-signer refuses the one
    (its reason reaches the oracle), the other three settle in one settleBatch carrying both signatures,
    and the undelivered order stays ``proof_pending`` (never posted with one signature)."""
    paid = _pay(w3, escrow, system, 4)
    delivered = _ledger(w3, ledger, system.domain, paid[:3], simulator)
    (undelivered,) = _ledger(w3, ledger, system.domain, paid[3:], simulator, deliver=False)
    tx = TxManager(w3, ledger, GAS_KEY, RevertDecoder([ESCROW_ABI, TOKEN_ABI]))
    settlement, client = _settlement(escrow, system.domain, ledger, tx, cosigner.url)

    with pytest.raises(CoSignerRefusedError) as refused:
        client.sign_fulfilments([_fulfilment(ledger, undelivered)])
    assert [(r.order_id, r.reason) for r in refused.value.refusals] == [
        (undelivered, "provider simulator reports unknown, not delivered")
    ]
    with pytest.raises(CoSignerRefusedError, match=r"not delivered \(not asked again for 30 s\)"):
        client.sign_fulfilments([_fulfilment(ledger, undelivered)])  # the same item: not asked again

    assert settlement.post(_now(w3)) == 1
    (record,) = tx.confirm()
    assert record.purpose == "settle_batch" and sorted(record.order_ids) == sorted(delivered)
    assert _signers(w3, escrow, record.tx_hash) == BOTH
    statuses = [escrow.functions.orderStatus(o.order_id).call() for o, _ in paid]
    assert statuses == [OrderStatus.SETTLED] * 3 + [OrderStatus.PAID]
    with ledger() as session:
        row = session.get(OrderRow, undelivered)
        assert row is not None and row.state == S.PROOF_PENDING.value
    assert {order_id: kind for order_id, kind in cosigner.journal.rows()}.keys() >= set(delivered)  # type: ignore[attr-defined]
    assert undelivered not in dict(cosigner.journal.rows())  # type: ignore[attr-defined]
    client.close()


def _fulfilment(ledger: sessionmaker[Session], order_id: str) -> Fulfilment:
    with ledger() as session:
        row = session.get(OrderRow, order_id)
        assert row is not None and row.receipt_hash and row.fulfilled_at is not None
        return Fulfilment(
            protocol.order_id_from_hex(row.id),
            protocol.hash32_from_hex("receipt_hash", row.receipt_hash),
            row.fulfilled_at,
        )


def test_a_tampered_receipt_hash_and_a_late_fulfilment_are_refused(
    w3: Web3,
    escrow: Contract,
    system: Deployment,
    ledger: sessionmaker[Session],
    simulator: SimulatorServer,
    cosigner: CoSignerServer,
) -> None:
    """Delivered, but the oracle asks for another receipt hash, or a time after the deadline: refused."""
    paid = _pay(w3, escrow, system, 1)
    (order_id,) = _ledger(w3, ledger, system.domain, paid, simulator)
    client = HttpCoSigner(cosigner.url, SECRET, ledger, system.domain, cooldown=0)
    good = _fulfilment(ledger, order_id)
    tampered = Fulfilment(good.order_id, keccak(b"another receipt"), good.fulfilled_at)
    late = Fulfilment(good.order_id, good.receipt_hash, paid[0][0].fulfilment_deadline + 1)
    for fulfilment, reason in (
        (tampered, "the receipt hash is not that of provider simulator's receipt"),
        (late, "fulfilledAt is after the order's fulfilment deadline"),
    ):
        with pytest.raises(CoSignerRefusedError) as refused:
            client.sign_fulfilments([fulfilment])
        assert [r.reason for r in refused.value.refusals] == [reason]
    signer, signature = client.sign_fulfilments([good])
    message = protocol.fulfilment_typed_data(system.domain, good)
    assert signer == COSIGNER_KEY.address == protocol.recover_signer(message, signature)
    client.close()


def test_a_refund_after_a_signed_fulfilment_is_refused_and_an_undelivered_order_is_refunded(
    w3: Web3,
    escrow: Contract,
    system: Deployment,
    ledger: sessionmaker[Session],
    simulator: SimulatorServer,
    cosigner: CoSignerServer,
) -> None:
    """The journal: after co-signing order A's fulfilment, a refund of A is refused (even though the oracle
    asks); an order no provider has seen is co-signed for refund, posted with both signatures and refunded
    on chain, and after that its fulfilment is refused."""
    paid = _pay(w3, escrow, system, 2)
    (delivered,) = _ledger(w3, ledger, system.domain, paid[:1], simulator)
    (unseen,) = _ledger(w3, ledger, system.domain, paid[1:], simulator, deliver=False, state=S.REFUND_PENDING)
    client = HttpCoSigner(cosigner.url, SECRET, ledger, system.domain, cooldown=0)
    reason = int(RefundReason.PROVIDER_REJECTED)

    client.sign_fulfilments([_fulfilment(ledger, delivered)])
    with pytest.raises(CoSignerRefusedError) as refused:
        client.sign_refund(protocol.order_id_from_hex(delivered), reason)
    assert [r.reason for r in refused.value.refusals] == [
        "provider simulator reports it delivered in time: settle it"
    ]
    assert dict(cosigner.journal.rows())[delivered] == "fulfilment"  # type: ignore[attr-defined]

    tx = TxManager(w3, ledger, GAS_KEY, RevertDecoder([ESCROW_ABI, TOKEN_ABI]))
    settlement, _ = _settlement(escrow, system.domain, ledger, tx, cosigner.url)
    with ledger.begin() as session:  # only the refund is due in this call
        row = session.get(OrderRow, delivered)
        assert row is not None
        row.state = S.SUCCEEDED.value
    assert settlement.post(_now(w3)) == 1
    (record,) = tx.confirm()
    assert record.purpose == "refund" and _signers(w3, escrow, record.tx_hash) == BOTH
    assert escrow.functions.orderStatus(paid[1][0].order_id).call() == OrderStatus.REFUNDED
    assert dict(cosigner.journal.rows())[unseen] == "refund"  # type: ignore[attr-defined]

    with pytest.raises(CoSignerRefusedError) as refused:
        client.sign_fulfilments([_fulfilment(ledger, unseen)])
    assert [r.reason for r in refused.value.refusals] == ["the order is REFUNDED on chain, not PAID"]
    client.close()


def test_a_fulfilment_after_a_signed_refund_is_refused_by_the_journal(
    w3: Web3,
    escrow: Contract,
    system: Deployment,
    ledger: sessionmaker[Session],
    simulator: SimulatorServer,
    cosigner: CoSignerServer,
) -> None:
    """A refund co-signed while the provider had not seen the order; the top-up then lands (a compromised or
    confused oracle submitted it anyway): the fulfilment is refused, whatever the provider now says."""
    paid = _pay(w3, escrow, system, 1)
    (order_id,) = _ledger(w3, ledger, system.domain, paid, simulator, deliver=False)
    client = HttpCoSigner(cosigner.url, SECRET, ledger, system.domain, cooldown=0)
    client.sign_refund(protocol.order_id_from_hex(order_id), int(RefundReason.DEADLINE_APPROACHING))
    fields = _topup(simulator, order_id)
    receipt = {
        "version": 1,
        "order_id": order_id,
        **fields,
        "account_commitment": "0x" + paid[0][0].account_commitment.hex(),
    }
    fulfilled_at = min(int(fields["completed_at"]), _now(w3))
    fulfilment = Fulfilment(paid[0][0].order_id, protocol.receipt_hash(receipt), fulfilled_at)
    with pytest.raises(CoSignerRefusedError) as refused:
        client.sign_fulfilments([fulfilment])
    assert [r.reason for r in refused.value.refusals] == ["a refund was already signed for this order"]
    client.close()


def test_the_payment_evidence_must_be_this_orders_payment_on_this_escrow_and_confirmed(
    w3: Web3,
    escrow: Contract,
    system: Deployment,
    ledger: sessionmaker[Session],
    simulator: SimulatorServer,
    cosigner: CoSignerServer,
) -> None:
    """The request names where the payment is; the co-signer reads it there: another order's payment, or
    a payment not yet under the confirmation depth, is no evidence for this order."""
    paid = _pay(w3, escrow, system, 2)
    first, second = _ledger(w3, ledger, system.domain, paid, simulator)
    with ledger.begin() as session:
        row = session.get(OrderRow, second)
        assert row is not None
        row.paid_tx = paid[0][1]  # the first order's payment
    client = HttpCoSigner(cosigner.url, SECRET, ledger, system.domain, cooldown=0)
    with pytest.raises(CoSignerRefusedError) as refused:
        client.sign_fulfilments([_fulfilment(ledger, second)])
    assert [(r.order_id, r.reason) for r in refused.value.refusals] == [
        (second, "the payment transaction did not pay this order into this escrow")
    ]
    client.close()

    deep = CoSignerService(
        key=COSIGNER_KEY,
        domain=system.domain,
        escrow=escrow,
        adapters={},
        journal=CoSignerJournal(cosigner.journal.path.parent / "deep.db"),  # type: ignore[attr-defined]
        confirmations=1_000,
    )
    request = RefundRequest(
        paid[0][0].order_id, int(RefundReason.PROVIDER_REJECTED), bytes.fromhex(paid[0][1][2:])
    )
    with pytest.raises(CoSignerRefusedError, match="fewer than 1000 confirmations"):
        asyncio.run(deep.sign_refund(request))
    assert first not in dict(cosigner.journal.rows())  # type: ignore[attr-defined]


def _post(url: str, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url + path, content=body, headers={"Content-Type": "application/json", **headers})


def test_bad_auth_oversized_deep_and_replayed_requests_are_refused_without_internals(
    cosigner: CoSignerServer,
) -> None:
    url = cosigner.url
    body = json.dumps({"order_id": "0x" + "11" * 32, "reason_code": 1, "paid_tx": "0x" + "22" * 32}).encode()
    unauthorised = {"error": "unauthorised"}

    assert _post(url, REFUND_PATH, body, {}).json() == unauthorised
    wrong = sign_headers(b"another-secret-of-at-least-32-bytes!!", "POST", REFUND_PATH, body)
    reply = _post(url, REFUND_PATH, body, wrong)
    assert (reply.status_code, reply.json()) == (401, unauthorised)
    stale = sign_headers(SECRET, "POST", REFUND_PATH, body, now=time.time() - 120)
    assert _post(url, REFUND_PATH, body, stale).status_code == 401
    other_path = sign_headers(SECRET, "POST", FULFILMENTS_PATH, body)  # signed for another route
    assert _post(url, REFUND_PATH, body, other_path).status_code == 401

    fresh = sign_headers(SECRET, "POST", REFUND_PATH, body)
    first = _post(url, REFUND_PATH, body, fresh)
    assert first.status_code == 422  # authenticated, checked and refused: that payment is not on chain
    assert first.json() == {
        "error": "refused",
        "refused": [{"order_id": "0x" + "11" * 32, "reason": "the payment transaction is not on chain"}],
    }
    replay = _post(url, REFUND_PATH, body, fresh)
    assert (replay.status_code, replay.json()) == (401, unauthorised)

    huge = b'{"fulfilments": [' + b'"x",' * 40_000 + b'"x"]}'
    assert (
        _post(url, FULFILMENTS_PATH, huge, sign_headers(SECRET, "POST", FULFILMENTS_PATH, huge)).status_code
        == 413
    )
    deep = b"[" * 10 + b"]" * 10
    assert (
        _post(url, FULFILMENTS_PATH, deep, sign_headers(SECRET, "POST", FULFILMENTS_PATH, deep)).status_code
        == 400
    )
    item = {"order_id": "0x" + "11" * 32, "receipt_hash": "0x" + "22" * 32, "fulfilled_at": 1,
            "paid_tx": "0x" + "33" * 32, "provider": "simulator"}  # fmt: skip
    too_many = json.dumps(
        {"fulfilments": [{**item, "order_id": "0x" + f"{i:064x}"} for i in range(201)]}
    ).encode()
    reply = _post(url, FULFILMENTS_PATH, too_many, sign_headers(SECRET, "POST", FULFILMENTS_PATH, too_many))
    assert (reply.status_code, reply.json()) == (
        400,
        {"error": "bad request", "detail": "fulfilments: must be a list of 1 to 200"},
    )
    extra = json.dumps({"fulfilments": [{**item, "debug": True}]}).encode()
    reply = _post(url, FULFILMENTS_PATH, extra, sign_headers(SECRET, "POST", FULFILMENTS_PATH, extra))
    assert reply.status_code == 400 and "Traceback" not in reply.text

    counted = _metrics(url)
    assert counted["refund", "unauthorised"] >= 5 and counted["refund", "refused"] >= 1
    assert counted["fulfilments", "bad_request"] >= 2


def _metrics(url: str) -> dict[tuple[str, str], float]:
    """``cardless_cosigner_requests_total`` by (route, outcome) from the co-signer's /metrics."""
    found = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("cardless_cosigner_requests_total{"):
            labels, value = line.removeprefix("cardless_cosigner_requests_total{").split("} ")
            fields = dict(part.split("=") for part in labels.split(","))
            found[fields["route"].strip('"'), fields["outcome"].strip('"')] = float(value)
    return found


def test_a_cosigner_that_is_down_means_nothing_is_posted(
    w3: Web3,
    escrow: Contract,
    system: Deployment,
    ledger: sessionmaker[Session],
    simulator: SimulatorServer,
) -> None:
    """No co-signer listening: the settlement and the refund wait (one signature of two would revert), no
    transaction is sent, and the client does not ask again within its cool-down."""
    paid = _pay(w3, escrow, system, 2)
    _ledger(w3, ledger, system.domain, paid[:1], simulator)
    _ledger(w3, ledger, system.domain, paid[1:], simulator, deliver=False, state=S.REFUND_PENDING)
    tx = TxManager(w3, ledger, GAS_KEY, RevertDecoder([ESCROW_ABI, TOKEN_ABI]))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    settlement, client = _settlement(escrow, system.domain, ledger, tx, closed)
    assert settlement.post(_now(w3)) == 0
    assert tx.pending_order_ids() == set() and tx.confirm() == []
    assert [escrow.functions.orderStatus(o.order_id).call() for o, _ in paid] == [OrderStatus.PAID] * 2

    cooling = HttpCoSigner(closed, SECRET, ledger, system.domain, cooldown=60)
    with pytest.raises(CoSignerUnavailableError):
        cooling.sign_refund(paid[1][0].order_id, 1)
    began = time.monotonic()
    with pytest.raises(CoSignerUnavailableError, match="not asked again yet"):
        cooling.sign_refund(paid[1][0].order_id, 1)
    assert time.monotonic() - began < 0.05
    client.close()
    cooling.close()


@pytest.mark.long  # starts a second Python process (~5 s of CPU); CI runs it in `make test-long`
def test_oracle_and_a_cardless_cosigner_process_settle_an_order(
    w3: Web3,
    node: DevNode,
    escrow: Contract,
    system: Deployment,
    ledger: sessionmaker[Session],
    simulator: SimulatorServer,
    tmp_path: Path,
) -> None:
    """``cardless cosigner`` in a process of its own, with its own development keystore (authorised on the
    escrow once it tells its address), journal and provider file: the oracle's settlement in this process
    collects its signature over HTTP and the order settles with both."""
    deployment_file = tmp_path / "deployment.json"
    system.save(deployment_file)
    secret_file = tmp_path / "cosigner-secret"
    secret_file.write_text(SECRET.decode())
    env = {
        **os.environ,
        **SIM_SECRETS,
        "CARDLESS_ENVIRONMENT": "development",
        "CARDLESS_VAR_DIR": str(tmp_path / "var"),
        "CARDLESS_CHAIN_RPC_URL": node.url,
        "CARDLESS_DEPLOYMENT_FILE": str(deployment_file),
        "CARDLESS_PROVIDER_FILES": json.dumps([str(ROOT / "adapters/providers/simulator.toml")]),
        "CARDLESS_PROVIDER_BASE_URL": simulator.url,
        "CARDLESS_COSIGNER_SECRET_FILE": str(secret_file),
        "CARDLESS_COSIGNER_PORT": "0",
        "CARDLESS_KEYSTORE_SCRYPT_N": "16",
        "CARDLESS_LOG_FORMAT": "text",
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "cosigner.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cardless.cli.main", "cosigner"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = _wait_for_line(proc, log_path, "cosigner running: ")
        signer = httpx.get(url + "/healthz").json()["signer"]
        assert signer != ORACLE_KEY.address
        # the owner adds the process's key: three signers, threshold still 2
        _add_oracle_signer(w3, escrow, signer)

        paid = _pay(w3, escrow, system, 1)
        (order_id,) = _ledger(w3, ledger, system.domain, paid, simulator)
        tx = TxManager(w3, ledger, GAS_KEY, RevertDecoder([ESCROW_ABI, TOKEN_ABI]))
        settlement, client = _settlement(escrow, system.domain, ledger, tx, url)
        assert settlement.post(_now(w3)) == 1
        (record,) = tx.confirm()
        assert record.order_ids == [order_id]
        assert _signers(w3, escrow, record.tx_hash) == sorted(
            [ORACLE_KEY.address, signer], key=lambda a: int(a, 16)
        )
        assert escrow.functions.orderStatus(paid[0][0].order_id).call() == OrderStatus.SETTLED
        assert (tmp_path / "var" / "cosigner" / "journal.db").exists()
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0, log_path.read_text()
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise


def _wait_for_line(proc: subprocess.Popen[bytes], log_path: Path, prefix: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if prefix in line:
                return line.split(prefix, 1)[1].split()[0]
        if proc.poll() is not None:
            pytest.fail(f"cardless cosigner exited with {proc.returncode}\n{log_path.read_text()}")
        time.sleep(0.1)
    pytest.fail(f"cardless cosigner did not start\n{log_path.read_text()}")
