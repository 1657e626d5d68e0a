"""A temporary SQLite ledger, orders in any state, and a scripted provider adapter: enough to test the
oracle's decisions without a chain, a provider or a running system."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from adapters import (
    ProviderAdapter,
    Receipt,
    Refusal,
    TopupRequest,
    TopupResult,
    TopupStatus,
    Validation,
)
from cardless.ledger import Order, OrderEvent, OrderState
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.store import claim
from cardless.ledger.transitions import transition
from cardless.protocol import EscrowDomain
from cardless.protocol.artifacts import load_artifact
from oracles.txmanager import TxManager
from oracles.worker import OracleWorker, WorkerConfig
from tests.support.orders import order_row

S = OrderState
CIPHER = AccountCipher(b"k" * 32)
ACCOUNT = "player-1"
SKU = "genshin-60"
T0 = 1_900_000_000  # chain time of the tests
ESCROW = "0x" + "11" * 20


def add_order(
    sessions: sessionmaker[Session],
    *,
    state: OrderState = S.RISK_CHECKED,
    providers: Sequence[str] = ("alpha", "beta"),
    provider_index: int = 0,
    deadline: int = T0 + 3_600,
    fulfilled_at: int | None = None,
    order_id: str | None = None,
) -> str:
    """An order that got to ``state`` by the ordinary route (its timeline says so)."""
    order_id = order_id or "0x" + os.urandom(32).hex()
    with sessions.begin() as session:
        row = order_row(
            id=order_id,
            sku=SKU,
            providers=list(providers),
            provider_index=provider_index,
            quote_expiry=T0 - 60,
            fulfilment_deadline=deadline,
            account_ciphertext=CIPHER.encrypt(ACCOUNT, order_id),
        )
        session.add(row)
        session.flush()
        route = [S.PAID, S.RISK_CHECKED, S.SUBMITTING, S.SUCCEEDED, S.PROOF_PENDING]
        if state in (S.UNKNOWN, S.FAILED_FINAL, S.REFUND_PENDING):
            route = [S.PAID, S.RISK_CHECKED, S.SUBMITTING, S.UNKNOWN, S.FAILED_FINAL, S.REFUND_PENDING]
        for step in route[: route.index(state) + 1] if state in route else []:
            detail = {"provider": providers[provider_index]} if step is S.SUBMITTING else None
            fields: dict[str, Any] = {}
            if step is S.SUCCEEDED:
                fields = {"receipt_hash": "0x" + "99" * 32, "fulfilled_at": fulfilled_at or T0 - 10}
            if step is S.PROOF_PENDING:
                fields = {"proof_signature": "0x" + "aa" * 65}
            if step is S.FAILED_FINAL:
                fields = {"refund_reason": 1}
            transition(session, row, step, f"test: {step}", detail=detail, **fields)
    return order_id


def lease(
    sessions: sessionmaker[Session], order_id: str, owner: str, ttl: timedelta = timedelta(minutes=1)
) -> None:
    with sessions.begin() as session:
        row = session.get(Order, order_id)
        assert row is not None
        assert claim(session, order_id, owner, states=[OrderState(row.state)], ttl=ttl, now=datetime.now(UTC))


def get(sessions: sessionmaker[Session], order_id: str) -> Order:
    with sessions() as session:
        row = session.get(Order, order_id)
        assert row is not None
        row.events  # noqa: B018 - load the timeline before the session closes
        return row


def states_of(events: Sequence[OrderEvent]) -> list[str]:
    return [e.to_state for e in events]


def backdate(sessions: sessionmaker[Session], order_id: str, by: timedelta) -> None:
    """Move the order's whole timeline ``by`` into the past (time passing, without sleeping)."""
    with sessions.begin() as session:
        row = session.get(Order, order_id)
        assert row is not None
        for event in row.events:
            at = event.at if event.at.tzinfo else event.at.replace(tzinfo=UTC)
            event.at = at - by


def succeeded(request: TopupRequest, provider: str, completed_at: int = T0 - 5) -> TopupResult:
    receipt = Receipt(
        provider,
        "ref-" + request.order_key[2:10],
        request.order_key,
        request.sku,
        60,
        request.account,
        completed_at,
    )
    return TopupResult(
        TopupStatus.SUCCEEDED, provider, request.order_key, provider_ref=receipt.provider_ref, receipt=receipt
    )


def refused(key: str, provider: str, refusal: Refusal = Refusal.OUT_OF_STOCK) -> TopupResult:
    return TopupResult(TopupStatus.FAILED_NOT_CHARGED, provider, key, refusal=refusal, detail="refused")


def unknown(key: str | None, provider: str, *, unseen: bool = False) -> TopupResult:
    return TopupResult(
        TopupStatus.UNKNOWN, provider, key, unseen=unseen, detail="not found" if unseen else "timeout"
    )


Script = Callable[[TopupRequest], TopupResult]


class FakeAdapter:
    """A provider adapter that answers from a script and counts every call (thread-safe)."""

    def __init__(
        self,
        name: str,
        *,
        on_submit: Script | Exception | None = None,
        on_query: Callable[[str], TopupResult] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.name = name
        self.on_submit = on_submit
        self.on_query = on_query
        self.delay = delay
        self.submits: Counter[str] = Counter()
        self.queries: Counter[str] = Counter()
        self.requests: list[TopupRequest] = []
        self._lock = threading.Lock()

    async def validate(self, sku: str, account: str) -> Validation:
        return Validation(ok=True, sku=sku, account=account)

    async def submit(self, request: TopupRequest) -> TopupResult:
        with self._lock:
            self.submits[request.order_key] += 1
            self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.on_submit, Exception):
            raise self.on_submit
        if self.on_submit is None:
            return succeeded(request, self.name)
        return self.on_submit(request)

    async def query(self, order_key: str | None, provider_ref: str | None = None) -> TopupResult:
        assert order_key is not None
        with self._lock:
            self.queries[order_key] += 1
        if self.on_query is None:
            return unknown(order_key, self.name, unseen=True)
        return self.on_query(order_key)

    async def verify_callback(self, raw_body: bytes, headers: Mapping[str, str], now: float) -> TopupResult:
        raise NotImplementedError

    async def balance(self) -> int:
        return 0


def adapters(*fakes: FakeAdapter) -> dict[str, ProviderAdapter]:
    return {f.name: f for f in fakes}


def worker(
    sessions: sessionmaker[Session], provider: FakeAdapter, worker_id: str, **config: Any
) -> OracleWorker:
    """A worker that never touches a chain: only its provider-call scheduling is exercised."""
    w3 = Web3()
    escrow = w3.eth.contract(
        address=Web3.to_checksum_address(ESCROW), abi=load_artifact("CardlessEscrow").abi
    )
    return OracleWorker(
        w3=w3,
        escrow=escrow,
        domain=EscrowDomain(chain_id=31337, verifying_contract=ESCROW),
        sessions=sessions,
        adapters=adapters(provider),
        proof_key=cast(Any, None),
        tx=cast(TxManager, None),
        cipher=CIPHER,
        start_block=0,
        config=WorkerConfig(worker_id=worker_id, **config),
    )
